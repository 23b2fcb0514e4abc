"""Convolution kernel microbenchmark on ResNet-50 layer shapes (FP16, NHWC).

Times every tensor-core implicit-GEMM tactic (kernels/gpu/conv_igemm.py) and the
cuBLAS 1x1 tactic (with its epilogue kernel) against
torch.nn.functional.conv2d on channels_last FP16 with cudnn.benchmark, at
batch 256 and 1, with CUDA events (median of many runs after warm-up), on
random data. Our kernels run the full fused epilogue (scale, bias, ReLU);
PyTorch runs the bare convolution, so the ratio favours PyTorch.

Also checks every tactic's output against PyTorch's on the same input
(rel L2, FP16 tolerance 1e-2) and sums the ResNet-50 convolution time
(layer time x count) for the best tactic per layer.

    python3 benchmarks/bench_kernels.py [--out DIR] [--batches 256 1] [--reps 20]
    python3 benchmarks/bench_kernels.py --new [--out DIR]

``--new`` times only the kernels added after run 2 against their predecessors
and PyTorch (bench_new): vectorised pooling / global average pool, split-K
for batch 1 and the FC head (timed as CUDA-graph replays of 20 calls, both
ours and PyTorch's, so launch overhead is out), and the small-C stem.
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

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
    ap.add_argument("--new", action="store_true", help="only the post-run-2 kernels (bench_new)")
    args = ap.parse_args()
    if args.new:
        return bench_new(args)

    import cupy as cp
    import torch
    import torch.nn.functional as F
    from kernels.gpu import conv_gemm, conv_igemm

    torch.backends.cudnn.benchmark = True
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    card = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    tactics = ([t for t in conv_igemm.ALL_TACTICS if t.name in args.tactics] if args.tactics
               else list(conv_igemm.IGEMM_TACTICS))

    def cp_events():
        a, b = cp.cuda.Event(), cp.cuda.Event()
        return _Ev(a, b, cp)

    t0 = time.time()
    conv_igemm.compile_all(tactics)
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
            x = conv_igemm.pad_channels(xc)
            w = conv_igemm.pack_weight_krsc(wc, "KCRS")
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
            cands = [(t.name, (lambda t=t: conv_igemm.conv2d_igemm(
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



# ---------------------------------------------------------------------------
# post-run-2 kernels: pooling, split-K, small-C stem
# ---------------------------------------------------------------------------
# CUDA-event medians of ``fn()`` on CuPy's / torch's current stream (the per-kernel scripts)
def _events_ms(cp, fn, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(cp.cuda.get_elapsed_time(a, b))
    return statistics.median(times)


def _torch_events_ms(torch, fn, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def _cp_graph_ms(cp, fn, calls=20, reps=10):
    """Per-call ms of ``fn`` captured ``calls`` times into one CuPy CUDA graph (private pool)."""
    pool = cp.cuda.MemoryPool()
    stream = cp.cuda.Stream(non_blocking=True)
    with cp.cuda.using_allocator(pool.malloc), stream:
        fn()
        stream.synchronize()
        stream.begin_capture()
        for _ in range(calls):
            fn()
        graph = stream.end_capture()
        graph.upload(stream)
        graph.launch(stream)
        times = []
        for _ in range(reps):
            a, b = cp.cuda.Event(), cp.cuda.Event()
            a.record(stream)
            graph.launch(stream)
            b.record(stream)
            b.synchronize()
            times.append(cp.cuda.get_elapsed_time(a, b) / calls)
    return statistics.median(times)


def _torch_graph_ms(torch, fn, calls=20, reps=10):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(calls):
            fn()
    g.replay()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / calls)
    return statistics.median(times)


def bench_new(args):
    import cupy as cp
    import torch
    import torch.nn.functional as F
    from kernels.gpu import conv_igemm, pooling

    torch.backends.cudnn.benchmark = True
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    card = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    cp.random.seed(0)
    ev = lambda: _Ev(cp.cuda.Event(), cp.cuda.Event(), cp)                     # noqa: E731
    tev = lambda: _Ev(torch.cuda.Event(enable_timing=True),                   # noqa: E731
                      torch.cuda.Event(enable_timing=True), None)
    rows = []

    def rel(a, ref):
        a = cp.asarray(a, cp.float32)
        ref = cp.asarray(ref, cp.float32)
        return float(cp.linalg.norm(a - ref) / max(float(cp.linalg.norm(ref)), 1e-30))

    def add(group, name, variant, ms, err=None, note=""):
        rows.append({"group": group, "name": name, "variant": variant, "ms": ms, "err": err,
                     "note": note})
        print(f"{group:8s} {name:26s} {variant:28s} {ms:9.4f} ms  err {err if err is not None else '-'} {note}",
              flush=True)

    def safe(group, name, variant, fn_time, fn_check=None, note=""):
        try:
            err = fn_check() if fn_check else None
            add(group, name, variant, fn_time(), err, note)
        except Exception as exc:                     # a failing candidate scores infinity
            print(f"{group} {name} {variant}: FAILED {type(exc).__name__}: {exc}", flush=True)
            add(group, name, variant, float("inf"), float("inf"))

    # ---- pooling ---------------------------------------------------------
    for N in (256, 1):
        x = cp.random.standard_normal((N, 112, 112, 64), dtype=cp.float32).astype(cp.float16)
        xt = torch.from_dlpack(x).permute(0, 3, 1, 2)
        ref = cp.from_dlpack(F.max_pool2d(xt, 3, 2, 1).permute(0, 2, 3, 1).contiguous())
        gb = (x.nbytes + ref.nbytes) / 1e9
        reps = 20 if N > 1 else 60
        for v in ("scalar", "vec"):
            f = lambda v=v: pooling.pool2d(x, "MAX", 3, stride=2, padding=1, variant=v)  # noqa: E731
            t = (lambda f=f: median_ms(f, ev, 3, reps)[0]) if N > 1 else (lambda f=f: _cp_graph_ms(cp, f))
            safe("maxpool", f"3x3s2 b{N} 112x112x64", v, t, lambda f=f: rel(f(), ref),
                 note=f"{gb:.3f} GB moved")
        tf = lambda: F.max_pool2d(xt, 3, 2, 1)                                    # noqa: E731
        safe("maxpool", f"3x3s2 b{N} 112x112x64", "torch",
             (lambda: median_ms(tf, tev, 3, reps)[0]) if N > 1 else (lambda: _torch_graph_ms(torch, tf)))
        del x, xt, ref
        x = cp.random.standard_normal((N, 7, 7, 2048), dtype=cp.float32).astype(cp.float16)
        xt = torch.from_dlpack(x).permute(0, 3, 1, 2)
        ref = x.astype(cp.float32).mean(axis=(1, 2))
        for v in ("scalar", "vec"):
            f = lambda v=v: pooling.global_avgpool(x, variant=v)                   # noqa: E731
            t = (lambda f=f: median_ms(f, ev, 3, reps)[0]) if N > 1 else (lambda f=f: _cp_graph_ms(cp, f))
            safe("gap", f"b{N} 7x7x2048", v, t, lambda f=f: rel(f(), ref))
        tf = lambda: xt.mean((2, 3))                                              # noqa: E731
        safe("gap", f"b{N} 7x7x2048", "torch",
             (lambda: median_ms(tf, tev, 3, reps)[0]) if N > 1 else (lambda: _torch_graph_ms(torch, tf)))
        del x, xt, ref
        cp.get_default_memory_pool().free_all_blocks()

    # ---- split-K: FC head and batch-1 layers (CUDA-graph replay, 20 calls) ------
    igemm = [t for t in conv_igemm.IGEMM_TACTICS if t.v2]
    small = [("fc_2048_1000 M256", 256, 1, 2048, 1000, 1, 1),
             ("fc_2048_1000 M1", 1, 1, 2048, 1000, 1, 1),
             ("s4_3x3_512 b1", 1, 7, 512, 512, 3, 1),
             ("s4_1x1_2048_512 b1", 1, 7, 2048, 512, 1, 1),
             ("s4_1x1_512_2048 b1", 1, 7, 512, 2048, 1, 1),
             ("s3_3x3_256 b1", 1, 14, 256, 256, 3, 1),
             ("s3_1x1_1024_256 b1", 1, 14, 1024, 256, 1, 1),
             ("s4_3x3s2_512 b1", 1, 14, 512, 512, 3, 2),
             ("s2_3x3_128 b1", 1, 28, 128, 128, 3, 1)]
    for name, N, H, C, K, R, st in small:
        pad = R // 2
        x = cp.random.standard_normal((N, H, H, C), dtype=cp.float32).astype(cp.float16)
        w = (cp.random.standard_normal((K, C, R, R), dtype=cp.float32) / np.sqrt(C * R * R)).astype(cp.float16)
        bias = cp.random.standard_normal(K, dtype=cp.float32)
        scale = cp.ones(K, cp.float32)
        xt = torch.from_dlpack(x).permute(0, 3, 1, 2)
        wt = torch.from_dlpack(w).contiguous(memory_format=torch.channels_last)
        bt = torch.from_dlpack(bias).half()
        ref = cp.from_dlpack(F.conv2d(xt, wt, bt, stride=st, padding=pad).permute(0, 2, 3, 1).contiguous())
        wk = conv_igemm.pack_weight_krsc(w, "KCRS")
        out = cp.empty(ref.shape, cp.float16)
        for t in igemm:
            f = lambda t=t: conv_igemm.conv2d_igemm(x, wk, stride=st, padding=pad, scale=scale, bias=bias,  # noqa: E731
                                                 out=out, tactic=t)
            safe("smallM", name, t.name, lambda f=f: _cp_graph_ms(cp, f), lambda f=f: rel(f(), ref))
        for t in conv_igemm.SPLITK_TACTICS:
            P = ref.shape[1]
            sp = conv_igemm.splitk_plan(N * P * P, K, R * R * C, t)
            f = lambda t=t: conv_igemm.conv2d_igemm_splitk(x, wk, stride=st, padding=pad, scale=scale,  # noqa: E731
                                                        bias=bias, out=out, tactic=t)
            safe("smallM", name, t.name, lambda f=f: _cp_graph_ms(cp, f), lambda f=f: rel(f(), ref),
                 note=f"splits {sp[0]}")
        if R == 1 and N * H * H > 0:
            x2, w2 = xt.permute(0, 2, 3, 1).reshape(-1, C), torch.from_dlpack(w).reshape(K, C)
            tf = lambda: F.linear(x2, w2, bt)                                         # noqa: E731
            safe("smallM", name, "torch linear (cuBLAS)", lambda: _torch_graph_ms(torch, tf))
        tf = lambda: F.conv2d(xt, wt, bt, stride=st, padding=pad)                     # noqa: E731
        safe("smallM", name, "torch conv2d", lambda: _torch_graph_ms(torch, tf))
        del x, w, xt, wt, ref, out

    # ---- stem: small-C vs the channel-padded igemm -----------------------
    for N in (256, 1):
        x3 = cp.random.standard_normal((N, 224, 224, 3), dtype=cp.float32).astype(cp.float16)
        w3 = (cp.random.standard_normal((64, 3, 7, 7), dtype=cp.float32) / np.sqrt(147)).astype(cp.float16)
        bias = cp.random.standard_normal(64, dtype=cp.float32)
        scale = cp.ones(64, cp.float32)
        xt = torch.from_dlpack(x3).permute(0, 3, 1, 2)
        wt = torch.from_dlpack(w3).contiguous(memory_format=torch.channels_last)
        bt = torch.from_dlpack(bias).half()
        ref = cp.from_dlpack(F.conv2d(xt, wt, bt, stride=2, padding=3).permute(0, 2, 3, 1).contiguous())
        x8 = conv_igemm.pad_channels(x3, 8)
        x4 = conv_igemm.pad_channels(x3, 4)
        w8 = conv_igemm.pack_weight_krsc(w3, "KCRS")
        wp = conv_igemm.pack_weight_smallc(w3, "KCRS")
        out = cp.empty(ref.shape, cp.float16)
        reps = 20 if N > 1 else 60
        timer = (lambda f: median_ms(f, ev, 3, reps)[0]) if N > 1 else (lambda f: _cp_graph_ms(cp, f))
        ttimer = (lambda f: median_ms(f, tev, 3, reps)[0]) if N > 1 else (lambda f: _torch_graph_ms(torch, f))
        for t in igemm:
            f = lambda t=t: conv_igemm.conv2d_igemm(x8, w8, stride=2, padding=3, scale=scale, bias=bias,  # noqa: E731
                                                 out=out, tactic=t)
            safe("stem", f"7x7s2 b{N}", t.name + " C8", lambda f=f: timer(f), lambda f=f: rel(f(), ref))
        for t in conv_igemm.SMALLC_TACTICS:
            for xs, tag in ((x8, "C8"), (x4, "C4")):
                f = lambda t=t, xs=xs: conv_igemm.conv2d_igemm_smallc(xs, wp, stride=2, padding=3,  # noqa: E731
                                                                   out_hw=(112, 112), scale=scale,
                                                                   bias=bias, out=out, tactic=t)
                safe("stem", f"7x7s2 b{N}", f"{t.name} {tag}", lambda f=f: timer(f), lambda f=f: rel(f(), ref))
        tf = lambda: F.conv2d(xt, wt, bt, stride=2, padding=3)                          # noqa: E731
        safe("stem", f"7x7s2 b{N}", "torch conv2d", lambda: ttimer(tf))
        del x3, x4, x8, xt, ref, out
        cp.get_default_memory_pool().free_all_blocks()
        torch.cuda.empty_cache()

    meta = {"card": card, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv), "cupy": cp.__version__, "torch": torch.__version__}
    with open(os.path.join(args.out, "bench_new.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    # ---- short table, printed last: best per (group, name) of old / new / torch
    print(f"\n# {card}  {meta['date']}  cupy {cp.__version__} torch {torch.__version__}")
    print(f"{'group':8s} {'case':26s} {'old best':>20s} {'new best':>36s} {'torch':>9s}  max err")
    keys = []
    for r in rows:
        if (r["group"], r["name"]) not in keys:
            keys.append((r["group"], r["name"]))
    for g, n in keys:
        rs = [r for r in rows if r["group"] == g and r["name"] == n]
        is_new = lambda v: v == "vec" or v.startswith(("igemmsk", "igemmsc"))   # noqa: E731
        old = [r for r in rs if not is_new(r["variant"]) and not r["variant"].startswith("torch")]
        new = [r for r in rs if is_new(r["variant"])]
        tor = [r for r in rs if r["variant"].startswith("torch")]
        bo = min(old, key=lambda r: r["ms"]) if old else None
        bn = min(new, key=lambda r: r["ms"]) if new else None
        bt = min(tor, key=lambda r: r["ms"]) if tor else None
        errs = [r["err"] for r in rs if r["err"] is not None]
        print(f"{g:8s} {n:26s} {bo['ms'] if bo else float('nan'):9.4f} {(bo['variant'][:10] if bo else ''):10s} "
              f"{bn['ms'] if bn else float('nan'):9.4f} {(bn['variant'] + ' ' + bn['note'])[:26]:26s} "
              f"{bt['ms'] if bt else float('nan'):9.4f}  {max(errs) if errs else float('nan'):.1e}")

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
