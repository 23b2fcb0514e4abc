"""Attention microbenchmark at BERT-base shapes (12 heads, head dim 64, seq 128, FP16).

Per batch: the flash kernel's tiles (kernels/gpu/attention.py) on packed
(N, S, H*D) projections read and written in place, against what the engine ran
before attention_fusion (the heads split as three copies, our GEMM with the scale
in alpha, our softmax kernel, our GEMM, the merge copy) and, where torch is
installed, torch's scaled_dot_product_attention on (N, H, S, D). Each timed call
is 20 back-to-back launches (CUDA events, median), reported per call; every
output is checked against the float64 reference (rel L2).

    python benchmarks/per_layer/bench_attention.py [--batches 1 32] [--reps 30]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

HEADS, D, SEQ, INNER = 12, 64, 128, 20


def median_ms(fn, cp, reps):
    for _ in range(3):
        fn()
    stream = cp.cuda.get_current_stream()
    times = []
    for _ in range(reps):
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record(stream)
        for _ in range(INNER):
            fn()
        b.record(stream)
        b.synchronize()
        times.append(cp.cuda.get_elapsed_time(a, b) / INNER)
    return float(np.median(times))


def reference(q, k, v, scale):
    q, k, v = (np.asarray(x, np.float64).reshape(x.shape[0], SEQ, HEADS, D).transpose(0, 2, 1, 3)
               for x in (q, k, v))
    s = scale * q @ k.transpose(0, 1, 3, 2)
    e = np.exp(s - s.max(-1, keepdims=True))
    out = (e / e.sum(-1, keepdims=True)) @ v
    return out.transpose(0, 2, 1, 3).reshape(q.shape[0], SEQ, HEADS * D)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args(argv)
    import cupy as cp

    from kernels.attention import merge_heads, split_heads
    from kernels.gpu import matmul as mm
    from kernels.gpu.attention import TILES, attention
    from kernels.gpu.softmax import softmax
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = None
    scale = 1 / np.sqrt(D)
    print(f"{'batch':>5} {'system':<28} {'ms':>8} {'rel_l2':>9}")
    for n in args.batches:
        rng = np.random.default_rng(n)
        host = [rng.standard_normal((n, SEQ, HEADS * D)).astype(np.float16) for _ in range(3)]
        ref = reference(*host, scale)
        q, k, v = (cp.asarray(x) for x in host)
        y = cp.empty((n, SEQ, HEADS * D), cp.float16)
        runs = {}
        for t in TILES:
            runs[f"flash.{t.name}"] = (lambda t=t: attention(*(split_heads(x, HEADS) for x in (q, k, v)),
                                                             scale, out=split_heads(y, HEADS), tile=t), y)

        def unfused():
            qh, kh, vh = (cp.ascontiguousarray(split_heads(x, HEADS)) for x in (q, k, v))
            s = mm.matmul(qh, kh, op_b="TRANSPOSE", alpha=scale, out_dtype=np.float16)
            return cp.ascontiguousarray(merge_heads(mm.matmul(softmax(s, -1), vh, out_dtype=np.float16)))
        runs["unfused (before the pass)"] = (unfused, None)
        if torch is not None:
            tq, tk, tv = (torch.as_tensor(x, device="cuda").view(n, SEQ, HEADS, D).transpose(1, 2)
                          for x in host)

            def sdpa():
                return F.scaled_dot_product_attention(tq, tk, tv).transpose(1, 2).reshape(n, SEQ, -1)
            runs["torch sdpa (+ merge)"] = (sdpa, None)
        for name, (fn, out) in runs.items():
            got = fn()
            got = out if out is not None else got
            got = got.cpu().numpy() if hasattr(got, "cpu") else cp.asnumpy(got)
            err = float(np.linalg.norm(got.astype(np.float64) - ref) / np.linalg.norm(ref))
            ms = median_ms(fn, cp, args.reps)
            print(f"{n:>5} {name:<28} {ms:8.4f} {err:9.2e}")


if __name__ == "__main__":
    main()
