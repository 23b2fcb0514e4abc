"""Plans and networks saved without weights (plan.strip_weights) and completed
again from a rebuild (plan.attach_weights): what engine nodes store."""
import logging

import numpy as np
import pytest

import engine as rt
from engine import plan as planfile


def conv_network(seed=0, channels=4):
    rng = np.random.default_rng(seed)
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (-1, 3, 6, 6))
    kernel = rng.standard_normal((channels, 3, 3, 3)).astype(np.float32)
    conv = net.add_convolution_nd(x, channels, (3, 3), kernel=kernel,
                                  bias=rng.standard_normal(channels).astype(np.float32))
    conv.padding_nd = (1, 1)
    act = net.add_activation(conv.get_output(0), rt.ActivationType.RELU)
    act.get_output(0).name = "y"
    net.mark_output(act.get_output(0))
    return b, net


def built(seed=0, channels=4, fp16=False):
    b, net = conv_network(seed, channels)
    config = b.create_builder_config()
    if fp16:
        config.set_flag(rt.BuilderFlag.FP16)
    return b.build_serialized_network(net, config)


@pytest.mark.parametrize("fp16", [False, True])
def test_stripped_plan_plus_rebuilt_weights_is_the_plan(fp16):
    plan = built(fp16=fp16)
    stripped = planfile.strip_weights(plan)
    assert planfile.is_stripped(stripped) and not planfile.is_stripped(plan)
    blob = planfile.loads(plan)[1].blob
    assert len(blob) >= 4 * 3 * 3 * 3 * 4 and planfile.loads(stripped)[1].blob == b""
    assert len(stripped) < len(plan) - len(blob) + 200     # the header grows by a checksum only
    assert planfile.strip_weights(stripped) == stripped          # idempotent
    full = planfile.attach_weights(stripped, built(fp16=fp16))
    assert full == plan
    x = np.random.default_rng(3).standard_normal((2, 3, 6, 6)).astype(np.float32)
    got = rt.Runtime().deserialize_cuda_engine(full).create_execution_context().execute({"x": x})
    ref = rt.Runtime().deserialize_cuda_engine(plan).create_execution_context().execute({"x": x})
    np.testing.assert_array_equal(got["y"], ref["y"])


def test_stored_decisions_win_over_the_rebuilds():
    plan = built()
    doc, arrays = planfile.loads(plan)
    doc["engine"]["kernels"] = {layer["name"]: "chosen.on.the.gpu"
                                for layer in doc["network"]["layers"]}
    stripped = planfile.strip_weights(planfile.dumps(doc, _table(arrays.blob)))
    full_doc, _ = planfile.loads(planfile.attach_weights(stripped, built()))
    assert set(full_doc["engine"]["kernels"].values()) == {"chosen.on.the.gpu"}


def _table(blob):
    t = planfile.ArrayTable()
    t.parts, t.size = [blob], len(blob)
    return t


def test_networks_strip_and_attach_too():
    _, net = conv_network()
    data = rt.serialize_network(net)
    stripped = planfile.strip_weights(data)
    back = rt.deserialize_network(planfile.attach_weights(stripped, rt.serialize_network(net)))
    assert back.num_layers == net.num_layers


def test_a_stripped_plan_cannot_be_deserialized_alone():
    with pytest.raises(rt.PlanFormatError, match="saved without its weights"):
        rt.Runtime().deserialize_cuda_engine(planfile.strip_weights(built()))


def test_attach_refuses_a_different_network():
    stripped = planfile.strip_weights(built(channels=4))
    with pytest.raises(rt.PlanFormatError, match="differs from the stored one"):
        planfile.attach_weights(stripped, built(channels=5))


def test_attach_needs_a_stripped_plan_and_a_full_rebuild():
    plan = built()
    with pytest.raises(rt.PlanFormatError, match="has its weights already"):
        planfile.attach_weights(plan, plan)
    with pytest.raises(rt.PlanFormatError, match="has no weights either"):
        planfile.attach_weights(planfile.strip_weights(plan), planfile.strip_weights(plan))


def test_weights_that_differ_only_in_value_are_taken_and_logged(caplog):
    stripped = planfile.strip_weights(built(seed=0))
    with caplog.at_level(logging.INFO, logger="engine.plan"):
        full = planfile.attach_weights(stripped, built(seed=1))
    assert "differ bitwise" in caplog.text
    assert planfile.loads(full)[1].blob == planfile.loads(built(seed=1))[1].blob
