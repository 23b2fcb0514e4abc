"""Diagnosis on the device: the precision-timing test network built FP16 / INT8+FP16 with
and without precision by timing, each layer's chosen kernel and precision, and the
error against the NumPy FP32 engine; then every conv/FC tactic forced alone on it.

    python benchmarks/diag_precision_timing.py
"""
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "engine")]

import engine as rt  # noqa: E402
from engine.gpu import tactics as T  # noqa: E402
from engine.testing import rel_l2  # noqa: E402
from test_precision_timing import network  # noqa: E402

X = np.random.default_rng(3).uniform(-3, 3, (2, 3, 8, 8)).astype(np.float32)


def build(flags, backend="cupy", by_timing=True, kernels=None):
    b = rt.Builder()
    net = network(b)
    cfg = b.create_builder_config()
    cfg.backend = backend
    cfg.precision_by_timing = by_timing
    for f in flags:
        cfg.set_flag(f)
    e = rt.Runtime(backend=backend).deserialize_cuda_engine(b.build_serialized_network(net, cfg))
    if kernels:
        e.backend.forced.update(kernels)
        e.backend._at_build_shapes = True
    return e


def out(e):
    return next(iter(e.create_execution_context().execute({"x": X}).values()))


ref = out(build((), "numpy"))
for flags in [(rt.BuilderFlag.FP16,), (rt.BuilderFlag.INT8, rt.BuilderFlag.FP16), ()]:
    for by_timing in (False, True):
        e = build(flags, by_timing=by_timing)
        err = rel_l2(out(e), ref)
        print(f"flags={[f.name for f in flags]} by_timing={by_timing} err={err:.3e}")
        for layer in e.network._layers:
            print(f"    {layer.name:28s} {e._precision[layer.name].name:6s} "
                  f"{e.backend.selected.get(layer.name)}")
        if e.meta.get("precision_moves"):
            print("    moves:", [(m["layer"], m["from"], m["to"], m["ms"], m["alt_ms"])
                               for m in e.meta["precision_moves"]])
# every tactic alone on each conv / FC layer, FP16 and FP32 engines without moves
for flags in [(rt.BuilderFlag.FP16,), ()]:
    e0 = build(flags, by_timing=False)
    for layer in e0.network._layers:
        if layer.layer_type not in (rt.LayerType.CONVOLUTION, rt.LayerType.FULLY_CONNECTED):
            continue
        bad = []
        for t in T.candidates(layer, e0._precision[layer.name]):
            if t in (T.HOST,):
                continue
            e = build(flags, by_timing=False, kernels={layer.name: t.name})
            try:
                got = out(e)
            except Exception as ex:  # noqa: BLE001
                continue
            if e.backend.selected.get(layer.name) != t.name:
                continue
            err = rel_l2(got, ref)
            if err > (1e-2 if flags else 1e-4):
                bad.append((t.name, round(err, 4)))
        print(f"forced tactics on {layer.name} ({[f.name for f in flags]}): bad = {bad}")
