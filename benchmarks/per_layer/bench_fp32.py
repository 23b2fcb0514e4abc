"""FP32 convolution benchmark on ResNet-50's distinct conv layers (batch 256):
ours on tensor cores (3xTF32 and plain TF32) vs our current FP32 path vs cuDNN FP32.

Per layer (benchmarks/bench_kernels.py's RESNET50 list):

* 3xTF32     kernels.gpu.conv_tf32.conv2d_tf32(precise=True), every tile (C padded
             to 4: the stem reads RGB + one zero channel);
* TF32       the same, precise=False (what an engine built with the TF32 flag runs);
* current    our FP32 path before this kernel: im2col + cupy.matmul SGEMM + the
             epilogue kernel (conv_gemm.conv2d_im2col) and, on 1x1 layers, the cuBLAS
             1x1 GEMM + epilogue (conv2d_1x1_cublas); the faster counts;
* torch      F.conv2d FP32 channels_last, cudnn.benchmark=True, TF32 off
             (torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32
             = False), bare convolution (ours and current run bias + ReLU fused).

Each candidate's output is checked against torch's on the same data (rel L2;
3xTF32 must stay FP32-class, TF32 within 1e-3). Timing: CUDA events around each
call, median of ``--reps`` (20) after 3 warm-ups, all in one process on one card.
TFLOP/s use the true MACs (RGB: C = 3) x 2. Totals = sum of layer time x count.
JSON to ``--out``/fp32.json; the short table is printed last.

    python3 benchmarks/bench_fp32.py [--out DIR] [--batch 256] [--reps 20] [--layers a b ..]
    python3 benchmarks/bench_fp32.py --precompile     # fill CuPy's kernel cache in parallel
"""
from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_kernels import RESNET50, _events_ms, _torch_events_ms  # noqa: E402

TOL_PRECISE, TOL_TF32 = 1e-5, 1e-3


def _compile_one(item):
    name, precise = item
    from kernels.gpu import conv_tf32
    t0 = time.time()
    conv_tf32.compile_all((conv_tf32.TACTICS_BY_NAME[name],))
    return f"{name} precise={precise} {time.time() - t0:.1f} s"


def precompile():
    """One spawned process per tile (each is built for one precision): NVRTC is single-threaded, and
    CuPy's on-disk cache then serves the tests and the benchmark."""
    from kernels.gpu import conv_tf32
    items = [(t.name, t.precise) for t in conv_tf32.TACTICS]
    with mp.get_context("spawn").Pool(len(items)) as pool:
        for msg in pool.imap_unordered(_compile_one, items):
            print("compiled", msg, flush=True)


def _rel_l2(cp, a, b):
    a, b = a.astype(cp.float64), b.astype(cp.float64)
    return float(cp.linalg.norm(a - b) / max(float(cp.linalg.norm(b)), 1e-30))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--layers", nargs="*", help="subset of layer names (default: all 23)")
    ap.add_argument("--precompile", action="store_true")
    args = ap.parse_args()
    if args.precompile:
        precompile()
        return

    import cupy as cp
    import torch
    import torch.nn.functional as F
    from kernels.gpu import conv_gemm, conv_igemm, conv_tf32

    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    card = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    t0 = time.time()
    conv_tf32.compile_all()
    compile_s = time.time() - t0
    print(f"{card}; conv_tf32 compile (cache) {compile_s:.1f} s; batch {args.batch}", flush=True)

    N, reps = args.batch, args.reps

    def dump(rows, **extra):
        # rewritten after every layer: a run cut off by its timeout still leaves its rows
        with open(os.path.join(args.out, "fp32.json"), "w") as f:
            json.dump(dict(card=card, date=datetime.datetime.now().isoformat(timespec="seconds"),
                           cupy=cp.__version__, torch=torch.__version__, batch=N, reps=reps,
                           compile_s=compile_s, rows=rows, **extra), f, indent=1)
    layers = [l for l in RESNET50 if not args.layers or l[0] in args.layers]
    cp.random.seed(0)
    rows = []
    for name, H, C, K, R, st, count in layers:
        pad = R // 2
        P = (H + 2 * pad - R) // st + 1
        macs = N * P * P * K * R * R * C
        xf = cp.random.standard_normal((N, H, H, C), dtype=cp.float32)
        wf = cp.random.standard_normal((K, C, R, R), dtype=cp.float32) / np.float32(np.sqrt(C * R * R))
        bias = cp.random.standard_normal(K, dtype=cp.float32) * 0.1
        ones = cp.ones(K, cp.float32)
        x4 = conv_igemm.pad_channels(xf, 4)
        w4 = conv_tf32.pack_weight_krsc_f32(wf, "KCRS")
        w_krsc = cp.ascontiguousarray(wf.transpose(0, 2, 3, 1))

        # torch FP32 reference and timing (bare convolution)
        xt = torch.from_dlpack(xf).permute(0, 3, 1, 2)               # NHWC memory = channels_last
        wt = torch.from_dlpack(wf).contiguous(memory_format=torch.channels_last)
        bt = torch.from_dlpack(bias)
        with torch.no_grad():
            ref_t = torch.relu(F.conv2d(xt, wt, bias=bt, stride=st, padding=pad))
            ref = cp.from_dlpack(ref_t.permute(0, 2, 3, 1).contiguous())
            tms = _torch_events_ms(torch, lambda: F.conv2d(xt, wt, stride=st, padding=pad), 3, reps)

        def check_and_time(fn, tol, what):
            out = fn()
            err = _rel_l2(cp, out, ref)
            if not err <= tol:
                print(f"  !! {name} {what}: rel L2 vs torch {err:.2e} > {tol:.0e}", flush=True)
            return _events_ms(cp, fn, 3, reps), err

        ours = {True: {}, False: {}}
        errs = {}
        for precise in (True, False):
            for t in conv_tf32.tactics_for(precise):
                out = cp.empty((N, P, P, K), cp.float32)
                fn = (lambda t=t, out=out, precise=precise: conv_tf32.conv2d_tf32(
                    x4, w4, precise=precise, stride=st, padding=pad, scale=ones, bias=bias,
                    act="RELU", out=out, tactic=t))
                # tile names say the precision: 3xtf32_* / tf32_*
                ms, err = check_and_time(fn, TOL_PRECISE if precise else TOL_TF32, t.name)
                ours[precise][t.name] = ms
                errs[t.name] = err
        current = {}
        out = cp.empty((N, P, P, K), cp.float32)
        ms, errs["im2col_sgemm"] = check_and_time(
            lambda: conv_gemm.conv2d_im2col(xf, w_krsc, stride=st, padding=pad, scale=ones,
                                            bias=bias, act="RELU", out=out), TOL_PRECISE, "im2col")
        current["im2col_sgemm"] = ms
        if R == 1:
            w_kc = cp.ascontiguousarray(wf.reshape(K, C))
            ms, errs["cublas_1x1"] = check_and_time(
                lambda: conv_gemm.conv2d_1x1_cublas(xf, w_kc, stride=st, scale=ones, bias=bias,
                                                    act="RELU", out=out), TOL_PRECISE, "cublas_1x1")
            current["cublas_1x1"] = ms
        b3, b1, bc = (min(d, key=d.get) for d in (ours[True], ours[False], current))
        row = dict(layer=name, count=count, macs=macs, torch_ms=tms,
                   precise_ms=ours[True][b3], precise_tactic=b3,
                   tf32_ms=ours[False][b1], tf32_tactic=b1,
                   current_ms=current[bc], current_tactic=bc,
                   precise_all=ours[True], tf32_all=ours[False], current_all=current,
                   rel_l2_vs_torch=errs)
        rows.append(row)
        dump(rows, complete=False)

        def tf(ms):
            return 2 * macs / ms / 1e9
        print(f"{name:16s} torch {tms:7.3f} ms ({tf(tms):5.1f} TF/s) | current {current[bc]:7.3f} "
              f"({tf(current[bc]):5.1f}, {bc}) | 3xTF32 {ours[True][b3]:7.3f} ({tf(ours[True][b3]):5.1f}, "
              f"{b3}) | TF32 {ours[False][b1]:7.3f} ({tf(ours[False][b1]):5.1f}, {b1}) | "
              f"err 3x {errs[b3]:.1e} tf32 {errs[b1]:.1e}", flush=True)
        cp.get_default_memory_pool().free_all_blocks()
        torch.cuda.empty_cache()

    tot = {k: sum(r[f"{k}_ms"] * r["count"] for r in rows)
           for k in ("torch", "current", "precise", "tf32")}
    max_err = {"3xtf32": max(v for r in rows for k, v in r["rel_l2_vs_torch"].items() if k.startswith("3x")),
               "tf32": max(v for r in rows for k, v in r["rel_l2_vs_torch"].items() if k.startswith("tf32")),
               "current": max(v for r in rows for k, v in r["rel_l2_vs_torch"].items()
                              if not k.startswith(("3x", "tf32")))}
    dump(rows, complete=len(rows) == len(layers), totals_ms=tot, max_rel_l2_vs_torch=max_err)

    print(f"\nResNet-50 FP32 convolutions, batch {N}, {card}: layer ms (TFLOP/s), best tile per layer")
    print(f"{'layer':16s} {'n':>2s} | {'torch':>14s} | {'current':>14s} | {'3xTF32':>14s} | {'TF32':>14s}")
    for r in rows:
        cells = []
        for k in ("torch", "current", "precise", "tf32"):
            ms = r[f"{k}_ms"]
            cells.append(f"{ms:7.3f} ({2 * r['macs'] / ms / 1e9:4.0f})")
        print(f"{r['layer']:16s} {r['count']:>2d} | " + " | ".join(cells))
    print(f"{'total x count':19s} | {tot['torch']:14.3f} | {tot['current']:14.3f} | "
          f"{tot['precise']:14.3f} | {tot['tf32']:14.3f}")
    print(f"vs torch FP32: current {tot['torch'] / tot['current']:.2f}x, 3xTF32 "
          f"{tot['torch'] / tot['precise']:.2f}x, TF32 {tot['torch'] / tot['tf32']:.2f}x; "
          f"3xTF32 vs current {tot['current'] / tot['precise']:.2f}x; max rel L2 vs torch: "
          + ", ".join(f"{k} {v:.1e}" for k, v in max_err.items()))


if __name__ == "__main__":
    main()
