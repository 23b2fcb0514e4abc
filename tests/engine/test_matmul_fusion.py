"""MatrixMultiply's fused epilogue: the layer's attributes and reference
(y = act(alpha * op0(a) @ op1(b) + bias + residual)), the pass that folds
following pointwise layers into it (each pattern fires, is counted, and the
engine matches the interpreter with the pass on and off), the cases it must
leave alone, plan round trips, the GPU tactics' handling (CPU side), and the
encoder of workflows/transformer.py after all passes."""
import collections

import numpy as np
import pytest

import engine as rt
from engine import passes, plan as planfile
from engine.kernel_table import numpy_kernel
from engine.testing import interpret, rel_l2

RNG = np.random.default_rng(7)
EW = rt.ElementWiseOperation
MO = rt.MatrixOperation
PASS = "matmul_epilogue_fusion"


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def build(net, disabled=(), config=None):
    b = rt.Builder()
    cfg = config or b.create_builder_config()
    for name in disabled:
        cfg.disable_pass(name)
    return b.build_engine(net, cfg)


def check(net, feeds, min_count=1, tol=1e-5):
    """Build with the pass on and off (pointwise fusion off in both, so the
    layers left over can be read); both must match the interpreter."""
    before = passes.COUNTERS[PASS]
    on = build(net, ["pointwise_fusion"])
    fired = passes.COUNTERS[PASS] - before
    off = build(net, [PASS, "pointwise_fusion"])
    assert fired >= min_count, f"{PASS} fired {fired} times"
    assert on.meta["pass_stats"][PASS] == fired
    assert off.meta["pass_stats"][PASS] == 0
    ref = interpret(net, feeds)
    for engine in (on, off):
        got = engine.create_execution_context().execute(feeds)
        for name, value in ref.items():
            assert rel_l2(got[name], value) <= tol, name
    return on, off


def const(net, array):
    return net.add_constant(array.shape, array).get_output(0)


def linear(net, x, k, n, seed_w=None):
    """x (B, M, k) @ W (1, k, n): the encoder's linear without its bias."""
    w = const(net, randn(1, k, n) if seed_w is None else seed_w)
    return net.add_matrix_multiply(x, MO.NONE, w, MO.NONE)


def compute_types(engine):
    return [i.type for i in engine.layers if i.type != rt.LayerType.CONSTANT]


def only_matmul(engine):
    mms = [engine.network.get_layer(i) for i in range(engine.network.num_layers)]
    mms = [m for m in mms if m.type == rt.LayerType.MATRIX_MULTIPLY]
    assert len(mms) == 1
    return mms[0]


# -- the layer's reference ---------------------------------------------------------

def matmul_net(a_shape=(2, 5, 6), b_shape=(1, 6, 4), op1=MO.NONE):
    net = rt.Network()
    a = net.add_input("a", rt.float32, a_shape)
    b = net.add_input("b", rt.float32, b_shape)
    mm = net.add_matrix_multiply(a, MO.NONE, b, op1)
    net.mark_output(mm.get_output(0))
    return net, mm


@pytest.mark.parametrize("act, act_alpha, ref_act", [
    (None, None, lambda v: v),
    (rt.ActivationType.RELU, None, lambda v: np.maximum(v, 0)),
    (rt.ActivationType.LEAKY_RELU, 0.3, lambda v: np.where(v >= 0, v, 0.3 * v)),
    (rt.ActivationType.GELU_TANH, None,
     lambda v: 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))),
])
def test_reference_applies_alpha_bias_residual_then_activation(act, act_alpha, ref_act):
    net, mm = matmul_net()
    res = net.add_input("r", rt.float32, (2, 5, 4))
    bias = randn(4)
    mm.alpha, mm.bias, mm.post_activation, mm.post_alpha = 0.7, bias, act, act_alpha
    mm.set_input(2, res)
    a, b, r = randn(2, 5, 6), randn(1, 6, 4), randn(2, 5, 4)
    got = numpy_kernel(mm)(mm, [a, b, r])[0]
    want = ref_act(0.7 * (a.astype(np.float64) @ b) + bias + r)
    assert got.dtype == np.float32 and rel_l2(got, want) <= 1e-6
    assert mm.has_epilogue and mm.residual is res


def test_reference_gelu_erf_matches_the_activation_layer():
    net, mm = matmul_net()
    mm.post_activation = rt.ActivationType.GELU_ERF
    a, b = randn(2, 5, 6), randn(1, 6, 4)
    other = rt.Network()
    act = other.add_activation(other.add_input("x", rt.float32, (2, 5, 4)),
                               rt.ActivationType.GELU_ERF)
    plain = a @ b
    want = numpy_kernel(act)(act, [plain])[0]
    assert rel_l2(numpy_kernel(mm)(mm, [a, b])[0], want) <= 1e-6


def test_default_attributes_leave_a_plain_matmul():
    _, mm = matmul_net()
    assert (mm.alpha, mm.bias, mm.residual, mm.post_activation) == (1.0, None, None, None)
    assert not mm.has_epilogue and mm.post_params() == (0.0, 0.0)
    mm.post_activation = rt.ActivationType.SELU        # TensorRT's defaults filled in
    assert mm.post_params() == pytest.approx((1.6732632423543772, 1.0507009873554805))


def test_shape_inference_is_unchanged_by_the_epilogue():
    net, mm = matmul_net((-1, 5, 6), (1, 6, 4))
    shape = mm.get_output(0).shape
    mm.bias, mm.alpha = randn(4), 2.0
    mm.set_input(2, net.add_input("r", rt.float32, (-1, 5, 4)))
    assert mm.get_output(0).shape == shape == (-1, 5, 4)


def test_residual_of_size_one_broadcasts_at_run_time():
    # the pass fuses equal declared shapes; a dynamic batch may turn out 1 on the
    # residual side, where the ElementWise SUM it replaced broadcast
    net, mm = matmul_net((2, 5, 6), (1, 6, 4))
    mm.set_input(2, net.add_input("r", rt.float32, (1, 5, 4)))
    a, b, r = randn(2, 5, 6), randn(1, 6, 4), randn(1, 5, 4)
    assert rel_l2(numpy_kernel(mm)(mm, [a, b, r])[0], a @ b + r) <= 1e-6


def test_bias_of_the_wrong_length_is_refused():
    _, mm = matmul_net()
    with pytest.raises(rt.NetworkDefinitionError, match="one per element of the output's last"):
        mm.bias = randn(5)
    assert mm.bias is None                     # nothing half-written


def test_bias_on_a_scalar_output_is_refused():
    net = rt.Network()
    u, v = (net.add_input(n, rt.float32, (3,)) for n in "uv")
    dot = net.add_matrix_multiply(u, MO.VECTOR, v, MO.VECTOR)
    assert dot.get_output(0).shape == ()
    with pytest.raises(rt.NetworkDefinitionError, match="the output is a scalar"):
        dot.bias = randn(1)


def test_residual_of_another_shape_is_refused():
    net, mm = matmul_net()
    with pytest.raises(rt.NetworkDefinitionError, match="the output's shape"):
        mm.set_input(2, net.add_input("r", rt.float32, (2, 5, 3)))
    with pytest.raises(rt.NetworkDefinitionError, match="the output's shape"):
        mm.set_input(2, net.add_input("r2", rt.float32, (5, 4)))
    assert mm.residual is None


def test_residual_must_be_floating():
    net, mm = matmul_net()
    with pytest.raises(rt.NetworkDefinitionError, match="residual"):
        mm.set_input(2, net.add_input("r", rt.int32, (2, 5, 4)))


def test_no_fourth_input():
    net, mm = matmul_net()
    with pytest.raises(rt.NetworkDefinitionError, match=r"\[0, 3\)"):
        mm.set_input(3, net.add_input("r", rt.float32, (2, 5, 4)))


# -- the pass: what fuses --------------------------------------------------------

@pytest.mark.parametrize("const_left", [False, True])
def test_scalar_product_becomes_alpha(const_left):
    net = rt.Network()
    q = net.add_input("q", rt.float32, (2, 3, 8, 4))
    k = net.add_input("k", rt.float32, (2, 3, 8, 4))
    s = net.add_matrix_multiply(q, MO.NONE, k, MO.TRANSPOSE).get_output(0)
    c = const(net, np.full((1, 1, 1, 1), 0.5, np.float32))
    y = net.add_elementwise(*((c, s) if const_left else (s, c)), EW.PROD).get_output(0)
    net.mark_output(y)
    on, off = check(net, {"q": randn(2, 3, 8, 4), "k": randn(2, 3, 8, 4)})
    assert compute_types(on) == [rt.LayerType.MATRIX_MULTIPLY]
    assert only_matmul(on).alpha == 0.5 and only_matmul(on).bias is None
    assert compute_types(off) == [rt.LayerType.MATRIX_MULTIPLY, rt.LayerType.ELEMENTWISE]


def test_scalar_sum_becomes_a_bias_of_equal_values():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 5, 6))
    y = net.add_elementwise(linear(net, x, 6, 4).get_output(0),
                            const(net, np.full((1, 1, 1), 1.5, np.float32)), EW.SUM).get_output(0)
    net.mark_output(y)
    on, _ = check(net, {"x": randn(2, 5, 6)})
    np.testing.assert_array_equal(only_matmul(on).bias, np.full(4, 1.5, np.float32))


@pytest.mark.parametrize("bias_shape", [(1, 1, 4), (1, 1, 1)])
def test_constant_over_the_last_axis_becomes_the_bias(bias_shape):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 5, 6))
    b = randn(*bias_shape)
    y = net.add_elementwise(const(net, b), linear(net, x, 6, 4).get_output(0), EW.SUM).get_output(0)
    net.mark_output(y)
    on, _ = check(net, {"x": randn(3, 5, 6)})
    assert compute_types(on) == [rt.LayerType.MATRIX_MULTIPLY]
    np.testing.assert_allclose(only_matmul(on).bias, np.broadcast_to(b.reshape(-1), (4,)))


def test_linear_residual_and_activation_chain_into_one_layer():
    """The transformer's FFN tail: MM + bias + residual + GELU, and a scale after
    the bias (which scales the bias too)."""
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 5, 6))
    h = net.add_activation(x, rt.ActivationType.TANH).get_output(0)     # the residual, earlier
    y = linear(net, x, 6, 6).get_output(0)
    y = net.add_elementwise(y, const(net, randn(1, 1, 6)), EW.SUM).get_output(0)
    y = net.add_elementwise(y, const(net, np.full((1, 1, 1), -2.0, np.float32)), EW.PROD).get_output(0)
    y = net.add_elementwise(h, y, EW.SUM).get_output(0)
    y = net.add_activation(y, rt.ActivationType.GELU_ERF).get_output(0)
    y.name = "out"
    net.mark_output(y)
    on, off = check(net, {"x": randn(2, 5, 6)}, min_count=4)
    assert compute_types(on) == [rt.LayerType.ACTIVATION, rt.LayerType.MATRIX_MULTIPLY]
    mm = only_matmul(on)
    assert mm.alpha == -2.0 and mm.post_activation == rt.ActivationType.GELU_ERF
    assert mm.residual is not None and mm.bias.shape == (6,)
    assert on.output_names == ["out"]
    assert compute_types(off).count(rt.LayerType.ELEMENTWISE) == 3


@pytest.mark.parametrize("act", [rt.ActivationType.RELU, rt.ActivationType.GELU_TANH,
                                 rt.ActivationType.LEAKY_RELU, rt.ActivationType.CLIP])
def test_activation_fuses_with_its_parameters(act):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 5, 6))
    a = net.add_activation(linear(net, x, 6, 4).get_output(0), act)
    if act == rt.ActivationType.LEAKY_RELU:
        a.alpha = 0.2
    if act == rt.ActivationType.CLIP:
        a.alpha, a.beta = -0.5, 0.75
    net.mark_output(a.get_output(0))
    on, _ = check(net, {"x": randn(2, 5, 6)})
    mm = only_matmul(on)
    assert mm.post_activation == act and mm.post_params() == a.params()


def test_fused_encoder_matmul_round_trips_through_a_plan():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 5, 6))
    r = net.add_input("r", rt.float32, (2, 5, 4))
    y = net.add_elementwise(linear(net, x, 6, 4).get_output(0), const(net, randn(1, 1, 4)),
                            EW.SUM).get_output(0)
    y = net.add_elementwise(y, r, EW.SUM).get_output(0)
    y = net.add_activation(y, rt.ActivationType.LEAKY_RELU)
    y.alpha = 0.1
    net.mark_output(y.get_output(0))
    b = rt.Builder()
    cfg = b.create_builder_config()
    data = b.build_serialized_network(net, cfg)
    engine = rt.Runtime().deserialize_cuda_engine(data)
    mm = only_matmul(engine)
    assert mm.bias is not None and mm.residual is not None and mm.post_alpha == 0.1
    arrays = planfile.ArrayTable()
    assert planfile.dumps({"network": planfile.encode_network(engine.network, arrays),
                           "engine": engine.meta}, arrays) == data
    feeds = {"x": randn(2, 5, 6), "r": randn(2, 5, 4)}
    got = engine.create_execution_context().execute(feeds)
    for name, value in interpret(net, feeds).items():
        assert rel_l2(got[name], value) <= 1e-6


# -- the pass: what must not fuse ------------------------------------------------

def _one_linear_with(follow, x_shape=(2, 5, 6), n=4, mark_mm=False):
    """x -> MM -> follow(net, mm_out) -> output; returns (net, feeds)."""
    net = rt.Network()
    x = net.add_input("x", rt.float32, x_shape)
    mm = linear(net, x, x_shape[-1], n).get_output(0)
    outs = follow(net, mm, x)
    for t in outs if isinstance(outs, list) else [outs]:
        net.mark_output(t)
    if mark_mm:
        net.mark_output(mm)
    return net, {"x": randn(*[2 if d < 0 else d for d in x_shape])}


def assert_not_fused(net, feeds):
    before = passes.COUNTERS[PASS]
    engine = build(net, ["pointwise_fusion"])
    assert passes.COUNTERS[PASS] == before and engine.meta["pass_stats"][PASS] == 0
    ref = interpret(net, feeds)
    got = engine.create_execution_context().execute(feeds)
    for name, value in ref.items():
        assert rel_l2(got[name], value) <= 1e-6
    return engine


def test_two_consumers_do_not_fuse():
    def follow(net, mm, x):
        a = net.add_elementwise(mm, const(net, randn(1, 1, 4)), EW.SUM).get_output(0)
        b = net.add_activation(mm, rt.ActivationType.RELU).get_output(0)
        return [a, b]
    assert_not_fused(*_one_linear_with(follow))


def test_matmul_output_that_is_a_network_output_does_not_fuse():
    def follow(net, mm, x):
        return net.add_activation(mm, rt.ActivationType.RELU).get_output(0)
    assert_not_fused(*_one_linear_with(follow, mark_mm=True))


@pytest.mark.parametrize("shape", [(1, 5, 4), (2, 5, 4), (1, 5, 1)])
def test_constant_not_broadcast_over_the_last_axis_does_not_fuse(shape):
    def follow(net, mm, x):
        return net.add_elementwise(mm, const(net, randn(*shape)), EW.SUM).get_output(0)
    assert_not_fused(*_one_linear_with(follow))


def test_product_with_a_vector_does_not_fuse():
    def follow(net, mm, x):
        return net.add_elementwise(mm, const(net, randn(1, 1, 4)), EW.PROD).get_output(0)
    assert_not_fused(*_one_linear_with(follow))


@pytest.mark.parametrize("op", [EW.SUB, EW.MAX, EW.DIV])
def test_other_elementwise_operations_do_not_fuse(op):
    def follow(net, mm, x):
        return net.add_elementwise(mm, const(net, np.full((1, 1, 1), 2.0, np.float32)),
                                   op).get_output(0)
    assert_not_fused(*_one_linear_with(follow))


def test_follower_that_broadcasts_the_matmul_does_not_fuse():
    def follow(net, mm, x):        # (2, 5, 1) + (1, 1, 4) -> (2, 5, 4): not a bias
        return net.add_elementwise(mm, const(net, randn(1, 1, 4)), EW.SUM).get_output(0)
    assert_not_fused(*_one_linear_with(follow, n=1))


def test_bias_over_a_dynamic_last_axis_does_not_fuse():
    net = rt.Network()
    a = net.add_input("a", rt.float32, (2, 5, 6))
    b = net.add_input("b", rt.float32, (2, 6, -1))
    mm = net.add_matrix_multiply(a, MO.NONE, b, MO.NONE).get_output(0)
    net.mark_output(net.add_elementwise(mm, const(net, np.full((1, 1, 1), 3.0, np.float32)),
                                        EW.SUM).get_output(0))
    assert_not_fused(net, {"a": randn(2, 5, 6), "b": randn(2, 6, 3)})


def test_residual_computed_after_the_matmul_does_not_fuse():
    def follow(net, mm, x):
        late = net.add_activation(x, rt.ActivationType.SIGMOID).get_output(0)   # after the MM
        late = linear(net, late, 6, 4).get_output(0)
        return net.add_elementwise(mm, late, EW.SUM).get_output(0)
    net, feeds = _one_linear_with(follow)
    engine = build(net, ["pointwise_fusion"])
    mms = [engine.network.get_layer(i) for i in range(engine.network.num_layers)]
    mms = [m for m in mms if m.type == rt.LayerType.MATRIX_MULTIPLY]
    # the later matmul takes the earlier one as its residual instead: that order is valid
    assert [m.residual is not None for m in mms] == [False, True]
    got = engine.create_execution_context().execute(feeds)
    for name, value in interpret(net, feeds).items():
        assert rel_l2(got[name], value) <= 1e-6


def test_residual_of_a_broadcast_shape_does_not_fuse():
    def follow(net, mm, x):
        r = net.add_input("r", rt.float32, (1, 5, 4))
        return net.add_elementwise(mm, r, EW.SUM).get_output(0)
    net, feeds = _one_linear_with(follow)
    feeds["r"] = randn(1, 5, 4)
    assert_not_fused(net, feeds)


def test_matmul_added_to_itself_does_not_fuse():
    def follow(net, mm, x):
        return net.add_elementwise(mm, mm, EW.SUM).get_output(0)
    assert_not_fused(*_one_linear_with(follow))


def test_nothing_fuses_after_the_activation():
    def follow(net, mm, x):
        y = net.add_activation(mm, rt.ActivationType.RELU).get_output(0)
        return net.add_elementwise(y, const(net, randn(1, 1, 4)), EW.SUM).get_output(0)
    net, feeds = _one_linear_with(follow)
    on, _ = check(net, feeds)
    assert compute_types(on) == [rt.LayerType.MATRIX_MULTIPLY, rt.LayerType.ELEMENTWISE]


def test_scale_after_a_residual_does_not_fuse():
    def follow(net, mm, x):
        r = net.add_input("r", rt.float32, (2, 5, 4))
        y = net.add_elementwise(mm, r, EW.SUM).get_output(0)
        return net.add_elementwise(y, const(net, np.full((1, 1, 1), 3.0, np.float32)),
                                   EW.PROD).get_output(0)
    net, feeds = _one_linear_with(follow)
    feeds["r"] = randn(2, 5, 4)
    on, _ = check(net, feeds)
    assert compute_types(on) == [rt.LayerType.MATRIX_MULTIPLY, rt.LayerType.ELEMENTWISE]
    assert only_matmul(on).residual is not None and only_matmul(on).alpha == 1.0


def test_second_residual_does_not_fuse():
    def follow(net, mm, x):
        r1, r2 = (net.add_input(n, rt.float32, (2, 5, 4)) for n in ("r1", "r2"))
        y = net.add_elementwise(mm, r1, EW.SUM).get_output(0)
        return net.add_elementwise(y, r2, EW.SUM).get_output(0)
    net, feeds = _one_linear_with(follow)
    feeds.update(r1=randn(2, 5, 4), r2=randn(2, 5, 4))
    on, _ = check(net, feeds)
    assert compute_types(on) == [rt.LayerType.MATRIX_MULTIPLY, rt.LayerType.ELEMENTWISE]


@pytest.mark.parametrize("where", ["follower", "matmul", "output_type"])
def test_precision_constraint_on_one_side_blocks_the_fusion(where):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 5, 6))
    mm = linear(net, x, 6, 4)
    act = net.add_activation(mm.get_output(0), rt.ActivationType.RELU)
    net.mark_output(act.get_output(0))
    if where == "follower":
        act.precision = rt.float16
    elif where == "matmul":
        mm.precision = rt.float16
    else:
        act.set_output_type(0, rt.float32)
    engine = build(net, ["pointwise_fusion"])
    assert engine.meta["pass_stats"][PASS] == 0
    assert compute_types(engine) == [rt.LayerType.MATRIX_MULTIPLY, rt.LayerType.ACTIVATION]


def test_equal_precision_constraints_fuse():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 5, 6))
    mm = linear(net, x, 6, 4)
    act = net.add_activation(mm.get_output(0), rt.ActivationType.RELU)
    net.mark_output(act.get_output(0))
    mm.precision = act.precision = rt.float32
    engine = build(net, ["pointwise_fusion"])
    assert engine.meta["pass_stats"][PASS] == 1
    assert compute_types(engine) == [rt.LayerType.MATRIX_MULTIPLY]


def test_pass_can_be_disabled_by_name():
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.disable_pass(PASS)
    assert PASS in passes.PASS_NAMES
    i = passes.PASS_NAMES.index
    assert i("epilogue_fusion") < i(PASS) < i("pointwise_fusion")


# -- the GPU tactics, CPU side ---------------------------------------------------

def _fused_layer():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 5, 6))
    r = net.add_input("r", rt.float16, (2, 5, 4))
    mm = linear(net, x, 6, 4)
    mm.alpha, mm.bias = 0.5, randn(4)
    mm.post_activation, mm.post_alpha = rt.ActivationType.LEAKY_RELU, 0.2
    mm.set_input(2, r)
    return mm


def test_cublas_tactic_declines_a_fused_layer():
    from engine.gpu.matmul_tactics import MatMulCublas
    mm = _fused_layer()
    shapes, dts = ((2, 5, 6), (1, 6, 4), (2, 5, 4)), ("float32", "float32", "float16")
    assert "fused epilogue" in MatMulCublas().supports(mm, shapes, dts, rt.DataType.FLOAT)
    plain = matmul_net()[1]
    assert MatMulCublas().supports(plain, shapes[:2], dts[:2], rt.DataType.FLOAT) is None


def test_own_gemm_tactics_pass_the_epilogue_to_the_kernel():
    from engine.gpu import matmul_tactics as T
    mm = _fused_layer()
    res = np.ones((2, 5, 4), np.float16)
    bias = object()             # stands for the uploaded device bias
    kw = T._epilogue({"bias": bias}, mm, [None, None, res], np.float32)
    assert kw["alpha"] == 0.5 and kw["bias"] is bias and kw["act"] == "LEAKY_RELU"
    assert (kw["act_alpha"], kw["act_beta"]) == (0.2, 0.0)
    assert kw["residual"].dtype == np.float32        # the FP32 kernel reads FP32
    plain = T._epilogue({}, matmul_net()[1], [None, None], np.float16)
    assert plain == {"alpha": 1.0, "bias": None, "residual": None, "act": None,
                     "act_alpha": 0.0, "act_beta": 0.0}


def test_activation_names_have_kernel_codes():
    from kernels.gpu.activation import ACT_CODES
    assert {a.name for a in rt.ActivationType} <= set(ACT_CODES)


def test_residual_is_part_of_the_tactic_signature():
    from engine.gpu.timing import layer_signature
    mm = _fused_layer()
    sig = layer_signature(mm, [(2, 5, 6), (1, 6, 4), (2, 5, 4)], ["float32"] * 3,
                          rt.DataType.HALF, [rt.DataType.HALF])
    assert sig["residual"] and sig["attrs"]["alpha"] == 0.5
    assert sig["attrs"]["post_activation"] == "LEAKY_RELU"


# -- the encoder after every pass -------------------------------------------------

def test_encoder_has_no_elementwise_left_next_to_a_matmul():
    torch = pytest.importorskip("torch")
    from workflows.transformer import import_encoder
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, activation="gelu",
                                             batch_first=True)
    enc = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    b, net = import_encoder(enc, seq=8, hidden=32)
    before = collections.Counter(i.type for i in net)
    assert before[rt.LayerType.ELEMENTWISE] == 2 * 9 and before[rt.LayerType.ACTIVATION] == 2
    engine = b.build_engine(net, b.create_builder_config())
    after = collections.Counter(i.type for i in engine.layers)
    # per encoder layer: 6 linear biases, the score scale, 2 residuals and GELU fold
    # into the 8 matmuls; nothing is left for pointwise fusion
    assert engine.meta["pass_stats"][PASS] == 2 * 10
    for kind in (rt.LayerType.ELEMENTWISE, rt.LayerType.ACTIVATION, rt.LayerType.POINTWISE):
        assert after[kind] == 0, after
    # (qkv_merge makes the three projections of each layer one matmul: 8 - 2 - 2 = 4)
    assert after[rt.LayerType.MATRIX_MULTIPLY] == 2 * 4 and after[rt.LayerType.ATTENTION] == 2
    x = np.random.default_rng(1).standard_normal((3, 8, 32)).astype(np.float32)
    with torch.no_grad():
        ref = enc(torch.as_tensor(x)).numpy()
    assert rel_l2(engine.create_execution_context().execute({"tokens": x})["encoded"], ref) <= 1e-5
