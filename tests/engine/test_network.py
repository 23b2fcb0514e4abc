"""The network definition surface: inputs, outputs, tensors, layer basics, errors."""
import numpy as np
import pytest

import engine as rt
from engine.testing import interpret, rel_l2


@pytest.fixture
def net():
    return rt.Builder().create_network()


def test_add_input_records_name_dtype_shape(net):
    x = net.add_input("data", rt.float32, (-1, 3, 8, 8))
    assert (x.name, x.dtype, x.shape) == ("data", rt.float32, (-1, 3, 8, 8))
    assert x.is_network_input and not x.is_network_output
    assert net.num_inputs == 1 and net.get_input(0) is x


@pytest.mark.parametrize("name,dtype,shape,match", [
    ("", rt.float32, (1,), "non-empty str"),
    ("x", "float32", (1,), "engine DataType"),
    ("x", rt.float32, (1, "a"), "sequence of ints"),
    ("x", rt.float32, (1, -2), "-1 \\(dynamic\\)"),
    ("x", rt.float32, (1,) * 9, "at most 8 dims"),
])
def test_add_input_rejects_bad_arguments(net, name, dtype, shape, match):
    with pytest.raises(rt.NetworkDefinitionError, match=match):
        net.add_input(name, dtype, shape)
    assert net.num_inputs == 0


def test_duplicate_tensor_names_are_rejected(net):
    x = net.add_input("x", rt.float32, (2, 2))
    with pytest.raises(rt.NetworkDefinitionError, match="no other tensor"):
        net.add_input("x", rt.float32, (2,))
    a = net.add_activation(x, rt.ActivationType.RELU)
    with pytest.raises(rt.NetworkDefinitionError, match="no other tensor"):
        a.get_output(0).name = "x"
    with pytest.raises(rt.NetworkDefinitionError, match="non-empty"):
        a.get_output(0).name = ""
    a.get_output(0).name = "y"
    assert net.get_tensor("y") is a.get_output(0)


def test_input_shape_and_dtype_can_change_and_reinfer(net):
    x = net.add_input("x", rt.float32, (2, 3))
    a = net.add_activation(x, rt.ActivationType.RELU)
    x.shape = (5, 3)
    assert a.get_output(0).shape == (5, 3)
    x.dtype = rt.float16
    assert a.get_output(0).dtype == rt.float16
    with pytest.raises(rt.NetworkDefinitionError, match="only network input shapes"):
        a.get_output(0).shape = (1, 1)
    with pytest.raises(rt.NetworkDefinitionError, match="set_output_type"):
        a.get_output(0).dtype = rt.float16
    with pytest.raises(rt.NetworkDefinitionError, match="engine DataType"):
        x.dtype = np.float32


def test_layers_are_named_counted_and_iterable(net):
    x = net.add_input("x", rt.float32, (2, 3))
    a = net.add_activation(x, rt.ActivationType.RELU)
    b = net.add_activation(a.get_output(0), rt.ActivationType.TANH)
    assert net.num_layers == 2 and list(net) == [a, b] and net.get_layer(1) is b
    assert a.name != b.name and a.type == rt.LayerType.ACTIVATION
    assert a.num_outputs == 1 and a.num_inputs == 1 and a.get_input(0) is x
    with pytest.raises(IndexError, match="2 layers"):
        net.get_layer(2)
    with pytest.raises(IndexError, match="1 outputs"):
        a.get_output(1)


def test_layer_type_assignment_follows_tensorrt(net):
    x = net.add_input("x", rt.float32, (4,))
    a = net.add_activation(x, rt.ActivationType.RELU)
    a.type = rt.ActivationType.SIGMOID       # IActivationLayer.type = ... in TensorRT
    assert a.activation_type == rt.ActivationType.SIGMOID and a.type == rt.LayerType.ACTIVATION
    with pytest.raises(rt.NetworkDefinitionError, match="ActivationType"):
        a.type = rt.PoolingType.MAX


def test_attribute_errors_name_layer_argument_and_choices(net):
    x = net.add_input("x", rt.float32, (4,))
    a = net.add_activation(x, rt.ActivationType.RELU)
    a.name = "act1"
    with pytest.raises(rt.NetworkDefinitionError, match="layer 'act1' \\(ACTIVATION\\): argument 'alpha'"):
        a.alpha = "big"
    with pytest.raises(rt.NetworkDefinitionError, match="RELU, SIGMOID"):
        a.activation_type = "SWISH"
    a.activation_type = "TANH"       # member names are accepted too
    assert a.activation_type == rt.ActivationType.TANH


def test_foreign_and_non_tensor_inputs_are_rejected(net):
    other = rt.Builder().create_network().add_input("x", rt.float32, (2,))
    with pytest.raises(rt.NetworkDefinitionError, match="a tensor of this network"):
        net.add_activation(other, rt.ActivationType.RELU)
    with pytest.raises(rt.NetworkDefinitionError, match="an engine Tensor"):
        net.add_activation(np.ones(2), rt.ActivationType.RELU)
    assert net.num_layers == 0


def test_mark_and_unmark_output(net):
    x = net.add_input("x", rt.float32, (4,))
    t = net.add_activation(x, rt.ActivationType.RELU).get_output(0)
    net.mark_output(t)
    net.mark_output(t)
    assert net.num_outputs == 1 and t.is_network_output
    net.unmark_output(t)
    assert net.num_outputs == 0
    with pytest.raises(rt.NetworkDefinitionError, match="marked as a network output"):
        net.unmark_output(t)
    with pytest.raises(rt.NetworkDefinitionError, match="engine Tensor"):
        net.mark_output("t")


def test_precision_and_output_type(net):
    x = net.add_input("x", rt.float32, (4,))
    a = net.add_activation(x, rt.ActivationType.RELU)
    assert a.precision == rt.float32 and not a.precision_is_set
    a.precision = rt.float16
    assert a.precision_is_set and a.precision == rt.float16
    a.reset_precision()
    assert not a.precision_is_set
    a.set_output_type(0, rt.float16)
    assert a.get_output_type(0) == rt.float16 and a.output_type_is_set(0)
    a.reset_output_type(0)
    assert not a.output_type_is_set(0)
    with pytest.raises(rt.NetworkDefinitionError, match="a DataType"):
        a.precision = "fp16"
    with pytest.raises(rt.NetworkDefinitionError, match="a DataType"):
        a.set_output_type(0, "fp16")
    with pytest.raises(rt.NetworkDefinitionError, match="output index"):
        a.set_output_type(3, rt.float16)


def test_set_input_rewires_and_rejects_bad_index(net):
    x = net.add_input("x", rt.float32, (4,))
    y = net.add_input("y", rt.float32, (6,))
    a = net.add_activation(x, rt.ActivationType.RELU)
    a.set_input(0, y)
    assert a.get_output(0).shape == (6,)
    with pytest.raises(rt.NetworkDefinitionError, match="input index"):
        a.set_input(1, x)


def test_dynamic_range_validation(net):
    x = net.add_input("x", rt.float32, (4,))
    assert x.set_dynamic_range(-2, 2) and x.dynamic_range == (-2.0, 2.0)
    with pytest.raises(rt.NetworkDefinitionError, match="min < max"):
        x.set_dynamic_range(1, 1)


def test_weights_wrapper_is_accepted_where_arrays_are():
    w = rt.Weights(np.arange(6, dtype=np.float32))
    assert w.size == 6 and w.dtype == rt.float32 and w.numpy().shape == (6,)
    assert rt.Weights().size == 0 and rt.Weights().dtype is None


def test_interpret_runs_a_chain():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (3, 5))
    a = net.add_activation(x, rt.ActivationType.LEAKY_RELU)
    a.alpha = 0.2
    b = net.add_activation(a.get_output(0), rt.ActivationType.TANH)
    net.mark_output(b.get_output(0))
    v = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    got = interpret(net, {"x": v})[b.get_output(0).name]
    assert rel_l2(got, np.tanh(np.where(v > 0, v, 0.2 * v))) < 1e-6


def test_rel_l2_rejects_shape_mismatch():
    with pytest.raises(AssertionError, match="shape"):
        rel_l2(np.ones(3), np.ones(4))
    assert rel_l2(np.zeros(2), np.zeros(2)) == 0.0


def test_set_output_type_changes_the_output_dtype_at_once(net):
    x = net.add_input("x", rt.float32, (4,))
    i = net.add_identity(x)
    i.set_output_type(0, rt.float16)
    assert i.get_output(0).dtype == rt.float16
    i.reset_output_type(0)
    assert i.get_output(0).dtype == rt.float32


def test_window_layers_take_attributes_at_creation(net):
    x = net.add_input("x", rt.float32, (1, 4, 2, 2))
    w = np.random.default_rng(0).standard_normal((4, 4, 3, 3)).astype(np.float32)
    with pytest.raises(rt.NetworkDefinitionError):
        net.add_convolution_nd(x, 4, (3, 3), w)          # no padding: a 0x0 output
    conv = net.add_convolution_nd(x, 4, (3, 3), w, padding_mode=rt.PaddingMode.SAME_UPPER,
                                  stride_nd=(1, 1))
    assert conv.get_output(0).shape == (1, 4, 2, 2)
    pool = net.add_pooling_nd(x, rt.PoolingType.MAX, (3, 3), padding_nd=(1, 1))
    assert pool.get_output(0).shape == (1, 4, 2, 2)
    with pytest.raises(rt.NetworkDefinitionError, match="one of the layer's attributes"):
        net.add_pooling_nd(x, rt.PoolingType.MAX, (1, 1), strides=(2, 2))


def _conv_chain(net, k=4):
    """input (2, 3, 8, 8) -> conv 3x3 (k) -> relu -> conv 1x1 (5): shapes through the chain."""
    rng = np.random.default_rng(3)
    x = net.add_input("x", rt.float32, (2, 3, 8, 8))
    c1 = net.add_convolution_nd(x, k, (3, 3), kernel=rng.standard_normal((k, 3, 3, 3)).astype(np.float32))
    r = net.add_activation(c1.get_output(0), rt.ActivationType.RELU)
    c2 = net.add_convolution_nd(r.get_output(0), 5, (1, 1),
                                kernel=rng.standard_normal((5, k, 1, 1)).astype(np.float32))
    net.mark_output(c2.get_output(0))
    return x, c1, r, c2


def _count_inference(monkeypatch, net):
    calls = []
    real = type(net)._infer_layer
    monkeypatch.setattr(type(net), "_infer_layer", lambda self, layer, *a: calls.append(layer.name) or
                        real(self, layer, *a))
    return calls


def test_a_fusion_that_keeps_the_shapes_infers_only_the_fused_layer(net, monkeypatch):
    """take_output (every fusion pass) re-infers the keeper alone when its outputs come out
    as they were; reading a shape later re-infers nothing (the passes used to re-infer the
    whole network once per fusion)."""
    x, c1, r, c2 = _conv_chain(net)
    assert c2.get_output(0).shape == (2, 5, 6, 6)
    feed = {"x": np.random.default_rng(4).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    name = c2.get_output(0).name
    before = interpret(net, feed)[name]
    calls = _count_inference(monkeypatch, net)
    c1.post_activation = rt.ActivationType.RELU       # an epilogue: the output is unchanged
    net.take_output(c1, r)
    assert c2.get_input(0) is c1.get_output(0) and c2.get_output(0).shape == (2, 5, 6, 6)
    assert not net._dirty and set(calls) == {c1.name}
    assert rel_l2(interpret(net, feed)[name], before) < 1e-6 and np.abs(before).max() > 0


def test_a_change_that_alters_a_shape_still_reinfers_what_follows(net, monkeypatch):
    x, c1, r, c2 = _conv_chain(net)
    calls = _count_inference(monkeypatch, net)
    c1.padding_nd = (1, 1)                            # 6x6 -> 8x8: every layer after it changes
    assert net._dirty
    assert r.get_output(0).shape == (2, 4, 8, 8) and c2.get_output(0).shape == (2, 5, 8, 8)
    assert {r.name, c2.name} <= set(calls)
    calls.clear()
    c1.kernel = c1.kernel * 2.0                       # weights only: nothing after it re-inferred
    assert not net._dirty and c2.get_output(0).shape == (2, 5, 8, 8) and calls == [c1.name]


def test_a_fusion_whose_outputs_differ_marks_the_network(net):
    """A keeper that infers another shape than the tensor it takes over: the layers after it
    are inferred again (and a layer that no longer fits says so) on the next read."""
    x, c1, r, c2 = _conv_chain(net)
    c1.padding_nd = (1, 1)
    assert c2.get_output(0).shape == (2, 5, 8, 8)
    donor = net.add_activation(c2.get_output(0), rt.ActivationType.RELU)
    keeper = net.add_pooling_nd(c2.get_output(0), rt.PoolingType.MAX, (2, 2))
    net.mark_output(donor.get_output(0))
    out = donor.get_output(0)
    net.take_output(keeper, donor)                    # (2, 5, 8, 8) taken over by a 2x2 pool
    assert net._dirty and out.producer is keeper and out.shape == (2, 5, 7, 7)


def test_replacing_a_tensor_with_one_of_another_shape_reinfers_its_consumers(net):
    x, c1, r, c2 = _conv_chain(net)
    assert c2.get_output(0).shape == (2, 5, 6, 6)
    same = net.add_activation(c1.get_output(0), rt.ActivationType.SIGMOID).get_output(0)
    net.replace_all_uses(r.get_output(0), same)       # same shape: nothing to infer again
    assert not net._dirty and c2.get_input(0) is same
    pool = net.add_pooling_nd(c1.get_output(0), rt.PoolingType.MAX, (2, 2)).get_output(0)
    net.replace_all_uses(same, pool)                  # (2, 4, 5, 5): the conv after it shrinks
    assert net._dirty and c2.get_output(0).shape == (2, 5, 5, 5)
