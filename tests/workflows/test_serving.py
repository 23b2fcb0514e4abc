"""workflows/serving.py: a converted .pb served with Ray Serve over HTTP on loopback.

Optional package: ray[serve] (the cluster test skips without it; the batching and
request checks below run without Ray).
"""
import importlib.util
import json
import re
import sys
import warnings
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

import engine as rt
from tf_integration import EngineFallbackWarning, TrtGraphConverter, TrtGraphConverterV2
from tf_integration.engine_node import ENGINE_OP
from workflows import serving
from workflows.serving import (ModelReplica, RequestError, ServingError, bucket, bucket_sizes,
                               parse_request, split, stack)

# Ray Serve's own pydantic models (Field(update_type=...)) warn on import: not ours
pytestmark = pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`")

RNG = np.random.default_rng(7)
W1 = RNG.standard_normal((3, 3, 2, 4)).astype(np.float32)
W2 = RNG.standard_normal((4, 3)).astype(np.float32)


def _frozen_graph():
    """x (-1, 6, 6, 2) -> conv, bias, relu, mean, dense, softmax: one engine."""
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, (None, 6, 6, 2), name="x")
        y = tf.nn.conv2d(x, tf.constant(W1), 1, "SAME")
        y = tf.nn.relu(tf.nn.bias_add(y, tf.constant(np.linspace(-0.5, 0.5, 4, dtype="f4"))))
        y = tf.reduce_mean(y, axis=[1, 2])
        tf.nn.softmax(tf.matmul(y, tf.constant(W2)), name="probs")
    return g.as_graph_def()


def _tf_reference(graph_def, x):
    with tf.Graph().as_default() as g:
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as s:
            return s.run("probs:0", {"x:0": x})


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return _convert(tmp_path_factory.mktemp("serving") / "converted.pb", max_batch_size=8)


def _convert(path, **params):
    gd = _frozen_graph()
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["probs"],
                             minimum_segment_size=2, **params)
    out = conv.convert()
    assert sum(n.op == ENGINE_OP for n in out.node) == 1
    conv.save(str(path))
    return str(path), gd


# -- batching pieces, no Ray ---------------------------------------------------------------

def test_buckets_are_powers_of_two_capped_at_the_maximum():
    assert [bucket(n, 12) for n in (1, 2, 3, 5, 8, 9, 12)] == [1, 2, 4, 8, 8, 12, 12]
    assert bucket_sizes(12) == [1, 2, 4, 8, 12] and bucket_sizes(1) == [1]
    with pytest.raises(ServingError, match="13 rows; expected at most max_batch_size=12"):
        bucket(13, 12)


def test_stack_pads_with_the_last_row_and_split_drops_the_padding():
    reqs = [{"x:0": RNG.standard_normal((n, 3)).astype("f4")} for n in (1, 2, 2)]
    feeds, counts = stack(reqs, 16)
    assert counts == [1, 2, 2] and feeds["x:0"].shape == (8, 3)
    np.testing.assert_array_equal(feeds["x:0"][5:], np.repeat(reqs[-1]["x:0"][-1:], 3, 0))
    back = split({"y": feeds["x:0"] * 2}, counts)
    for r, b in zip(reqs, back):
        np.testing.assert_array_equal(b["y"], r["x:0"] * 2)
    assert stack(reqs, 16, pad=False)[0]["x:0"].shape == (5, 3)


INPUTS = {"x:0": (np.dtype("float32"), [-1, 2, 3]), "k:0": (np.dtype("int32"), [-1])}


def test_parse_request_accepts_short_names_and_casts_to_the_input_dtype():
    feeds = parse_request({"inputs": {"x": [[[1, 2, 3], [4, 5, 6]]], "k:0": [3]}}, INPUTS, 4)
    assert feeds["x:0"].dtype == np.float32 and feeds["x:0"].shape == (1, 2, 3)
    assert feeds["k:0"].tolist() == [3]
    one = parse_request({"inputs": [[0.5, 1.5]]}, {"a:0": (np.dtype("f4"), None)}, 4)
    assert one["a:0"].tolist() == [[0.5, 1.5]]


@pytest.mark.parametrize("body, message", [
    ([1, 2], "a JSON body list without 'inputs'"),
    ({"inputs": [[1.0]]}, "one unnamed array; expected a dict naming every input"),
    ({"inputs": {"z": [1], "k": [1]}}, "input 'z'; expected each of"),
    ({"inputs": {"x": [[[1, 2, 3], [4, 5, 6]]], "x:0": [[[1, 2, 3], [4, 5, 6]]], "k": [1]}},
     "input 'x:0'; expected each of"),
    ({"inputs": {"x": [["a", "b", "c"]], "k": [1]}}, "input 'x' not an array of float32"),
    ({"inputs": {"x": [[1, 2, 3]], "k": [1]}}, r"input 'x' of shape \[1, 3\]; expected "
                                                r"\[-1, 2, 3\]"),
    ({"inputs": {"x": 1.0, "k": [1]}}, r"input 'x' of shape \[\]"),
    ({"inputs": {"x": [[[1, 2, 3], [4, 5, 6]]]}}, r"expected also \['k:0'\]"),
    ({"inputs": {"x": [[[1, 2, 3], [4, 5, 6]]], "k": [1, 2]}},
     r"inputs with \[1, 2\] rows; expected one row count"),
    ({"inputs": {"x": np.ones((5, 2, 3)).tolist(), "k": [1] * 5}},
     "5 rows; expected 1 to max_batch_size=4"),
])
def test_bad_requests_say_what_was_found_and_expected(body, message):
    with pytest.raises(RequestError, match=message):
        parse_request(body, INPUTS, 4)


def test_replica_runs_a_batch_of_requests_like_tensorflow_and_warms_up(converted):
    path, gd = converted
    replica = ModelReplica(path, backend="numpy", max_batch_size=6, warmup=True)
    assert not replica.batches and "engines on numpy" in replica.stats()["model"]
    xs = [RNG.standard_normal((n, 6, 6, 2)).astype("f4") for n in (1, 3)]
    answers = replica.run_batch([replica.parse({"inputs": {"x": x.tolist()}}) for x in xs])
    for x, a in zip(xs, answers):
        np.testing.assert_allclose(a["probs:0"], _tf_reference(gd, x), rtol=1e-5, atol=1e-6)
    assert replica.stats()["batch_rows"] == [4] and replica.stats()["padded_rows"] == [4]
    assert replica.warnings == [] and replica.warmup() == [1, 2, 4, 6]
    runner = next(iter(replica.model.runners.values()))
    assert not runner.fallbacks                 # every batch ran on the engine


@pytest.mark.parametrize("params, message", [
    ({}, "engine node CupyrtEngine_0 is static with max_batch_size 1: batches of more rows run "
         "its TensorFlow segment; expected at least 8"),
    ({"is_dynamic_op": True, "maximum_cached_engines": 2},
     "engine node CupyrtEngine_0 caches 2 engine.s., fewer than the 4 batch sizes served"),
])
def test_replica_warns_when_engines_would_fall_back_or_rebuild(tmp_path, caplog, params,
                                                               message):
    path, gd = _convert(tmp_path / "m.pb", **params)
    replica = ModelReplica(path, backend="numpy", max_batch_size=8)
    assert len(replica.warnings) == 1 and re.match(message, replica.warnings[0])
    assert re.search(message, caplog.text)
    x = RNG.standard_normal((3, 6, 6, 2)).astype("f4")      # still right, in TF or rebuilt
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        (answer,) = replica.run_batch([replica.parse({"inputs": x.tolist()})])
    fell_back = [str(w.message) for w in seen if issubclass(w.category, EngineFallbackWarning)]
    assert bool(fell_back) == (not params)
    np.testing.assert_allclose(answer["probs:0"], _tf_reference(gd, x), rtol=1e-5, atol=1e-6)


def test_replica_refuses_a_model_without_a_batch_axis_or_a_bad_size(tmp_path):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 4))
    y = net.add_activation(x, rt.ActivationType.TANH).get_output(0)
    y.name = "y"
    net.mark_output(y)
    b = rt.Builder()
    config = b.create_builder_config()
    config.backend = "numpy"
    (tmp_path / "fixed.plan").write_bytes(b.build_serialized_network(net, config))
    with pytest.raises(ServingError, match=r"input 'x' of shape \[2, 4\]; expected a dynamic "
                                           "leading"):
        ModelReplica(str(tmp_path / "fixed.plan"), backend="numpy")
    with pytest.raises(ServingError, match="max_batch_size=0; expected at least 1"):
        ModelReplica(str(tmp_path / "fixed.plan"), backend="numpy", max_batch_size=0)
    with pytest.raises(ServingError, match="cannot serve .*missing.pb.*no such file"):
        ModelReplica(str(tmp_path / "missing.pb"), backend="numpy")


def test_main_says_in_one_line_what_it_cannot_serve(tmp_path, capsys, monkeypatch):
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 not a model")
    if importlib.util.find_spec("ray") is not None:
        assert serving.main([str(tmp_path / "x.npz")]) == 1
        assert "error: cannot serve" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)              # as without the extra
    assert serving.main([str(tmp_path / "x.npz")]) == 1
    assert "needs Ray Serve; expected it installed" in capsys.readouterr().err


def test_gpu_cluster_gets_one_replica_per_gpu_on_cupy(converted, monkeypatch):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.serve")
    path, _ = converted
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 4.0})
    dep = serving.build_app(path, max_batch_size=64, replicas=None)._bound_deployment
    assert dep.num_replicas == 4 and dep.ray_actor_options["num_gpus"] == 1
    assert dep.init_args[1] == "cupy" and dep.init_args[-1] is True        # warmed up
    assert dep.max_ongoing_requests >= 128
    with pytest.raises(ServingError, match="replicas=5 on a cluster of 4 GPU.s.; expected 1 to 4"):
        serving.build_app(path, replicas=5)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    dep = serving.build_app(path, replicas=2)._bound_deployment
    assert dep.num_replicas == 2 and "num_gpus" not in dep.ray_actor_options
    assert dep.init_args[1] == "tensorflow" and dep.init_args[-1] is False


class TwoInputs(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(RNG.standard_normal((4, 5)).astype("f4"))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32),
                                  tf.TensorSpec([None, 5], tf.float32)])
    def serve(self, a, b):
        return {"y": tf.nn.softmax(tf.tanh(tf.matmul(a, self.w)) * b + b)}


def test_replica_serves_a_converted_saved_model_with_two_inputs(tmp_path):
    module = TwoInputs()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    conv = TrtGraphConverterV2(input_saved_model_dir=str(tmp_path / "sm"),
                               minimum_segment_size=2, maximum_cached_engines=4)
    conv.convert()
    conv.save(str(tmp_path / "sm_cupyrt"))
    replica = ModelReplica(str(tmp_path / "sm_cupyrt"), backend="numpy", max_batch_size=8)
    assert len(replica.model.engines) == 1 and replica.warnings == []
    assert "engines on numpy" in replica.stats()["model"]
    reqs = [{"inputs": {"a": RNG.standard_normal((n, 4)).tolist(),
                        "b": RNG.standard_normal((n, 5)).tolist()}} for n in (2, 3)]
    answers = replica.run_batch([replica.parse(r) for r in reqs])
    for r, got in zip(reqs, answers):
        want = module.serve(tf.constant(r["inputs"]["a"], tf.float32),
                            tf.constant(r["inputs"]["b"], tf.float32))["y"].numpy()
        np.testing.assert_allclose(got["y"], want, rtol=1e-5, atol=1e-6)
    assert replica.stats()["padded_rows"] == [8]
    assert replica.stats()["totals"] == {"batches": 1, "requests": 2, "rows": 5}
    few = ModelReplica(str(tmp_path / "sm_cupyrt"), backend="numpy", max_batch_size=16)
    assert len(few.warnings) == 1 and "caches 4 engine(s), fewer than the 5" in few.warnings[0]


# -- a local Ray cluster, HTTP on loopback ------------------------------------------------

def _post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def ray_serve():
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20,
             log_to_driver=False)
    port = 18000 + RNG.integers(0, 1000)
    serve.start(http_options={"host": "127.0.0.1", "port": int(port)})
    try:
        yield ray, serve, f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_served_model_batches_concurrent_http_requests_and_answers_like_tensorflow(
        converted, ray_serve):
    ray, serve, url = ray_serve
    path, gd = converted
    with pytest.raises(ServingError, match="cpu_backend='cuda'; expected one of"):
        serving.build_app(path, cpu_backend="cuda")
    with pytest.raises(ServingError, match="cannot serve .*nothing.pb.*no such file"):
        serving.build_app(path + ".nothing.pb")
    # the engines themselves (NumPy backend), so the answers are the engine's
    app = serving.build_app(path, max_batch_size=8, batch_wait_timeout_s=0.2,
                            cpu_backend="numpy")
    serve.run(app, name="cupyrt", route_prefix="/")
    xs = [RNG.standard_normal((1 + i % 2, 6, 6, 2)).astype("f4") for i in range(12)]
    answers = [None] * len(xs)

    def ask(i):
        answers[i] = _post(url + "/", {"inputs": {"x": xs[i].tolist()}})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    for x, (status, body) in zip(xs, answers):
        assert status == 200, body
        assert body["rows"] == len(x)
        np.testing.assert_allclose(np.array(body["outputs"]["probs:0"], "f4"),
                                   _tf_reference(gd, x), rtol=1e-5, atol=1e-6)
    with urllib.request.urlopen(url + "/stats", timeout=30) as r:
        stats = json.loads(r.read())
    assert stats["backend"] == "numpy" and sum(stats["batch_rows"]) == sum(map(len, xs))
    assert max(stats["batch_requests"]) > 1, stats          # requests were batched
    assert max(stats["batch_rows"]) <= 8
    assert all(p in (1, 2, 4, 8) for p in stats["padded_rows"])
    status, body = _post(url + "/", {"inputs": {"y": [1.0]}})
    assert status == 400 and "input 'y'; expected each of ['x:0']" in body["error"]
    req = urllib.request.Request(url + "/", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400 and "not JSON" in json.loads(err.value.read())["error"]
