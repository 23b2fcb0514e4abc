"""The attribute validators, registries and error paths every layer relies on."""
import numpy as np
import pytest

import engine as rt
from engine import kernel_table
from engine.layers.base import Layer
from engine.layers.classes import ActivationLayer, ElementWiseLayer, PointwiseLayer
from engine.layers.pointwise_chain import Op


@pytest.fixture
def net():
    return rt.Network()


def _conv(net, x):
    w = np.random.default_rng(0).standard_normal((4, 4, 1, 1)).astype(np.float32)
    return net.add_convolution_nd(x, 4, (1, 1), w)


def test_int_attributes_reject_non_ints_and_small_values(net):
    conv = _conv(net, net.add_input("x", rt.float32, (1, 4, 3, 3)))
    with pytest.raises(rt.NetworkDefinitionError, match="'num_groups' is '2'; expected an int"):
        conv.num_groups = "2"
    with pytest.raises(rt.NetworkDefinitionError, match="an int >= 1"):
        conv.num_groups = 0
    with pytest.raises(rt.NetworkDefinitionError, match="an int"):
        conv.num_groups = True


def test_ints_attributes(net):
    conv = _conv(net, net.add_input("x", rt.float32, (1, 4, 6, 6)))
    with pytest.raises(rt.NetworkDefinitionError, match="is \\(2,\\); expected 2 values"):
        conv.stride_nd = 2                                # one int is a 1-tuple: too few dims
    with pytest.raises(rt.NetworkDefinitionError, match="a sequence of ints"):
        conv.stride_nd = (1.5, 2)
    with pytest.raises(rt.NetworkDefinitionError, match="a sequence of ints"):
        conv.stride_nd = "ab"
    with pytest.raises(rt.NetworkDefinitionError, match="at most 8 values"):
        net.add_squeeze(net.add_input("y", rt.float32, (1,)), tuple(range(9)))


def test_bool_and_array_attributes(net):
    x = net.add_input("x", rt.float32, (2, 3))
    red = net.add_reduce(x, rt.ReduceOperation.SUM, 1, False)
    with pytest.raises(rt.NetworkDefinitionError, match="True or False"):
        red.keep_dims = "yes"
    with pytest.raises(rt.NetworkDefinitionError, match="an array of complex128"):
        net.add_constant((2,), np.ones(2, np.complex128))
    with pytest.raises(rt.NetworkDefinitionError, match="an array of object"):
        net.add_constant((2,), {1: 2})
    with pytest.raises(rt.NetworkDefinitionError, match="a NumPy array"):
        net.add_constant((2,), [[1.0], [1.0, 2.0]])         # ragged: no array at all
    c = net.add_constant((2,), [1.0, 2.0])              # float64 lists become float32 weights
    assert c.weights.dtype == np.float32


def test_layer_type_of_a_fixed_kind_cannot_be_assigned(net):
    x = net.add_input("x", rt.float32, (2, 3))
    ident = net.add_identity(x)
    with pytest.raises(rt.NetworkDefinitionError, match="type is fixed"):
        ident.type = rt.ActivationType.RELU


def test_a_layer_without_a_shape_rule_says_so():
    class Shapeless(Layer):
        pass
    with pytest.raises(NotImplementedError, match="Shapeless.infer"):
        Shapeless(None, []).infer([], [])


def test_data_type_from_numpy():
    assert rt.DataType.from_numpy(np.int32) == rt.int32
    with pytest.raises(TypeError, match="float64 has no engine data type"):
        rt.DataType.from_numpy(np.float64)
    assert rt.nptype(rt.float16) == np.float16 and rt.float16.itemsize == 2


def test_kernel_registry_refuses_duplicates_and_names_missing_kernels(monkeypatch):
    with pytest.raises(rt.BuildError, match="registered twice"):
        kernel_table.numpy_impl(rt.LayerType.ACTIVATION)(lambda layer, inputs: inputs)
    monkeypatch.delitem(kernel_table.NUMPY, rt.LayerType.IDENTITY)
    net = rt.Network()
    net.mark_output(net.add_identity(net.add_input("x", rt.float32, (2,))).get_output(0))
    b = rt.Builder()
    with pytest.raises(rt.BuildError, match="no NumPy implementation is registered for IDENTITY"):
        b.build_serialized_network(net, b.create_builder_config())


def test_pointwise_layer_checks_its_chain(net):
    x = net.add_input("x", rt.float32, (2, 3))
    i = net.add_input("i", rt.int32, (2, 3))
    relu = ActivationLayer(None, [], activation_type=rt.ActivationType.RELU)
    add = ElementWiseLayer(None, [], op=rt.ElementWiseOperation.SUM)
    with pytest.raises(rt.NetworkDefinitionError, match="a FLOAT or HALF tensor"):
        net._add(PointwiseLayer(net, [i], chain=[Op(relu)]))
    with pytest.raises(rt.NetworkDefinitionError, match="an input index in \\[0, 1\\)"):
        net._add(PointwiseLayer(net, [x], chain=[Op(add, input_index=3)]))
    with pytest.raises(rt.NetworkDefinitionError, match="broadcasts into"):
        net._add(PointwiseLayer(net, [x], chain=[Op(add, const=np.ones((2, 4), np.float32))]))
    assert "ACTIVATION" in repr(Op(relu))


def test_optimization_profiles_validate(net):
    b = rt.Builder()
    cfg = b.create_builder_config()
    prof = b.create_optimization_profile()
    prof.set_shape("x", (1, 3), (4, 3), (8, 3))
    assert prof.get_shape("x") == ((1, 3), (4, 3), (8, 3)) and prof.get_shape("y") is None
    assert cfg.add_optimization_profile(prof) == 0
    with pytest.raises(rt.BuildError, match="min <= opt <= max"):
        prof.set_shape("x", (4, 3), (1, 3), (8, 3))
    with pytest.raises(rt.BuildError, match="takes an OptimizationProfile"):
        cfg.add_optimization_profile({"x": (1, 3)})


def test_a_shape_that_only_fails_at_run_time_names_the_layer():
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (-1, 3))
    y = net.add_input("y", rt.float32, (-1, 3))
    s = net.add_elementwise(x, y, rt.ElementWiseOperation.SUM)
    net.mark_output(s.get_output(0))
    engine = b.build_engine(net, b.create_builder_config())
    with pytest.raises(rt.ExecutionError, match="not valid for"):
        engine.create_execution_context().execute({"x": np.ones((2, 3), np.float32),
                                                   "y": np.ones((5, 3), np.float32)})
    assert "layers" in repr(engine) and "ELEMENTWISE" in repr(engine.layers[0])


def test_a_layer_output_over_eight_dims_is_refused(net):
    x = net.add_input("x", rt.float32, (1,) * 8)
    with pytest.raises(rt.NetworkDefinitionError):
        net.add_unsqueeze(x, (0,))
    assert net.num_layers == 0


def test_a_change_upstream_that_breaks_a_layer_downstream_is_reported(net):
    x = net.add_input("x", rt.float32, (2, 3))
    y = net.add_input("y", rt.float32, (2, 3))
    s = net.add_elementwise(x, y, rt.ElementWiseOperation.SUM)
    with pytest.raises(rt.NetworkDefinitionError, match="dims equal or 1"):
        x.shape = (2, 4)
    with pytest.raises(rt.NetworkDefinitionError, match="dims equal or 1"):
        s.get_output(0).shape                     # still reported until the input is fixed
    x.shape = (2, 3)
    assert s.get_output(0).shape == (2, 3)


def test_a_plan_whose_fused_chain_names_an_unknown_layer_type():
    import hashlib
    import json
    import struct

    from engine import plan as planfile
    b = rt.Builder()
    network = b.create_network()
    x = network.add_input("x", rt.float32, (2, 3))
    a = network.add_activation(x, rt.ActivationType.TANH).get_output(0)
    network.mark_output(network.add_unary(a, rt.UnaryOperation.EXP).get_output(0))
    doc, arrays = planfile.loads(b.build_serialized_network(network, b.create_builder_config()))
    layer = next(layer for layer in doc["network"]["layers"] if layer["type"] == "POINTWISE")
    layer["attrs"]["chain"][0]["type"] = "WARP"
    header = json.dumps(doc).encode()
    data = struct.pack("<8sIQQ32s", planfile.MAGIC, planfile.PLAN_VERSION, len(header),
                       len(arrays.blob), hashlib.sha256(header + arrays.blob).digest()) + header + arrays.blob
    with pytest.raises(rt.PlanFormatError, match="fused chain names layer type 'WARP'"):
        rt.Runtime().deserialize_cuda_engine(data)
