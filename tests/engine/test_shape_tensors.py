"""Shape tensors: the Shape layer, reshape dims and slice sizes given by tensors, the
values the network knows of them, and the build pass that turns them into attributes."""
import numpy as np
import pytest

import engine as rt
from engine import passes, shape_values
from engine.testing import interpret

RNG = np.random.default_rng(5)


def _const(net, values):
    a = np.asarray(values, np.int32)
    return net.add_constant(a.shape, a).get_output(0)


def _split_heads(net, x, heads=4):
    """x (b, s, d) -> (b, s, heads, d // heads) with b and s read from Shape(x)."""
    shape = net.add_shape(x).get_output(0)
    bs = net.add_gather(shape, _const(net, [0, 1]), 0).get_output(0)
    dims = net.add_concatenation([bs, _const(net, [heads, -1])], axis=0).get_output(0)
    layer = net.add_shuffle(x)
    layer.set_input(1, dims)
    layer.zero_is_placeholder = False
    return layer


def _build(net, **flags):
    b = rt.Builder()
    cfg = b.create_builder_config()
    for name in flags.get("disabled", ()):
        cfg.disable_pass(name)
    return rt.Runtime().deserialize_cuda_engine(b.build_serialized_network(net, cfg))


def test_shape_layer_values_follow_known_dims():
    net = rt.Builder().create_network()
    x = net.add_input("x", rt.float32, (-1, 7, 32))
    layer = net.add_shape(x)
    t = layer.get_output(0)
    assert (t.shape, t.dtype) == ((3,), rt.int32)
    assert shape_values.get(t) == (None, 7, 32)
    prod = net.add_reduce(net.add_gather(t, _const(net, [1, 2]), 0).get_output(0),
                          rt.ReduceOperation.PROD, 1, False).get_output(0)
    assert shape_values.get(prod) == (224,)
    unknown = net.add_reduce(t, rt.ReduceOperation.PROD, 1, False).get_output(0)
    assert shape_values.get(unknown) == (None,)
    scaled = net.add_elementwise(t, _const(net, [2, 2, 2]), rt.ElementWiseOperation.PROD)
    assert shape_values.get(scaled.get_output(0)) == (None, 14, 64)


@pytest.mark.parametrize("shape", [(1, 5, 32), (3, 12, 32)])
def test_dynamic_reshape_runs_at_any_shape_of_one_engine(shape):
    net = rt.Builder().create_network()
    x = net.add_input("x", rt.float32, (-1, -1, 32))
    y = _split_heads(net, x).get_output(0)
    assert y.shape == (-1, -1, 4, -1)
    net.mark_output(y)
    engine = _build(net)
    assert rt.LayerType.SHAPE in [i.type for i in engine.layers]   # nothing known: kept
    xv = RNG.standard_normal(shape).astype(np.float32)
    got = engine.create_execution_context().execute({"x": xv})[y.name]
    np.testing.assert_array_equal(got, xv.reshape(shape[0], shape[1], 4, 8))


def test_build_at_concrete_shapes_folds_shape_tensors_into_attributes():
    net = rt.Builder().create_network()
    x = net.add_input("x", rt.float32, (-1, -1, 32))
    y = _split_heads(net, x).get_output(0)
    net.mark_output(y)
    x.shape = (2, 6, 32)
    assert y.shape == (2, 6, 4, 8)
    before = passes.COUNTERS["shape_tensors"]
    engine = _build(net)
    assert [i.type for i in engine.layers] == [rt.LayerType.SHUFFLE]
    assert engine.layers[0].attributes["reshape_dims"] == [2, 6, 4, -1]
    assert passes.COUNTERS["shape_tensors"] > before
    xv = RNG.standard_normal((2, 6, 32)).astype(np.float32)
    got = engine.create_execution_context().execute({"x": xv})[y.name]
    np.testing.assert_array_equal(got, xv.reshape(2, 6, 4, 8))


def test_slice_size_tensor_broadcasts_a_fill_to_a_runtime_shape():
    net = rt.Builder().create_network()
    x = net.add_input("x", rt.float32, (-1, 3))
    size = net.add_shape(x).get_output(0)       # layers in topological order
    value = net.add_constant((1, 1), np.full((1, 1), 2.5, np.float32)).get_output(0)
    fill = net.add_slice(value, (0, 0), (1, 1), (0, 0))
    fill.set_input(2, size)
    assert fill.get_output(0).shape == (-1, 3)
    out = net.add_elementwise(x, fill.get_output(0), rt.ElementWiseOperation.SUM).get_output(0)
    net.mark_output(out)
    xv = RNG.standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(_build(net).create_execution_context().execute({"x": xv})[out.name],
                               xv + 2.5)
    x.shape = (4, 3)
    engine = _build(net)
    assert rt.LayerType.SHAPE not in [i.type for i in engine.layers]
    np.testing.assert_allclose(engine.create_execution_context().execute({"x": xv})[out.name],
                               xv + 2.5)


def test_dynamic_reshape_plan_round_trip_matches_interpreter():
    net = rt.Builder().create_network()
    x = net.add_input("x", rt.float32, (-1, -1, 32))
    y = _split_heads(net, x).get_output(0)
    net.mark_output(y)
    data = rt.serialize_network(net)
    back = rt.deserialize_network(data)
    assert rt.serialize_network(back) == data
    xv = RNG.standard_normal((2, 3, 32)).astype(np.float32)
    ref = interpret(net, {"x": xv})
    got = interpret(back, {"x": xv})
    np.testing.assert_array_equal(got[y.name], ref[y.name])


def test_reshape_tensor_must_be_a_1d_int32_tensor():
    net = rt.Builder().create_network()
    x = net.add_input("x", rt.float32, (2, 6))
    layer = net.add_shuffle(x)
    with pytest.raises(rt.NetworkDefinitionError, match="1-D INT32 shape tensor"):
        layer.set_input(1, net.add_constant((2,), np.array([3.0, 4.0], np.float32)).get_output(0))
    assert layer.num_inputs == 1


def test_slice_size_tensor_must_match_the_rank_and_start_must_be_an_attribute():
    net = rt.Builder().create_network()
    x = net.add_input("x", rt.float32, (2, 6))
    layer = net.add_slice(x, (0, 0), (1, 1), (1, 1))
    with pytest.raises(rt.NetworkDefinitionError, match="shape tensor of 2 values"):
        layer.set_input(2, _const(net, [1, 2, 3]))
    with pytest.raises(rt.NetworkDefinitionError, match="start is the 'start' attribute"):
        layer.set_input(1, _const(net, [0, 0]))


def test_runtime_shape_tensor_mismatch_is_an_execution_error():
    net = rt.Builder().create_network()
    x = net.add_input("x", rt.float32, (-1, 6))
    dims = net.add_elementwise(net.add_shape(x).get_output(0), _const(net, [2, 1]),
                               rt.ElementWiseOperation.PROD).get_output(0)
    layer = net.add_shuffle(x)
    layer.set_input(1, dims)
    net.mark_output(layer.get_output(0))
    ctx = _build(net).create_execution_context()
    with pytest.raises(Exception, match="volume"):
        ctx.execute({"x": RNG.standard_normal((3, 6)).astype(np.float32)})
