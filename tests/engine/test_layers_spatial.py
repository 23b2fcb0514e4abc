"""Pooling, LRN, padding and resize layers against TensorFlow and naive NumPy loops."""
import numpy as np
import pytest

import engine as rt
from engine.errors import NetworkDefinitionError
from engine.testing import interpret, rel_l2
from kernels import pooling as kpool
from kernels import spatial as kspatial

TOL = 1e-5


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def run_layer(x, add, dtype=rt.float32):
    net = rt.Network()
    layer = add(net, net.add_input("x", dtype, x.shape))
    net.mark_output(layer.get_output(0))
    return interpret(net, {"x": x})[layer.get_output(0).name], layer


def nchw(a):
    return np.moveaxis(a, -1, 1)


def nhwc(a):
    return np.moveaxis(a, 1, -1)


# -- pooling ------------------------------------------------------------------------

def naive_pool(x, kind, window, stride, pre, post, exclude=True, blend=0.0, round_up=False):
    """Loop over output positions; window bounds computed from first principles."""
    nd = len(window)
    sp = x.shape[-nd:]
    outs = []
    for i, f, s, b, a in zip(sp, window, stride, pre, post):
        span = i + b + a - f
        outs.append((-(-span // s) if round_up else span // s) + 1)
    y = np.zeros(x.shape[:-nd] + tuple(outs))
    for pos in np.ndindex(*outs):
        starts = [o * s - b for o, s, b in zip(pos, stride, pre)]
        valid = tuple(slice(max(st, 0), min(st + f, i)) for st, f, i in zip(starts, window, sp))
        region = x[(Ellipsis,) + valid].reshape(x.shape[:-nd] + (-1,))
        padded = np.prod([min(st + f, i + a) - max(st, -b)
                          for st, f, i, a, b in zip(starts, window, sp, post, pre)])
        mx = region.max(-1)
        avg = region.sum(-1) / (region.shape[-1] if exclude else padded)
        y[(Ellipsis,) + pos] = {"MAX": mx, "AVERAGE": avg,
                                "MAX_AVERAGE_BLEND": (1 - blend) * mx + blend * avg}[kind]
    return y


@pytest.mark.parametrize("kind", ["MAX", "AVERAGE"])
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
@pytest.mark.parametrize("window,stride", [(2, 2), (3, 2), (3, 1), (2, 3)])
def test_pool2d_matches_tf(kind, padding, window, stride):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    x = rand(rng, 2, 3, 11, 8)

    def add(net, t):
        pool = net.add_pooling_nd(t, rt.PoolingType[kind], (window, window))
        pool.stride_nd = (stride, stride)
        if padding == "SAME":
            pool.padding_mode = rt.PaddingMode.SAME_UPPER
        return pool

    got, _ = run_layer(x, add)
    fn = tf.nn.max_pool2d if kind == "MAX" else tf.nn.avg_pool2d
    ref = nchw(fn(nhwc(x), window, stride, padding).numpy())
    assert rel_l2(got, ref) <= TOL


@pytest.mark.parametrize("kind", ["MAX", "AVERAGE"])
def test_pool3d_matches_tf(kind):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(1)
    x = rand(rng, 2, 3, 5, 7, 6)

    def add(net, t):
        pool = net.add_pooling_nd(t, rt.PoolingType[kind], (2, 3, 2))
        pool.stride_nd, pool.padding_mode = (2, 2, 1), rt.PaddingMode.SAME_UPPER
        return pool

    got, _ = run_layer(x, add)
    fn = tf.nn.max_pool3d if kind == "MAX" else tf.nn.avg_pool3d
    ref = fn(np.moveaxis(x, 1, -1), [2, 3, 2], [2, 2, 1], "SAME").numpy()
    assert rel_l2(got, np.moveaxis(ref, -1, 1)) <= TOL


@pytest.mark.parametrize("kind", ["MAX", "AVERAGE", "MAX_AVERAGE_BLEND"])
@pytest.mark.parametrize("exclude", [True, False])
@pytest.mark.parametrize("mode", ["EXPLICIT_ROUND_DOWN", "EXPLICIT_ROUND_UP"])
def test_pool_explicit_padding_matches_naive(kind, exclude, mode):
    rng = np.random.default_rng(2)
    x = rand(rng, 2, 3, 10, 9)
    window, stride, pre, post = (3, 3), (2, 2), (1, 0), (2, 1)   # W rounds 3.5 down or up

    def add(net, t):
        pool = net.add_pooling_nd(t, rt.PoolingType[kind], window)
        pool.stride_nd, pool.pre_padding, pool.post_padding = stride, pre, post
        pool.average_count_excludes_padding = exclude
        pool.blend_factor = 0.3
        pool.padding_mode = rt.PaddingMode[mode]
        return pool

    got, layer = run_layer(x, add)
    ref = naive_pool(x, kind, window, stride, pre, post, exclude, 0.3, mode.endswith("UP"))
    assert got.shape == ref.shape == layer.get_output(0).shape
    assert rel_l2(got, ref) <= TOL


def test_pool_same_lower_and_blend_default_is_max():
    rng = np.random.default_rng(3)
    x = rand(rng, 1, 2, 6, 7)

    def add(net, t):
        pool = net.add_pooling_nd(t, rt.PoolingType.AVERAGE, (3, 2))
        pool.stride_nd, pool.padding_mode = (2, 2), rt.PaddingMode.SAME_LOWER
        return pool

    got, _ = run_layer(x, add)
    # P = (ceil(I/S) - 1) * S + F - I: H 6 -> 1 (pre 1, post 0), W 7 -> 1 (pre 1, post 0)
    assert rel_l2(got, naive_pool(x, "AVERAGE", (3, 2), (2, 2), (1, 1), (0, 0))) <= TOL
    blend, _ = run_layer(x, lambda n, t: n.add_pooling_nd(t, rt.PoolingType.MAX_AVERAGE_BLEND, (2, 2)))
    assert rel_l2(blend, naive_pool(x, "MAX", (2, 2), (1, 1), (0, 0), (0, 0))) <= TOL


def test_pool_shape_inference_and_reinference():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 8, 32, -1))
    pool = net.add_pooling_nd(x, rt.PoolingType.MAX, (2, 2))
    assert pool.stride_nd == (1, 1)                       # TensorRT's default stride
    assert pool.get_output(0).shape == (-1, 8, 31, -1)
    pool.stride_nd = (2, 2)
    assert pool.get_output(0).shape == (-1, 8, 16, -1)
    pool.type = rt.PoolingType.AVERAGE                    # TensorRT's layer.type = ...
    assert pool.pooling_type == rt.PoolingType.AVERAGE
    pool.window_size_nd = (3, 3)
    pool.padding_nd = (1, 1)
    assert pool.get_output(0).shape == (-1, 8, 16, -1)


@pytest.mark.parametrize("setup,match", [
    ({"blend_factor": 1.5}, r"blend_factor.*\[0, 1\]"),
    ({"pre_padding": (2, 0)}, r"pre_padding.*below window_size_nd \(2, 2\)"),
    ({"post_padding": (0, 3)}, r"post_padding.*below window_size_nd"),
    ({"window_size_nd": (9, 2)}, r"spatial dims \(8, 8\)"),
    ({"stride_nd": (1,)}, r"stride_nd.*2 values"),
    # ROUND_UP's last window would start past the input (at 9 of 8): nothing to pool
    ({"stride_nd": (1, 3), "padding_mode": rt.PaddingMode.EXPLICIT_ROUND_UP, "post_padding": (0, 1)},
     r"padding_mode.*EXPLICIT_ROUND_UP.*starts inside the input"),
    ({"window_size_nd": (2, 2, 2, 2)}, "window_size_nd.*1 to 3"),
])
def test_pool_rejects_bad_attributes(setup, match):
    net = rt.Network()
    pool = net.add_pooling_nd(net.add_input("x", rt.float32, (1, 2, 8, 8)), rt.PoolingType.MAX, (2, 2))
    *first, (key, value) = setup.items()
    for k, v in first:
        setattr(pool, k, v)
    with pytest.raises(NetworkDefinitionError, match=match):
        setattr(pool, key, value)
    assert pool.get_output(0).shape[:2] == (1, 2)


def test_pool_rejects_bad_inputs_and_kinds():
    net = rt.Network()
    with pytest.raises(NetworkDefinitionError, match="input.*INT32.*FLOAT or HALF"):
        net.add_pooling_nd(net.add_input("i", rt.int32, (1, 2, 8, 8)), rt.PoolingType.MAX, (2, 2))
    with pytest.raises(NetworkDefinitionError, match=r"rank-3.*rank 4"):
        net.add_pooling_nd(net.add_input("r", rt.float32, (2, 8, 8)), rt.PoolingType.MAX, (2, 2))
    assert net.num_layers == 0
    with pytest.raises(ValueError, match="unknown pooling type 'MIN'"):
        kpool.pool_nd(np.ones((1, 1, 4, 4), np.float32), "MIN", (2, 2), (1, 1), (0, 0), (0, 0), (3, 3))


# -- LRN ------------------------------------------------------------------------------

@pytest.mark.parametrize("window", [1, 3, 5, 15])
@pytest.mark.parametrize("beta", [0.75, 0.5])
def test_lrn_matches_tf(window, beta):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(4)
    x = rand(rng, 2, 9, 5, 4)
    alpha, k = 3e-3, 2.0
    got, _ = run_layer(x, lambda n, t: n.add_lrn(t, window, alpha, beta, k))
    ref = tf.nn.local_response_normalization(nhwc(x), depth_radius=(window - 1) // 2, bias=k,
                                             alpha=alpha / window, beta=beta).numpy()
    assert rel_l2(got, nchw(ref)) <= TOL


def test_lrn_on_3d_spatial_matches_formula():
    rng = np.random.default_rng(5)
    x = rand(rng, 1, 6, 3, 2, 4)
    got, _ = run_layer(x, lambda n, t: n.add_lrn(t, 3, 0.5, 0.8, 1.5))
    x64 = x.astype(np.float64)
    ref = np.empty_like(x64)
    for c in range(6):
        lo, hi = max(0, c - 1), min(6, c + 2)
        ref[:, c] = x64[:, c] / (1.5 + 0.5 / 3 * (x64[:, lo:hi] ** 2).sum(1)) ** 0.8
    assert rel_l2(got, ref) <= TOL


@pytest.mark.parametrize("setup,match", [
    ({"window_size": 4}, r"window_size.*odd int in \[1, 15\]"),
    ({"window_size": 17}, r"window_size.*odd int in \[1, 15\]"),
    ({"beta": 0.0}, r"beta.*\[0.01, 100000\]"),
    ({"k": 0.0}, r"'k'.*\[1e-05, 1e\+10\]"),
    ({"alpha": 1e21}, r"alpha.*\[-1e\+20, 1e\+20\]"),
])
def test_lrn_rejects_bad_parameters(setup, match):
    net = rt.Network()
    lrn = net.add_lrn(net.add_input("x", rt.float32, (1, 4, 3, 3)), 3, 1e-4, 0.75, 1.0)
    for key, value in setup.items():
        with pytest.raises(NetworkDefinitionError, match=match):
            setattr(lrn, key, value)
    assert lrn.window_size == 3


def test_lrn_rejects_bad_inputs_and_keeps_dynamic_dims():
    net = rt.Network()
    with pytest.raises(NetworkDefinitionError, match=r"rank-2.*rank >= 3"):
        net.add_lrn(net.add_input("a", rt.float32, (2, 8)), 3, 1e-4, 0.75, 1.0)
    with pytest.raises(NetworkDefinitionError, match="INT32"):
        net.add_lrn(net.add_input("b", rt.int32, (2, 8, 4)), 3, 1e-4, 0.75, 1.0)
    lrn = net.add_lrn(net.add_input("c", rt.float16, (-1, 8, -1, 4)), 3, 1e-4, 0.75, 1.0)
    assert lrn.get_output(0).shape == (-1, 8, -1, 4) and lrn.get_output(0).dtype == rt.float16


# -- padding ------------------------------------------------------------------------------

@pytest.mark.parametrize("pre,post", [((1, 2), (3, 0)), ((0, -1), (-2, 2)), ((-1, -2), (-1, -1)),
                                      ((1, 0, 2), (0, 1, 1)), ((2,), (-1,))])
def test_padding_pads_with_zeros_and_crops(pre, post):
    rng = np.random.default_rng(6)
    x = rand(rng, 2, 3, 6, 5)
    got, layer = run_layer(x, lambda n, t: n.add_padding_nd(t, pre, post))
    ref = x
    for axis, (b, a) in enumerate(zip(pre, post), start=x.ndim - len(pre)):
        widths = [(0, 0)] * x.ndim
        widths[axis] = (max(b, 0), max(a, 0))
        ref = np.pad(ref, widths)
        stop = ref.shape[axis] - max(-a, 0)
        ref = np.take(ref, np.arange(max(-b, 0), stop), axis=axis)
    assert got.shape == ref.shape == layer.get_output(0).shape
    np.testing.assert_array_equal(got, ref)


def test_padding_shape_inference_and_errors():
    net = rt.Network()
    x = net.add_input("x", rt.int32, (-1, 3, 4, -1))
    pad = net.add_padding_nd(x, (1, 1), (0, 2))
    assert pad.get_output(0).shape == (-1, 3, 5, -1) and pad.get_output(0).dtype == rt.int32
    pad.post_padding_nd = (-1, 0)
    assert pad.get_output(0).shape == (-1, 3, 4, -1)
    with pytest.raises(NetworkDefinitionError, match=r"post_padding_nd.*2 values"):
        pad.post_padding_nd = (1, 1, 1)
    with pytest.raises(NetworkDefinitionError, match=r"at least 1 element of the 4 along trailing axis 0"):
        pad.pre_padding_nd = (-4, 0)
    with pytest.raises(NetworkDefinitionError, match=r"pre_padding_nd.*at most 2 values"):
        net.add_padding_nd(net.add_input("y", rt.float32, (4, 4)), (1, 1, 1), (1, 1, 1))
    assert pad.pre_padding_nd == (1, 1)


# -- resize ---------------------------------------------------------------------------------

@pytest.mark.parametrize("out_hw", [(14, 9), (5, 4), (7, 17), (1, 1)])
@pytest.mark.parametrize("coord", ["ASYMMETRIC", "ALIGN_CORNERS", "HALF_PIXEL"])
def test_bilinear_resize_matches_tf(out_hw, coord):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(7)
    x = rand(rng, 2, 3, 7, 6)

    def add(net, t):
        layer = net.add_resize(t)
        layer.shape = (2, 3) + out_hw
        layer.resize_mode = rt.ResizeMode.LINEAR
        layer.coordinate_transformation = rt.ResizeCoordinateTransformation[coord]
        return layer

    got, _ = run_layer(x, add)
    ref = tf.compat.v1.image.resize_bilinear(nhwc(x), out_hw, align_corners=coord == "ALIGN_CORNERS",
                                             half_pixel_centers=coord == "HALF_PIXEL").numpy()
    assert rel_l2(got, nchw(ref)) <= TOL


@pytest.mark.parametrize("out_hw", [(14, 9), (5, 4), (3, 13)])
@pytest.mark.parametrize("coord,rounding,tf_args", [
    ("ASYMMETRIC", "FLOOR", {}),
    ("ALIGN_CORNERS", "HALF_UP", {"align_corners": True}),
    # TF's half-pixel nearest: floor((o + 0.5) * in / out) == HALF_PIXEL + round half up
    ("HALF_PIXEL", "HALF_UP", {"half_pixel_centers": True}),
])
def test_nearest_resize_matches_tf(out_hw, coord, rounding, tf_args):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(8)
    x = rand(rng, 2, 3, 7, 6)

    def add(net, t):
        layer = net.add_resize(t)
        layer.shape = (2, 3) + out_hw
        layer.coordinate_transformation = rt.ResizeCoordinateTransformation[coord]
        layer.nearest_rounding = rt.ResizeRoundMode[rounding]
        return layer

    got, _ = run_layer(x, add)
    ref = tf.compat.v1.image.resize_nearest_neighbor(nhwc(x), out_hw, **tf_args).numpy()
    np.testing.assert_array_equal(got, nchw(ref))


@pytest.mark.parametrize("rounding,expected", [
    ("FLOOR", [0, 0, 1, 1, 2, 2]), ("CEIL", [0, 1, 1, 2, 2, 2]),
    ("HALF_UP", [0, 1, 1, 2, 2, 2]), ("HALF_DOWN", [0, 0, 1, 1, 2, 2])])
def test_nearest_rounding_modes(rounding, expected):
    # ASYMMETRIC with scale 2: output o samples o / 2 = 0, .5, 1, 1.5, 2, 2.5 (clamped to 2)
    x = np.arange(3, dtype=np.float32).reshape(1, 1, 1, 3)

    def add(net, t):
        layer = net.add_resize(t)
        layer.scales = (1, 1, 1, 2)
        layer.nearest_rounding = rt.ResizeRoundMode[rounding]
        return layer

    got, layer = run_layer(x, add)
    assert layer.get_output(0).shape == (1, 1, 1, 6)
    assert got.ravel().tolist() == expected


def test_resize_by_scales_follows_tensorrt_and_onnx():
    rng = np.random.default_rng(9)
    x = rand(rng, 1, 2, 4, 5, 3)

    def add(net, t):
        layer = net.add_resize(t)
        layer.scales = (1.0, 1.0, 2.0, 0.5, 1.5)
        layer.resize_mode = rt.ResizeMode.LINEAR
        return layer

    got, layer = run_layer(x, add)
    assert got.shape == layer.get_output(0).shape == (1, 2, 8, 2, 4)
    # trilinear, ASYMMETRIC: output o samples o / scale, clamped into the input
    ref = x.astype(np.float64)
    for axis, (n_out, scale) in zip((2, 3, 4), ((8, 2.0), (2, 0.5), (4, 1.5))):
        src = np.minimum(np.arange(n_out) / scale, ref.shape[axis] - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, ref.shape[axis] - 1)
        f = (src - lo).reshape([-1 if a == axis else 1 for a in range(ref.ndim)])
        ref = np.take(ref, lo, axis) * (1 - f) + np.take(ref, hi, axis) * f
    assert rel_l2(got, ref) <= TOL


def test_resize_shape_and_scales_last_one_wins_and_dynamic_dims():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 3, 10, 10))
    layer = net.add_resize(x)
    assert layer.get_output(0).shape == (-1, 3, 10, 10)
    layer.scales = (1, 1, 2, 0.29)
    assert layer.get_output(0).shape == (-1, 3, 20, 2)
    layer.shape = (4, 3, 5, 5)
    assert layer.scales is None and layer.get_output(0).shape == (4, 3, 5, 5)
    layer.scales = (1, 1, 0.5, 2)
    assert layer.shape is None and layer.get_output(0).shape == (-1, 3, 5, 20)
    with pytest.raises(NetworkDefinitionError, match=r"shape.*4 values"):
        layer.shape = (3, 5, 5)
    assert layer.shape is None and layer.scales == (1, 1, 0.5, 2)
    assert layer.get_output(0).shape == (-1, 3, 5, 20)
    with pytest.raises(NetworkDefinitionError, match="LINEAR.*NEAREST to resize dims outside"):
        layer.resize_mode = rt.ResizeMode.LINEAR
        layer.scales = (2, 1, 1, 1)
    with pytest.raises(NetworkDefinitionError, match=r"scales.*at least 1 element of the 10 along axis 2"):
        layer.scales = (1, 1, 0.05, 1)
    with pytest.raises(NetworkDefinitionError, match=r"scales.*finite values > 0"):
        layer.scales = (1, 1, 0, 1)
    with pytest.raises(NetworkDefinitionError, match=r"scales.*sequence of numbers"):
        layer.scales = (1, 1, True, 1)
    with pytest.raises(NetworkDefinitionError, match=r"scales.*sequence of numbers"):
        layer.scales = 2.0
    layer.scales = None
    assert layer.get_output(0).shape == (-1, 3, 10, 10)


def test_resize_nearest_keeps_integer_types_but_linear_needs_floats():
    x = np.arange(12, dtype=np.int32).reshape(1, 1, 3, 4)

    def add(net, t):
        layer = net.add_resize(t)
        layer.shape = (1, 1, 6, 8)
        return layer

    got, layer = run_layer(x, add, rt.int32)
    assert got.dtype == np.int32 and np.array_equal(got, x.repeat(2, 2).repeat(2, 3))
    with pytest.raises(NetworkDefinitionError, match="INT32 tensor.*FLOAT or HALF tensor for LINEAR"):
        layer.resize_mode = rt.ResizeMode.LINEAR


def test_resize_kernel_rejects_unknown_transformation():
    with pytest.raises(ValueError, match="unknown coordinate transformation 'CUBIC'"):
        kspatial.source_coords(4, 2, 2.0, "CUBIC")
