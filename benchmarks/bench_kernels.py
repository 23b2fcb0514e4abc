"""Convolution kernel microbenchmark on ResNet-50 layer shapes (FP16, NHWC).

Times every tensor-core implicit-GEMM tactic (kernels/gpu/conv_tc.py) and the
cuBLAS 1x1 tactic (with its epilogue kernel) against
torch.nn.functional.conv2d on channels_last FP16 with cudnn.benchmark, at
batch 256 and 1, with CUDA events (median of many runs after warm-up), on
random data. Our kernels run the full fused epilogue (scale, bias, ReLU);
PyTorch runs the bare convolution, so the ratio favours PyTorch.

Also checks every tactic's output against PyTorch's on the same input
(rel L2, FP16 tolerance 1e-2) and sums the ResNet-50 convolution time
(layer time x count) for the best tactic per layer.

    python3 benchmarks/bench_kernels.py [--out DIR] [--batches 256 1] [--reps 20]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (name, H_in, C, K, R, stride, count in ResNet-50 v1.5)
RESNET50 = [
    ("stem7x7", 224, 3, 64, 7, 2, 1),
    ("s1_1x1_64_64", 56, 64, 64, 1, 1, 1),
    ("s1_3x3_64", 56, 64, 64, 3, 1, 3),
    ("s1_1x1_64_256", 56, 64, 256, 1, 1, 4),
    ("s1_1x1_256_64", 56, 256, 64, 1, 1, 2),
    ("s2_1x1_256_128", 56, 256, 128, 1, 1, 1),
    ("s2_3x3s2_128", 56, 128, 128, 3, 2, 1),
    ("s2_1x1_128_512", 28, 128, 512, 1, 1, 4),
    ("s2_ds_256_512", 56, 256, 512, 1, 2, 1),
    ("s2_1x1_512_128", 28, 512, 128, 1, 1, 3),
    ("s2_3x3_128", 28, 128, 128, 3, 1, 3),
    ("s3_1x1_512_256", 28, 512, 256, 1, 1, 1),
    ("s3_3x3s2_256", 28, 256, 256, 3, 2, 1),
    ("s3_1x1_256_1024", 14, 256, 1024, 1, 1, 6),
    ("s3_ds_512_1024", 28, 512, 1024, 1, 2, 1),
    ("s3_1x1_1024_256", 14, 1024, 256, 1, 1, 5),
    ("s3_3x3_256", 14, 256, 256, 3, 1, 5),
    ("s4_1x1_1024_512", 14, 1024, 512, 1, 1, 1),
    ("s4_3x3s2_512", 14, 512, 512, 3, 2, 1),
    ("s4_1x1_512_2048", 7, 512, 2048, 1, 1, 3),
    ("s4_ds_1024_2048", 14, 1024, 2048, 1, 2, 1),
    ("s4_1x1_2048_512", 7, 2048, 512, 1, 1, 2),
    ("s4_3x3_512", 7, 512, 512, 3, 1, 2),
]


def median_ms(fn, events_mod, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        a, b = events_mod()
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed(b))
    return statistics.median(times), min(times), max(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 1])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--tactics", nargs="*", default=None)
    args = ap.parse_args()

    import cupy as cp
    import torch
    import torch.nn.functional as F
    from kernels.gpu import conv_gemm, conv_tc

    torch.backends.cudnn.benchmark = True
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    card = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    tactics = [t for t in conv_tc.IGEMM_TACTICS if not args.tactics or t.name in args.tactics]

    def cp_events():
        a, b = cp.cuda.Event(), cp.cuda.Event()
        return _Ev(a, b, cp)

    t0 = time.time()
    conv_tc.compile_all(tactics)
    compile_s = time.time() - t0

    cp.random.seed(0)
    rows = []
    for N in args.batches:
        reps = args.reps if N > 8 else 3 * args.reps
        for name, H, C, K, R, st, count in RESNET50:
            pad = R // 2
            Cp = -(-C // 8) * 8
            # random data made on the device (host RNG would dominate the run)
            xc = cp.random.standard_normal((N, H, H, C), dtype=cp.float32).astype(cp.float16)
            wc = (cp.random.standard_normal((K, C, R, R), dtype=cp.float32)
                  / np.sqrt(C * R * R)).astype(cp.float16)
            x_t = torch.from_dlpack(xc).permute(0, 3, 1, 2)                   # NCHW view, channels_last
            w_t = torch.from_dlpack(wc).contiguous(memory_format=torch.channels_last)
            x = conv_tc.pad_channels(xc)
            w = conv_tc.pack_weight_krsc(wc, "KCRS")
            scale = cp.ones(K, cp.float32)
            bias = cp.zeros(K, cp.float32)
            P = (H + 2 * pad - R) // st + 1
            flops = 2.0 * N * P * P * K * C * R * R

            ref = F.conv2d(x_t, w_t, stride=st, padding=pad)                # N,K,P,Q channels_last
            ref_relu = cp.maximum(cp.from_dlpack(ref.permute(0, 2, 3, 1).contiguous()).astype(cp.float32), 0)
            ref_norm = float(cp.linalg.norm(ref_relu))
            ms_t = median_ms(lambda: F.conv2d(x_t, w_t, stride=st, padding=pad),
                             lambda: _Ev(torch.cuda.Event(enable_timing=True),
                                         torch.cuda.Event(enable_timing=True), None),
                             3, reps)[0]
            res = {"batch": N, "layer": name, "count": count, "gflop": flops / 1e9,
                   "torch_ms": ms_t, "tactics": {}, "err": {}}
            out = cp.empty((N, P, P, K), cp.float16)
            cands = [(t.name, (lambda t=t: conv_tc.conv2d_igemm(
                x, w, stride=st, padding=pad, scale=scale, bias=bias, act="RELU", out=out, tactic=t)))
                for t in tactics]
            if R == 1:
                w2 = w.reshape(K, -1)
                cands.append(("cublas_1x1", lambda: conv_gemm.conv2d_1x1_cublas(
                    x, w2, stride=st, scale=scale, bias=bias, act="RELU", out=out)))
            for tname, fn in cands:
                try:
                    out.fill(np.nan)
                    fn()
                    got = out.astype(cp.float32)
                    err = float(cp.linalg.norm(got - ref_relu)) / ref_norm
                    if not bool(cp.isfinite(got).all()):
                        err = float("inf")
                    del got
                    ms = median_ms(fn, cp_events, 3, reps)[0]
                except Exception as exc:  # a failing tactic scores infinity
                    print(f"  {name} b{N} {tname}: FAILED {type(exc).__name__}: {exc}", flush=True)
                    ms, err = float("inf"), float("inf")
                res["tactics"][tname] = ms
                res["err"][tname] = err
            best = min(res["tactics"], key=res["tactics"].get)
            res["best"] = best
            res["best_ms"] = res["tactics"][best]
            res["tflops_best"] = flops / res["best_ms"] / 1e9
            res["tflops_torch"] = flops / ms_t / 1e9
            rows.append(res)
            print(f"b{N:<4d} {name:18s} torch {ms_t:8.4f} ms {res['tflops_torch']:6.1f} TF/s | "
                  f"best {best:26s} {res['best_ms']:8.4f} ms {res['tflops_best']:6.1f} TF/s | "
                  f"max err {max(e for e in res['err'].values()):.2e}", flush=True)
            del x_t, w_t, ref, ref_relu, x, w, out, xc, wc
            cp.get_default_memory_pool().free_all_blocks()
            torch.cuda.empty_cache()

    meta = {"card": card, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv), "cupy": cp.__version__, "torch": torch.__version__,
            "compile_s": compile_s}
    with open(os.path.join(args.out, "bench_kernels.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)

    # ---- short table, printed last ---------------------------------------
    print(f"\n# {card}  {meta['date']}  cupy {cp.__version__} torch {torch.__version__}  "
          f"compile {compile_s:.1f}s")
    names = [t.name for t in tactics] + ["cublas_1x1"]
    short = {n: n.replace("igemm_", "").replace("_s", "s") for n in names}
    for N in args.batches:
        sel = [r for r in rows if r["batch"] == N]
        print(f"\nbatch {N}: ms per layer (median); ratio = torch / ours-best (>1: ours faster)")
        print(f"{'layer':18s} {'torch':>8s} " + " ".join(f"{short[n][:13]:>13s}" for n in names) + "  ratio  TF/s")
        tot_t = tot_b = 0.0
        for r in sel:
            cells = " ".join(f"{r['tactics'].get(n, float('nan')):13.4f}" for n in names)
            ratio = r["torch_ms"] / r["best_ms"]
            print(f"{r['layer']:18s} {r['torch_ms']:8.4f} {cells} {ratio:6.2f} {r['tflops_best']:5.0f}")
            tot_t += r["torch_ms"] * r["count"]
            tot_b += r["best_ms"] * r["count"]
        print(f"ResNet-50 conv total (x count): torch {tot_t:.3f} ms, ours {tot_b:.3f} ms, "
              f"ratio {tot_t / tot_b:.2f}; conv-only img/s: torch {N * 1000 / tot_t:.0f}, ours {N * 1000 / tot_b:.0f}")


class _Ev:
    """Start/stop event pair with one interface for CuPy and torch events."""

    def __init__(self, a, b, cp):
        self.a, self.b, self.cp = a, b, cp

    def __iter__(self):
        return iter((_EvOne(self.a, self, 0), _EvOne(self.b, self, 1)))


class _EvOne:
    def __init__(self, ev, pair, i):
        self.ev, self.pair, self.i = ev, pair, i

    def record(self):
        self.ev.record()

    def synchronize(self):
        self.ev.synchronize()

    def elapsed(self, other):
        if self.pair.cp is not None:
            return self.pair.cp.cuda.get_elapsed_time(self.ev, other.ev)
        return self.ev.elapsed_time(other.ev)


if __name__ == "__main__":
    main()
