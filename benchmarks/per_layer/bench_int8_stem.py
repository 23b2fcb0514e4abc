"""The ResNet-50 stem (7x7/2, pad 3, 3 -> 64 channels, 224x224) from the float32 NCHW
network input, three ways, as the engine runs them (bias + ReLU, int8 out at a scale;
FP16: half out):

* INT8 now     nchw_to_nhwc_padded (float32) + quantize_nhwc scalar (C 3 -> 16) +
               conv2d_int8 (best of INT8_TACTICS): a 784-byte reduction;
* INT8 fast    quantize_nchw_to_nhwc (C 3 -> 4, one pass) + conv2d_int8_smallc (best of
               SMALLC_TACTICS): 208 bytes; also the vectorised quantize_nhwc alone;
* FP16 peer    nchw_to_nhwc_padded (half, C 3 -> 8) + conv2d_igemm_smallc (best of
               conv_igemm.SMALLC_TACTICS), what the FP16 engine runs; also with the generic
               elementwise reformat it used before reformat.cu's nchw_to_nhwc_pad;
* FP16 stem    nchw_to_nhwc_padded (half, C 3 -> 4) + conv2d_stem (conv_stem.cu, best of
               STEM_TILES), and conv2d_stem reading the float32 NCHW input directly (no
               reformat); both checked against the FP16 peer's output (rel L2) first.

Each step is timed on its own (CUDA events, median of --reps after 3 warm-ups) and the
totals are the sums of the best steps. The INT8 fast path's codes and outputs are
compared with the INT8 path's (they must be equal, bit for bit) before any timing.

    python3 benchmarks/per_layer/bench_int8_stem.py [--out DIR] [--batch 256] [--reps 20]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_kernels import _events_ms  # noqa: E402


def _best(cp, fns, reps):
    """{name: ms} of every candidate (a failing one scores infinity), and the best name."""
    ms = {}
    for name, fn in fns.items():
        try:
            ms[name] = _events_ms(cp, fn, 3, reps)
        except Exception as exc:                  # noqa: BLE001 -- report, keep timing the rest
            print(f"  {name}: failed ({type(exc).__name__}: {exc})", flush=True)
            ms[name] = float("inf")
    return ms, min(ms, key=ms.get)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()

    import cupy as cp
    from kernels import quantize as Q
    from kernels.gpu import conv_igemm, conv_int8, conv_int8_smallc, conv_stem, quantize_int8
    from kernels.gpu.reformat import generic_padded, nchw_to_nhwc_padded

    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    card = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    N, H, K = args.batch, 224, 64
    P = 112
    macs = N * P * P * K * 7 * 7 * 3
    rng = np.random.default_rng(0)
    x = cp.asarray(rng.standard_normal((N, 3, H, H), dtype=np.float32))
    w = rng.standard_normal((K, 3, 7, 7)).astype(np.float32) / np.sqrt(147)
    bias = cp.asarray(0.1 * rng.standard_normal(K).astype(np.float32))
    s_in = Q.scale_from_amax(float(cp.abs(x).max()))
    s_out = Q.scale_from_amax(4.0)
    wq16, s_w16 = conv_int8.pack_weight_int8_krsc(w)
    wsc, s_wsc = conv_int8_smallc.pack_weight_int8_smallc(w)
    w16 = conv_igemm.pack_weight_smallc(w.astype(np.float16))
    wstem = conv_stem.pack_weight_stem(w.astype(np.float16))
    ones = cp.ones(K, cp.float32)
    print(f"{card}; stem batch {N}", flush=True)

    # operands, made once (each step below is timed on its own)
    xf = nchw_to_nhwc_padded(x, np.float32, 1)
    xq16 = quantize_int8.quantize_nhwc(xf, s_in, c_pad_to=16)
    xq4 = quantize_int8.quantize_nchw_to_nhwc(x, s_in, c_pad_to=4)
    x16 = nchw_to_nhwc_padded(x, np.float16, 8, dedicated=True)
    x4 = nchw_to_nhwc_padded(x, np.float16, 4, dedicated=True)
    out8 = cp.empty((N, P, P, K), cp.int8)
    outh = cp.empty((N, P, P, K), cp.float16)

    # bit-exactness first: a fast path that differs is not a result
    exact = {"quantize_nchw": bool((xq4[..., :4] == xq16[..., :4]).all() and not xq4[..., 3].any()),
             "quantize_vec": bool((quantize_int8.quantize_nhwc(xf, s_in, c_pad_to=16, variant="vec")
                                   == xq16).all())}
    ref = conv_int8.conv2d_int8(xq16, wq16, s_in, s_w16, stride=2, padding=3, bias=bias,
                                act="RELU", s_out=s_out).get()
    for t in conv_int8_smallc.SMALLC_TACTICS:
        got = conv_int8_smallc.conv2d_int8_smallc(xq4, wsc, s_in, s_wsc, kernel_size=7, stride=2,
                                           padding=3, bias=bias, act="RELU", s_out=s_out,
                                           tactic=t).get()
        exact[t.name] = bool((got == ref).all())
    print("bit-exact vs the padded INT8 path:", exact, flush=True)
    peer = conv_igemm.conv2d_igemm_smallc(x16, w16, stride=2, padding=3, scale=ones, bias=bias,
                                          act="RELU", kernel_s=7).get().astype(np.float64)
    fp16_rel_l2 = {}
    for t in conv_stem.STEM_TILES:
        for layout, xin in (("NHWC", x4), ("NCHW", x)):
            got = conv_stem.conv2d_stem(xin, wstem, kernel_size=7, stride=2, padding=3, scale=ones,
                                        bias=bias, act="RELU", layout=layout, tactic=t).get()
            fp16_rel_l2[f"{t.name}_{layout}"] = float(np.linalg.norm(got - peer) / np.linalg.norm(peer))
    print("FP16 stem rel L2 vs conv2d_igemm_smallc:", fp16_rel_l2, flush=True)

    steps = {}
    steps["reformat_f32"] = _best(cp, {"nchw_to_nhwc_padded": lambda: nchw_to_nhwc_padded(
        x, np.float32, 1, out=xf)}, args.reps)
    steps["quantize_scalar_c16"] = _best(cp, {"scalar": lambda: quantize_int8.quantize_nhwc(
        xf, s_in, c_pad_to=16, out=xq16)}, args.reps)
    steps["quantize_vec_c16"] = _best(cp, {"vec": lambda: quantize_int8.quantize_nhwc(
        xf, s_in, c_pad_to=16, out=xq16, variant="vec")}, args.reps)
    steps["quantize_nchw_c4"] = _best(cp, {"nchw": lambda: quantize_int8.quantize_nchw_to_nhwc(
        x, s_in, c_pad_to=4, out=xq4)}, args.reps)
    steps["conv_int8_c16"] = _best(cp, {t.name: (lambda t=t: conv_int8.conv2d_int8(
        xq16, wq16, s_in, s_w16, stride=2, padding=3, bias=bias, act="RELU", s_out=s_out,
        out=out8, tactic=t)) for t in conv_int8.INT8_TACTICS}, args.reps)
    steps["conv_int8_smallc"] = _best(cp, {t.name: (lambda t=t: conv_int8_smallc.conv2d_int8_smallc(
        xq4, wsc, s_in, s_wsc, kernel_size=7, stride=2, padding=3, bias=bias, act="RELU",
        s_out=s_out, out=out8, tactic=t)) for t in conv_int8_smallc.SMALLC_TACTICS}, args.reps)
    steps["reformat_f16"] = _best(cp, {"nchw_to_nhwc_padded": lambda: nchw_to_nhwc_padded(
        x, np.float16, 8, out=x16, dedicated=True)}, args.reps)
    steps["conv_fp16_smallc"] = _best(cp, {t.name: (lambda t=t: conv_igemm.conv2d_igemm_smallc(
        x16, w16, stride=2, padding=3, scale=ones, bias=bias, act="RELU", out=outh, tactic=t,
        kernel_s=7)) for t in conv_igemm.SMALLC_TACTICS}, args.reps)
    steps["reformat_f16_generic"] = _best(cp, {"generic_padded": lambda: generic_padded(
        x, np.float16, 8, out=x16)}, args.reps)
    steps["reformat_f16_c4"] = _best(cp, {"nchw_to_nhwc_padded": lambda: nchw_to_nhwc_padded(
        x, np.float16, 4, out=x4, dedicated=True)}, args.reps)
    steps["conv_fp16_stem"] = _best(cp, {t.name: (lambda t=t: conv_stem.conv2d_stem(
        x4, wstem, kernel_size=7, stride=2, padding=3, scale=ones, bias=bias, act="RELU", out=outh,
        tactic=t)) for t in conv_stem.STEM_TILES}, args.reps)
    steps["conv_fp16_stem_nchw"] = _best(cp, {t.name: (lambda t=t: conv_stem.conv2d_stem(
        x, wstem, kernel_size=7, stride=2, padding=3, scale=ones, bias=bias, act="RELU", out=outh,
        layout="NCHW", tactic=t)) for t in conv_stem.STEM_TILES}, args.reps)

    def ms(step):
        all_ms, best = steps[step]
        return all_ms[best]
    paths = {
        "int8_now": ms("reformat_f32") + ms("quantize_scalar_c16") + ms("conv_int8_c16"),
        "int8_vec_quantize": ms("reformat_f32") + ms("quantize_vec_c16") + ms("conv_int8_c16"),
        "int8_fast": ms("quantize_nchw_c4") + ms("conv_int8_smallc"),
        "fp16_peer": ms("reformat_f16") + ms("conv_fp16_smallc"),
        "fp16_peer_generic_reformat": ms("reformat_f16_generic") + ms("conv_fp16_smallc"),
        "fp16_stem": ms("reformat_f16_c4") + ms("conv_fp16_stem"),
        "fp16_stem_direct": ms("conv_fp16_stem_nchw"),
    }
    print(f"\n{'step':22s} {'ms':>8s}  best (all)")
    for step, (all_ms, best) in steps.items():
        others = ", ".join(f"{k} {v:.3f}" for k, v in all_ms.items())
        print(f"{step:22s} {all_ms[best]:8.3f}  {best} ({others})")
    print(f"\nstem at batch {N} ({2 * macs / 1e12:.2f} true TOP per call), from float32 NCHW:")
    for name, total in paths.items():
        print(f"  {name:18s} {total:7.3f} ms  ({2 * macs / total / 1e9:5.0f} TOPS true)  "
              f"x{paths['int8_now'] / total:.2f} vs int8_now")
    with open(os.path.join(args.out, "bench_int8_stem.json"), "w") as f:
        json.dump(dict(card=card, date=datetime.datetime.now().isoformat(timespec="seconds"),
                       cupy=cp.__version__, batch=N, reps=args.reps, exact=exact,
                       fp16_stem_rel_l2=fp16_rel_l2,
                       steps={k: {"best": b, "ms": m} for k, (m, b) in steps.items()},
                       paths=paths), f, indent=1)


if __name__ == "__main__":
    main()
