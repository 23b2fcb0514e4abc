"""Launch one INT8 wgmma convolution a few times (for a profiler to look at).

  python benchmarks/probe_shortk.py --layer s2_1x1_128_512 --tactic wgi8_128x128_s3 [--residual]

The layer comes from bench_kernels.RESNET50 at batch 256; int8 in, int8 out, bias, ReLU,
optionally an int8 residual (as the engine's bottleneck expand layers run).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_kernels import RESNET50  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", default="s2_1x1_128_512")
    ap.add_argument("--tactic", default="wgi8_128x128_s3")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--residual", action="store_true")
    ap.add_argument("--launches", type=int, default=3)
    args = ap.parse_args()
    import cupy as cp
    from kernels.gpu import conv_int8, conv_wgmma
    name, H, C, K, R, st, _ = next(l for l in RESNET50 if l[0] == args.layer)
    pad = R // 2
    P = (H + 2 * pad - R) // st + 1
    xq = cp.random.randint(-127, 128, (args.batch, H, H, C)).astype(cp.int8)
    wq = cp.random.randint(-127, 128, (K, R, R, C)).astype(cp.int8)
    s_w = cp.full(K, 1e-3, cp.float32)
    bias = cp.random.standard_normal(K, dtype=cp.float32)
    res = cp.random.randint(-127, 128, (args.batch, P, P, K)).astype(cp.int8) if args.residual else None
    out = cp.empty((args.batch, P, P, K), cp.int8)
    kw = dict(stride=st, padding=pad, bias=bias, act="RELU", s_out=np.float32(0.05), out=out)
    if res is not None:
        kw.update(residual=res, residual_scale=np.float32(0.05))
    for _ in range(args.launches):
        conv_wgmma.conv2d_wgmma_int8(xq, wq, np.float32(0.02), s_w, tactic=args.tactic, **kw)
    cp.cuda.Device().synchronize()
    ev = [cp.cuda.Event() for _ in range(2)]
    ev[0].record()
    for _ in range(10):
        conv_wgmma.conv2d_wgmma_int8(xq, wq, np.float32(0.02), s_w, tactic=args.tactic, **kw)
    ev[1].record(); ev[1].synchronize()
    print(f"{name} {args.tactic} residual={args.residual}: "
          f"{cp.cuda.get_elapsed_time(ev[0], ev[1]) / 10:.4f} ms")


if __name__ == "__main__":
    main()
