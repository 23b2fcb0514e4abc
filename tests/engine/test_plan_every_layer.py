"""A plan round trip for every layer type: build, serialise, deserialise,
re-serialise to the same bytes, and run with results equal to the interpreter."""
import numpy as np
import pytest

import engine as rt
from engine import plan as planfile
from engine.layers.attention import AttentionLayer
from engine.testing import interpret

RNG = np.random.default_rng(11)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


class ClipCube(rt.Plugin):
    plugin_type, plugin_version = "PlanTestClipCube", "1"

    def get_output_shapes(self, shapes, dtypes):
        return [(shapes[0], dtypes[0])]

    def enqueue_numpy(self, inputs):
        return [np.clip(inputs[0], -self.limit, self.limit) ** 3]

    def enqueue_cupy(self, inputs):
        import cupy
        return [cupy.clip(inputs[0], -self.limit, self.limit) ** 3]


def _rnn(net, x):
    r = net.add_rnn_v2(x, 1, 3, 4, rt.RNNOperation.GRU)
    for g in (rt.RNNGateType.UPDATE, rt.RNNGateType.RESET, rt.RNNGateType.HIDDEN):
        r.set_weights_for_gate(0, g, True, randn(3, 6))
        r.set_weights_for_gate(0, g, False, randn(3, 3))
        r.set_bias_for_gate(0, g, True, randn(3))
    return r


def _conv(net, x):
    c = net.add_convolution_nd(x, 4, (3, 3), kernel=randn(4, 3, 3, 3), bias=randn(4))
    c.stride_nd, c.padding_mode, c.dilation_nd = (2, 1), rt.PaddingMode.SAME_UPPER, (1, 2)
    return c


def _pool(net, x):
    p = net.add_pooling_nd(x, rt.PoolingType.MAX_AVERAGE_BLEND, (2, 2))
    p.blend_factor, p.stride_nd = 0.3, (2, 2)
    return p


def _resize(net, x):
    r = net.add_resize(x)
    r.shape = (2, 3, 9, 7)
    r.resize_mode = rt.ResizeMode.LINEAR
    r.coordinate_transformation = rt.ResizeCoordinateTransformation.HALF_PIXEL
    return r


def _shuffle(net, x):
    s = net.add_shuffle(x)
    s.first_transpose, s.reshape_dims, s.second_transpose = (0, 2, 3, 1), (0, -1, 3), (0, 2, 1)
    return s


def _gather(net, x):
    idx = net.add_constant((2,), np.array([3, -1], np.int32)).get_output(0)
    return net.add_gather(x, idx, 2)


def _select(net, x):
    zero = net.add_constant((1, 1, 1, 1), np.zeros((1, 1, 1, 1), np.float32)).get_output(0)
    cond = net.add_elementwise(x, zero, rt.ElementWiseOperation.GREATER).get_output(0)
    return net.add_select(cond, x, zero)


def _cast(net, x):
    return net.add_cast(net.add_cast(x, rt.int32).get_output(0), rt.float32)


def _mm(net, x):
    w = net.add_constant((1, 1, 5, 6), randn(1, 1, 5, 6)).get_output(0)
    return net.add_matrix_multiply(x, rt.MatrixOperation.NONE, w, rt.MatrixOperation.TRANSPOSE)


def _pointwise(net, x):
    from engine.layers.classes import ActivationLayer, ElementWiseLayer, PointwiseLayer
    from engine.layers.pointwise_chain import Op
    act = ActivationLayer(None, [], activation_type=rt.ActivationType.ELU, alpha=0.7)
    add = ElementWiseLayer(None, [], op=rt.ElementWiseOperation.DIV)
    mul = ElementWiseLayer(None, [], op=rt.ElementWiseOperation.PROD)
    other = net.add_activation(x, rt.ActivationType.TANH).get_output(0)
    layer = PointwiseLayer(net, [x, other], chain=[
        Op(act), Op(add, const=randn(1, 3, 1, 1) + 3.0, side=1), Op(mul, input_index=1)])
    return net._add(layer)


def _norm(net, x):
    s = net.add_constant((1, 3, 1, 1), randn(1, 3, 1, 1)).get_output(0)
    b = net.add_constant((1, 3, 1, 1), randn(1, 3, 1, 1)).get_output(0)
    layer = net.add_normalization(x, s, b, 0b1100)
    layer.epsilon = 1e-3
    return layer


FACTORIES = {
    rt.LayerType.NORMALIZATION: _norm,
    rt.LayerType.POINTWISE: _pointwise,
    rt.LayerType.ACTIVATION: lambda n, x: n.add_activation(x, rt.ActivationType.SELU),
    rt.LayerType.CONCATENATION: lambda n, x: n.add_concatenation([x, x]),
    rt.LayerType.CONVOLUTION: _conv,
    rt.LayerType.DECONVOLUTION: lambda n, x: n.add_deconvolution_nd(x, 2, (2, 2), kernel=randn(3, 2, 2, 2),
                                                                     bias=None),
    rt.LayerType.ELEMENTWISE: lambda n, x: n.add_elementwise(x, x, rt.ElementWiseOperation.POW),
    rt.LayerType.FLATTEN: lambda n, x: n.add_flatten(x, 2),
    rt.LayerType.FULLY_CONNECTED: lambda n, x: n.add_fully_connected(x, 4, randn(4, 90), randn(4)),
    rt.LayerType.LRN: lambda n, x: n.add_lrn(x, 3, 0.5, 0.75, 2.0),
    rt.LayerType.PADDING: lambda n, x: n.add_padding_nd(x, (1, -1), (2, 0)),
    rt.LayerType.PLUGIN_V2: lambda n, x: n.add_plugin_v2([x], ClipCube(limit=0.8)),
    rt.LayerType.POOLING: _pool,
    rt.LayerType.RNN_V2: lambda n, x: _rnn(n, _rnn_input(n, x)),
    rt.LayerType.SCALE: lambda n, x: n.add_scale(x, rt.ScaleMode.CHANNEL, randn(3), randn(3),
                                                 np.full(3, 2.0, np.float32)),
    rt.LayerType.SHUFFLE: _shuffle,
    rt.LayerType.SOFTMAX: lambda n, x: n.add_softmax(x),
    rt.LayerType.SQUEEZE: lambda n, x: n.add_squeeze(n.add_unsqueeze(x, (1,)).get_output(0), (1,)),
    rt.LayerType.UNSQUEEZE: lambda n, x: n.add_unsqueeze(x, (0, -1)),
    rt.LayerType.UNARY: lambda n, x: n.add_unary(x, rt.UnaryOperation.ATAN),
    rt.LayerType.CONSTANT: lambda n, x: n.add_elementwise(
        x, n.add_constant((1, 3, 1, 1), randn(1, 3, 1, 1)).get_output(0), rt.ElementWiseOperation.SUM),
    rt.LayerType.MATRIX_MULTIPLY: _mm,
    rt.LayerType.REDUCE: lambda n, x: n.add_reduce(x, rt.ReduceOperation.MAX, 0b1010, False),
    rt.LayerType.SLICE: lambda n, x: n.add_slice(x, (0, 2, 4, 5), (2, 2, 3, 3), (1, -1, -2, -1)),
    rt.LayerType.GATHER: _gather,
    rt.LayerType.RESIZE: _resize,
    rt.LayerType.IDENTITY: lambda n, x: n.add_identity(x),
    rt.LayerType.CAST: _cast,
    rt.LayerType.SELECT: _select,
    rt.LayerType.SHAPE: lambda n, x: n.add_shape(x),
    rt.LayerType.TOPK: lambda n, x: n.add_topk(x, rt.TopKOperation.MIN, 3, 0b1000),
    rt.LayerType.COMBINED_NMS: lambda n, x: _combined_nms(n, x),
    rt.LayerType.ATTENTION: lambda n, x: n._add(AttentionLayer(n, [x, x, x], scale=0.4)),
}


def _combined_nms(net, x):
    """(2, 3, 5, 6) -> boxes (2, 15, 1, 4) and class scores (2, 15, 2) of x's values."""
    flat = net.add_shuffle(x)
    flat.reshape_dims = (2, 15, 6)
    f = flat.get_output(0)
    boxes = net.add_slice(f, (0, 0, 0), (2, 15, 4), (1, 1, 1)).get_output(0)
    boxes = net.add_unsqueeze(boxes, (2,)).get_output(0)
    scores = net.add_slice(f, (0, 0, 4), (2, 15, 2), (1, 1, 1)).get_output(0)
    return net.add_combined_nms(boxes, scores, 4, 6, 0.4, -0.5)


def _rnn_input(net, x):
    """(2, 3, 5, 6) -> (2, 4, 6): the first four rows of channel 0 as a sequence."""
    s = net.add_slice(x, (0, 0, 0, 0), (2, 1, 4, 6), (1, 1, 1, 1)).get_output(0)
    return net.add_squeeze(s, (1,)).get_output(0)


def test_every_layer_type_has_a_round_trip_case():
    assert set(FACTORIES) == set(rt.LayerType)


@pytest.fixture(scope="module", autouse=True)
def plugin_registered():
    reg = rt.get_plugin_registry()
    if reg.get_creator(ClipCube.plugin_type, "1") is None:
        reg.register_creator(ClipCube)
    yield
    reg.deregister_creator(ClipCube)


@pytest.mark.parametrize("kind", list(FACTORIES), ids=lambda k: k.name)
def test_plan_round_trip(kind):
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (2, 3, 5, 6))
    layer = FACTORIES[kind](net, x)
    assert any(layer_.type == kind for layer_ in net)
    for i in range(layer.num_outputs):
        net.mark_output(layer.get_output(i))
    cfg = b.create_builder_config()
    for p in ("constant_folding", "dead_layer_removal", "identity_shuffle_cancellation",
              "scale_folding", "epilogue_fusion"):
        cfg.disable_pass(p)           # keep every layer as written
    data = b.build_serialized_network(net, cfg)
    engine = rt.Runtime().deserialize_cuda_engine(data)
    assert kind in [i.type for i in engine.layers]
    arrays = planfile.ArrayTable()
    assert planfile.dumps({"network": planfile.encode_network(engine.network, arrays),
                           "engine": engine.meta}, arrays) == data
    feeds = {"x": randn(2, 3, 5, 6)}
    ref = interpret(net, feeds)
    got = engine.create_execution_context().execute(feeds)
    for name, value in ref.items():
        np.testing.assert_array_equal(got[name], value)
