"""Convolution and deconvolution layers against TensorFlow and naive NumPy loops."""
import numpy as np
import pytest

import engine as rt
from engine.errors import NetworkDefinitionError
from engine.testing import interpret, rel_l2
from kernels import conv as kconv

TOL = 1e-5


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def run_layer(x, add, residual=None):
    """Build input -> layer (made by ``add(network, tensor)``) -> output; run it."""
    net = rt.Network()
    t = net.add_input("x", rt.float32, x.shape)
    layer = add(net, t)
    feeds = {"x": x}
    if residual is not None:
        r = net.add_input("r", rt.float32, residual.shape)
        layer.set_input(1, r)
        feeds["r"] = residual
    net.mark_output(layer.get_output(0))
    return interpret(net, feeds)[layer.get_output(0).name], layer


# -- independent references: loops over output positions ----------------------------

def naive_conv(x, w, b, stride, pre, post, dilation, groups, round_up=False):
    n, c = x.shape[:2]
    k, cg = w.shape[:2]
    win = w.shape[2:]
    nd = len(win)
    kg = k // groups
    big = [p + q + 2 * s * f for p, q, s, f in zip(pre, post, stride, win)]  # generous zeros
    xp = np.zeros((n, c) + tuple(i + e for i, e in zip(x.shape[2:], big)), np.float64)
    xp[(slice(None), slice(None)) + tuple(slice(p, p + i) for p, i in zip(pre, x.shape[2:]))] = x
    outs = []
    for i, p, q, s, f, d in zip(x.shape[2:], pre, post, stride, win, dilation):
        span = i + p + q - (d * (f - 1) + 1)
        outs.append((-(-span // s) if round_up else span // s) + 1)
    y = np.zeros((n, k) + tuple(outs))
    for pos in np.ndindex(*outs):
        idx = tuple(slice(o * s, o * s + d * (f - 1) + 1, d)
                    for o, s, f, d in zip(pos, stride, win, dilation))
        patch = xp[(slice(None), slice(None)) + idx]           # (n, c, *win)
        for g in range(groups):
            pg = patch[:, g * cg:(g + 1) * cg].reshape(n, -1)
            wg = w[g * kg:(g + 1) * kg].reshape(kg, -1)
            y[(slice(None), slice(g * kg, (g + 1) * kg)) + pos] = pg @ wg.T
    if b is not None:
        y += b.reshape((k,) + (1,) * nd)
    return y


def naive_deconv(x, w, b, stride, pre, post, dilation, groups):
    n, c = x.shape[:2]
    kg, win = w.shape[1], w.shape[2:]
    cg, k = c // groups, kg * groups
    full = [(i - 1) * s + d * (f - 1) + 1 for i, s, f, d in zip(x.shape[2:], stride, win, dilation)]
    y = np.zeros((n, k) + tuple(full))
    for pos in np.ndindex(*x.shape[2:]):
        for tap in np.ndindex(*win):
            o = tuple(p * s + t * d for p, s, t, d in zip(pos, stride, tap, dilation))
            for ci in range(c):
                g = ci // cg
                contrib = x[(slice(None), ci) + pos][:, None] * w[(ci, slice(None)) + tap][None]
                y[(slice(None), slice(g * kg, (g + 1) * kg)) + o] += contrib
    y = y[(slice(None), slice(None)) + tuple(slice(p, f - q) for p, q, f in zip(pre, post, full))]
    if b is not None:
        y += b.reshape((k,) + (1,) * len(win))
    return y


# -- convolution vs TensorFlow --------------------------------------------------------

def nchw(a):
    return np.moveaxis(a, -1, 1)


def nhwc(a):
    return np.moveaxis(a, 1, -1)


@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2), (3, 1)])
@pytest.mark.parametrize("padding", ["VALID", "SAME", "EXPLICIT"])
def test_conv2d_matches_tf(stride, dilation, padding):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    x, w, b = rand(rng, 2, 5, 13, 11), rand(rng, 7, 5, 3, 4), rand(rng, 7)

    def add(net, t):
        conv = net.add_convolution_nd(t, 7, (3, 4), kernel=w, bias=b)
        conv.stride_nd, conv.dilation_nd = (stride, stride), (dilation, dilation)
        if padding == "SAME":
            conv.padding_mode = rt.PaddingMode.SAME_UPPER
        elif padding == "EXPLICIT":
            conv.pre_padding, conv.post_padding = (1, 2), (2, 0)
        return conv

    got, _ = run_layer(x, add)
    tf_pad = [[0, 0], [1, 2], [2, 0], [0, 0]] if padding == "EXPLICIT" else padding
    ref = tf.nn.conv2d(nhwc(x), np.transpose(w, (2, 3, 1, 0)), strides=stride, padding=tf_pad,
                       dilations=dilation).numpy()
    ref = nchw(ref) + b.reshape(7, 1, 1)
    assert rel_l2(got, ref) <= TOL


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_conv3d_matches_tf(padding):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(1)
    x, w = rand(rng, 2, 3, 6, 7, 5), rand(rng, 4, 3, 3, 2, 3)

    def add(net, t):
        conv = net.add_convolution_nd(t, 4, (3, 2, 3), kernel=w)
        conv.stride_nd = (2, 1, 2)
        if padding == "SAME":
            conv.padding_mode = rt.PaddingMode.SAME_UPPER
        return conv

    got, _ = run_layer(x, add)
    ref = tf.nn.conv3d(np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 4, 1, 0)),
                       strides=[1, 2, 1, 2, 1], padding=padding).numpy()
    assert rel_l2(got, np.moveaxis(ref, -1, 1)) <= TOL


@pytest.mark.parametrize("multiplier,stride", [(1, 1), (2, 2), (3, 1)])
def test_depthwise_conv_matches_tf(multiplier, stride):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(2)
    c = 6
    x, wtf = rand(rng, 2, c, 12, 10), rand(rng, 3, 3, c, multiplier)
    # TF filter (R, S, C, M); output channel c*M + m is ours (K = C*M, 1, R, S)
    w = np.transpose(wtf, (2, 3, 0, 1)).reshape(c * multiplier, 1, 3, 3)

    def add(net, t):
        conv = net.add_convolution_nd(t, c * multiplier, (3, 3), kernel=w)
        conv.num_groups, conv.stride_nd = c, (stride, stride)
        conv.padding_mode = rt.PaddingMode.SAME_UPPER
        return conv

    got, _ = run_layer(x, add)
    ref = tf.nn.depthwise_conv2d(nhwc(x), wtf, [1, stride, stride, 1], "SAME").numpy()
    assert rel_l2(got, nchw(ref)) <= TOL


# -- convolution vs the naive loop -------------------------------------------------------

@pytest.mark.parametrize("groups,cin,kout", [(1, 4, 6), (2, 4, 6), (4, 8, 4), (3, 6, 9)])
@pytest.mark.parametrize("mode", ["EXPLICIT_ROUND_DOWN", "EXPLICIT_ROUND_UP"])
def test_grouped_conv_explicit_padding_matches_naive(groups, cin, kout, mode):
    rng = np.random.default_rng(3)
    x, w, b = rand(rng, 2, cin, 10, 9), rand(rng, kout, cin // groups, 3, 2), rand(rng, kout)
    pre, post, stride, dil = (1, 0), (0, 2), (3, 2), (2, 1)

    def add(net, t):
        conv = net.add_convolution_nd(t, kout, (3, 2), kernel=w, bias=b)
        conv.num_groups, conv.stride_nd, conv.dilation_nd = groups, stride, dil
        conv.pre_padding, conv.post_padding = pre, post
        conv.padding_mode = rt.PaddingMode[mode]
        return conv

    got, layer = run_layer(x, add)
    ref = naive_conv(x, w, b, stride, pre, post, dil, groups, round_up=mode.endswith("UP"))
    assert got.shape == ref.shape == layer.get_output(0).shape
    assert rel_l2(got, ref) <= TOL


@pytest.mark.parametrize("size,stride,window", [(7, 2, 3), (8, 2, 3), (9, 3, 2), (5, 2, 4)])
def test_same_lower_puts_the_odd_pad_first(size, stride, window):
    rng = np.random.default_rng(4)
    x, w = rand(rng, 1, 3, size, size + 1), rand(rng, 2, 3, window, window)

    def add(net, t):
        conv = net.add_convolution_nd(t, 2, (window, window), kernel=w)
        conv.stride_nd, conv.padding_mode = (stride, stride), rt.PaddingMode.SAME_LOWER
        conv.padding_nd = (5, 5)        # SAME modes ignore explicit padding
        return conv

    got, _ = run_layer(x, add)
    pads = []
    for i in x.shape[2:]:
        total = max((-(-i // stride) - 1) * stride + window - i, 0)
        pads.append((total - total // 2, total // 2))
    ref = naive_conv(x, w, None, (stride, stride), [p[0] for p in pads], [p[1] for p in pads],
                     (1, 1), 1)
    assert got.shape[2:] == tuple(-(-i // stride) for i in x.shape[2:])
    assert rel_l2(got, ref) <= TOL


def test_conv3d_grouped_dilated_matches_naive():
    rng = np.random.default_rng(5)
    x, w = rand(rng, 1, 4, 5, 6, 5), rand(rng, 6, 2, 2, 3, 2)

    def add(net, t):
        conv = net.add_convolution_nd(t, 6, (2, 3, 2), kernel=w)
        conv.num_groups, conv.dilation_nd, conv.padding_nd = 2, (2, 1, 1), (1, 1, 0)
        return conv

    got, _ = run_layer(x, add)
    assert rel_l2(got, naive_conv(x, w, None, (1, 1, 1), (1, 1, 0), (1, 1, 0), (2, 1, 1), 2)) <= TOL


def test_conv_splits_large_batches_into_chunks(monkeypatch):
    rng = np.random.default_rng(6)
    x, w = rand(rng, 5, 3, 6, 6), rand(rng, 4, 3, 3, 3)
    whole = kconv.conv_nd(x, w, None, (1, 1), (1, 1), (6, 6), (1, 1), 1)
    monkeypatch.setattr(kconv, "COLS_BUDGET_BYTES", 3 * 9 * 36 * 4 * 2)   # two images a chunk
    assert rel_l2(kconv.conv_nd(x, w, None, (1, 1), (1, 1), (6, 6), (1, 1), 1), whole) == 0.0
    wd = rand(rng, 3, 4, 2, 2)
    full = kconv.deconv_nd(x, wd, None, (2, 2), (0, 0), (12, 12), (1, 1), 1)
    assert rel_l2(full, naive_deconv(x, wd, None, (2, 2), (0, 0), (0, 0), (1, 1), 1)) <= TOL


# -- fusion hooks --------------------------------------------------------------------------

@pytest.mark.parametrize("kind,alpha,beta,ref_fn", [
    ("RELU", None, None, lambda v: np.maximum(v, 0)),
    ("LEAKY_RELU", None, None, lambda v: np.where(v >= 0, v, 0.01 * v)),   # TensorRT's default
    ("LEAKY_RELU", 0.2, None, lambda v: np.where(v >= 0, v, 0.2 * v)),
    ("CLIP", -0.5, 1.5, lambda v: np.clip(v, -0.5, 1.5)),
    ("CLIP", None, None, lambda v: np.clip(v, 0.0, 6.0)),                   # ReLU6 by default
    ("SIGMOID", None, None, lambda v: 1 / (1 + np.exp(-v))),
])
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("deconv", [False, True])
def test_fused_activation_and_residual_equal_separate_ops(kind, alpha, beta, ref_fn,
                                                         with_residual, deconv):
    rng = np.random.default_rng(7)
    x, b = rand(rng, 2, 4, 7, 6), rand(rng, 5)
    w = rand(rng, 4, 5, 3, 3) if deconv else rand(rng, 5, 4, 3, 3)

    def add(net, t):
        add_fn = net.add_deconvolution_nd if deconv else net.add_convolution_nd
        layer = add_fn(t, 5, (3, 3), kernel=w, bias=b)
        layer.stride_nd, layer.padding_nd = (2, 2), (1, 1)
        return layer

    plain, _ = run_layer(x, add)
    residual = rand(rng, *plain.shape) if with_residual else None

    def add_fused(net, t):
        layer = add(net, t)
        layer.post_activation = rt.ActivationType[kind]
        layer.post_alpha, layer.post_beta = alpha, beta
        return layer

    fused, layer = run_layer(x, add_fused, residual)
    ref = ref_fn(plain.astype(np.float64) + (0 if residual is None else residual))
    assert rel_l2(fused, ref) <= TOL
    assert layer.num_inputs == (2 if with_residual else 1)


def test_fusion_attributes_reset_to_none():
    net = rt.Network()
    conv = net.add_convolution_nd(net.add_input("x", rt.float32, (1, 2, 5, 5)), 3, (3, 3),
                                  kernel=np.ones((3, 2, 3, 3), np.float32))
    conv.post_activation, conv.post_alpha = "ELU", 0.5
    assert conv.post_activation == rt.ActivationType.ELU and conv.post_params() == (0.5, 0.0)
    conv.post_activation, conv.post_alpha = None, None
    assert conv.post_activation is None and conv.post_alpha is None
    with pytest.raises(NetworkDefinitionError, match="post_activation.*ActivationType"):
        conv.post_activation = "SWISH"


# -- deconvolution ---------------------------------------------------------------------------

@pytest.mark.parametrize("window,stride", [(3, 2), (4, 2), (2, 2), (3, 1), (5, 3)])
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_deconv2d_matches_tf_conv2d_transpose(window, stride, padding):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(8)
    x, w, b = rand(rng, 2, 4, 5, 6), rand(rng, 4, 3, window, window), rand(rng, 3)

    def add(net, t):
        deconv = net.add_deconvolution_nd(t, 3, (window, window), kernel=w, bias=b)
        deconv.stride_nd = (stride, stride)
        if padding == "SAME":
            deconv.padding_mode = rt.PaddingMode.SAME_UPPER
        return deconv

    got, layer = run_layer(x, add)
    if padding == "VALID":
        out_hw = [(i - 1) * stride + window for i in x.shape[2:]]
    else:
        out_hw = [i * stride for i in x.shape[2:]]
    ref = tf.nn.conv2d_transpose(nhwc(x), np.transpose(w, (2, 3, 1, 0)), [2] + out_hw + [3],
                                 strides=stride, padding=padding).numpy()
    ref = nchw(ref) + b.reshape(3, 1, 1)
    assert layer.get_output(0).shape == ref.shape
    assert rel_l2(got, ref) <= TOL


def test_deconv3d_matches_tf_conv3d_transpose():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(9)
    x, w = rand(rng, 1, 3, 3, 4, 3), rand(rng, 3, 2, 2, 3, 2)

    def add(net, t):
        deconv = net.add_deconvolution_nd(t, 2, (2, 3, 2), kernel=w)
        deconv.stride_nd = (2, 1, 2)
        return deconv

    got, _ = run_layer(x, add)
    out = [(3 - 1) * 2 + 2, 4 - 1 + 3, (3 - 1) * 2 + 2]
    ref = tf.nn.conv3d_transpose(np.moveaxis(x, 1, -1), np.transpose(w, (2, 3, 4, 1, 0)),
                                 [1] + out + [2], strides=[1, 2, 1, 2, 1], padding="VALID").numpy()
    assert rel_l2(got, np.moveaxis(ref, -1, 1)) <= TOL


@pytest.mark.parametrize("groups,cin,kout,mode", [
    (1, 3, 4, "EXPLICIT_ROUND_DOWN"), (2, 4, 6, "EXPLICIT_ROUND_UP"), (4, 4, 8, "SAME_UPPER"),
    (3, 6, 3, "SAME_LOWER"), (2, 4, 2, "SAME_LOWER")])
def test_grouped_dilated_deconv_matches_naive(groups, cin, kout, mode):
    rng = np.random.default_rng(10)
    x, w, b = rand(rng, 2, cin, 4, 5), rand(rng, cin, kout // groups, 3, 2), rand(rng, kout)
    stride, dil = (2, 3), (2, 1)

    def add(net, t):
        deconv = net.add_deconvolution_nd(t, kout, (3, 2), kernel=w, bias=b)
        deconv.num_groups, deconv.stride_nd, deconv.dilation_nd = groups, stride, dil
        deconv.pre_padding, deconv.post_padding = (1, 0), (2, 1)
        deconv.padding_mode = rt.PaddingMode[mode]
        return deconv

    got, _ = run_layer(x, add)
    if mode.startswith("SAME"):
        # TensorRT: P = max(DK - S, 0); SAME_UPPER puts the odd element at the end
        pads = [max(d * (f - 1) + 1 - s, 0) for f, s, d in zip((3, 2), stride, dil)]
        pre = [p // 2 if mode == "SAME_UPPER" else p - p // 2 for p in pads]
        post = [p - q for p, q in zip(pads, pre)]
    else:
        pre, post = (1, 0), (2, 1)
    ref = naive_deconv(x, w, b, stride, pre, post, dil, groups)
    assert rel_l2(got, ref) <= TOL


# -- shape inference -----------------------------------------------------------------------

def test_dynamic_dims_propagate_and_attributes_reinfer():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 3, -1, 32))
    conv = net.add_convolution_nd(x, 8, (3, 3), kernel=np.ones((8, 3, 3, 3), np.float32))
    assert conv.get_output(0).shape == (-1, 8, -1, 30)
    conv.stride_nd = (2, 2)
    assert conv.get_output(0).shape == (-1, 8, -1, 15)
    conv.padding_nd = (1, 1)
    assert conv.pre_padding == conv.post_padding == conv.padding_nd == (1, 1)
    assert conv.get_output(0).shape == (-1, 8, -1, 16)
    conv.padding_mode = rt.PaddingMode.SAME_LOWER
    assert conv.get_output(0).shape == (-1, 8, -1, 16)
    with pytest.raises(NetworkDefinitionError, match=r"kernel.*\(8, 3, 3, 5\)"):
        conv.kernel_size_nd = (3, 5)  # the kernel would mismatch: checked when both are known
    assert conv.kernel_size_nd == (3, 3)
    conv.kernel = None
    conv.kernel_size_nd = (3, 5)
    conv.kernel = np.ones((8, 3, 3, 5), np.float32)
    deconv = net.add_deconvolution_nd(conv.get_output(0), 2, (4, 4),
                                      kernel=np.ones(8 * 2 * 16, np.float32))   # flat is accepted
    deconv.stride_nd = (2, 2)
    assert deconv.get_output(0).shape == (-1, 2, -1, 34)
    deconv.padding_nd = (1, 1)
    assert deconv.get_output(0).shape == (-1, 2, -1, 32)


def test_kernel_can_be_set_after_add_and_is_checked_then():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (1, 4, 6, 6))
    conv = net.add_convolution_nd(x, 6, (3, 3))
    conv.num_groups = 2
    with pytest.raises(NetworkDefinitionError, match=r"kernel.*\(6, 2, 3, 3\)"):
        conv.kernel = np.ones((6, 2, 3, 2), np.float32)
    assert conv.kernel is None
    net.mark_output(conv.get_output(0))
    with pytest.raises(NetworkDefinitionError, match="kernel.*not set"):
        interpret(net, {"x": np.ones((1, 4, 6, 6), np.float32)})
    # a kernel for another valid grouping is held (num_groups may come later) but cannot run
    conv.kernel = np.ones((6, 4, 3, 3), np.float32)
    with pytest.raises(NetworkDefinitionError, match=r"num_groups 2.*\(6, 2, 3, 3\)"):
        interpret(net, {"x": np.ones((1, 4, 6, 6), np.float32)})
    conv.kernel = rt.Weights(np.ones((6, 2, 3, 3)), dtype=np.float32)
    out = interpret(net, {"x": np.ones((1, 4, 6, 6), np.float32)})[conv.get_output(0).name]
    assert out.shape == (1, 6, 4, 4) and np.allclose(out, 18.0)


def test_residual_refines_a_dynamic_output_dim_and_half_inputs_stay_half():
    net = rt.Network()
    x = net.add_input("x", rt.float16, (-1, 2, 6, 6))
    r = net.add_input("r", rt.float32, (4, 3, 4, 4))
    conv = net.add_convolution_nd(x, 3, (3, 3), kernel=np.ones((3, 2, 3, 3), np.float16))
    conv.set_input(1, r)
    assert conv.get_output(0).shape == (4, 3, 4, 4) and conv.get_output(0).dtype == rt.float16
    conv.set_input(1, None)
    assert conv.get_output(0).shape == (-1, 3, 4, 4)


# -- every error ------------------------------------------------------------------------------

def _net(shape=(2, 4, 8, 8), dtype=rt.float32):
    net = rt.Network()
    return net, net.add_input("x", dtype, shape)


@pytest.mark.parametrize("shape,dtype,kwargs,setup,match", [
    ((2, 4, 8, 8), rt.int32, {}, None, "input.*INT32.*FLOAT or HALF"),
    ((2, 4, 8), rt.float32, {}, None, r"input.*rank-3.*rank 4"),
    ((2, -1, 8, 8), rt.float32, {}, None, "dynamic channel.*known channel count"),
    ((2, 4, 8, 8), rt.float32, {}, {"num_groups": 3}, "num_groups.*divisor of the input's 4"),
    ((2, 4, 8, 8), rt.float32, {}, {"num_groups": 4}, "num_groups.*divisor of num_output_maps 6"),
    ((2, 4, 8, 8), rt.float32, {"kernel": np.ones((6, 4, 3, 2), np.float32)}, None,
     r"kernel.*shape \(6, 4, 3, 2\); expected shape \(6, 4, 3, 3\)"),
    ((2, 4, 8, 8), rt.float32, {"bias": np.ones(5, np.float32)}, None, r"bias.*5 values.*6"),
    ((2, 4, 8, 8), rt.float32, {"kernel_shape": ()}, None, "kernel_size_nd.*1 to 3"),
    ((2, 4, 8, 8), rt.float32, {"kernel_shape": (1, 1, 1, 1)}, None, "kernel_size_nd.*1 to 3"),
    ((2, 4, 8, 8), rt.float32, {}, {"stride_nd": (2, 2, 2)}, r"stride_nd.*2 values, one per dim"),
    ((2, 4, 8, 8), rt.float32, {}, {"dilation_nd": (1,)}, r"dilation_nd.*2 values"),
    ((2, 4, 2, 8), rt.float32, {}, None, r"spatial dims \(2, 8\).*axis 0"),
])
def test_conv_rejects_bad_arguments(shape, dtype, kwargs, setup, match):
    net, x = _net(shape, dtype)
    args = {"num_output_maps": 6, "kernel_shape": (3, 3), "kernel": None, "bias": None}
    args.update(kwargs)
    with pytest.raises(NetworkDefinitionError, match=match):
        conv = net.add_convolution_nd(x, **args)
        for key, value in (setup or {}).items():
            setattr(conv, key, value)
    if setup is None:
        assert net.num_layers == 0             # nothing half-added


def test_bad_values_are_rejected_and_rolled_back():
    net, x = _net()
    conv = net.add_convolution_nd(x, 6, (3, 3))
    with pytest.raises(NetworkDefinitionError, match=r"stride_nd.*>= 1"):
        conv.stride_nd = (0, 1)
    with pytest.raises(NetworkDefinitionError, match="spatial dims"):
        conv.dilation_nd = (5, 5)
    assert conv.dilation_nd == (1, 1)
    conv.padding_nd = (1, 2)
    with pytest.raises(NetworkDefinitionError, match="kernel_size_nd.*1 to 3"):
        conv.kernel_size_nd = (1, 1, 1, 1)
    deconv = net.add_deconvolution_nd(x, 2, (3, 3))
    with pytest.raises(NetworkDefinitionError, match="spatial dims"):
        deconv.padding_nd = (6, 6)         # would crop the whole (8-1)+3 = 10 output
    assert deconv.padding_nd == (0, 0) and deconv.get_output(0).shape == (2, 2, 10, 10)
    assert conv.padding_nd == (1, 2) and conv.get_output(0).shape == (2, 6, 8, 10)


@pytest.mark.parametrize("rshape,rdtype,match", [
    ((2, 6, 6, 6), rt.int32, "residual.*INT32"),
    ((2, 6, 6, 5), rt.float32, r"residual.*\(2, 6, 6, 6\)"),
    ((2, 6, 6), rt.float32, "residual.*the output's shape"),
])
def test_residual_must_match_the_output(rshape, rdtype, match):
    net, x = _net()
    conv = net.add_convolution_nd(x, 6, (3, 3))
    r = net.add_input("r", rdtype, rshape)
    with pytest.raises(NetworkDefinitionError, match=match):
        conv.set_input(1, r)
    assert conv.num_inputs == 1
    with pytest.raises(NetworkDefinitionError, match="index.*input index in"):
        conv.set_input(2, r)


def test_conv_geometry_table():
    """TensorRT's worked examples (NvInfer.h PaddingMode docs), every mode."""
    from engine.layers.conv import window_geometry
    m = rt.PaddingMode
    # I=6, S=2, F=3 pooling: SAME_UPPER pads (0, 1), SAME_LOWER (1, 0); out 3
    assert window_geometry(m.SAME_UPPER, "pool", (6,), (3,), (2,), (1,), (0,), (0,)) == [(3, 0, 1)]
    assert window_geometry(m.SAME_LOWER, "pool", (6,), (3,), (2,), (1,), (0,), (0,)) == [(3, 1, 0)]
    # I=6, B=A=3, S=2, F=3 (TensorRT's pooling example 2): M - F = 9, so 4 + 1 down, 5 + 1 up
    assert window_geometry(m.EXPLICIT_ROUND_DOWN, "pool", (6,), (3,), (2,), (1,), (3,), (3,))[0][0] == 5
    assert window_geometry(m.EXPLICIT_ROUND_UP, "pool", (6,), (3,), (2,), (1,), (3,), (3,))[0][0] == 6
    assert window_geometry(m.SAME_UPPER, "deconv", (5,), (4,), (2,), (1,), (0,), (0,)) == [(10, 1, 1)]
    assert window_geometry(m.SAME_UPPER, "deconv", (5,), (1,), (2,), (1,), (0,), (0,)) == [(9, 0, 0)]
    assert window_geometry(m.SAME_UPPER, "conv", (-1,), (3,), (1,), (1,), (0,), (0,)) == [(-1, None, None)]
    assert window_geometry(m.EXPLICIT_ROUND_UP, "conv", (2,), (3,), (1,), (1,), (0,), (0,)) == [None]
