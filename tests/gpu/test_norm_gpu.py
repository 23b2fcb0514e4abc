"""Fused layer norm (kernels/cuda/layernorm.cu) against float64 NumPy: warp and
block paths, rows off the 8-rows-per-block grid, every in/out dtype pair, two
normalised axes, CUDA-graph capture == eager, and the engine tactic against
the layer's NumPy adapter."""
import numpy as np
import pytest
from gpu_helpers import TOL, rel_l2

import engine as rt
from engine.gpu import norm_tactics
from kernels.gpu import layernorm as LN

cp = pytest.importorskip("cupy")
RNG = np.random.default_rng(12)
DT = [np.float16, np.float32]


def reference(x, scale, bias, k, eps):
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - k, x.ndim))
    m = x.mean(axes, keepdims=True)
    v = ((x - m) ** 2).mean(axes, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * scale.reshape(x.shape[x.ndim - k:]) + bias.reshape(
        x.shape[x.ndim - k:])


@pytest.mark.parametrize("shape, k", [((13, 768), 1), ((3, 5, 64), 1), ((2, 7), 1),
                                      ((4, 1), 1), ((3, 6000), 1), ((2, 3, 4, 40), 2),
                                      ((2, 9000), 1)])
@pytest.mark.parametrize("in_dt", DT)
@pytest.mark.parametrize("out_dt", DT)
def test_layernorm_matches_float64(shape, k, in_dt, out_dt):
    # an offset mean: the two-pass variance must not cancel
    x = (RNG.standard_normal(shape) * 3 + 5).astype(in_dt)
    L = int(np.prod(shape[len(shape) - k:]))
    scale = RNG.uniform(0.5, 1.5, L).astype(np.float32)
    bias = RNG.standard_normal(L).astype(np.float32)
    y = LN.layernorm(cp.asarray(x), cp.asarray(scale), cp.asarray(bias), norm_ndim=k, eps=1e-5,
                     out_dtype=out_dt)
    assert y.dtype == out_dt and y.shape == shape
    tol = TOL[np.dtype(np.float16)] if np.float16 in (in_dt, out_dt) else 1e-5
    assert rel_l2(cp.asnumpy(y), reference(x, scale, bias, k, 1e-5)) <= tol


def test_layernorm_noncontiguous_input_is_copied():
    x = RNG.standard_normal((16, 6, 32)).astype(np.float32)
    xt = cp.asarray(x).transpose(1, 0, 2)            # not contiguous
    ones, zeros = cp.ones(32, cp.float32), cp.zeros(32, cp.float32)
    y = LN.layernorm(xt, ones, zeros)
    assert rel_l2(cp.asnumpy(y), reference(x.transpose(1, 0, 2), np.ones(32), np.zeros(32), 1,
                                           1e-5)) <= 1e-5


def test_row_vector_broadcasts_into_the_normalised_shape():
    v = LN.row_vector(cp.asarray(np.arange(4, dtype=np.float16).reshape(1, 1, 4)), (3, 4))
    assert v.dtype == np.float32 and v.shape == (12,)
    np.testing.assert_array_equal(cp.asnumpy(v), np.tile(np.arange(4), 3))


def test_cuda_graph_replay_matches_eager():
    cp.cuda.Device().synchronize()   # inputs made on the legacy stream are ready: a
    stream = cp.cuda.Stream(non_blocking=True)   # non-blocking stream would not wait for them
    with stream:
        # made on the stream that uses them: a non-blocking stream does not wait for the
        # legacy default stream (an H200 under load computed `eager` from a half-written x)
        x = cp.asarray(RNG.standard_normal((64, 768)), cp.float16)
        s, b = cp.asarray(RNG.uniform(0.5, 1.5, 768), cp.float32), cp.zeros(768, cp.float32)
        eager = LN.layernorm(x, s, b).copy()
        LN.layernorm(x, s, b)
        stream.synchronize()
        stream.begin_capture()
        y = LN.layernorm(x, s, b)
        graph = stream.end_capture()
        y.fill(np.nan)
        graph.launch(stream)
        stream.synchronize()
    np.testing.assert_array_equal(cp.asnumpy(y), cp.asnumpy(eager))


@pytest.mark.parametrize("x_shape, axes, s_shape, const", [
    ((2, 16, 96), 0b100, (1, 1, 96), True),
    ((2, 16, 96), 0b100, (1, 1, 96), False),     # scale/bias as run-time inputs
    ((2, 4, 6, 8), 0b1100, (1, 1, 6, 8), True),
    ((2, 4, 6, 8), 0b1100, (1, 1, 1, 8), True),  # scale broadcast inside the normalised axes
])
@pytest.mark.parametrize("precision", [rt.DataType.FLOAT, rt.DataType.HALF])
def test_engine_tactic_matches_the_layer_reference(x_shape, axes, s_shape, const, precision):
    from engine.kernel_table import numpy_kernel
    net = rt.Network()
    x = net.add_input("x", rt.float32, x_shape)
    sv = RNG.uniform(0.5, 1.5, s_shape).astype(np.float32)
    bv = RNG.standard_normal(s_shape).astype(np.float32)
    if const:
        s = net.add_constant(s_shape, sv).get_output(0)
        b = net.add_constant(s_shape, bv).get_output(0)
    else:
        s, b = net.add_input("s", rt.float32, s_shape), net.add_input("b", rt.float32, s_shape)
    layer = net.add_normalization(x, s, b, axes)
    layer.epsilon = 1e-3
    net.mark_output(layer.get_output(0))
    t = norm_tactics.LayerNormKernel()
    assert t.supports(layer, (x_shape, s_shape, s_shape), ("float32",) * 3, precision) is None
    xv = RNG.standard_normal(x_shape).astype(np.float32)
    state = t.prepare(layer)
    ins = [cp.asarray(v) for v in (xv, sv, bv)]
    for _ in range(2):                  # the second call takes the cached row vectors
        y = t.run(state, layer, ins, precision, [precision])[0]
    half = precision == rt.DataType.HALF
    feed = [v.astype(np.float16).astype(np.float32) if half else v for v in (xv, sv, bv)]
    ref = numpy_kernel(layer)(layer, feed)[0]
    assert y.dtype == precision.to_numpy()
    assert rel_l2(cp.asnumpy(y), ref) <= (1e-2 if half else 1e-5)
