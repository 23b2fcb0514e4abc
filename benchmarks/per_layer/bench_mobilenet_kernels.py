"""MobileNetV2 kernel benchmark: depthwise 3x3 and 1x1 layers, FP16 NHWC.

Every depthwise and 1x1 layer shape of torchvision's MobileNetV2 (224x224
input) at batch 256 and 1:
  depthwise: conv2d_depthwise_v2 (new, fused bias + ReLU6) vs conv2d_depthwise
             (old scalar kernel, same epilogue) vs torch conv2d(groups=C) +
             clamp, channels_last FP16, cudnn.benchmark;
  1x1:       best of IGEMM_TACTICS_NARROW (new) vs best of the tiles the engine
             times today (IGEMM_TACTICS + IGEMM_TACTICS_LARGE; + SPLITK_TACTICS
             at batch 1) vs torch conv2d (with bias).
Timing: each candidate captured ``calls`` times into one CUDA graph (ours:
CuPy stream capture, private pool, preallocated output; torch:
torch.cuda.graph) and replayed; per-call median over the replays (CUDA
events), so Python launch overhead is out of both sides. Every candidate's
output is checked against torch's (rel L2 <= 1e-2) before it is timed.

Prints a table per batch (GB/s vs a 3 TB/s copy ceiling for depthwise,
TFLOP/s for 1x1) and the network sums (layer time x count).

    python3 benchmarks/bench_mobilenet_kernels.py [--out DIR] [--batches 256 1]
    python3 benchmarks/bench_mobilenet_kernels.py --precompile   # fill CuPy's disk cache in parallel
"""
from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

COPY_CEILING = 3.0e12   # bytes/s: the H100 device-to-device copy rate we hold kernels to

# (name, H_in, C, stride, count) -- 17 depthwise 3x3 layers, each with BN + ReLU6
DW_LAYERS = [
    ("dw32_112_s1", 112, 32, 1, 1),
    ("dw96_112_s2", 112, 96, 2, 1),
    ("dw144_56_s1", 56, 144, 1, 1),
    ("dw144_56_s2", 56, 144, 2, 1),
    ("dw192_28_s1", 28, 192, 1, 2),
    ("dw192_28_s2", 28, 192, 2, 1),
    ("dw384_14_s1", 14, 384, 1, 4),
    ("dw576_14_s1", 14, 576, 1, 2),
    ("dw576_14_s2", 14, 576, 2, 1),
    ("dw960_7_s1", 7, 960, 1, 3),
]
# (name, H, C, K, count) -- 1x1 stride-1 layers (expansion x6 with ReLU6, projection linear)
PW_LAYERS = [
    ("pw112_32_16", 112, 32, 16, 1),
    ("pw112_16_96", 112, 16, 96, 1),
    ("pw56_96_24", 56, 96, 24, 1),
    ("pw56_24_144", 56, 24, 144, 2),
    ("pw56_144_24", 56, 144, 24, 1),
    ("pw28_144_32", 28, 144, 32, 1),
    ("pw28_32_192", 28, 32, 192, 3),
    ("pw28_192_32", 28, 192, 32, 2),
    ("pw14_192_64", 14, 192, 64, 1),
    ("pw14_64_384", 14, 64, 384, 4),
    ("pw14_384_64", 14, 384, 64, 3),
    ("pw14_384_96", 14, 384, 96, 1),
    ("pw14_96_576", 14, 96, 576, 3),
    ("pw14_576_96", 14, 576, 96, 2),
    ("pw7_576_160", 7, 576, 160, 1),
    ("pw7_160_960", 7, 160, 960, 3),
    ("pw7_960_160", 7, 960, 160, 2),
    ("pw7_960_320", 7, 960, 320, 1),
    ("pw7_320_1280", 7, 320, 1280, 1),
]
assert sum(c for *_, c in DW_LAYERS) == 17


def _old_tiles(batch):
    from kernels.gpu import conv_igemm
    tiles = list(conv_igemm.IGEMM_TACTICS + conv_igemm.IGEMM_TACTICS_LARGE)
    return tiles + (list(conv_igemm.SPLITK_TACTICS) if batch == 1 else [])


def _compile_one(name):
    from kernels.gpu import conv_igemm
    from kernels.gpu.compile import get_function
    if name.startswith("dwconv_nhwc_v2<"):
        get_function("conv_dw.cu", name)
    else:
        conv_igemm.compile_all((conv_igemm.TACTICS_BY_NAME[name],))
    return name


# the depthwise instantiations the tests and this benchmark ask for
DW_NAMES = tuple(f"dwconv_nhwc_v2<{t},{wt},3,3,{sw},{qt}>"
                 for t, wt in (("half_t", "half_t"), ("half_t", "float"), ("float", "float"))
                 for sw in (0, 1, 2) for qt in (1, 2, 3, 4, 7, 8))


def precompile(workers=15):
    """Compile every igemm tile in parallel processes: CuPy's on-disk cache then
    serves the tests and the benchmark (NVRTC takes ~5 s per tile, serially)."""
    from kernels.gpu import conv_igemm
    names = sorted({t.name for t in _old_tiles(1) + list(conv_igemm.IGEMM_TACTICS_NARROW)})
    names += list(DW_NAMES)
    with mp.get_context("spawn").Pool(workers) as pool:
        for n in pool.imap_unordered(_compile_one, names):
            print("compiled", n, flush=True)


def _cp_graph_ms(cp, fn, calls, reps):
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
    del graph
    pool.free_all_blocks()
    return statistics.median(times)


def _torch_graph_ms(torch, fn, calls, reps):
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
    del g
    return statistics.median(times)


def _rel(cp, a, b):
    a = a.astype(cp.float32)
    b = b.astype(cp.float32)
    return float(cp.linalg.norm(a - b) / max(float(cp.linalg.norm(b)), 1e-30))


def bench_batch(N, args, results):
    import cupy as cp
    import torch
    import torch.nn.functional as F

    from kernels.gpu import conv_dw, conv_gemm, conv_igemm
    torch.backends.cudnn.benchmark = True
    calls, reps = (args.calls, args.reps) if N > 1 else (20, 10)
    ours = lambda f: _cp_graph_ms(cp, f, calls, reps)            # noqa: E731
    theirs = lambda f: _torch_graph_ms(torch, f, calls, reps)     # noqa: E731
    rng = cp.random.default_rng(7)
    rows = []

    # ---- depthwise ---------------------------------------------------------------
    for name, H, C, s, count in DW_LAYERS:
        P = (H + 2 - 3) // s + 1
        x = rng.standard_normal((N, H, H, C), dtype=cp.float32).astype(cp.float16)
        w = (rng.standard_normal((3, 3, C), dtype=cp.float32) / 3).astype(cp.float16)
        bias = rng.standard_normal(C, dtype=cp.float32)
        scale = cp.ones(C, cp.float32)
        w32 = w.astype(cp.float32)
        out = cp.empty((N, P, P, C), cp.float16)
        tx = torch.as_tensor(x, device="cuda").permute(0, 3, 1, 2)          # NCHW view, NHWC memory
        tw = torch.as_tensor(w, device="cuda").permute(2, 0, 1).unsqueeze(1).contiguous()
        tb = torch.as_tensor(bias, device="cuda").half()
        tf = lambda: F.conv2d(tx, tw, tb, stride=s, padding=1, groups=C).clamp_(0, 6)  # noqa: E731
        ref = cp.asarray(tf().permute(0, 2, 3, 1).contiguous())
        kw = dict(stride=s, padding=1, scale=scale, bias=bias, act="CLIP", alpha=0.0, beta=6.0,
                  out=out)
        cands = {"old dwconv_nhwc": lambda: conv_gemm.conv2d_depthwise(x, w32, **kw)}
        for qt in sorted({conv_dw.DEFAULT_Q_TILE, *conv_dw.Q_TILES} | ({7} if s == 1 else set())):
            cands[f"v2 q{qt}"] = (lambda qt=qt: conv_dw.conv2d_depthwise_v2(x, w, q_tile=qt, **kw))
        row = {"kind": "dw", "layer": name, "count": count, "N": N,
               "bytes": (N * H * H * C + N * P * P * C) * 2, "t": {}, "err": {}}
        row["t"]["torch"] = theirs(tf)
        for cname, f in cands.items():
            out.fill(cp.nan)
            f()
            row["err"][cname] = _rel(cp, out, ref)
            row["t"][cname] = ours(f) if row["err"][cname] <= 1e-2 else float("inf")
        rows.append(row)
        print(f"N={N} {name}: " + ", ".join(f"{k} {v*1e3:.1f}us" for k, v in row["t"].items()),
              flush=True)

    # ---- 1x1 -----------------------------------------------------------------------
    for name, H, C, K, count in PW_LAYERS:
        x = rng.standard_normal((N, H, H, C), dtype=cp.float32).astype(cp.float16)
        w = (rng.standard_normal((K, 1, 1, C), dtype=cp.float32) / C ** 0.5).astype(cp.float16)
        bias = rng.standard_normal(K, dtype=cp.float32)
        scale = cp.ones(K, cp.float32)
        out = cp.empty((N, H, H, K), cp.float16)
        tx = torch.as_tensor(x, device="cuda").permute(0, 3, 1, 2)
        tw = torch.as_tensor(w, device="cuda").permute(0, 3, 1, 2).contiguous(
            memory_format=torch.channels_last)
        tb = torch.as_tensor(bias, device="cuda").half()
        tf = lambda: F.conv2d(tx, tw, tb)   # noqa: E731
        ref = cp.asarray(tf().permute(0, 2, 3, 1).contiguous())
        row = {"kind": "pw", "layer": name, "count": count, "N": N,
               "flop": 2.0 * N * H * H * C * K, "t": {}, "err": {}}
        row["t"]["torch"] = theirs(tf)
        for group, tiles in (("old", _old_tiles(N)), ("new", conv_igemm.IGEMM_TACTICS_NARROW)):
            for t in tiles:
                fn = conv_igemm.conv2d_igemm_splitk if t.kind == "splitk" else conv_igemm.conv2d_igemm
                f = (lambda t=t, fn=fn: fn(x, w, scale=scale, bias=bias, out=out, tactic=t))
                key = f"{group} {t.name}"
                try:
                    out.fill(cp.nan)
                    f()
                    row["err"][key] = _rel(cp, out, ref)
                    row["t"][key] = ours(f) if row["err"][key] <= 1e-2 else float("inf")
                except Exception as exc:      # a failing candidate scores infinity
                    row["err"][key] = repr(exc)[:200]
                    row["t"][key] = float("inf")
        rows.append(row)
        best = lambda g: min((v, k) for k, v in row["t"].items() if k.startswith(g))  # noqa: E731
        print(f"N={N} {name}: torch {row['t']['torch']*1e3:.1f}us old {best('old')[0]*1e3:.1f}us "
              f"({best('old')[1][4:]}) new {best('new')[0]*1e3:.1f}us ({best('new')[1][4:]})",
              flush=True)
    results[str(N)] = rows
    return rows


def _table(N, rows):
    lines = [f"\n### batch {N} (us per layer; x count in the sums)",
             "| layer | n | torch | old | new (best) | new/old | torch/new | new GB/s or TF/s |",
             "|---|---|---|---|---|---|---|---|"]
    sums = {"torch": 0.0, "old": 0.0, "new": 0.0, "best": 0.0}
    cls = {}
    for r in rows:
        t = r["t"]
        if r["kind"] == "dw":
            old = (t["old dwconv_nhwc"], "dwconv_nhwc")
            new = min((v, k) for k, v in t.items() if k.startswith("v2"))
            rate = f"{r['bytes'] / (new[0] * 1e-3) / 1e9:.0f} GB/s ({r['bytes'] / COPY_CEILING * 1e6:.1f} us @3TB/s)"
        else:
            old = min((v, k[4:]) for k, v in t.items() if k.startswith("old"))
            new = min((v, k[4:]) for k, v in t.items() if k.startswith("new"))
            rate = f"{r['flop'] / (new[0] * 1e-3) / 1e12:.1f} TF/s"
        best = min(old[0], new[0])
        c = r["count"]
        for k, v in (("torch", t["torch"]), ("old", old[0]), ("new", new[0]), ("best", best)):
            sums[k] += c * v
            cls.setdefault(r["kind"], {}).setdefault(k, 0.0)
            cls[r["kind"]][k] += c * v
        lines.append(f"| {r['layer']} | {c} | {t['torch']*1e3:.1f} | {old[0]*1e3:.1f} | "
                     f"{new[0]*1e3:.1f} ({new[1]}) | {new[0]/old[0]:.2f} | {t['torch']/new[0]:.2f} | {rate} |")
    for kind, s in cls.items():
        lines.append(f"| **sum {kind}** | | {s['torch']:.3f} ms | {s['old']:.3f} ms | {s['new']:.3f} ms | "
                     f"{s['new']/s['old']:.2f} | {s['torch']/s['new']:.2f} | min(old,new) {s['best']:.3f} ms |")
    lines.append(f"| **sum all** | | {sums['torch']:.3f} ms | {sums['old']:.3f} ms | {sums['new']:.3f} ms | "
                 f"{sums['new']/sums['old']:.2f} | {sums['torch']/sums['new']:.2f} | min(old,new) {sums['best']:.3f} ms |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 1])
    ap.add_argument("--calls", type=int, default=5, help="graph calls per replay at batch > 1")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--precompile", action="store_true")
    args = ap.parse_args()
    if args.precompile:
        precompile()
        return
    import cupy as cp
    import torch
    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
               "device": cp.cuda.runtime.getDeviceProperties(0)["name"].decode(),
               "cupy": cp.__version__, "torch": torch.__version__}
    tables = []
    for N in args.batches:
        rows = bench_batch(N, args, results)
        tables.append(_table(N, rows))
        with open(os.path.join(args.out, "bench_mobilenet.json"), "w") as f:
            json.dump(results, f, indent=1, default=str)
    text = f"{results['device']} {results['date']} cupy {results['cupy']} torch {results['torch']}" + \
        "".join(tables)
    with open(os.path.join(args.out, "bench_mobilenet_table.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
