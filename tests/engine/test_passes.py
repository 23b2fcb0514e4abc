"""Every builder pass: fires where it should (counted), and never changes results
beyond rounding (the same network is built with the pass on and off)."""
import copy

import numpy as np
import pytest

import engine as rt
from engine import passes
from engine.testing import interpret, rel_l2

RNG = np.random.default_rng(42)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def build(net, disabled=(), pointwise=False):
    """Pointwise fusion is off unless asked for, so the other passes' results
    can be read layer by layer."""
    b = rt.Builder()
    cfg = b.create_builder_config()
    for name in set(disabled) | (set() if pointwise else {"pointwise_fusion"}):
        cfg.disable_pass(name)
    return b.build_engine(net, cfg)


def check(net, feeds, pass_name, min_count=1, tol=1e-5):
    """Build with and without ``pass_name``; compare both to the interpreter."""
    pointwise = pass_name == "pointwise_fusion"
    before = passes.COUNTERS[pass_name]
    on = build(net, pointwise=pointwise)
    fired = passes.COUNTERS[pass_name] - before
    off = build(net, disabled=[pass_name], pointwise=pointwise)
    assert fired >= min_count, f"{pass_name} fired {fired} times"
    assert on.meta["pass_stats"][pass_name] == fired
    assert off.meta["pass_stats"][pass_name] == 0
    ref = interpret(net, feeds)
    for engine in (on, off):
        got = engine.create_execution_context().execute(feeds)
        for name, value in ref.items():
            assert rel_l2(got[name], value) <= tol, name
    return on, off


def conv(net, x, k, c, ksize=3, bias=True):
    layer = net.add_convolution_nd(x, k, (ksize, ksize), kernel=randn(k, c, ksize, ksize),
                                   bias=randn(k) if bias else None)
    layer.padding_nd = (ksize // 2, ksize // 2)
    return layer


def test_constant_folding_evaluates_constant_subgraphs():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 4))
    c = net.add_constant((1, 4), np.abs(randn(1, 4)) + 0.5).get_output(0)
    r = net.add_unary(c, rt.UnaryOperation.SQRT).get_output(0)
    r = net.add_unary(r, rt.UnaryOperation.RECIP).get_output(0)
    y = net.add_elementwise(x, r, rt.ElementWiseOperation.PROD).get_output(0)
    net.mark_output(y)
    on, off = check(net, {"x": randn(2, 4)}, "constant_folding", min_count=2)
    assert on.num_layers < off.num_layers
    assert [i.type for i in on.layers].count(rt.LayerType.UNARY) == 0


def test_dead_layers_are_removed():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (3, 5))
    live = net.add_activation(x, rt.ActivationType.TANH).get_output(0)
    dead = net.add_activation(x, rt.ActivationType.SIGMOID).get_output(0)
    net.add_unary(dead, rt.UnaryOperation.EXP)
    net.mark_output(live)
    on, off = check(net, {"x": randn(3, 5)}, "dead_layer_removal", min_count=2)
    assert on.num_layers == 1 and off.num_layers == 3


def test_transposes_that_undo_each_other_vanish():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 3, 4, 5))
    a = net.add_activation(x, rt.ActivationType.RELU).get_output(0)
    s1 = net.add_shuffle(a)
    s1.first_transpose = (0, 2, 3, 1)
    s2 = net.add_shuffle(s1.get_output(0))
    s2.first_transpose = (0, 3, 1, 2)
    i = net.add_identity(s2.get_output(0))
    y = net.add_activation(i.get_output(0), rt.ActivationType.TANH).get_output(0)
    net.mark_output(y)
    on, off = check(net, {"x": randn(2, 3, 4, 5)}, "identity_shuffle_cancellation", min_count=2)
    assert [i.type for i in on.layers] == [rt.LayerType.ACTIVATION, rt.LayerType.ACTIVATION]
    assert off.num_layers == 5


def test_transposes_compose_and_reshapes_merge():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 3, 4, 5))
    s1 = net.add_shuffle(net.add_activation(x, rt.ActivationType.RELU).get_output(0))
    s1.first_transpose = (0, 2, 3, 1)
    s2 = net.add_shuffle(s1.get_output(0))
    s2.first_transpose = (0, 2, 1, 3)
    r1 = net.add_shuffle(s2.get_output(0))
    r1.reshape_dims = (2, 60)
    r2 = net.add_shuffle(r1.get_output(0))
    r2.reshape_dims = (0, 6, 10)
    net.mark_output(r2.get_output(0))
    on, off = check(net, {"x": randn(2, 3, 4, 5)}, "identity_shuffle_cancellation", min_count=2)
    assert on.num_layers == 3 and off.num_layers == 5


def test_identity_that_feeds_an_output_keeps_the_output_name():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (4,))
    a = net.add_activation(x, rt.ActivationType.RELU).get_output(0)
    y = net.add_identity(a).get_output(0)
    y.name = "prob"
    net.mark_output(y)
    on, _ = check(net, {"x": randn(4)}, "identity_shuffle_cancellation")
    assert on.num_layers == 1 and on.output_names == ["prob"]


def test_identity_between_input_and_output_stays():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (4,))
    net.mark_output(net.add_identity(x).get_output(0))
    assert build(net).num_layers == 1


@pytest.mark.parametrize("style", ["scale", "keras3", "sub_div"])
def test_batch_norm_folds_into_convolution(style):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 3, 8, 8))
    c = conv(net, x, 8, 3).get_output(0)
    gamma, beta, mean = randn(8), randn(8), randn(8)
    var = np.abs(randn(8)) + 0.5
    if style == "scale":
        s = gamma / np.sqrt(var + 1e-3)
        y = net.add_scale(c, rt.ScaleMode.CHANNEL, beta - mean * s, s, None).get_output(0)
    elif style == "keras3":     # y = x * (gamma * rsqrt(var + eps)) + (beta - mean * that)
        v = net.add_constant((1, 8, 1, 1), var.reshape(1, 8, 1, 1)).get_output(0)
        eps = net.add_constant((1, 1, 1, 1), np.full((1, 1, 1, 1), 1e-3, np.float32)).get_output(0)
        r = net.add_elementwise(v, eps, rt.ElementWiseOperation.SUM).get_output(0)
        r = net.add_unary(net.add_unary(r, rt.UnaryOperation.SQRT).get_output(0),
                          rt.UnaryOperation.RECIP).get_output(0)
        g = net.add_constant((1, 8, 1, 1), gamma.reshape(1, 8, 1, 1)).get_output(0)
        m = net.add_elementwise(r, g, rt.ElementWiseOperation.PROD).get_output(0)
        y = net.add_elementwise(c, m, rt.ElementWiseOperation.PROD).get_output(0)
        mu = net.add_constant((1, 8, 1, 1), mean.reshape(1, 8, 1, 1)).get_output(0)
        sh = net.add_elementwise(net.add_constant((1, 8, 1, 1), beta.reshape(1, 8, 1, 1)).get_output(0),
                                 net.add_elementwise(mu, m, rt.ElementWiseOperation.PROD).get_output(0),
                                 rt.ElementWiseOperation.SUB).get_output(0)
        y = net.add_elementwise(y, sh, rt.ElementWiseOperation.SUM).get_output(0)
    else:                       # (x - mean) / sqrt(var)
        mu = net.add_constant((1, 8, 1, 1), mean.reshape(1, 8, 1, 1)).get_output(0)
        sd = net.add_constant((1, 8, 1, 1), np.sqrt(var).reshape(1, 8, 1, 1)).get_output(0)
        y = net.add_elementwise(c, mu, rt.ElementWiseOperation.SUB).get_output(0)
        y = net.add_elementwise(y, sd, rt.ElementWiseOperation.DIV).get_output(0)
    y = net.add_activation(y, rt.ActivationType.RELU).get_output(0)
    net.mark_output(y)
    on, off = check(net, {"x": randn(2, 3, 8, 8)}, "scale_folding", tol=1e-5)
    assert [i.type for i in on.layers] == [rt.LayerType.CONVOLUTION]


def test_scale_folds_into_fully_connected():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (4, 6))
    fc = net.add_fully_connected(x, 5, randn(5, 6), randn(5)).get_output(0)
    y = net.add_scale(fc, rt.ScaleMode.CHANNEL, randn(5), randn(5), None).get_output(0)
    net.mark_output(y)
    on, _ = check(net, {"x": randn(4, 6)}, "scale_folding")
    assert on.num_layers == 1


def test_scale_with_power_or_shared_output_does_not_fold():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (1, 3, 4, 4))
    c = conv(net, x, 4, 3).get_output(0)
    p = net.add_scale(c, rt.ScaleMode.UNIFORM, None, None, np.full(1, 2.0, np.float32)).get_output(0)
    net.mark_output(p)
    net.mark_output(c)       # the conv output is itself an output: must stay as computed
    engine = build(net)
    assert engine.num_layers == 2


def test_residual_add_and_activation_fuse_into_convolution():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 4, 6, 6))
    a = conv(net, x, 4, 4).get_output(0)
    b = conv(net, a, 4, 4).get_output(0)
    s = net.add_elementwise(a, b, rt.ElementWiseOperation.SUM).get_output(0)
    y = net.add_activation(s, rt.ActivationType.RELU).get_output(0)
    net.mark_output(y)
    on, off = check(net, {"x": randn(2, 4, 6, 6)}, "epilogue_fusion", min_count=2)
    assert [i.type for i in on.layers] == [rt.LayerType.CONVOLUTION] * 2
    fused = on.network.get_layer(1)
    assert fused.post_activation == rt.ActivationType.RELU and fused.get_input(1) is not None
    assert off.num_layers == 4


def test_fully_connected_activation_fusion_keeps_alpha():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (3, 6))
    fc = net.add_fully_connected(x, 4, randn(4, 6), None).get_output(0)
    act = net.add_activation(fc, rt.ActivationType.LEAKY_RELU)
    act.alpha = 0.25
    net.mark_output(act.get_output(0))
    on, _ = check(net, {"x": randn(3, 6)}, "epilogue_fusion")
    assert on.num_layers == 1 and on.network.get_layer(0).post_alpha == 0.25


def test_unknown_pass_name_is_an_error():
    with pytest.raises(rt.BuildError, match="valid: constant_folding"):
        passes.optimize(rt.Network(), disabled=["nope"])


def test_pointwise_chains_fuse_into_one_layer():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 4, 3, 3))
    other = net.add_activation(x, rt.ActivationType.SIGMOID).get_output(0)
    h = net.add_unary(x, rt.UnaryOperation.ABS).get_output(0)
    h = net.add_scale(h, rt.ScaleMode.CHANNEL, randn(4), randn(4), None).get_output(0)
    c = net.add_constant((1, 4, 1, 1), randn(1, 4, 1, 1)).get_output(0)
    h = net.add_elementwise(c, h, rt.ElementWiseOperation.SUB).get_output(0)     # const on the left
    h = net.add_elementwise(h, other, rt.ElementWiseOperation.PROD).get_output(0)  # earlier tensor
    a = net.add_activation(h, rt.ActivationType.LEAKY_RELU)
    a.alpha = 0.2
    net.mark_output(a.get_output(0))
    on, off = check(net, {"x": randn(2, 4, 3, 3)}, "pointwise_fusion")
    assert [i.type for i in on.layers] == [rt.LayerType.ACTIVATION, rt.LayerType.POINTWISE]
    assert off.num_layers == 7          # the constant is folded into the chain
    fused = on.network.get_layer(1)
    assert [op.layer.layer_type for op in fused.chain] == [
        rt.LayerType.UNARY, rt.LayerType.SCALE, rt.LayerType.ELEMENTWISE, rt.LayerType.ELEMENTWISE,
        rt.LayerType.ACTIVATION]
    assert fused.chain[2].side == 1 and fused.chain[3].input_index == 1


def test_pointwise_fusion_respects_outputs_precision_and_branches():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (3, 5))
    a = net.add_activation(x, rt.ActivationType.TANH).get_output(0)
    b = net.add_activation(a, rt.ActivationType.SIGMOID)
    b.precision = rt.float16                     # a constraint: stays its own layer
    c = net.add_unary(b.get_output(0), rt.UnaryOperation.EXP).get_output(0)
    d = net.add_unary(c, rt.UnaryOperation.NEG).get_output(0)
    net.mark_output(c)                           # an output is never fused away
    net.mark_output(d)
    engine = build(net, pointwise=True)
    assert engine.num_layers == 4 and passes.COUNTERS["pointwise_fusion"] >= 0


def test_pointwise_chain_can_reuse_its_own_input():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (3, 4))
    a = net.add_activation(x, rt.ActivationType.TANH).get_output(0)
    b = net.add_unary(x, rt.UnaryOperation.EXP).get_output(0)
    s = net.add_elementwise(a, b, rt.ElementWiseOperation.SUM).get_output(0)      # TF's AddN(a, b, a)
    s = net.add_elementwise(s, a, rt.ElementWiseOperation.SUM).get_output(0)
    net.mark_output(s)
    on, _ = check(net, {"x": randn(3, 4)}, "pointwise_fusion")
    assert on.layers[-1].type == rt.LayerType.POINTWISE


def _residual_stack(net, x, blocks=3, c=8):
    """conv -> scale -> relu twice and a residual add per block, then pool and FC: every
    fusion pass of the convolution chains fires on it."""
    h = x
    for _ in range(blocks):
        y = h
        for _ in range(2):
            conv = net.add_convolution_nd(y, c, (3, 3), kernel=randn(c, y.shape[1], 3, 3) * 0.2, bias=None)
            conv.padding_nd = (1, 1)
            y = net.add_scale(conv.get_output(0), rt.ScaleMode.CHANNEL, randn(c) * 0.1,
                              np.abs(randn(c)) + 0.5, None).get_output(0)
            y = net.add_activation(y, rt.ActivationType.RELU).get_output(0)
        if h.shape[1] == c:
            y = net.add_elementwise(y, h, rt.ElementWiseOperation.SUM).get_output(0)
        h = net.add_activation(y, rt.ActivationType.RELU).get_output(0)
    g = net.add_reduce(h, rt.ReduceOperation.AVG, 0b1100, True).get_output(0)
    fc = net.add_fully_connected(g, 5, randn(5, c), randn(5))
    net.mark_output(fc.get_output(0))
    return fc


def test_the_passes_leave_every_shape_a_full_inference_would_give():
    """The passes re-infer only the layers whose outputs they change (Network.take_output):
    after them every tensor carries the shape and type a full re-inference gives, and the
    optimised network still computes what the original did."""
    net = rt.Builder().create_network()
    x = net.add_input("x", rt.float32, (2, 3, 12, 12))
    _residual_stack(net, x)
    feeds = {"x": randn(2, 3, 12, 12)}
    ref = interpret(net, feeds)
    work = copy.deepcopy(net)
    stats = passes.optimize(work)
    assert sum(stats.values()) >= 10 and len(work._layers) < len(net._layers)
    seen = {name: (t._shape, t._dtype) for name, t in work._tensors.items()}
    work._dirty = True
    work._ensure_inferred()
    assert {name: (t._shape, t._dtype) for name, t in work._tensors.items()} == seen
    got = interpret(work, feeds)
    for name, value in ref.items():
        assert rel_l2(got[name], value) < 1e-5


def bottleneck_torch_order(net, x, c):
    """ResNet's projection block in torchvision's order: reduce, 3x3, expand, then the
    projection shortcut, their sum and a ReLU."""
    y = net.add_activation(conv(net, x, c, c, 1).get_output(0), rt.ActivationType.RELU).get_output(0)
    y = net.add_activation(conv(net, y, c, c, 3).get_output(0), rt.ActivationType.RELU).get_output(0)
    expand = conv(net, y, 2 * c, c, 1)
    proj = conv(net, x, 2 * c, c, 1)
    s = net.add_elementwise(expand.get_output(0), proj.get_output(0), rt.ElementWiseOperation.SUM)
    return net.add_activation(s.get_output(0), rt.ActivationType.RELU).get_output(0), expand, proj


def test_the_short_side_of_a_residual_add_moves_first_so_the_add_fuses_into_the_long_side():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 4, 6, 6))
    y, expand, proj = bottleneck_torch_order(net, x, 4)
    expand.name, proj.name = "expand", "proj"
    net.mark_output(y)
    on, off = check(net, {"x": randn(2, 4, 6, 6) * 0.5}, "branch_order", tol=1e-5)
    layers = [on.network.get_layer(i) for i in range(on.num_layers)]
    assert [layer.name for layer in layers][2:] == ["proj", "expand"]
    fused = layers[3]
    assert fused.get_input(1) is layers[2].get_output(0) and fused.post_activation == rt.ActivationType.RELU
    assert layers[2].post_activation is None and layers[2].num_inputs == 1
    # without the pass the add and ReLU fuse into the projection, which then waits for the expand
    off_layers = [off.network.get_layer(i) for i in range(off.num_layers)]
    assert [layer.name for layer in off_layers][2:] == ["expand", "proj"]
    assert off_layers[3].get_input(1) is off_layers[2].get_output(0)
    # and the moved projection is the side branch an auxiliary stream can take
    ctx = on.create_execution_context()
    plan = ctx._schedule({"x": np.zeros((2, 4, 6, 6), np.float32)})["aux"]
    assert [on.network.get_layer(a).name for a in plan.steps] == ["proj"]
    assert off.create_execution_context()._schedule({"x": np.zeros((2, 4, 6, 6), np.float32)})["aux"] is None


def test_branch_order_leaves_sides_of_one_depth_and_sides_that_cannot_move():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 4, 6, 6))
    a, b = conv(net, x, 4, 4), conv(net, x, 4, 4)           # one depth: never swapped back and forth
    s = net.add_elementwise(a.get_output(0), b.get_output(0), rt.ElementWiseOperation.SUM).get_output(0)
    c = conv(net, s, 4, 4)                                  # reads the sum: cannot go before its sides
    d = conv(net, c.get_output(0), 4, 4)
    s2 = net.add_elementwise(d.get_output(0), c.get_output(0), rt.ElementWiseOperation.SUM)
    net.mark_output(s2.get_output(0))
    before = passes.COUNTERS["branch_order"]
    engine = build(net)
    assert passes.COUNTERS["branch_order"] == before
    assert engine.meta["pass_stats"]["branch_order"] == 0
