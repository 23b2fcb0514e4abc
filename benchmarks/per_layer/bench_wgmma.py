"""wgmma (sm_90a) convolution tactics vs the mma.sync ones and cuDNN, ResNet-50 layers, batch 256.

Per distinct ResNet-50 convolution (benchmarks/bench_kernels.py's RESNET50 list):

* FP16  ours wgmma   kernels.gpu.conv_wgmma.conv2d_wgmma, every TACTICS tile
        ours mma     kernels.gpu.conv_igemm.conv2d_igemm, the V2 tiles incl. the large ones
                     (+ the small-C kernel on the stem)
        torch        F.conv2d channels_last FP16, cudnn.benchmark, bare convolution
  ours: scale + bias + ReLU fused, FP16 out; C padded to 8 (stem 3 -> 8).
* INT8  ours wgmma   conv_wgmma.conv2d_wgmma_int8, every INT8_TACTICS tile
        ours mma     conv_int8.conv2d_int8, every INT8_TACTICS tile
  bias + ReLU + requantise fused, int8 out; C padded to 16.

Timing: CUDA events around each call, median of ``--reps`` after 3 warm-ups (the method
of bench_kernels.py / bench_int8.py); a candidate that fails scores infinity and its error
is recorded. Every wgmma result is checked in the same run: FP16 against torch (rel L2),
INT8 against conv_int8's default tactic (equal codes). TFLOP/s (TOPS) count the true,
unpadded MACs x 2. Totals = sum of layer time x count (convolutions only).

    python3 benchmarks/bench_wgmma.py --precompile     # parallel NVRTC warm-up, then exit
    python3 benchmarks/bench_wgmma.py [--out DIR] [--batch 256] [--reps 20]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_kernels import RESNET50, _events_ms, _torch_events_ms  # noqa: E402

MMA_FP16 = ("igemm2_128x128x32_w2x4_s4", "igemm2_128x64x32_w2x2_s4", "igemm2_256x128x32_w4x2_s3",
            "igemm2_128x256x32_w2x4_s3", "igemm2_128x128x64_w2x4_s4")


# ---- parallel compile (fills CuPy's on-disk cache; the main process then only loads) ----
def _items():
    from kernels.gpu import conv_igemm, conv_int8, conv_wgmma, quantize_int8
    items = [("wg16", t.name, d) for t in conv_wgmma.TACTICS for d in ("float16", "float32")]
    items += [("wg8", t.name, d) for t in conv_wgmma.INT8_TACTICS
              for d in ("int8", "float32", "float16")]
    items += [("tc", n, "") for n in MMA_FP16 + (conv_igemm.SMALLC_TACTICS[0].name,)]
    items += [("i8", t.name, "int8") for t in conv_int8.INT8_TACTICS]
    items += [("i8", conv_int8.INT8_TACTICS[0].name, d) for d in ("float32", "float16")]
    return items


def _compile(item):
    kind, name, dt = item
    from kernels.gpu import conv_int8, conv_igemm, conv_wgmma
    if kind in ("wg16", "wg8"):
        conv_wgmma._kernel(conv_wgmma.TACTICS_BY_NAME[name], np.dtype(dt))
    elif kind == "tc":
        conv_igemm.compile_all((conv_igemm.TACTICS_BY_NAME[name],))
    else:
        conv_int8.compile_all((conv_int8.TACTICS_BY_NAME[name],), out_dtypes=(np.dtype(dt),))


def precompile(workers):
    items = _items()
    chunks = [items[i::workers] for i in range(min(workers, len(items)))]
    t0 = time.time()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.dirname(os.path.abspath(__file__))]))
    procs = [subprocess.Popen([sys.executable, "-c",
                               "import json, sys; from bench_wgmma import _compile; "
                               "[_compile(tuple(i)) for i in json.loads(sys.argv[1])]",
                               json.dumps(c)], env=env, stderr=subprocess.PIPE)
             for c in chunks]
    failed = 0
    for p, c in zip(procs, chunks):
        _, err = p.communicate()
        if p.returncode:
            failed += 1
            print(f"compile worker for {[i[1] for i in c]} failed:\n"
                  + err.decode(errors="replace")[-3000:], flush=True)
    print(f"precompiled {len(items)} kernels in {time.time() - t0:.1f} s with {len(chunks)} "
          f"processes ({failed} workers failed)", flush=True)
    return failed


# ---- timing ------------------------------------------------------------------------------
def _try_time(cp, fn, reps, errors, name):
    """Median ms, or inf (the error kept) when the candidate raises."""
    try:
        return _events_ms(cp, fn, 3, reps)
    except Exception as exc:      # a failing candidate scores infinity (tinygrad's rule)
        errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return float("inf")


def _best(d):
    k = min(d, key=d.get)
    return k, d[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--precompile", action="store_true", help="parallel compile, then exit")
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--layers", nargs="*", help="subset of RESNET50 layer names")
    args = ap.parse_args()
    if args.precompile:
        sys.exit(1 if precompile(args.workers) else 0)

    import cupy as cp
    import torch
    import torch.nn.functional as F

    from kernels.gpu import conv_int8, conv_igemm, conv_wgmma

    torch.backends.cudnn.benchmark = True
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    card = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    if not conv_wgmma.available():
        print(f"{card}: not compute capability 9.0; nothing to time", flush=True)
        return
    t0 = time.time()
    conv_wgmma.compile_all()
    conv_igemm.compile_all([conv_igemm.TACTICS_BY_NAME[n] for n in MMA_FP16] + [conv_igemm.SMALLC_TACTICS[0]])
    conv_int8.compile_all()
    load_s = time.time() - t0
    print(f"{card}; kernel load/compile {load_s:.1f} s", flush=True)

    N = args.batch
    cp.random.seed(0)
    rows = []
    for name, H, C, K, R, st, count in RESNET50:
        if args.layers and name not in args.layers:
            continue
        pad = R // 2
        P = (H + 2 * pad - R) // st + 1
        macs = N * P * P * K * R * R * C
        xf = cp.random.standard_normal((N, H, H, C), dtype=cp.float32)
        wf = cp.random.standard_normal((K, C, R, R), dtype=cp.float32) / np.sqrt(C * R * R)
        bias = cp.random.standard_normal(K, dtype=cp.float32) * 0.1
        ones = cp.ones(K, cp.float32)
        x16 = conv_igemm.pad_channels(xf.astype(cp.float16), 8)
        w16 = conv_igemm.pack_weight_krsc(wf.astype(cp.float16))
        s_in = np.float32(float(cp.abs(xf).max())) / np.float32(127)
        xq = quantize_int8.quantize_nhwc(xf, s_in, c_pad_to=16)
        wq, s_w = conv_int8.pack_weight_int8_krsc(wf)
        s_out = np.float32(4.0) / np.float32(127)
        errors, f16, i8 = {}, {"wgmma": {}, "mma": {}}, {"wgmma": {}, "mma": {}}
        out16 = cp.empty((N, P, P, K), cp.float16)
        out8 = cp.empty((N, P, P, K), cp.int8)
        kw16 = dict(stride=st, padding=pad, scale=ones, bias=bias, act="RELU", out=out16)
        kw8 = dict(stride=st, padding=pad, bias=bias, act="RELU", s_out=s_out, out=out8)

        # torch (bare conv), also the FP16 reference
        xt = torch.from_dlpack(x16[..., :C].copy()).permute(0, 3, 1, 2)
        wt = torch.from_dlpack(wf.astype(cp.float16)).contiguous(memory_format=torch.channels_last)
        tms = _torch_events_ms(torch, lambda: F.conv2d(xt, wt, stride=st, padding=pad), 3, args.reps)
        yt = F.conv2d(xt, wt, stride=st, padding=pad).float()
        ref16 = cp.from_dlpack(torch.relu(yt + torch.from_dlpack(bias)[None, :, None, None])
                               .permute(0, 2, 3, 1).contiguous())
        check = {}
        for t in conv_wgmma.TACTICS:
            f16["wgmma"][t.name] = _try_time(cp, lambda t=t: conv_wgmma.conv2d_wgmma(
                x16, w16, tactic=t, **kw16), args.reps, errors, t.name)
            if f16["wgmma"][t.name] < float("inf"):
                d = out16.astype(cp.float32) - ref16
                check[t.name] = float(cp.linalg.norm(d) / cp.linalg.norm(ref16))
        for n in MMA_FP16:
            f16["mma"][n] = _try_time(cp, lambda n=n: conv_igemm.conv2d_igemm(
                x16, w16, tactic=n, **kw16), args.reps, errors, n)
        if C <= 4:
            wsc = conv_igemm.pack_weight_smallc(wf.astype(cp.float16))
            t = conv_igemm.SMALLC_TACTICS[0]
            f16["mma"][t.name] = _try_time(cp, lambda: conv_igemm.conv2d_igemm_smallc(
                x16, wsc, tactic=t, kernel_s=R, **kw16), args.reps, errors, t.name)

        conv_int8.conv2d_int8(xq, wq, s_in, s_w, **kw8)
        ref8 = out8.copy()
        for t in conv_int8.INT8_TACTICS:
            i8["mma"][t.name] = _try_time(cp, lambda t=t: conv_int8.conv2d_int8(
                xq, wq, s_in, s_w, tactic=t, **kw8), args.reps, errors, t.name)
        for t in conv_wgmma.INT8_TACTICS:
            i8["wgmma"][t.name] = _try_time(cp, lambda t=t: conv_wgmma.conv2d_wgmma_int8(
                xq, wq, s_in, s_w, tactic=t, **kw8), args.reps, errors, t.name)
            if i8["wgmma"][t.name] < float("inf"):
                check[t.name] = int(cp.count_nonzero(out8 != ref8))     # codes that differ

        row = dict(layer=name, count=count, macs=macs, torch_ms=tms, fp16=f16, int8=i8,
                   check=check, errors=errors)
        for fam, d in (("fp16", f16), ("int8", i8)):
            for impl in ("wgmma", "mma"):
                k, v = _best(d[impl])
                row[f"{fam}_{impl}_ms"], row[f"{fam}_{impl}_tactic"] = v, k
        rows.append(row)
        tf = lambda ms: 2 * macs / ms / 1e9  # noqa: E731
        print(f"{name:18s} fp16 wgmma {row['fp16_wgmma_ms']:7.4f} ms {tf(row['fp16_wgmma_ms']):5.0f} TF/s "
              f"({row['fp16_wgmma_tactic']:14s}) mma {row['fp16_mma_ms']:7.4f} {tf(row['fp16_mma_ms']):5.0f} "
              f"torch {tms:7.4f} {tf(tms):5.0f} | int8 wgmma {row['int8_wgmma_ms']:7.4f} "
              f"{tf(row['int8_wgmma_ms']):5.0f} TOPS mma {row['int8_mma_ms']:7.4f} "
              f"{tf(row['int8_mma_ms']):5.0f} | check {json.dumps(check)}"
              + (f" | errors {json.dumps(errors)}" if errors else ""), flush=True)
        del xf, wf, x16, w16, xq, wq, out16, out8, ref16, ref8, xt, wt, yt
        cp.get_default_memory_pool().free_all_blocks()
        torch.cuda.empty_cache()

    keys = ("fp16_wgmma_ms", "fp16_mma_ms", "torch_ms", "int8_wgmma_ms", "int8_mma_ms")
    totals = {k: sum(r[k] * r["count"] for r in rows) for k in keys}
    bad16 = {f"{r['layer']}/{k}": v for r in rows for k, v in r["check"].items()
             if k.startswith("wg_") and not v <= 1e-2}
    bad8 = {f"{r['layer']}/{k}": v for r in rows for k, v in r["check"].items()
            if k.startswith("wgi8_") and v}
    with open(os.path.join(args.out, "wgmma.json"), "w") as f:
        json.dump(dict(card=card, date=datetime.datetime.now().isoformat(timespec="seconds"),
                       cupy=cp.__version__, torch=torch.__version__, batch=N, reps=args.reps,
                       load_s=load_s, rows=rows, totals=totals,
                       fp16_over_tolerance=bad16, int8_mismatches=bad8), f, indent=1)
    print(f"\n{card}, batch {N}, ms (TFLOP/s | TOPS); best tactic per layer and family")
    print(f"{'layer':18s} {'x':>2} | {'wg f16':>14} {'mma f16':>14} {'torch':>14} | "
          f"{'wg int8':>14} {'mma int8':>14} | wg tactics")
    for r in rows:
        c = lambda k: f"{r[k]:7.4f} ({2 * r['macs'] / r[k] / 1e9:4.0f})"  # noqa: E731
        print(f"{r['layer']:18s} {r['count']:>2} | {c('fp16_wgmma_ms')} {c('fp16_mma_ms')} "
              f"{c('torch_ms')} | {c('int8_wgmma_ms')} {c('int8_mma_ms')} | "
              f"{r['fp16_wgmma_tactic']}, {r['int8_wgmma_tactic']}")
    print("ResNet-50 conv total (layer x count) ms: " +
          ", ".join(f"{k[:-3]} {v:.3f}" for k, v in totals.items()))
    print(f"wgmma FP16 rel L2 > 1e-2 vs torch: {bad16 or 'none'}; "
          f"wgmma INT8 codes != conv_int8: {bad8 or 'none'}")


if __name__ == "__main__":
    main()
