"""The PyTorch peers every suite times beside cupyrt, in the same process on the same card:
eager, torch.compile (default mode) and, at batch 1, torch.compile(mode="reduce-overhead")
(CUDA graphs: the fair peer of our graph replay at small batch).

Each compiled peer is a fresh ``torch.compile(module, dynamic=False)`` per batch, so a
shape is compiled for itself (as a user serving one batch size would), warmed up until
compilation (and, for reduce-overhead, graph recording) is done, then timed like ours:
CUDA events around one call, median of ``reps`` (benchmarks/models.py median_ms). A
peer that fails to compile gives a row with ``error`` and no time, never a crash.
"""
import logging
import time

log = logging.getLogger("benchmarks")

SYSTEMS = ("torch.eager", "torch.compile", "torch.compile.reduce-overhead")


def _median_ms(fn, reps):
    import cupy as cp

    from .models import median_ms
    return median_ms(fn, cp, reps=reps)


def torch_rows(module, make_input, model, precision, batches, reps, compile_modes=True):
    """Rows for ``module`` (already on the GPU, eval) at each batch: eager, compiled
    default, and compiled reduce-overhead at batch 1. ``make_input(n)`` -> tensor."""
    import torch
    torch.backends.cudnn.benchmark = True
    # FP32 against FP32: PyTorch would otherwise run FP32 convolutions on TF32 tensor cores
    torch.backends.cudnn.allow_tf32 = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    for n in batches:
        x = make_input(n)
        modes = [("torch.eager", None)]
        if compile_modes:
            modes.append(("torch.compile", "default"))
            if n == 1:
                modes.append(("torch.compile.reduce-overhead", "reduce-overhead"))
        for system, mode in modes:
            row = {"system": system, "model": model, "precision": precision, "batch": n}
            try:
                fn, compile_s = module, 0.0
                if mode is not None:
                    t0 = time.perf_counter()
                    fn = torch.compile(module, mode=mode, dynamic=False)
                    with torch.no_grad():
                        for _ in range(3):         # compile, then (reduce-overhead) record graphs
                            fn(x)
                    torch.cuda.synchronize()
                    compile_s = time.perf_counter() - t0
                with torch.no_grad():
                    ms = _median_ms(lambda: fn(x), reps)
                row.update(ms=ms, img_s=n / ms * 1e3)
                if mode is not None:
                    row["compile_s"] = round(compile_s, 1)
            except Exception as e:          # noqa: BLE001  (a peer that cannot run is reported)
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            rows.append(row)
            log.info("[peer] %s %s b%d %s: %s", model, precision, n, system,
                     f"{row['ms']:.3f} ms" if "ms" in row else row["error"])
    return rows
