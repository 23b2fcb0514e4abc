"""Batched GEMM kernels (kernels/cuda/matmul.cu) against float64 NumPy: every
op pair, batch broadcasting, shapes off the tile grid, K % 8 != 0 and
misaligned operands (the element-wise load path), the fused epilogue, both
output dtypes, CUDA-graph capture == eager, and the engine tactics."""
import itertools

import numpy as np
import pytest
from gpu_helpers import TOL, act_ref, poison, rel_l2

import engine as rt
from engine.gpu import matmul_tactics
from kernels.gpu import matmul as MM

cp = pytest.importorskip("cupy")
RNG = np.random.default_rng(11)
SMALL = MM.TILES_BY_NAME["mm_64x64x32_w2x2_s4"]
OPS = list(itertools.product((False, True), repeat=2))


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def stored(shape, transpose):
    return shape[:-2] + (shape[-1], shape[-2]) if transpose else shape


def reference(a, b, ta, tb):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.matmul(np.swapaxes(a, -1, -2) if ta else a, np.swapaxes(b, -1, -2) if tb else b)


def run(op_a_shape, op_b_shape, ta, tb, dtype, tactic=SMALL, out_dtype=None, **kw):
    a = randn(*stored(op_a_shape, ta))
    b = randn(*stored(op_b_shape, tb))
    ad, bd = cp.asarray(a, dtype), cp.asarray(b, dtype)
    ref = reference(ad.get(), bd.get(), ta, tb)   # the inputs as the kernel sees them
    out = poison(cp, ref.shape, out_dtype or dtype)
    y = MM.matmul(ad, bd, op_a="TRANSPOSE" if ta else "NONE", op_b="TRANSPOSE" if tb else "NONE",
                  out=out, tactic=tactic, **kw)
    assert y is out
    return cp.asnumpy(y), ref, ad, bd


SHAPES = [  # op(A), op(B): M/N/K on and off the 64/128 tiles
    ((128, 64), (64, 128)),
    ((100, 72), (72, 40)),          # M, N off the tile; K a multiple of 8 but not of 32
    ((1, 8), (8, 1)),               # a single element
    ((257, 264), (264, 130)),
    ((3, 33, 40), (3, 40, 17)),     # batched, odd N
]


@pytest.mark.parametrize("ta, tb", OPS)
@pytest.mark.parametrize("shapes", SHAPES)
def test_fp16_every_op_pair(ta, tb, shapes):
    y, ref, _, _ = run(*shapes, ta, tb, np.float16, out_dtype=np.float32)
    assert rel_l2(y, ref) <= TOL[np.dtype(np.float16)]


@pytest.mark.parametrize("tactic", MM.TILES)
@pytest.mark.parametrize("ta, tb", [(False, False), (False, True)])   # the encoder's layouts
@pytest.mark.parametrize("out_dtype", [np.float16, np.float32])
def test_fp16_every_tile(tactic, ta, tb, out_dtype):
    y, ref, _, _ = run((3, 200, 96), (3, 96, 136), ta, tb, np.float16, tactic=tactic,
                       out_dtype=out_dtype)
    assert rel_l2(y, ref) <= TOL[np.dtype(np.float16)]


@pytest.mark.parametrize("ta, tb", OPS)
@pytest.mark.parametrize("k", [1, 7, 13, 70])
def test_fp16_k_not_multiple_of_8_takes_the_elementwise_path(ta, tb, k):
    y, ref, _, _ = run((2, 37, k), (2, k, 29), ta, tb, np.float16, out_dtype=np.float32)
    assert rel_l2(y, ref) <= TOL[np.dtype(np.float16)]


def test_fp16_misaligned_operand_takes_the_elementwise_path():
    base = cp.asarray(randn(1 + 64 * 40), cp.float16)
    a = base[1:].reshape(64, 40)                  # 2 bytes off a 16-byte boundary
    b = cp.asarray(randn(40, 48), cp.float16)
    assert a.data.ptr % 16
    y = MM.matmul(a, b, out_dtype=np.float32, tactic=SMALL)
    assert rel_l2(y.get(), reference(a.get(), b.get(), False, False)) <= 1e-2


@pytest.mark.parametrize("a_shape, b_shape", [
    ((4, 24, 32), (1, 32, 40)),       # a weight against a batch (folded)
    ((4, 24, 32), (32, 40)),          # rank-2 weight (folded)
    ((1, 24, 32), (4, 32, 40)),       # A broadcast (stride 0)
    ((2, 1, 24, 32), (1, 3, 32, 40)),  # mixed broadcast
    ((2, 3, 24, 32), (2, 3, 32, 40)),  # attention-shaped
])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("ta, tb", OPS)
def test_batch_broadcasting(a_shape, b_shape, dtype, ta, tb):
    y, ref, _, _ = run(a_shape, b_shape, ta, tb, dtype)
    assert rel_l2(y, ref) <= TOL[np.dtype(dtype)]


@pytest.mark.parametrize("ta, tb", OPS)
@pytest.mark.parametrize("shapes", SHAPES + [((2, 3, 40, 13), (2, 3, 13, 50))])
def test_fp32_every_op_pair(ta, tb, shapes):
    y, ref, _, _ = run(*shapes, ta, tb, np.float32)
    assert rel_l2(y, ref) <= TOL[np.dtype(np.float32)]


def test_fp32_long_reduction():
    y, ref, _, _ = run((64, 3072), (3072, 96), False, False, np.float32)
    assert rel_l2(y, ref) <= TOL[np.dtype(np.float32)]


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("act", [None, "RELU", "GELU_ERF"])
@pytest.mark.parametrize("out_dtype", [np.float16, np.float32])
def test_fused_epilogue(dtype, act, out_dtype):
    bias = randn(40)
    res = randn(1, 24, 40)
    y, ref, _, _ = run((2, 24, 32), (2, 32, 40), False, True, dtype, out_dtype=out_dtype,
                       alpha=0.25, bias=cp.asarray(bias), residual=cp.asarray(res, out_dtype),
                       act=act)
    res_seen = res.astype(out_dtype).astype(np.float64)
    want = act_ref(0.25 * ref + bias + res_seen, act)
    tol = TOL[np.dtype(np.float16)] if np.float16 in (dtype, out_dtype) else TOL[np.dtype(dtype)]
    assert rel_l2(y, want) <= tol


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_cuda_graph_replay_matches_eager(dtype):
    a = cp.asarray(randn(3, 96, 64), dtype)
    b = cp.asarray(randn(1, 64, 80), dtype)
    q = cp.asarray(randn(2, 4, 32, 16), dtype)
    bias = cp.asarray(randn(80))

    def body():
        y = MM.matmul(a, b, bias=bias, act="GELU_ERF", out_dtype=np.float32)
        s = MM.matmul(q, q, op_b="TRANSPOSE", alpha=0.25)
        return y, s

    cp.cuda.Device().synchronize()   # inputs made on the legacy stream are ready: a
    stream = cp.cuda.Stream(non_blocking=True)   # non-blocking stream would not wait for them
    with stream:
        eager = [x.copy() for x in body()]
        body()                          # rehearsal: the pool caches the blocks capture reuses
        stream.synchronize()
        stream.begin_capture()
        outs = body()
        graph = stream.end_capture()
        for x in outs:
            x.fill(np.nan)
        graph.launch(stream)
        stream.synchronize()
    for x, e in zip(outs, eager):
        np.testing.assert_array_equal(cp.asnumpy(x), cp.asnumpy(e))


# -- the engine tactics on the device ------------------------------------------------

def matmul_layer(a_shape, b_shape, op0, op1, const_b):
    net = rt.Network()
    x = net.add_input("x", rt.float32, a_shape)
    w_host = randn(*b_shape)
    if const_b:
        w = net.add_constant(b_shape, w_host).get_output(0)
    else:
        w = net.add_input("w", rt.float32, b_shape)
    layer = net.add_matrix_multiply(x, op0, w, op1)
    net.mark_output(layer.get_output(0))
    return layer, w_host


@pytest.mark.parametrize("tactic", [matmul_tactics.MatMulTensorCore(t) for t in MM.TILES]
                         + [matmul_tactics.MatMulSimt()], ids=lambda t: t.name)
@pytest.mark.parametrize("op0, op1, const_b, a_shape, b_shape", [
    (rt.MatrixOperation.NONE, rt.MatrixOperation.NONE, True, (2, 48, 64), (1, 64, 72)),
    (rt.MatrixOperation.NONE, rt.MatrixOperation.TRANSPOSE, True, (2, 48, 64), (1, 72, 64)),
    (rt.MatrixOperation.NONE, rt.MatrixOperation.TRANSPOSE, False, (2, 3, 48, 32), (2, 3, 40, 32)),
    (rt.MatrixOperation.TRANSPOSE, rt.MatrixOperation.NONE, False, (2, 32, 48), (2, 32, 40)),
])
def test_engine_tactic_matches_the_layer_reference(tactic, op0, op1, const_b, a_shape, b_shape):
    from engine.kernel_table import numpy_kernel
    layer, w_host = matmul_layer(a_shape, b_shape, op0, op1, const_b)
    half = isinstance(tactic, matmul_tactics.MatMulTensorCore)
    precision = rt.DataType.HALF if half else rt.DataType.FLOAT
    x = randn(*a_shape)
    shapes, dts = (a_shape, b_shape), ("float32", "float32")
    assert tactic.supports(layer, shapes, dts, precision) is None
    state = tactic.prepare(layer)
    out_dt = rt.DataType.HALF if half else rt.DataType.FLOAT
    y = tactic.run(state, layer, [cp.asarray(x), cp.asarray(w_host)], precision, [out_dt])[0]
    feed = [v.astype(np.float16).astype(np.float32) if half else v for v in (x, w_host)]
    ref = numpy_kernel(layer)(layer, feed)[0]
    assert y.dtype == out_dt.to_numpy() and y.shape == ref.shape
    assert rel_l2(cp.asnumpy(y), ref) <= (1e-2 if half else 1e-5)


# -- the fused epilogue (engine/passes/fuse_matmul_epilogue.py) on the device ----------

def fused_layer(a_shape, b_shape, op1, act, residual_dtype=rt.float32):
    """A linear-shaped MatrixMultiply with every epilogue part set, as the pass leaves it."""
    layer, w_host = matmul_layer(a_shape, b_shape, rt.MatrixOperation.NONE, op1, const_b=True)
    net = layer._network
    out_shape = layer.get_output(0).shape
    layer.set_input(2, net.add_input("r", residual_dtype, out_shape))
    layer.alpha, layer.bias = 0.375, randn(out_shape[-1])
    layer.post_activation = act
    if act == rt.ActivationType.LEAKY_RELU:
        layer.post_alpha = 0.2
    return layer, w_host, out_shape


ACTS = [None, rt.ActivationType.RELU, rt.ActivationType.GELU_ERF, rt.ActivationType.GELU_TANH,
        rt.ActivationType.LEAKY_RELU]


@pytest.mark.parametrize("tactic", [matmul_tactics.MatMulTensorCore(t) for t in MM.TILES]
                         + [matmul_tactics.MatMulSimt()], ids=lambda t: t.name)
@pytest.mark.parametrize("act", ACTS, ids=lambda a: getattr(a, "name", "none"))
@pytest.mark.parametrize("op1", [rt.MatrixOperation.NONE, rt.MatrixOperation.TRANSPOSE])
def test_fused_layer_tactic_matches_the_layer_reference(tactic, act, op1):
    from engine.kernel_table import numpy_kernel
    b_shape = (1, 64, 72) if op1 == rt.MatrixOperation.NONE else (1, 72, 64)
    layer, w_host, out_shape = fused_layer((2, 48, 64), b_shape, op1, act)
    half = isinstance(tactic, matmul_tactics.MatMulTensorCore)
    precision = rt.DataType.HALF if half else rt.DataType.FLOAT
    x, r = randn(2, 48, 64), randn(*out_shape)
    shapes, dts = ((2, 48, 64), b_shape, out_shape), ("float32",) * 3
    assert tactic.supports(layer, shapes, dts, precision) is None
    state = tactic.prepare(layer)
    out_dt = rt.DataType.HALF if half else rt.DataType.FLOAT
    y = tactic.run(state, layer, [cp.asarray(v) for v in (x, w_host, r)], precision, [out_dt])[0]
    feed = [v.astype(np.float16).astype(np.float32) if half else v for v in (x, w_host, r)]
    ref = numpy_kernel(layer)(layer, feed)[0]
    assert y.dtype == out_dt.to_numpy() and y.shape == ref.shape
    assert rel_l2(cp.asnumpy(y), ref) <= (1e-2 if half else 1e-5)


def test_fused_layer_generic_tactic_runs_the_reference_on_the_device():
    from engine.gpu.tactics import GENERIC
    from engine.kernel_table import numpy_kernel
    layer, w_host, out_shape = fused_layer((2, 24, 32), (1, 32, 40), rt.MatrixOperation.NONE,
                                           rt.ActivationType.GELU_ERF)
    x, r = randn(2, 24, 32), randn(*out_shape)
    state = GENERIC.prepare(layer)
    y = GENERIC.run(state, layer, [cp.asarray(v) for v in (x, w_host, r)], rt.DataType.FLOAT,
                    [rt.DataType.FLOAT])[0]
    assert rel_l2(cp.asnumpy(y), numpy_kernel(layer)(layer, [x, w_host, r])[0]) <= 1e-6


def test_fused_layer_half_residual_into_a_float_layer():
    """A HALF residual (an FP16 neighbour) read by an FP32 layer: widened, not misread."""
    from engine.kernel_table import numpy_kernel
    tactic = matmul_tactics.MatMulSimt()
    layer, w_host, out_shape = fused_layer((2, 40, 32), (1, 32, 24), rt.MatrixOperation.NONE,
                                           rt.ActivationType.RELU, residual_dtype=rt.float16)
    x, r = randn(2, 40, 32), randn(*out_shape).astype(np.float16)
    y = tactic.run(tactic.prepare(layer), layer, [cp.asarray(v) for v in (x, w_host, r)],
                   rt.DataType.FLOAT, [rt.DataType.FLOAT])[0]
    ref = numpy_kernel(layer)(layer, [x, w_host, r.astype(np.float32)])[0]
    assert rel_l2(cp.asnumpy(y), ref) <= 1e-5


def test_cublas_declines_and_ours_take_a_fused_layer():
    from engine.gpu.matmul_tactics import MatMulCublas
    layer, _, out_shape = fused_layer((2, 48, 64), (1, 64, 72), rt.MatrixOperation.NONE, None)
    shapes, dts = ((2, 48, 64), (1, 64, 72), out_shape), ("float32",) * 3
    assert "fused epilogue" in MatMulCublas().supports(layer, shapes, dts, rt.DataType.HALF)


def _linear_block(net, x, k, n, act):
    """x @ W + b (+ x when shapes allow) -> act: the encoder's linear tail."""
    w = net.add_constant((1, k, n), randn(1, k, n)).get_output(0)
    y = net.add_matrix_multiply(x, rt.MatrixOperation.NONE, w, rt.MatrixOperation.NONE).get_output(0)
    y = net.add_elementwise(y, net.add_constant((1, 1, n), randn(1, 1, n)).get_output(0),
                            rt.ElementWiseOperation.SUM).get_output(0)
    if k == n:
        y = net.add_elementwise(x, y, rt.ElementWiseOperation.SUM).get_output(0)
    return net.add_activation(y, act).get_output(0)


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_fused_engine_matches_the_numpy_backend(fp16, tmp_path):
    """Built through the passes: bias, scale, residual and activation ride on our
    GEMM's epilogue; the CuPy engine equals the NumPy engine of the same plan."""
    def network():
        b = rt.Builder()
        net = b.create_network()
        x = net.add_input("x", rt.float32, (-1, 40, 64))
        h = _linear_block(net, x, 64, 64, rt.ActivationType.GELU_ERF)
        s = net.add_matrix_multiply(h, rt.MatrixOperation.NONE, h, rt.MatrixOperation.TRANSPOSE)
        s = net.add_elementwise(s.get_output(0), net.add_constant(
            (1, 1, 1), np.full((1, 1, 1), 0.125, np.float32)).get_output(0),
            rt.ElementWiseOperation.PROD).get_output(0)
        y = _linear_block(net, s, 40, 48, rt.ActivationType.RELU)
        y.name = "y"
        net.mark_output(y)
        return b, net

    b, net = network()
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    cfg.timing_cache_path = str(tmp_path / "fused.cache")
    if fp16:
        cfg.set_flag(rt.BuilderFlag.FP16)
    plan = b.build_serialized_network(net, cfg)
    engine = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
    # bias, residual, GELU; the score scale; bias, ReLU
    assert engine.meta["pass_stats"]["matmul_epilogue_fusion"] == 6
    types = [i.type for i in engine.layers if i.type != rt.LayerType.CONSTANT]
    assert types == [rt.LayerType.MATRIX_MULTIPLY] * 3, types
    x = randn(3, 40, 64)
    ctx = engine.create_execution_context()
    for _ in range(3):                  # select, capture, replay
        y = ctx.execute({"x": x})["y"]
    picked = {engine.backend.selected.get(i.name) for i in engine.layers
              if i.type == rt.LayerType.MATRIX_MULTIPLY}
    # our GEMMs, the conv-backed ones or a cuDNN matmul graph (FP16; capturable): cuBLAS
    # declines a fused layer, the generic tactic is the slow fallback
    assert all(p.startswith(("matmul.mm_", "matmul.conv.")) or p in ("matmul.simt_fp32", "matmul.cudnn")
               for p in picked), picked
    assert fp16 or "matmul.cudnn" not in picked
    cpu = rt.Runtime(backend="numpy").deserialize_cuda_engine(plan)
    y_cpu = cpu.create_execution_context().execute({"x": x})["y"]
    assert rel_l2(y, y_cpu) <= (1e-2 if fp16 else 1e-5)
