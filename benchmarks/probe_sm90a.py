"""Does CuPy's NVRTC path accept an sm_90a target (needed for wgmma)? Prints one line per option set.

    python3 benchmarks/probe_sm90a.py
"""
import cupy as cp

SRC = r'''
extern "C" __global__ void probe(float* out) {
    // wgmma.fence / commit / wait exist only on sm_90a
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    out[threadIdx.x] = 1.0f + threadIdx.x;
}
'''

for opts in (("-arch=sm_90a",), ("--gpu-architecture=sm_90a",), ("-arch=compute_90a",),
             ("--gpu-architecture=compute_90a",)):
    for backend in ("nvrtc",):
        try:
            mod = cp.RawModule(code=SRC, options=opts, backend=backend)
            fn = mod.get_function("probe")
            out = cp.zeros(128, cp.float32)
            fn((1,), (128,), (out,))
            ok = bool((out == cp.arange(1, 129, dtype=cp.float32)).all())
            print(f"sm90a probe {opts} {backend}: compiled and ran, result ok={ok}", flush=True)
        except Exception as exc:
            msg = str(exc).strip().splitlines()
            print(f"sm90a probe {opts} {backend}: FAILED {type(exc).__name__}: "
                  f"{' | '.join(msg[:3])[:300]}", flush=True)
