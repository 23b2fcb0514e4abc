"""The seed workflows' engine parts on the CuPy backend (no TensorFlow, no scikit-learn):
the custom layer's CuPy implementation inside an engine, and the network-API LeNet."""
import numpy as np
import pytest

import engine as rt
from gpu_helpers import rel_l2
from workflows import custom_layer_workflow, network_api_workflow

cp = pytest.importorskip("cupy")


def build(net, builder, backend, fp16=False):
    cfg = builder.create_builder_config()
    cfg.backend = backend
    if fp16:
        cfg.set_flag(rt.BuilderFlag.FP16)
    return rt.Runtime(backend=backend).deserialize_cuda_engine(
        builder.build_serialized_network(net, cfg))


@pytest.fixture
def cumsum_plugin():
    reg = rt.get_plugin_registry()
    cls = custom_layer_workflow.CumSumPlugin
    added = reg.get_creator(cls.plugin_type, cls.plugin_version) is None
    if added:
        reg.register_creator(cls)
    yield cls
    if added:
        reg.deregister_creator(cls)


@pytest.mark.parametrize("exclusive,reverse", [(False, False), (True, True), (True, False)])
@pytest.mark.parametrize("axis", [1, 2])
def test_cumsum_plugin_runs_its_cupy_code_in_an_engine(cumsum_plugin, monkeypatch, axis,
                                                       exclusive, reverse):
    calls = []
    inner = cumsum_plugin.enqueue_cupy

    def counted(self, inputs):
        calls.append(type(inputs[0]).__module__)
        return inner(self, inputs)
    monkeypatch.setattr(cumsum_plugin, "enqueue_cupy", counted)
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (-1, 16, 24))
    relu = net.add_activation(x, rt.ActivationType.RELU)       # a layer around the plugin
    layer = net.add_plugin_v2([relu.get_output(0)], cumsum_plugin(axis, exclusive, reverse))
    net.mark_output(layer.get_output(0))
    data = np.random.default_rng(axis).standard_normal((3, 16, 24)).astype(np.float32)
    want = build(net, b, "numpy").create_execution_context().execute({"x": data})
    got = build(net, b, "cupy").create_execution_context().execute({"x": cp.asarray(data)})
    (name,) = want
    assert rel_l2(cp.asnumpy(cp.asarray(got[name])), want[name]) <= 1e-5
    assert calls and all(m.startswith("cupy") for m in calls), calls


@pytest.mark.parametrize("fp16,tol", [(False, 1e-5), (True, 1e-2)])
def test_network_api_lenet_on_cupy_matches_the_numpy_forward_pass(fp16, tol):
    rng = np.random.default_rng(0)
    params = {k: (rng.standard_normal(s) * 0.3).astype(np.float32)
              for k, s in network_api_workflow.SHAPES.items()}
    x = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    builder, net = network_api_workflow.build_network(params)
    eng = build(net, builder, "cupy", fp16)
    got = eng.create_execution_context().execute({"image": cp.asarray(x)})["probs"]
    assert rel_l2(cp.asnumpy(cp.asarray(got)), network_api_workflow.forward(params, x)) <= tol
