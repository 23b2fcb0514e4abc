"""Linear layers (MatrixMultiply with a constant weight and a fused bias / residual /
GELU epilogue) through the conv-backed GEMM tactics, each forced, against the NumPy
engine; and inside a CUDA graph."""
import numpy as np
import pytest

import engine as rt
from engine.gpu import matmul_tactics as M
from engine.testing import rel_l2

cp = pytest.importorskip("cupy")
MO, EW = rt.MatrixOperation, rt.ElementWiseOperation
RNG = np.random.default_rng(21)
X = RNG.standard_normal((3, 40, 64)).astype(np.float32)


def network(builder, op1):
    """The same weights on every call: engines built from it are compared."""
    rng = np.random.default_rng(5)
    net = builder.create_network()
    x = net.add_input("x", rt.float32, X.shape)
    w = rng.standard_normal((64, 48) if op1 == MO.NONE else (48, 64)).astype(np.float32) * 0.2
    wt = net.add_constant((1,) + w.shape, w).get_output(0)
    y = net.add_matrix_multiply(x, MO.NONE, wt, op1).get_output(0)
    bias = net.add_constant((1, 1, 48), rng.standard_normal((1, 1, 48)).astype(np.float32))
    y = net.add_elementwise(y, bias.get_output(0), EW.SUM).get_output(0)
    y = net.add_activation(y, rt.ActivationType.GELU_ERF).get_output(0)
    w2 = rng.standard_normal((1, 48, 48)).astype(np.float32) * 0.2
    z = net.add_matrix_multiply(y, MO.NONE, net.add_constant(w2.shape, w2).get_output(0), MO.NONE)
    z = net.add_elementwise(z.get_output(0), y, EW.SUM).get_output(0)       # residual
    net.mark_output(z)
    return net


def build(backend, fp16, op1, forced=None):
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = backend
    cfg.precision_by_timing = False
    if fp16:
        cfg.set_flag(rt.BuilderFlag.FP16)
    e = rt.Runtime(backend=backend).deserialize_cuda_engine(
        b.build_serialized_network(network(b, op1), cfg))
    if forced:
        e.backend.forced.update(forced)
    return e


def out(e):
    return next(iter(e.create_execution_context().execute({"x": X}).values()))


def _tactics():
    return [t.name for t in M.conv_backed_tactics()]


@pytest.mark.parametrize("op1", [MO.NONE, MO.TRANSPOSE])
@pytest.mark.parametrize("name", _tactics())
def test_forced_conv_backed_tactic_matches_numpy(name, op1):
    t = next(t for t in M.conv_backed_tactics() if t.name == name)
    fp16 = t.dtype == np.float16
    ref = out(build("numpy", False, op1))
    probe = build("cupy", fp16, op1)
    mms = [layer for layer in probe.network._layers if layer.layer_type == rt.LayerType.MATRIX_MULTIPLY]
    assert len(mms) == 2 and all(layer.has_epilogue for layer in mms)   # bias/GELU, residual fused
    shapes = [tuple(X.shape), (1, 64, 48)]
    reason = t.supports(mms[0], shapes, ["float32"] * 2,
                        rt.DataType.HALF if fp16 else rt.DataType.FLOAT)
    if reason is not None:
        pytest.skip(reason)
    e = build("cupy", fp16, op1, forced={m.name: name for m in mms})
    got = out(e)
    assert all(e.backend.selected[m.name] == name for m in mms), e.backend.selected
    assert rel_l2(got, ref) <= (1e-2 if fp16 else 1e-5)
    again = out(e)                                                  # graph replay
    np.testing.assert_array_equal(again, got)
