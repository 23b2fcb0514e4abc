"""Every code path of the pointwise, shape, conv and spatial layers on a CUDA
device: each layer's NumPy implementation called with CuPy inputs and a
CuPy-attribute ``device_clone`` of the layer (as the GPU backend calls it),
against the NumPy reference. Same cases as tests/engine/test_xp_generic.py."""
import os
import sys

import numpy as np
import pytest

cupy = pytest.importorskip("cupy")
if not cupy.cuda.is_available():
    pytest.skip("needs a CUDA device (cupy.cuda.is_available() is False)", allow_module_level=True)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "engine"))
import layer_cases  # noqa: E402

from engine.testing import interpret, rel_l2  # noqa: E402

TOL = 1e-5     # FP32 rel. L2 (DESIGN.md)


@pytest.mark.parametrize("case", layer_cases.IDS)
def test_layer_on_cupy_matches_numpy(case):
    net, feeds = layer_cases.build(case)
    ref = interpret(net, feeds)
    trace, got = layer_cases.run_on_device(net, feeds, cupy)
    for layer, outs in trace:
        for i, o in enumerate(outs):
            assert isinstance(o, cupy.ndarray), (
                f"{layer.describe()}: output {i} is a {type(o).__name__}, not a CuPy array")
    for name, r in ref.items():
        g = cupy.asnumpy(got[name])
        assert g.dtype == r.dtype and g.shape == r.shape, (name, g.dtype, r.dtype, g.shape, r.shape)
        if r.dtype.kind == "f":
            np.testing.assert_array_equal(np.isnan(g), np.isnan(r))
            err = rel_l2(np.nan_to_num(g), np.nan_to_num(r))
            assert err <= TOL, f"{case}: rel L2 {err:.2e} > {TOL:g}"
        else:
            np.testing.assert_array_equal(g, r, err_msg=case)
