"""The round trips a user makes with a Keras 3 model holding an LSTM, and one holding
a MultiHeadAttention block (+ LayerNormalization, Dense): issue 10, points 1, 3, 4.

    (a) model.export -> TrtGraphConverterV2 -> save -> fresh process:
        tf_integration.load_saved_model, and tf.saved_model.load after the import
    (b) freeze_keras_model -> TrtGraphConverter -> save .pb -> fresh process:
        tf_integration.import_graph_def in a Session

One fresh process (the source SavedModels deleted first) runs all of them on the
NumPy backend and says whether the engines, not TensorFlow's segments, ran.
"""
import collections
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_integration import (TrtGraphConverter, TrtGraphConverterV2, freeze_keras_model,
                            segment_to_engine)
from tf_integration import saved_model_runtime as runtime
from tf_integration.graph_utils import node_of

keras = pytest.importorskip("keras")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
E, D = 4, 16


def _lstm_model():
    keras.utils.set_random_seed(11)
    inp = keras.Input((None, E), name="seq")
    return keras.Model(inp, keras.layers.Dense(3)(keras.layers.LSTM(8)(inp)))


def _attention_model():
    keras.utils.set_random_seed(12)
    layers = keras.layers
    inp = keras.Input((None, D), name="tokens")
    a = layers.MultiHeadAttention(2, D // 2, name="mha")(inp, inp)
    x = layers.LayerNormalization(epsilon=1e-6, name="ln")(inp + a)
    return keras.Model(inp, layers.Dense(D, name="proj")(x))


# name -> (builder, signature input key, input shapes (batch, steps, features))
MODELS = {"lstm": (_lstm_model, "seq", [(2, 5, E), (3, 9, E)]),
          "attention": (_attention_model, "tokens", [(2, 5, D), (1, 7, D)])}


def _inputs(shapes, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


@pytest.fixture(scope="module")
def roundtrips(tmp_path_factory):
    """Per model: both converted forms saved, the converters, inputs and TF's outputs."""
    root = tmp_path_factory.mktemp("roundtrips")
    out = {}
    for seed, (name, (build, key, shapes)) in enumerate(MODELS.items()):
        model = build()
        xs = _inputs(shapes, 100 + seed)
        src = str(root / f"{name}_src")
        model.export(src, verbose=False)
        ref_fn = tf.saved_model.load(src).signatures["serving_default"]
        refs = [list(ref_fn(**{key: tf.constant(x)}).values())[0].numpy() for x in xs]
        v2 = TrtGraphConverterV2(input_saved_model_dir=src, minimum_segment_size=1)
        v2.convert()
        saved = v2.save(str(root / f"{name}_converted"))
        gd, ins, outs = freeze_keras_model(model)
        # TF-TRT's TF1 API: static engines serve batches up to max_batch_size
        v1 = TrtGraphConverter(input_graph_def=gd, nodes_denylist=[node_of(o) for o in outs],
                               minimum_segment_size=1, max_batch_size=4)
        v1.convert()
        pb = v1.save(str(root / f"{name}.pb"))
        frozen_refs = [_run_frozen(gd, ins[0], outs[0], x) for x in xs]
        out[name] = dict(src=src, key=key, saved=saved, pb=pb, v1=v1, v2=v2, xs=xs, refs=refs,
                         frozen_refs=frozen_refs, input=ins[0], output=outs[0])
    return out


def _run_frozen(gd, x_name, y_name, x):
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(gd, name="")
    with tf.compat.v1.Session(graph=graph) as sess:
        return sess.run(y_name, {x_name: x})


def _saved_engine_layers(saved_dir):
    """{engine name: layer-type histogram} of the engines saved in a SavedModel
    (their networks as converted from the stored segments)."""
    hists = {}
    for blob in runtime.engine_blobs(saved_dir).values():
        node = tf.compat.v1.NodeDef.FromString(blob)
        _, network = segment_to_engine.build_network(
            tf.compat.v1.GraphDef.FromString(node.attr["segment_graph"].s))
        hists[node.name] = dict(collections.Counter(
            network.get_layer(i).type.name for i in range(network.num_layers)))
    return hists


def test_lstm_becomes_one_engine_rnn_layer_in_both_forms(roundtrips):
    rt = roundtrips["lstm"]
    rep_v2 = rt["v2"].report["serving_default"]
    rep_v1 = rt["v1"].report
    for rep in (rep_v2, rep_v1):
        assert len(rep["engines"]) == 1 and rep["converted_share"] == 1.0, rep["engines"]
        assert rep["engines"][0]["ops"].get("PartitionedCall") == 1, rep["engines"][0]["ops"]
        assert not [n for n, r in rep["left_to_tensorflow"].items()
                    if r["kind"] == "control flow"]
    assert rep_v1["engines"][0]["layers"].get("RNN_V2") == 1, rep_v1["engines"][0]["layers"]
    (layers,) = _saved_engine_layers(rt["saved"]).values()
    assert layers.get("RNN_V2") == 1, layers


def _in_mha(node_name):
    # Keras names the block's nodes .../mha_1/... (a suffix per instance)
    return any(part.split("_")[0] == "mha" for part in node_name.split("/"))


def test_attention_block_sits_in_one_engine_in_both_forms(roundtrips):
    rt = roundtrips["attention"]
    for rep in (rt["v2"].report["serving_default"], rt["v1"].report):
        engines = {e["name"] for e in rep["engines"] for m in e["members"] if _in_mha(m)}
        assert len(engines) == 1, [(e["name"], e["ops"]) for e in rep["engines"]]
        (eng,) = [e for e in rep["engines"] if e["name"] in engines]
        for op in ("Einsum", "Softmax", "Rsqrt"):            # attention, its softmax, the norm
            assert eng["ops"].get(op), eng["ops"]
        assert not [n for n, r in rep["left_to_tensorflow"].items()
                    if _in_mha(n) and r["kind"] != "not a compute node"]
    layers = rt["v1"].report["engines"][0]["layers"]
    assert layers.get("SOFTMAX") == 1 and layers.get("NORMALIZATION") == 1, layers
    (saved_layers,) = _saved_engine_layers(rt["saved"]).values()
    assert saved_layers.get("SOFTMAX") == 1, saved_layers


FRESH = r"""
import json, sys
import numpy as np
import tensorflow as tf
import tf_integration
from tf_integration.engine_node import engine_runners
from tf_integration.saved_model_runtime import saved_engines

def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))

jobs, result = json.load(open(sys.argv[1])), {}
for name, job in jobs.items():
    data = np.load(job["data"])
    xs = [data[f"x{i}"] for i in range(job["n"])]
    loaded = tf_integration.load_saved_model(job["saved"]).signatures["serving_default"]
    plain = tf.saved_model.load(job["saved"]).signatures["serving_default"]
    errs = {"load_saved_model": [], "tf_saved_model_load": [], "import_graph_def": []}
    for i, x in enumerate(xs):
        ref = data[f"ref{i}"]
        errs["load_saved_model"].append(rel(list(loaded(**{job["key"]: x}).values())[0], ref))
        errs["tf_saved_model_load"].append(rel(list(plain(**{job["key"]: x}).values())[0], ref))
    gd = tf.compat.v1.GraphDef.FromString(open(job["pb"], "rb").read())
    graph = tf.Graph()
    with graph.as_default():
        tf_integration.import_graph_def(gd, name="")
    with tf.compat.v1.Session(graph=graph) as sess:
        for i, x in enumerate(xs):
            got = sess.run(job["output"], {job["input"]: x})
            errs["import_graph_def"].append(rel(got, data[f"frozen_ref{i}"]))
    result[name] = errs
runners = engine_runners()
result["engine_runs"] = sum(r.stats["engine_runs"] for r in runners)
result["native_runs"] = sum(r.stats["native_runs"] for r in runners)
result["saved_engine_calls"] = sum(sum(e.stats.values()) for e in saved_engines())
print(json.dumps(result))
"""


def test_fresh_process_runs_every_round_trip_like_tensorflow(roundtrips, tmp_path):
    jobs = {}
    for name, rt in roundtrips.items():
        data = {f"x{i}": x for i, x in enumerate(rt["xs"])}
        data.update({f"ref{i}": r for i, r in enumerate(rt["refs"])})
        data.update({f"frozen_ref{i}": r for i, r in enumerate(rt["frozen_refs"])})
        np.savez(tmp_path / f"{name}.npz", **data)
        saved = shutil.copytree(rt["saved"], tmp_path / f"{name}_saved")   # alone, no source
        jobs[name] = dict(data=str(tmp_path / f"{name}.npz"), n=len(rt["xs"]), saved=str(saved),
                          key=rt["key"], pb=rt["pb"], input=rt["input"], output=rt["output"])
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    env = dict(os.environ, CUPYRT_BACKEND="numpy", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "jobs.json")],
                          capture_output=True, text=True, timeout=500, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "running the TensorFlow segment" not in proc.stderr, proc.stderr[-4000:]
    for name in MODELS:
        for path, errs in result[name].items():
            assert len(errs) == len(MODELS[name][2]), (name, path, errs)
            assert max(errs) <= 1e-4, (name, path, errs)
    # the engines ran (NumPy backend), never TensorFlow's segments
    assert result["engine_runs"] >= 3 * len(MODELS) * 2 and result["native_runs"] == 0, result
    assert result["saved_engine_calls"] >= 2 * len(MODELS) * 2, result
