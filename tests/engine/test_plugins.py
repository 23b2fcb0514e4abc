"""User plugins: registration, building and running, plan round trips of their
fields (arrays included), and every way a plugin or its user can go wrong."""
import numpy as np
import pytest

import engine as rt
from engine.layers.plugin import PluginShapeError
from engine.testing import interpret

RNG = np.random.default_rng(17)


class ClipSquare(rt.Plugin):
    """y = clip(x, lo, hi)^2 — the plugin a user would write."""
    plugin_type, plugin_version = "TestClipSquare", "1"

    def __init__(self, lo=0.0, hi=1.0):
        if lo > hi:
            raise ValueError(f"lo {lo} > hi {hi}")
        super().__init__(lo=lo, hi=hi)

    def get_output_shapes(self, input_shapes, input_dtypes):
        return [(input_shapes[0], input_dtypes[0])]

    def enqueue_numpy(self, inputs):
        return [np.clip(inputs[0], self.lo, self.hi) ** 2]


class ChannelAffineSplit(rt.Plugin):
    """Two outputs from array fields: x * scale[c] + shift[c], and its channel sum."""
    plugin_type, plugin_version = "TestChannelAffineSplit", "2"
    num_outputs = 2

    def get_output_shapes(self, input_shapes, input_dtypes):
        n, c, h, w = input_shapes[0]
        return [((n, c, h, w), input_dtypes[0]), ((n, 1, h, w), rt.float32)]

    def enqueue_numpy(self, inputs):
        s = self.params["scale"].reshape(1, -1, 1, 1)
        y = inputs[0] * s + np.asarray(self.params["shift"], np.float32).reshape(1, -1, 1, 1)
        return [y, y.sum(axis=1, keepdims=True)]


@pytest.fixture
def registry():
    reg = rt.get_plugin_registry()
    added = []

    def register(cls):
        added.append(reg.register_creator(cls))
        return cls
    yield register
    for cls in added:
        reg.deregister_creator(cls)


def one_plugin_network(plugin, shape=(2, 3, 4, 4), dtype=rt.float32):
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", dtype, shape)
    layer = net.add_plugin_v2([x], plugin)
    for i in range(layer.num_outputs):
        net.mark_output(layer.get_output(i))
    return b, net, layer


def test_plugin_builds_runs_and_round_trips_through_a_plan(registry):
    registry(ClipSquare)
    assert rt.get_plugin_registry().get_creator("TestClipSquare", "1") is ClipSquare
    assert ClipSquare in rt.get_plugin_registry().plugin_creator_list
    plugin = rt.get_plugin_registry().create("TestClipSquare", "1", {"lo": -0.5, "hi": 0.75})
    b, net, layer = one_plugin_network(plugin, (-1, 3, 4, 4))
    assert layer.get_output(0).shape == (-1, 3, 4, 4)
    assert (layer.plugin_type, layer.plugin_version) == ("TestClipSquare", "1")
    assert layer.plugin_fields == {"lo": -0.5, "hi": 0.75}
    x = RNG.standard_normal((2, 3, 4, 4)).astype(np.float32)
    want = np.clip(x, -0.5, 0.75) ** 2
    np.testing.assert_array_equal(interpret(net, {"x": x})[layer.get_output(0).name], want)
    engine = rt.Runtime().deserialize_cuda_engine(
        b.build_serialized_network(net, b.create_builder_config()))
    np.testing.assert_array_equal(engine.create_execution_context().execute({"x": x})
                                  [layer.get_output(0).name], want)


def test_array_fields_and_multiple_outputs_round_trip(registry):
    registry(ChannelAffineSplit)
    scale = RNG.standard_normal(3)                                 # float64 -> float32
    plugin = ChannelAffineSplit(params={"scale": scale, "shift": (0.5, -1, 2)},
                                tags=["a", None, True], n=np.int32(4))
    assert plugin.params["scale"].dtype == np.float32 and plugin.params["shift"] == [0.5, -1, 2]
    assert plugin.n == 4 and type(plugin.n) is int
    b, net, layer = one_plugin_network(plugin, dtype=rt.float16)
    assert [t.dtype for t in layer._outputs] == [rt.float16, rt.float32]
    x = RNG.standard_normal((2, 3, 4, 4)).astype(np.float16)
    engine = b.build_engine(net, b.create_builder_config())
    loaded = engine.network.get_layer(0).plugin
    assert loaded == plugin and loaded is not plugin
    got = engine.create_execution_context().execute({"x": x})
    ref = interpret(net, {"x": x})
    y = x.astype(np.float32) * scale.astype(np.float32).reshape(1, 3, 1, 1) + \
        np.array([0.5, -1, 2], np.float32).reshape(1, 3, 1, 1)
    for i, want in enumerate([y, y.sum(axis=1, keepdims=True)]):
        name = layer.get_output(i).name
        np.testing.assert_array_equal(got[name], ref[name])
        np.testing.assert_allclose(ref[name], want, rtol=1e-2, atol=1e-2)


def test_register_plugin_decorator_and_duplicate_registration(registry):
    reg = rt.get_plugin_registry()

    @rt.register_plugin
    class Twice(ClipSquare):
        plugin_type = "TestTwice"
    try:
        with pytest.raises(rt.PluginError, match="'TestTwice' version '1' is already registered"):
            reg.register_creator(Twice)
        with pytest.raises(rt.PluginError, match="already registered"):
            rt.register_plugin(type("Other", (ClipSquare,), {"plugin_type": "TestTwice"}))
    finally:
        assert reg.deregister_creator(Twice)
    assert not reg.deregister_creator(Twice)
    assert reg.get_creator("TestTwice", "1") is None


@pytest.mark.parametrize("cls, match", [
    (object, "expected a subclass of engine.Plugin"),
    (type("NoType", (rt.Plugin,), {}), "plugin_type None.*non-empty strs"),
    (type("BadVersion", (rt.Plugin,), {"plugin_type": "X", "plugin_version": 2}),
     "plugin_version 2"),
])
def test_register_rejects_non_plugins(cls, match):
    with pytest.raises(rt.PluginError, match=match):
        rt.get_plugin_registry().register_creator(cls)


def test_unknown_plugin_and_bad_fields(registry):
    reg = rt.get_plugin_registry()
    registry(ClipSquare)
    with pytest.raises(rt.PluginError, match="no plugin 'Nope' version '1' is registered "
                       "\\(registered: .*TestClipSquare v1"):
        reg.create("Nope", "1", {})
    with pytest.raises(rt.PluginError, match="rejected fields \\['hi', 'lo'\\]: lo 2 > hi 1"):
        reg.create("TestClipSquare", "1", {"lo": 2, "hi": 1})
    with pytest.raises(rt.PluginError, match="rejected fields \\['width'\\].*unexpected keyword"):
        reg.create("TestClipSquare", "1", {"width": 3})


@pytest.mark.parametrize("fields, match", [
    ({"f": {1, 2}}, "field f is a set"),
    ({"f": [1, object()]}, "field f\\[1\\] is a object"),
    ({"f": {1: 2}}, "field f is a dict with key '__ndarray__' or non-str keys"),
    ({"f": {"__ndarray__": 0}}, "reserved for arrays"),
    ({"f": {"g": np.zeros(2, np.complex64)}}, "field f.g is an array of complex64"),
    ({"f": np.zeros(2, np.int64)}, "array of int64; expected one of bool, float16"),
])
def test_fields_must_be_plain_data(fields, match):
    with pytest.raises(rt.PluginError, match=match):
        ChannelAffineSplit(**fields)


def test_plan_naming_an_unregistered_plugin_fails_clearly(registry):
    registry(ClipSquare)
    b, net, layer = one_plugin_network(ClipSquare(lo=0.0, hi=2.0))
    plan = b.build_serialized_network(net, b.create_builder_config())
    rt.get_plugin_registry().deregister_creator(ClipSquare)
    with pytest.raises(rt.PluginError, match="plan holds a plugin layer that cannot be recreated: "
                       "no plugin 'TestClipSquare' version '1' is registered"):
        rt.Runtime().deserialize_cuda_engine(plan)
    with pytest.raises(rt.PlanFormatError):
        rt.Runtime().deserialize_cuda_engine(plan)


class WrongCount(ClipSquare):
    plugin_type = "TestWrongCount"

    def get_output_shapes(self, input_shapes, input_dtypes):
        return [(input_shapes[0], input_dtypes[0])] * 2


class NotPairs(ClipSquare):
    def get_output_shapes(self, input_shapes, input_dtypes):
        return [input_shapes[0]]


class BadDims(ClipSquare):
    def get_output_shapes(self, input_shapes, input_dtypes):
        return [((2, -3), input_dtypes[0])]


class NotDtype(ClipSquare):
    def get_output_shapes(self, input_shapes, input_dtypes):
        return [(input_shapes[0], np.float32)]


class Raises(ClipSquare):
    def get_output_shapes(self, input_shapes, input_dtypes):
        return input_shapes[5]


class NotAList(ClipSquare):
    def get_output_shapes(self, input_shapes, input_dtypes):
        return None


@pytest.mark.parametrize("cls, match", [
    (WrongCount, "shape rule' is 2 outputs; expected a list of 1 \\(shape, DataType\\) pairs"),
    (NotAList, "shape rule' is None"),
    (NotPairs, "output 0 as \\(2, 3, 4, 4\\); expected a \\(shape tuple, DataType\\) pair"),
    (BadDims, "output 0 as .*dims >= -1 and an engine DataType"),
    (NotDtype, "output 0 as .*an engine DataType"),
    (Raises, "raising IndexError: list index out of range"),
    (type("NoRule", (rt.Plugin,), {"plugin_type": "NoRule"}),
     "raising NotImplementedError: NoRule.get_output_shapes"),
])
def test_misbehaving_shape_rules_are_named(cls, match):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 3, 4, 4))
    with pytest.raises(PluginShapeError, match=match) as info:
        net.add_plugin_v2([x], cls())
    assert isinstance(info.value, rt.PluginError) and isinstance(info.value, rt.NetworkDefinitionError)
    assert net.num_layers == 0


class BadEnqueueCount(ClipSquare):
    def enqueue_numpy(self, inputs):
        return [inputs[0], inputs[0]]


class BadEnqueueShape(ClipSquare):
    def enqueue_numpy(self, inputs):
        return [inputs[0][:1]]


class EnqueueNotList(ClipSquare):
    def enqueue_numpy(self, inputs):
        return inputs[0]


@pytest.mark.parametrize("cls, match", [
    (BadEnqueueCount, "enqueue_numpy returned 2 arrays; its shape rule declares 1 outputs"),
    (EnqueueNotList, "enqueue_numpy returned ndarray"),
    (BadEnqueueShape, "returned output 0 of shape \\(1, 3, 4, 4\\); its shape rule says \\(2, 3, 4, 4\\)"),
])
def test_misbehaving_enqueue_is_named(cls, match):
    _, net, _ = one_plugin_network(cls())
    with pytest.raises(rt.PluginError, match=match):
        interpret(net, {"x": np.ones((2, 3, 4, 4), np.float32)})


def test_enqueue_numpy_is_required():
    class ShapeOnly(rt.Plugin):
        plugin_type = "ShapeOnly"

        def get_output_shapes(self, input_shapes, input_dtypes):
            return [(input_shapes[0], input_dtypes[0])]
    _, net, _ = one_plugin_network(ShapeOnly())
    with pytest.raises(NotImplementedError, match="ShapeOnly.enqueue_numpy"):
        interpret(net, {"x": np.ones((2, 3, 4, 4), np.float32)})


def test_layer_argument_errors():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 3))
    with pytest.raises(rt.NetworkDefinitionError, match="plugin' is str; expected an engine.Plugin"):
        net.add_plugin_v2([x], "ClipSquare")

    class NoInit(ClipSquare):
        def __init__(self):
            pass
    with pytest.raises(rt.NetworkDefinitionError, match="whose __init__ calls Plugin.__init__"):
        net.add_plugin_v2([x], NoInit())
    from engine.layers.plugin import PluginV2Layer
    with pytest.raises(rt.NetworkDefinitionError, match="plugin' is None"):
        net._add(PluginV2Layer(net, [x]))
    assert net.num_layers == 0
    layer = net.add_plugin_v2([x], ClipSquare())
    with pytest.raises(rt.NetworkDefinitionError, match="a missing \\(None\\) input"):
        layer.set_input(2, x)                   # leaves input 1 unset
    assert layer.num_inputs == 1
    with pytest.raises(AttributeError, match="no attribute or field 'width'"):
        layer.plugin.width
    assert "TestClipSquare" in repr(layer.plugin) and ClipSquare() != ClipSquare(hi=2.0)
    assert ClipSquare(lo=1) != ClipSquare(lo=1.0)          # fields compare by type too
    assert hash(ClipSquare()) == hash(ClipSquare())
