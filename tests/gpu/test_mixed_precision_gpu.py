"""Every mix of INT8 and FP16 over the timed layers of a small network (what
precision by timing can produce), forced with precision constraints: the CuPy
engine against the NumPy engine with the same precisions. A wrong hand-over at an
INT8/FP16 boundary (codes read as floats, a missing quantize, a scale) shows here."""
import itertools
import os
import sys

import numpy as np
import pytest

import engine as rt
from engine.testing import rel_l2
from engine.types import DataType

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "engine"))
from test_precision_timing import network  # noqa: E402

cp = pytest.importorskip("cupy")
X = np.random.default_rng(3).uniform(-3, 3, (2, 3, 8, 8)).astype(np.float32)
TIMED = (rt.LayerType.CONVOLUTION, rt.LayerType.POOLING, rt.LayerType.FULLY_CONNECTED)


def build(backend, mix):
    b = rt.Builder()
    net = network(b)
    timed = [layer for layer in (net.get_layer(i) for i in range(net.num_layers))
             if layer.layer_type in TIMED]
    for layer, p in zip(timed, mix):
        layer.precision = p
    cfg = b.create_builder_config()
    cfg.backend = backend
    cfg.precision_by_timing = False
    for f in (rt.BuilderFlag.INT8, rt.BuilderFlag.FP16, rt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS):
        cfg.set_flag(f)
    return rt.Runtime(backend=backend).deserialize_cuda_engine(b.build_serialized_network(net, cfg))


MIXES = list(itertools.product((DataType.INT8, DataType.HALF), repeat=4))


@pytest.mark.parametrize("mix", MIXES, ids=["".join("8" if p == DataType.INT8 else "h" for p in m)
                                            for m in MIXES])
def test_int8_fp16_mix_matches_the_numpy_engine(mix):
    ref_e, got_e = build("numpy", mix), build("cupy", mix)
    assert [i.precision for i in got_e.layers] == [i.precision for i in ref_e.layers]
    ref = next(iter(ref_e.create_execution_context().execute({"x": X}).values()))
    got = next(iter(got_e.create_execution_context().execute({"x": X}).values()))
    err = rel_l2(got, ref)
    assert err < 2e-2, (err, {i.name: (i.precision.name, got_e.backend.selected.get(i.name))
                              for i in got_e.layers})
