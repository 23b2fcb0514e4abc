"""export_engines / ``cupyrt export-engines``: engine networks out of a converted graph,
rebuilt without TensorFlow on the NumPy backend, equal to what the engine nodes compute."""
import json

import numpy as np
import pytest
import tensorflow as tf

import engine as rt
from tf_integration import TrtGraphConverter, export_engines, import_graph_def
from tf_integration.engine_node import ENGINE_OP
from tf_integration.errors import EngineNodeError
from tf_integration.export import engine_output_of, load_manifest
from tfi_helpers import build_graph, random_input
from workflows.cli import main

W = np.random.default_rng(7).standard_normal((3, 3, 4, 4)).astype(np.float32)


def two_regions(x):
    def block(t, name):
        t = tf.nn.conv2d(t, tf.constant(W), 1, "SAME", name=f"{name}_conv")
        t = tf.nn.bias_add(t, tf.constant(np.linspace(-1, 1, 4, dtype=np.float32)))
        return tf.nn.relu(t, name=f"{name}_relu")

    y = tf.math.cumsum(block(x, "a"), axis=1, name="unsupported")    # stays in TF
    return block(y, "b")


def converted_graph(dynamic):
    gd, outs = build_graph(two_regions, [(2, 5, 6, 4)])
    converted = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0"],
                                  minimum_segment_size=3, is_dynamic_op=dynamic,
                                  max_batch_size=4).convert()
    assert sum(n.op == ENGINE_OP for n in converted.node) == 2
    return converted, outs


def engine_io_in_tf(converted, manifest, x):
    """What TF feeds each engine node, and what the node returns."""
    fetches = {}
    for e in manifest["engines"]:
        for i in e["inputs"]:
            fetches[(e["name"], i["name"])] = i["replaces"]
        for j, o in enumerate(e["outputs"]):
            fetches[(e["name"], o["name"])] = f"{e['name']}:{j}"
    g = tf.Graph()
    with g.as_default():
        import_graph_def(converted, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            values = sess.run(list(fetches.values()), {"x0:0": x})
    return dict(zip(fetches, values))


def build_numpy(path, shapes):
    net = rt.deserialize_network(open(path, "rb").read())
    for name, shape in shapes.items():
        net.get_tensor(name).shape = shape
    builder = rt.Builder()
    config = builder.create_builder_config()
    config.backend = "numpy"
    plan = builder.build_serialized_network(net, config)
    return rt.Runtime(backend="numpy").deserialize_cuda_engine(plan).create_execution_context()


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic", "static"])
def test_exported_networks_rebuild_and_match_the_engine_nodes(tmp_path, dynamic):
    converted, outs = converted_graph(dynamic)
    paths = export_engines(converted, str(tmp_path), model_outputs=outs)
    assert [p.rsplit("/", 1)[1] for p in paths] == [
        "CupyrtEngine_0.network", "CupyrtEngine_1.network", "manifest.json"]
    manifest = load_manifest(str(tmp_path))
    e0, e1 = manifest["engines"]
    assert e0["inputs"][0]["replaces"] == "x0:0"
    assert e0["inputs"][0]["shape"] == [-1, 5, 6, 4] and e0["inputs"][0]["dtype"] == "float32"
    assert e0["outputs"][0]["replaces"] == "a_relu:0"
    assert e1["inputs"][0]["replaces"] == "unsupported:0"
    assert manifest["model_outputs"] == {"out0:0": {"engine": "CupyrtEngine_1",
                                                    "output": "output_0"}}
    x = random_input((3, 5, 6, 4), seed=11)
    tf_io = engine_io_in_tf(converted, manifest, x)
    for e in manifest["engines"]:
        feeds = {i["name"]: tf_io[(e["name"], i["name"])] for i in e["inputs"]}
        ctx = build_numpy(tmp_path / e["file"], {k: v.shape for k, v in feeds.items()})
        got = ctx.execute(feeds)
        for o in e["outputs"]:
            np.testing.assert_allclose(got[o["name"]], tf_io[(e["name"], o["name"])],
                                       rtol=1e-6, atol=1e-6)


def test_cli_export_engines(tmp_path, capsys):
    converted, _ = converted_graph(True)
    src = tmp_path / "model_opt.pb"
    src.write_bytes(converted.SerializeToString())
    assert main(["export-engines", str(src), str(tmp_path / "out"), "--outputs", "out0"]) == 0
    assert "manifest.json" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["engines"]) == 2 and "out0:0" in manifest["model_outputs"]


def test_export_without_engine_nodes_raises(tmp_path):
    gd, _ = build_graph(lambda x: tf.math.cumsum(x, axis=1), [(2, 3)])
    with pytest.raises(EngineNodeError, match="no engine nodes"):
        export_engines(gd, str(tmp_path))
    with pytest.raises(EngineNodeError, match="expected a tf.compat.v1.GraphDef"):
        export_engines(b"not a graph", str(tmp_path))


def test_engine_output_of_follows_identities_only():
    converted, _ = converted_graph(True)
    assert engine_output_of(converted, "out0:0") == ("CupyrtEngine_1", 0)
    assert engine_output_of(converted, "unsupported:0") is None
    assert engine_output_of(converted, "missing:0") is None
