"""Probe (not kept): is ResNet-50's stage-1 expand layer (b256, 56x56, 64 -> 256 + int8 residual)
bound by DRAM, and does its speed depend on the data? H100 device call."""
import cupy as cp
import numpy as np
import torch

from benchmarks.layers import ConvCase, FAMILIES, RESNET50
from benchmarks.models import graph_ms, median_ms

M = 256 * 56 * 56
src = r'''
extern "C" __global__ void stream(const int4* x, const int4* r, int4* y, long long M) {
    long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    for (; t < M * 16; t += (long long)gridDim.x * blockDim.x) {
        long long m = t >> 4; int j = t & 15;
        int4 a = r[t], b = x[m * 4 + (j & 3)];
        a.x ^= b.x; a.y ^= b.y; a.z ^= b.z; a.w ^= b.w;
        y[t] = a;
    }
}
extern "C" __global__ void wonly(int4* y, long long n) {
    long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    for (; t < n; t += (long long)gridDim.x * blockDim.x) y[t] = make_int4(t, 1, 2, 3);
}
extern "C" __global__ void ronly(const int4* r, int4* y, long long n) {
    long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    int acc = 0;
    for (; t < n; t += (long long)gridDim.x * blockDim.x) { int4 a = r[t]; acc ^= a.x ^ a.y ^ a.z ^ a.w; }
    if (acc == 0x12345678) y[0] = make_int4(acc, 0, 0, 0);
}
'''
mod = cp.RawModule(code=src)
x = cp.random.randint(-128, 127, (M, 64), dtype=cp.int8)
r = cp.random.randint(-128, 127, (M, 256), dtype=cp.int8)
y = cp.empty((M, 256), cp.int8)
sms = cp.cuda.Device().attributes["MultiProcessorCount"]
rows = []
for name, fn, nbytes in (
        ("stream x+r->y", lambda: mod.get_function("stream")((sms * 8,), (256,), (x, r, y, np.int64(M))), M * 576),
        ("write only y", lambda: mod.get_function("wonly")((sms * 8,), (256,), (y, np.int64(M * 16))), M * 256),
        ("read only r", lambda: mod.get_function("ronly")((sms * 8,), (256,), (r, y, np.int64(M * 16))), M * 256),
        ("copy r->y", lambda: cp.copyto(y, r), M * 512)):
    ms = median_ms(fn, cp, reps=30)
    rows.append(f"{name:24s} {ms:8.4f} ms {nbytes / ms / 1e9:7.2f} TB/s")
    print(rows[-1], flush=True)
layer = [row for row in RESNET50 if row[0] == "s1_1x1_64_256"][0]
for data in ("normal", "relu"):
    c = ConvCase(cp, torch, layer, 256)
    if data == "relu":
        c.xf = cp.maximum(c.xf, 0)
    c.add_residuals()
    if data == "relu":
        rr = c.res_kw["residual"]
        c.res_kw["residual"] = cp.maximum(rr, 0).astype(cp.int8)
    cands = {}
    for fam in ("pw8", "cudnn8", "wgmma8"):
        cands.update({f"{fam}:{k}": v for k, v in FAMILIES[fam](c).items()})
    for k, (fn, kind) in cands.items():
        if k.split(":")[1] not in ("pwi8_64x256_s2", "cudnn_i8", "wgi8_64x128_s4", "pwi8_64x256_s6"):
            continue
        fn()
        ms = graph_ms(fn, cp, calls=5, reps=10)
        rows.append(f"{data:6s} {k:28s} {ms:8.4f} ms {M * 576 / ms / 1e9:7.2f} TB/s")
        print(rows[-1], flush=True)
print("\n".join(["", "# probe_stream (H100)"] + rows))

# ---- ResNet-50 INT8 b256: the bound input read in place (zero-copy) against copied, and
# torch.compile FP16, one process
import os, tempfile  # noqa: E402,E401
if os.environ.get("PROBE_ENGINE") == "0":
    print("\n".join(["", "# probe (layers only)"] + rows))
    raise SystemExit(0)
import engine as rt  # noqa: E402
from benchmarks.models import build, torch_model, ab_peer_rows  # noqa: E402
plan, cold, _ = build("resnet50", torch_model("resnet50"), "int8", 256,
                      os.path.join(tempfile.mkdtemp(), "t.cache"))
eng = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
x = cp.asarray(np.random.default_rng(256).standard_normal((256, 3, 224, 224)).astype(np.float32))
x2 = x.copy()
stream = cp.cuda.get_current_stream()
ctxs = {}
for label in ("zero-copy", "copied"):
    ctx = eng.create_execution_context()
    y = cp.empty((256, 1000), cp.float32)
    ctx.set_tensor_address("input", x)
    ctx.set_tensor_address("output", y)
    for _ in range(3):
        ctx.execute_async_v3(stream)
    if label == "copied":                 # another array: captured again on private buffers
        ctx.set_tensor_address("input", x2)
        ctx.execute_async_v3(stream)
    stream.synchronize()
    ctxs[label] = ctx
    print(label, eng.backend.graph_notes[-2:], flush=True)
ms = {k: [] for k in ctxs}
for _ in range(5):
    for k, ctx in ctxs.items():
        ms[k].append(median_ms(lambda c=ctx: c.execute_async_v3(stream), cp, reps=30))
peer = ab_peer_rows("resnet50", "int8", [256], 30)
comp = [r for r in peer if r.get("system") == "torch.compile"]
for k, v in ms.items():
    rows.append(f"resnet50 int8 b256 {k:10s} {np.median(v):.3f} ms (rounds {[round(t, 3) for t in v]})")
rows += [f"peer {r.get('system')} {r.get('ms')}" for r in peer]
if comp and comp[0].get("ms"):
    rows += [f"torch.compile FP16 / ours {k}: {comp[0]['ms'] / np.median(v):.3f}x" for k, v in ms.items()]
print("\n".join(["", "# probe (H100 or H200: see nvidia-smi)"] + rows))
