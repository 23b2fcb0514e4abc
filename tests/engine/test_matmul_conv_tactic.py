"""Which MatrixMultiply layers the conv-backed GEMM tactics take (no GPU needed:
``supports`` reads shapes and constants only)."""
import numpy as np
import pytest

import engine as rt
from engine.gpu import matmul_tactics as M
from engine.types import DataType

MO = rt.MatrixOperation
RNG = np.random.default_rng(2)


def layer(k=16, n=24, op1=MO.NONE, lead=(1,), const_left=False, residual=False):
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (2, 5, k))
    wshape = lead + ((k, n) if op1 == MO.NONE else (n, k))
    w = net.add_constant(wshape, RNG.standard_normal(wshape).astype(np.float32)).get_output(0)
    left = net.add_constant((2, 5, k), RNG.standard_normal((2, 5, k)).astype(np.float32)).get_output(0) \
        if const_left else x
    mm = net.add_matrix_multiply(left, MO.NONE, w, op1)
    net.mark_output(mm.get_output(0))
    return mm


def tc_tactic(dtype=np.float16, align=8):
    from kernels.gpu import conv_igemm
    return M.MatMulAsConv(conv_igemm.conv2d_igemm, conv_igemm.IGEMM_TACTICS_LARGE[0], dtype, align)


def reason(t, mm, precision=DataType.HALF, res_shape=None):
    shapes = [tuple(mm.get_input(0).shape), tuple(mm.get_input(1).shape)]
    if res_shape is not None:
        shapes.append(res_shape)
    return t.supports(mm, shapes, ["float32"] * len(shapes), precision)


def test_a_linear_layer_is_taken_in_its_precision_only():
    assert reason(tc_tactic(), layer()) is None
    assert reason(tc_tactic(), layer(op1=MO.TRANSPOSE)) is None
    assert "runs HALF" in reason(tc_tactic(), layer(), DataType.FLOAT)
    assert "runs FLOAT" in reason(tc_tactic(np.float32, 4), layer(), DataType.HALF)


@pytest.mark.parametrize("kw, msg", [
    ({"k": 12}, "K = 12 is not a multiple of 8"),
    ({"lead": (2,)}, "a 2-D constant"),
    ({"const_left": True}, "the right operand alone must be a Constant")])
def test_declines(kw, msg):
    assert msg in reason(tc_tactic(), layer(**kw))


def test_residual_must_have_the_output_shape():
    mm = layer()
    assert reason(tc_tactic(), mm, res_shape=(2, 5, 24)) is None
    assert "a residual of the output's shape" in reason(tc_tactic(), mm, res_shape=(1, 5, 24))


def test_wgmma_backed_ones_decline_without_an_sm90a_device():
    from kernels.gpu import conv_wgmma
    t = M.MatMulAsConv(conv_wgmma.conv2d_wgmma, conv_wgmma.TACTICS[0], np.float16, 8)
    if conv_wgmma.available():
        pytest.skip("an sm_90a device is present")
    assert "compute capability 9.0" in reason(t, layer())


def test_the_family_is_registered_for_matrix_multiply():
    from engine.gpu.tactics import candidates
    names = [t.name for t in candidates(layer())]
    assert any(n.startswith("matmul.conv.wg_") for n in names)
    assert any(n.startswith("matmul.conv.3xtf32_") for n in names)
    assert any(n.startswith("matmul.conv.igemm2_") for n in names)
    assert any(n.startswith("matmul.conv.igemmsk_") for n in names)      # split-K (batch-1 FFNs)
