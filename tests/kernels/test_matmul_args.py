"""The batched GEMM and layer-norm launchers without a GPU: shape planning,
argument errors (each raise), and the launcher's batch folding / strides
checked through a NumPy model of the kernels' indexing (``emulate``), plus
the engine tactics' supports() and constant upload. tests/gpu runs the kernels."""
import itertools
from types import SimpleNamespace

import numpy as np
import pytest

import engine as rt
from engine.gpu import matmul_tactics, norm_tactics
from kernels.gpu import layernorm as LN
from kernels.gpu import matmul as MM
from kernels.gpu.errors import UnsupportedError

RNG = np.random.default_rng(7)
MO = rt.MatrixOperation


def randn(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def stored(shape, transpose):
    """The stored shape of an operand whose op(.) has ``shape`` (rows, cols)."""
    return shape[:-2] + (shape[-1], shape[-2]) if transpose else shape


def reference(a, b, ta, tb):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.matmul(np.swapaxes(a, -1, -2) if ta else a, np.swapaxes(b, -1, -2) if tb else b)


# -- shape planning ---------------------------------------------------------------

@pytest.mark.parametrize("a, b, ops, expect", [
    ((5, 3), (3, 4), ("NONE", "NONE"), ((), 5, 4, 3)),
    ((2, 5, 3), (1, 3, 4), ("NONE", "NONE"), ((2,), 5, 4, 3)),
    ((2, 3, 5), (2, 4, 3), ("TRANSPOSE", "TRANSPOSE"), ((2,), 5, 4, 3)),
    ((2, 1, 5, 3), (1, 4, 3, 6), ("NONE", "NONE"), ((2, 4), 5, 6, 3)),
    ((3, 5, 3), (3, 4), ("NONE", "NONE"), ((3,), 5, 4, 3)),
])
def test_plan_shapes(a, b, ops, expect):
    assert MM.plan(a, b, *ops) == expect


@pytest.mark.parametrize("a, b, ops, match", [
    ((3,), (3, 4), ("NONE", "NONE"), "rank >= 2"),
    ((2, 2, 5, 3), (2, 3, 4), ("NONE", "NONE"), "equal ranks"),
    ((5, 3), (4, 4), ("NONE", "NONE"), "inner dims 3 and 4"),
    ((2, 5, 3), (3, 3, 4), ("NONE", "NONE"), "do not broadcast"),
    ((5, 3), (3, 4), ("VECTOR", "NONE"), "op_a"),
    ((5, 3), (3, 4), ("NONE", "CONJ"), "op_b"),
    ((2**31, 3), (3, 4), ("NONE", "NONE"), "M = 2147483648"),
])
def test_plan_errors(a, b, ops, match):
    with pytest.raises(UnsupportedError, match=match):
        MM.plan(a, b, *ops)


def test_plan_takes_matrix_operation_members():
    assert MM.plan((3, 5), (4, 3), MO.TRANSPOSE, MO.TRANSPOSE) == ((), 5, 4, 3)


def test_tile_by_name_and_unknown_name():
    assert MM.tile(MM.TILES[1].name) is MM.TILES[1]
    assert MM.tile(MM.TILES[0]) is MM.TILES[0]
    with pytest.raises(UnsupportedError, match="valid: mm_128x128"):
        MM.tile("mm_3x3")


def test_tile_shared_memory_per_layout():
    t = MM.TILES_BY_NAME["mm_128x128x32_w2x4_s4"]
    assert t.threads == 256
    assert t.smem_bytes(True, True) == 4 * (128 * 40 + 128 * 40) * 2
    assert t.smem_bytes(False, False) == 4 * (32 * 136 + 32 * 136) * 2
    assert t.name_expression(True, False, True, False) == "gemm_f16<128,128,32,2,4,4,1,0,1,0>"


# -- the launcher's operand plan, through the NumPy model of the kernels -----------

CASES = [  # op(A) shape, op(B) shape (batch dims included)
    ((7, 13), (13, 5)),                 # plain, odd sizes
    ((3, 9, 16), (1, 16, 24)),          # a weight against a batch: folded
    ((3, 9, 16), (16, 24)),             # a rank-2 weight: folded
    ((2, 3, 9, 8), (2, 3, 8, 10)),      # equal batches (attention)
    ((1, 9, 8), (4, 8, 10)),            # A broadcast (stride 0)
    ((2, 1, 9, 8), (1, 3, 8, 10)),      # mixed broadcast: copies
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("ta, tb", list(itertools.product((False, True), repeat=2)))
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_launch_plan_indexing_matches_matmul(case, ta, tb, dtype):
    sa, sb = CASES[case]
    a = randn(*stored(sa, ta), dtype=dtype)
    b = randn(*stored(sb, tb), dtype=dtype)
    p = MM.launch_plan(a, b, "TRANSPOSE" if ta else "NONE", "TRANSPOSE" if tb else "NONE", xp=np)
    got = MM.emulate(p)
    ref = reference(a, b, ta, tb)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9)


def test_launch_plan_folds_a_weight_into_one_tall_gemm():
    p = MM.launch_plan(randn(4, 6, 8), randn(1, 8, 16), xp=np)
    assert (p["nb_run"], p["m_run"], p["sa"], p["sb"], p["sc"]) == (1, 24, 0, 0, 0)


def test_launch_plan_transposed_a_is_not_folded():
    p = MM.launch_plan(randn(4, 8, 6), randn(1, 8, 16), op_a="TRANSPOSE", xp=np)
    assert (p["nb_run"], p["m_run"], p["sa"], p["sb"], p["sc"]) == (4, 6, 48, 0, 96)


def test_launch_plan_epilogue_bias_residual():
    a, b = randn(2, 5, 8), randn(2, 8, 6)
    bias, res = randn(6), randn(1, 5, 6)
    p = MM.launch_plan(a, b, bias=bias, residual=res, out_dtype=np.float32, xp=np)
    assert p["res"].shape == (2, 5, 6) and p["sr"] == p["sc"] == 30
    got = MM.emulate(p, alpha=0.5, act="RELU")
    ref = np.maximum(0.5 * reference(a, b, False, False) + bias + res, 0)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"a": randn(3, 4), "b": randn(4, 2, dtype=np.float16)}, "both float16"),
    ({"a": randn(3, 4).astype(np.float64), "b": randn(4, 2).astype(np.float64)}, "both float16"),
    ({"out_dtype": np.int8}, "out dtype int8"),
    ({"bias": randn(3)}, "bias of 3 values; expected 2"),
    ({"residual": randn(4, 2)}, r"residual of shape \(4, 2\)"),
])
def test_launch_plan_errors(kwargs, match):
    args = {"a": randn(3, 4), "b": randn(4, 2)}
    args.update(kwargs)
    with pytest.raises(UnsupportedError, match=match):
        MM.launch_plan(xp=np, **args)


def test_launch_plan_batch_limit():
    a = randn(MM.MAX_BATCH + 1, 2, 8)
    b = randn(MM.MAX_BATCH + 1, 8, 2)
    with pytest.raises(UnsupportedError, match="at most 65535"):
        MM.launch_plan(a, b, xp=np)
    # against one weight the batch folds into M: no limit
    assert MM.launch_plan(a, randn(8, 2), xp=np)["nb_run"] == 1


def test_matmul_rejects_before_touching_the_device():
    with pytest.raises(UnsupportedError, match="valid: mm_"):
        MM.matmul(randn(3, 4, dtype=np.float16), randn(4, 2, dtype=np.float16), tactic="nope")
    with pytest.raises(UnsupportedError, match="activation 'SWISHY'"):
        MM.matmul(randn(3, 4), randn(4, 2), act="SWISHY")


# -- layer norm launcher -------------------------------------------------------------

def fake(shape, dtype, contiguous=True):
    """Shape/dtype only: checks that must fail before any allocation."""
    return SimpleNamespace(shape=shape, dtype=np.dtype(dtype), ndim=len(shape),
                           flags=SimpleNamespace(c_contiguous=contiguous))


@pytest.mark.parametrize("x, vec, kwargs, match", [
    (fake((4, 8), np.int32), fake((8,), np.float32), {}, "dtype int32"),
    (fake((4, 8), np.float16), fake((8,), np.float32), {"norm_ndim": 3}, "norm_ndim <= rank"),
    (fake((4, 8), np.float16), fake((8,), np.float32), {"out_dtype": np.float64}, "out dtype"),
    (fake((4, 8), np.float16), fake((8,), np.float32), {"eps": 0.0}, "epsilon 0.0"),
    (fake((4, 8), np.float16), fake((8,), np.float16), {}, "scale"),
    (fake((4, 8), np.float16), fake((4,), np.float32), {}, r"expected contiguous float32 \(8,\)"),
    (fake((4, 8), np.float16), fake((8,), np.float32, False), {}, "contiguous"),
    (fake((1, 2**31), np.float16), fake((2**31,), np.float32), {}, "< 2\\*\\*31"),
])
def test_layernorm_errors(x, vec, kwargs, match):
    with pytest.raises(UnsupportedError, match=match):
        LN.layernorm(x, vec, vec, **kwargs)


def test_layernorm_bias_checked_too():
    good, bad = fake((8,), np.float32), fake((3,), np.float32)
    with pytest.raises(UnsupportedError, match="bias"):
        LN.layernorm(fake((4, 8), np.float32), good, bad)


@pytest.mark.parametrize("shape, norm, match", [
    ((2, 1, 8), (8,), "varies outside"),
    ((1, 1, 5), (8,), "does not broadcast"),
])
def test_row_vector_errors(shape, norm, match):
    with pytest.raises(UnsupportedError, match=match):
        LN.row_vector(randn(*shape), norm)


# -- engine tactics: supports() and the constant upload -------------------------------

def matmul_layer(a_shape, b_shape, op0=MO.NONE, op1=MO.NONE, const_b=True):
    net = rt.Network()
    x = net.add_input("x", rt.float32, a_shape)
    if const_b:
        w = net.add_constant(b_shape, randn(*b_shape)).get_output(0)
    else:
        w = net.add_input("w", rt.float32, b_shape)
    layer = net.add_matrix_multiply(x, op0, w, op1)
    net.mark_output(layer.get_output(0))
    return layer


def test_matmul_tactics_registered_once():
    from engine.gpu.tactics import candidates, register
    layer = matmul_layer((2, 4, 8), (1, 8, 16))
    names = [t.name for t in candidates(layer)]
    register(layer.layer_type, *matmul_tactics.TACTICS)      # again: nothing added
    assert [t.name for t in candidates(layer)] == names and len(names) == len(set(names))
    assert "matmul.simt_fp32" in names and f"matmul.{MM.TILES[0].name}" in names


def test_matmul_supports_reasons():
    tc, simt = matmul_tactics.MatMulTensorCore(MM.TILES[0]), matmul_tactics.MatMulSimt()
    layer = matmul_layer((2, 4, 8), (1, 8, 16))
    shapes, dts = ((2, 4, 8), (1, 8, 16)), ("float32", "float32")
    assert tc.supports(layer, shapes, dts, rt.DataType.HALF) is None
    assert simt.supports(layer, shapes, dts, rt.DataType.FLOAT) is None
    assert "HALF" in tc.supports(layer, shapes, dts, rt.DataType.FLOAT)
    assert "FLOAT" in simt.supports(layer, shapes, dts, rt.DataType.HALF)
    assert "floating" in tc.supports(layer, shapes, ("int32", "float32"), rt.DataType.HALF)
    assert "inner dims" in tc.supports(layer, ((2, 4, 8), (1, 9, 16)), dts, rt.DataType.HALF)
    vec = matmul_layer((2, 4, 8), (2, 8), op1=MO.VECTOR, const_b=False)
    assert "VECTOR" in tc.supports(vec, ((2, 4, 8), (2, 8)), dts, rt.DataType.HALF)
    big = (MM.MAX_BATCH + 1, 2, 8)
    wide = matmul_layer(big, big, op1=MO.TRANSPOSE, const_b=False)
    assert "batched matrices" in tc.supports(wide, (big, big), dts, rt.DataType.HALF)


@pytest.mark.parametrize("op1", [MO.NONE, MO.TRANSPOSE])
def test_constant_right_operand_uploaded_k_major_once(monkeypatch, op1):
    monkeypatch.setattr(matmul_tactics, "cupy", lambda: np)
    shape = (1, 8, 16) if op1 == MO.NONE else (1, 16, 8)
    layer = matmul_layer((2, 4, 8), shape, op1=op1)
    w = matmul_tactics.constant_operand(layer, 1)
    tc = matmul_tactics.MatMulTensorCore(MM.TILES[0])
    state = tc.prepare(layer)
    arr, op = state[1]
    assert op == "TRANSPOSE" and arr.dtype == np.float16 and arr.shape == (1, 16, 8)
    np.testing.assert_array_equal(arr, np.ascontiguousarray(
        np.swapaxes(w, -1, -2) if op1 == MO.NONE else w).astype(np.float16))
    assert matmul_tactics.MatMulTensorCore(MM.TILES[1]).prepare(layer) is state   # shared
    simt = matmul_tactics.MatMulSimt().prepare(layer)
    assert simt[1][1] == op1.name and simt[1][0].dtype == np.float32
    assert 0 not in state                       # the activation is not a constant


def norm_layer(x_shape, axes, groups=1, s_shape=None):
    net = rt.Network()
    x = net.add_input("x", rt.float32, x_shape)
    s_shape = s_shape or (1,) * (len(x_shape) - 1) + x_shape[-1:]
    s = net.add_constant(s_shape, randn(*s_shape)).get_output(0)
    b = net.add_constant(s_shape, randn(*s_shape)).get_output(0)
    layer = net.add_normalization(x, s, b, axes)
    layer.num_groups = groups
    net.mark_output(layer.get_output(0))
    return layer


def test_norm_supports_reasons():
    t = norm_tactics.LayerNormKernel()
    dts = ("float32",) * 3
    ok = norm_layer((2, 5, 8), 0b100)
    shapes = ((2, 5, 8), (1, 1, 8), (1, 1, 8))
    assert t.supports(ok, shapes, dts, rt.DataType.HALF) is None
    assert t.supports(ok, shapes, dts, rt.DataType.FLOAT) is None
    assert "FLOAT or HALF" in t.supports(ok, shapes, dts, rt.DataType.INT8)
    assert "floating" in t.supports(ok, shapes, ("int32",) + dts[1:], rt.DataType.FLOAT)
    two = norm_layer((2, 5, 8), 0b110, s_shape=(1, 5, 8))
    assert t.supports(two, ((2, 5, 8), (1, 5, 8), (1, 5, 8)), dts, rt.DataType.FLOAT) is None
    inst = norm_layer((2, 4, 3, 3), 0b1100, s_shape=(1, 4, 1, 1))
    assert "varies outside" in t.supports(inst, ((2, 4, 3, 3), (1, 4, 1, 1), (1, 4, 1, 1)), dts,
                                          rt.DataType.FLOAT)
    gap = norm_layer((2, 4, 3, 3), 0b1010, s_shape=(1, 1, 1, 3))
    assert "trailing" in t.supports(gap, ((2, 4, 3, 3),) + ((1, 1, 1, 3),) * 2, dts,
                                    rt.DataType.FLOAT)
    grp = norm_layer((2, 4, 3, 3), 0b1100, groups=2, s_shape=(1, 1, 1, 3))
    assert "group" in t.supports(grp, ((2, 4, 3, 3),) + ((1, 1, 1, 3),) * 2, dts,
                                 rt.DataType.FLOAT)


def test_norm_tactic_registered():
    from engine.gpu.tactics import candidates, register
    names = [t.name for t in candidates(norm_layer((2, 5, 8), 0b100))]
    register(rt.LayerType.NORMALIZATION, *norm_tactics.TACTICS)
    assert names.count("norm.layernorm_fused") == 1
    assert [t.name for t in candidates(norm_layer((2, 5, 8), 0b100))] == names


def test_matmul_out_must_fit():
    a, b = randn(3, 4), randn(4, 2)
    with pytest.raises(UnsupportedError, match=r"out of shape \(2, 3\)"):
        MM.matmul(a, b, out=fake((2, 3), np.float32))
    with pytest.raises(UnsupportedError, match="contiguous=False"):
        MM.matmul(a, b, out=fake((3, 2), np.float32, contiguous=False))
    with pytest.raises(UnsupportedError, match="out dtype int8"):
        MM.matmul(a, b, out=fake((3, 2), np.int8))
