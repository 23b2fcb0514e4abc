"""INT8 convolution benchmark on ResNet-50 layer shapes: ours INT8 vs ours FP16 vs cuDNN FP16.

Per layer (benchmarks/bench_kernels.py's RESNET50 list, batch 256 and 1):

* ours INT8  kernels.gpu.conv_int8.conv2d_int8, every INT8_TACTICS tile, int8 in,
             int8 out (bias + ReLU + requantise fused); C padded to 16 (stem 3 -> 16);
* ours FP16  kernels.gpu.conv_igemm.conv2d_igemm, V2 tiles + the large V2 tiles
             (+ the small-C stem kernel on the stem), scale + bias + ReLU, fp16 out;
* torch FP16 F.conv2d, channels_last, cudnn.benchmark, bare convolution.

The best tactic per layer counts. Batch 256: CUDA events around each call, median
of ``--reps`` after warm-up. Batch 1: one CUDA graph of 20 calls replayed 10 times
(ours: CuPy stream capture; torch: torch.cuda.graph), per-call median, so Python
launch overhead is out of all three. TOPS use the true (unpadded) MACs x 2.
ResNet-50 total = sum of layer time x count (convolutions only).

    python3 benchmarks/bench_int8.py [--out DIR] [--batches 256 1] [--reps 20]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_kernels import (RESNET50, _cp_graph_ms, _events_ms,  # noqa: E402
                           _torch_events_ms, _torch_graph_ms)

FP16_TACTIC_NAMES = ("igemm2_128x128x32_w2x4_s4", "igemm2_128x64x32_w2x2_s4",
                     "igemm2_256x128x32_w4x2_s3", "igemm2_128x256x32_w2x4_s3",
                     "igemm2_128x128x64_w2x4_s4")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 1])
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()

    import cupy as cp
    import torch
    import torch.nn.functional as F
    from kernels.gpu import conv_igemm, conv_int8, quantize_int8

    torch.backends.cudnn.benchmark = True
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    card = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    fp16_tactics = [conv_igemm.TACTICS_BY_NAME[n] for n in FP16_TACTIC_NAMES]
    t0 = time.time()
    conv_int8.compile_all()
    conv_igemm.compile_all(fp16_tactics)
    conv_igemm.compile_all(conv_igemm.SMALLC_TACTICS[:1])
    compile_s = time.time() - t0
    print(f"{card}; compile {compile_s:.1f} s", flush=True)

    cp.random.seed(0)
    rows = []
    for N in args.batches:
        graph = N <= 8
        for name, H, C, K, R, st, count in RESNET50:
            pad = R // 2
            P = (H + 2 * pad - R) // st + 1
            macs = N * P * P * K * R * R * C
            xf = cp.random.standard_normal((N, H, H, C), dtype=cp.float32)
            wf = (cp.random.standard_normal((K, C, R, R), dtype=cp.float32) / np.sqrt(C * R * R))
            bias = cp.random.standard_normal(K, dtype=cp.float32) * 0.1
            # INT8 operands
            s_in = np.float32(float(cp.abs(xf).max())) / np.float32(127)
            xq = quantize_int8.quantize_nhwc(xf, s_in, c_pad_to=16)
            wq, s_w = conv_int8.pack_weight_int8_krsc(wf)
            s_out = np.float32(4.0) / np.float32(127)
            # FP16 operands
            x16 = conv_igemm.pad_channels(xf.astype(cp.float16), 8)
            w16 = conv_igemm.pack_weight_krsc(wf.astype(cp.float16))
            ones = cp.ones(K, cp.float32)

            def timer(fn):
                return _cp_graph_ms(cp, fn) if graph else _events_ms(cp, fn, 3, args.reps)

            i8 = {}
            for t in conv_int8.INT8_TACTICS:
                out = cp.empty((N, P, P, K), cp.int8)
                fn = (lambda t=t, out=out: conv_int8.conv2d_int8(
                    xq, wq, s_in, s_w, stride=st, padding=pad, bias=bias, act="RELU",
                    s_out=s_out, out=out, tactic=t))
                i8[t.name] = timer(fn)
            f16 = {}
            for t in fp16_tactics:
                out = cp.empty((N, P, P, K), cp.float16)
                fn = (lambda t=t, out=out: conv_igemm.conv2d_igemm(
                    x16, w16, stride=st, padding=pad, scale=ones, bias=bias, act="RELU",
                    out=out, tactic=t))
                f16[t.name] = timer(fn)
            if C <= 4:
                wsc = conv_igemm.pack_weight_smallc(wf.astype(cp.float16))
                out = cp.empty((N, P, P, K), cp.float16)
                t = conv_igemm.SMALLC_TACTICS[0]
                f16[t.name] = timer(lambda: conv_igemm.conv2d_igemm_smallc(
                    x16, wsc, stride=st, padding=pad, scale=ones, bias=bias, act="RELU",
                    out=out, tactic=t, kernel_s=R))
            # torch FP16 channels_last
            xt = torch.from_dlpack(x16[..., :C].copy()).permute(0, 3, 1, 2)
            wt = torch.from_dlpack(wf.astype(cp.float16)).contiguous(memory_format=torch.channels_last)
            tfn = (lambda: F.conv2d(xt, wt, stride=st, padding=pad))
            tms = (_torch_graph_ms(torch, tfn) if graph
                   else _torch_events_ms(torch, tfn, 3, args.reps))
            bi8 = min(i8, key=i8.get)
            bf16 = min(f16, key=f16.get)
            row = dict(batch=N, layer=name, count=count, macs=macs,
                       int8_ms=i8[bi8], int8_tactic=bi8, fp16_ms=f16[bf16], fp16_tactic=bf16,
                       torch_ms=tms, int8_all=i8, fp16_all=f16)
            rows.append(row)
            print(f"b{N:<3d} {name:18s} int8 {i8[bi8]:8.4f} ms ({2 * macs / i8[bi8] / 1e9:6.0f} TOPS, "
                  f"{bi8:24s}) fp16 {f16[bf16]:8.4f} ({2 * macs / f16[bf16] / 1e9:5.0f} TF/s, {bf16:26s}) "
                  f"torch {tms:8.4f} ({2 * macs / tms / 1e9:5.0f})  int8/fp16 x{f16[bf16] / i8[bi8]:.2f}",
                  flush=True)
            cp.get_default_memory_pool().free_all_blocks()

    summary = []
    for N in args.batches:
        rs = [r for r in rows if r["batch"] == N]
        ti8 = sum(r["int8_ms"] * r["count"] for r in rs)
        tf16 = sum(r["fp16_ms"] * r["count"] for r in rs)
        tt = sum(r["torch_ms"] * r["count"] for r in rs)
        # per layer the faster of our INT8 and FP16 (the builder's choice by timing)
        tmix = sum(min(r["int8_ms"], r["fp16_ms"]) * r["count"] for r in rs)
        summary.append(dict(batch=N, int8_ms=ti8, fp16_ms=tf16, torch_ms=tt, mixed_ms=tmix))
    with open(os.path.join(args.out, "bench_int8.json"), "w") as f:
        json.dump(dict(card=card, date=datetime.datetime.now().isoformat(timespec="seconds"),
                       cupy=cp.__version__, torch=torch.__version__, compile_s=compile_s,
                       rows=rows, summary=summary), f, indent=1)
    print("\nResNet-50 convolutions, sum of layer time x count (best tactic per layer):")
    print(f"{'batch':>5} | {'ours INT8 ms':>12} | {'ours FP16 ms':>12} | {'torch FP16 ms':>13} | "
          f"{'INT8/FP16':>9} | {'INT8/torch':>10} | INT8 conv img/s | best-of INT8/FP16 per layer ms (vs FP16)")
    for s in summary:
        print(f"{s['batch']:>5} | {s['int8_ms']:12.3f} | {s['fp16_ms']:12.3f} | {s['torch_ms']:13.3f} | "
              f"{s['fp16_ms'] / s['int8_ms']:8.2f}x | {s['torch_ms'] / s['int8_ms']:9.2f}x | "
              f"{s['batch'] * 1000 / s['int8_ms']:15.0f} | {s['mixed_ms']:.3f} ({s['fp16_ms'] / s['mixed_ms']:.2f}x)")


if __name__ == "__main__":
    main()
