"""Plan files: exact round trips, and a clear error for every kind of damage."""
import hashlib
import json
import struct

import numpy as np
import pytest

import engine as rt
from engine import plan as planfile


def small_network():
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (-1, 6))
    a = net.add_activation(x, rt.ActivationType.LEAKY_RELU)
    a.alpha = 0.3
    a.name = "act"
    a.metadata = "from tf node act"
    y = a.get_output(0)
    y.name = "y"
    y.set_dynamic_range(-1.5, 2.5)
    net.mark_output(y)
    return b, net


def built_plan():
    b, net = small_network()
    return b.build_serialized_network(net, b.create_builder_config())


def test_plan_round_trip_is_bit_exact_and_runs():
    data = built_plan()
    engine = rt.Runtime().deserialize_cuda_engine(data)
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    out = engine.create_execution_context().execute({"x": x})["y"]
    np.testing.assert_array_equal(out, np.where(x >= 0, x, np.float32(0.3) * x))
    # re-serialising the deserialised network gives the same bytes
    arrays = planfile.ArrayTable()
    doc = {"network": planfile.encode_network(engine.network, arrays), "engine": engine.meta}
    assert planfile.dumps(doc, arrays) == data
    assert engine.network.get_tensor("y").dynamic_range == (-1.5, 2.5)
    assert engine.network.get_layer(0).metadata == "from tf node act"


def test_weights_survive_exactly():
    table = planfile.ArrayTable()
    w = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float16)
    i = np.arange(7, dtype=np.int32)
    refs = [table.put(w), table.put(i)]
    assert all(r["offset"] % 64 == 0 for r in refs)
    back = planfile.ArrayTable(table.getbytes())
    np.testing.assert_array_equal(back.get(refs[0]), w)
    assert back.get(refs[0]).dtype == np.float16
    np.testing.assert_array_equal(back.get(refs[1]), i)


def _reseal(header_doc, blob=b""):
    header = json.dumps(header_doc).encode()
    digest = hashlib.sha256(header + blob).digest()
    return struct.pack("<8sIQQ32s", planfile.MAGIC, planfile.PLAN_VERSION, len(header),
                       len(blob), digest) + header + blob


@pytest.mark.parametrize("damage,match", [
    (lambda d: d[:40], "truncated"),
    (lambda d: d[:-3], "truncated or padded"),
    (lambda d: d + b"\0", "truncated or padded"),
    (lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:], "checksum"),
    (lambda d: b"NOTAPLAN" + d[8:], "not a cupyrt plan"),
    (lambda d: d[:8] + struct.pack("<I", 99) + d[12:], "version 99"),
])
def test_damaged_plans_raise_plan_format_error(damage, match):
    with pytest.raises(rt.PlanFormatError, match=match):
        rt.Runtime().deserialize_cuda_engine(damage(built_plan()))


def test_plan_must_be_bytes():
    with pytest.raises(rt.PlanFormatError, match="plan is bytes"):
        rt.Runtime().deserialize_cuda_engine("plan")


def test_invalid_json_with_valid_checksum():
    header = b"{not json"
    data = struct.pack("<8sIQQ32s", planfile.MAGIC, planfile.PLAN_VERSION, len(header), 0,
                       hashlib.sha256(header).digest()) + header
    with pytest.raises(rt.PlanFormatError, match="not valid JSON"):
        rt.Runtime().deserialize_cuda_engine(data)


def _doc():
    doc, arrays = planfile.loads(built_plan())
    return doc, arrays.blob


@pytest.mark.parametrize("edit,match", [
    (lambda n: n["layers"][0].update(type="WARP_DRIVE"), "valid network"),
    (lambda n: n["layers"][0].update(inputs=["nope"]), "valid network"),
    (lambda n: n["layers"][0]["attrs"].update(activation_type="SWISH"), "valid network"),
    (lambda n: n.pop("layers"), "valid network"),
])
def test_plans_describing_invalid_networks_are_rejected(edit, match):
    doc, blob = _doc()
    edit(doc["network"])
    with pytest.raises(rt.PlanFormatError, match=match):
        rt.Runtime().deserialize_cuda_engine(_reseal(doc, blob))


def test_unimplemented_layer_type_in_plan(monkeypatch):
    doc, blob = _doc()
    monkeypatch.delitem(rt.Layer.LAYER_CLASSES, rt.LayerType.ACTIVATION)
    with pytest.raises(rt.PlanFormatError, match="does not implement"):
        rt.Runtime().deserialize_cuda_engine(_reseal(doc, blob))


@pytest.mark.parametrize("ref,match", [
    ({"offset": 0, "dtype": "object", "shape": [1]}, "dtype 'object'"),
    ({"offset": 10 ** 9, "dtype": "float32", "shape": [4]}, "outside the weight blob"),
    ({"dtype": "float32"}, "malformed array reference"),
])
def test_bad_array_references(ref, match):
    with pytest.raises(rt.PlanFormatError, match=match):
        planfile.ArrayTable(b"\0" * 64).get(ref)


def test_network_serialises_without_building():
    _, net = small_network()
    data = rt.serialize_network(net)
    back = rt.deserialize_network(data)
    assert back.num_layers == 1 and back.get_layer(0).alpha == 0.3
    assert back.get_output(0).name == "y" and back.get_input(0).shape == (-1, 6)
    _, arrays = planfile.loads(data)
    with pytest.raises(rt.PlanFormatError, match="no network section"):
        rt.deserialize_network(_reseal({"engine": {}}, arrays.blob))


def test_layer_information_lists_attributes():
    engine = rt.Runtime().deserialize_cuda_engine(built_plan())
    attrs = engine.layers[0].attributes
    assert attrs["activation_type"] == "LEAKY_RELU" and attrs["alpha"] == pytest.approx(0.3)
