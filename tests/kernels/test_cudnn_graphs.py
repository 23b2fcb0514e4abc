"""The CPU-side logic of the cuDNN graph tactics (kernels/gpu/cudnn_graphs.py): graph
specs, which plans are built where (workers' serialized plans, built here, the budget),
collecting worker results. A stand-in frontend (cudnn_fake.py) plays cuDNN; the graphs
themselves run in tests/gpu/test_cudnn_gpu.py."""
import concurrent.futures as futures
import json
import math
import os
import sys
import threading
import time

import pytest

from kernels.gpu import cudnn_graphs as G

sys.path.insert(0, os.path.dirname(__file__))
import cudnn_fake  # noqa: E402


def spec(**kw):
    base = dict(n=2, c=16, h=9, w=11, k=32, r=3, s=3, stride=(2, 2), pre_padding=(1, 1),
                post_padding=(1, 1))
    return G.ConvSpec(**{**base, **kw})


def test_output_size_follows_explicit_pre_and_post_padding():
    assert spec().out_hw() == (5, 6)
    assert spec(pre_padding=(0, 1), post_padding=(2, 0), stride=(1, 1)).out_hw() == (9, 10)
    assert spec(dilation=(2, 2), stride=(1, 1)).out_hw() == (7, 9)


@pytest.mark.parametrize("kw, words", [
    (dict(act="SELU"), "activation SELU not fused"),
    (dict(out_dtype="int8"), "output dtype int8"),
    (dict(h=1, w=1, r=7, s=7, pre_padding=(0, 0), post_padding=(0, 0)), "empty output"),
    (dict(out_ldc=16), "row pitch 16 channels"),
])
def test_specs_a_graph_cannot_express_say_why(kw, words):
    assert words in spec(**kw).reason()
    with pytest.raises(ValueError, match=words):
        G.ConvGraph(spec(**kw))


def test_supported_specs_have_no_reason_and_distinct_keys():
    a, b = spec(act="CLIP", alpha=0.0, beta=6.0), spec(act="RELU", residual=True)
    assert a.reason() is None and b.reason() is None
    assert a.key("H200") != b.key("H200") and a.key("H200") != a.key("H100")
    assert a.key("H200") == spec(act="CLIP", alpha=0.0, beta=6.0).key("H200")


def test_fastest_plan_skips_failed_ones():
    assert G.fastest({0: 0.31, 1: math.inf, 2: 0.12, 3: 0.2}) == (2, 0.12)
    assert G.fastest({0: math.inf}) == (None, math.inf)
    assert G.fastest({}) == (None, math.inf)


@pytest.mark.skipif(G.available(), reason="the frontend is installed here")
def test_without_the_frontend_the_graphs_are_off_with_the_reason():
    assert "cupyrt[cudnn]" in G.unavailable_reason()
    with pytest.raises(RuntimeError, match="cuDNN frontend is not usable"):
        G.ConvGraph(spec())


def test_spec_survives_json_and_blobs_round_trip():
    a = spec(act="CLIP", alpha=0.0, beta=6.0, residual=True, out_ldc=64)
    assert G.ConvSpec.from_json(json.loads(json.dumps(a.to_json()))) == a
    for data in (b"\x00\xffplan", [0, 255, 7], bytearray(b"xy")):
        doc = json.loads(json.dumps(G.encode_blob(data)))
        assert G.decode_blob(doc) == bytes(data)
    assert G.decode_blob(G.encode_blob('{"json": 1}')) == '{"json": 1}'


@pytest.fixture
def fake(monkeypatch):
    """Install a stand-in frontend; returns a function that configures it."""
    def install(**kw):
        f = cudnn_fake.frontend(**kw)
        monkeypatch.setitem(G._frontend_state, "module", f)
        return f
    yield install
    G.clear()


def test_without_workers_plans_build_here_in_heuristic_order_skipping_failures(fake):
    f = fake(plan_count=6, fail={1})
    g = G.ConvGraph(spec(), max_plans=3)
    assert g.gather() == [0, 2, 3]               # a failed plan does not count toward max_plans
    assert f.builds == [0, 1, 2, 3] and g.plan_times == {1: math.inf}
    assert g.deserialized == 0 and g.build_seconds >= 0.0


class LaterSpec(G.ConvSpec):
    """A spec kind whose plan window starts at plan 1 (as an int8-output INT8 graph's)."""
    first_plan = 1


def later_spec(**kw):
    base = dict(n=2, c=16, h=9, w=11, k=32, r=3, s=3, stride=(2, 2), pre_padding=(1, 1),
                post_padding=(1, 1))
    return LaterSpec(**{**base, **kw})


def test_the_plan_window_starts_at_the_spec_kinds_first_plan():
    assert list(G.plan_window(spec(), 4)) == [0, 1, 2, 3]
    assert list(G.plan_window(later_spec(), 4)) == [1, 2, 3]
    assert list(G.plan_window(later_spec(), 1)) == [1]              # never empty


def test_plans_before_the_window_are_built_only_when_the_window_has_too_few(fake):
    f = fake(plan_count=6)
    g = G.ConvGraph(later_spec(), max_plans=4)
    assert g.gather() == [1, 2, 3] and f.builds == [1, 2, 3]
    f = fake(plan_count=6, fail={2, 3, 4, 5})
    g = G.ConvGraph(later_spec(), max_plans=3)
    assert g.gather() == [0, 1] and f.builds == [1, 2, 3, 4, 5, 0]
    f = fake(plan_count=1)                                            # the heuristics offer plan 0 alone
    g = G.ConvGraph(later_spec(), max_plans=4)
    assert g.gather() == [0] and f.builds == [0]


def test_prefetch_queues_the_window_only(fake):
    fake(plan_count=6)

    class Workers:
        def __init__(self):
            self.submitted = []

        def submit(self, spec, device_id, index):
            self.submitted.append(index)
            return futures.Future()
    w = Workers()
    try:
        assert G.prefetch(later_spec(), 0, w, max_plans=4) == 3 and w.submitted == [1, 2, 3]
        assert G.prefetch(spec(), 0, w, max_plans=2) == 2 and w.submitted[3:] == [0, 1]
    finally:
        G.clear()


def test_the_budget_stops_building_once_one_plan_exists(fake):
    f = fake(plan_count=6, cost=0.05)
    g = G.ConvGraph(spec(), max_plans=4, build_budget_s=0.01)
    assert g.gather() == [0]
    assert f.builds == [0] and g.wait_seconds >= 0.05


def test_worker_plans_are_deserialized_and_only_the_rest_built_here(fake):
    f = fake(plan_count=6, fail={2}, build_s={4: 0.05})
    blob = G.encode_blob(json.dumps({"plan": 0}).encode())
    results = {0: {"index": 0, "name": "eng0", "seconds": 3.0, "blob": blob},
               1: {"index": 1, "name": "eng1", "seconds": 0.1, "blob": None},    # not serializable
               2: {"index": 2, "error": "did not build"},
               3: {"index": 3, "name": "eng3", "seconds": 2.0,
                   "blob": G.encode_blob(json.dumps({"plan": 3}).encode())}}
    g = G.ConvGraph(spec(), max_plans=4)
    assert g.gather(results) == [0, 1, 3, 4]
    assert f.builds == [1, 4]                    # 0 and 3 arrived built; 2 failed in its worker
    assert g.deserialized == 2 and g.plan_times == {2: math.inf}
    assert [g._plans[i].loaded for i in (0, 3)] == [0, 3] and g._plans[1] is None
    assert g.build_seconds >= 5.0                # the workers' compile seconds are counted
    # per plan: the workers' seconds as they reported them, those built here as measured
    assert set(g.plan_build_seconds) == {0, 1, 2, 3, 4} - {2}
    assert (g.plan_build_seconds[0], g.plan_build_seconds[3]) == (3.0, 2.0)
    assert g.plan_build_seconds[4] >= 0.05 and g.plan_build_seconds[1] < 0.05


def test_a_plan_that_does_not_deserialize_is_built_here(fake):
    f = fake(plan_count=2)
    g = G.ConvGraph(spec(), max_plans=1)
    assert g.gather({0: {"index": 0, "name": "eng0", "blob": {"b64": "bm90IGpzb24="}}}) == [0]
    assert f.builds == [0] and g.deserialized == 0


def test_a_known_plan_is_loaded_or_built_alone(fake):
    f = fake(plan_count=6)
    g = G.ConvGraph(spec(), max_plans=4)
    assert g.gather(known=(3, G.encode_blob(json.dumps({"plan": 3}).encode()))) == [3]
    assert f.builds == [] and g.deserialized == 1
    g2 = G.ConvGraph(spec(), max_plans=4)
    assert g2.gather(known=(3, None)) == [3] and f.builds == [3]


def test_chosen_blob_is_the_workers_or_serialized_here_for_runtime_compiled_plans(fake):
    fake(plan_count=3, unserializable={1}, precompiled={2})
    g = G.ConvGraph(spec(), max_plans=3)
    g.gather()
    g.index = 0
    g.graph.selected = 0
    assert G.decode_blob(g.chosen_blob()) == json.dumps({"plan": 0}).encode()
    g.index = g.graph.selected = 1
    assert g.chosen_blob() is None               # serialize() refused
    g.index = g.graph.selected = 2
    assert g.chosen_blob() is None               # not runtime-compiled: never serialized


def test_workers_serialize_only_runtime_compiled_plans(fake, monkeypatch):
    from kernels.gpu import cudnn_workers as W
    fake(plan_count=3, precompiled={1}, fail={2})
    cp = type(sys)("cupy")
    cp.cuda = type(sys)("cuda")
    cp.cuda.Device = lambda i: type("D", (), {"use": lambda self: None})()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    a = W.build_serialized(spec(), 0, 0)
    assert a["plan_count"] == 3 and a["name"] == "eng0" and G.decode_blob(a["blob"]) == b'{"plan": 0}'
    b = W.build_serialized(spec(), 0, 1)
    assert b["blob"] is None and "not a runtime-compiled engine" in b["serialize_error"]
    assert "does not build" in W.build_serialized(spec(), 0, 2)["error"]
    assert "no such plan" in W.build_serialized(spec(), 0, 5)["error"]


class Workers:
    """Futures the test completes by hand."""

    def __init__(self):
        self.submitted = []

    def submit(self, s, device_id, index):
        fut = futures.Future()
        self.submitted.append((s, device_id, index, fut))
        return fut


class Store:
    def __init__(self, known=None):
        self.known, self.asked = known, []

    def get(self, s, device_name):
        self.asked.append(device_name)
        return self.known


def test_prefetch_queues_each_graph_once_and_skips_what_the_store_holds():
    w = Workers()
    try:
        assert G.prefetch(spec(), 0, w, max_plans=3) == 3
        assert G.prefetch(spec(), 0, w, max_plans=3) == 0               # queued already
        assert [x[2] for x in w.submitted] == [0, 1, 2]
        # another plan count is another graph (an A/B of cudnn_max_plans in one process)
        assert G.prefetch(spec(), 0, w, max_plans=5) == 5
        assert [x[2] for x in w.submitted[3:]] == [0, 1, 2, 3, 4]
        del w.submitted[3:]
        assert G.prefetch(spec(act="SELU"), 0, w) == 0                 # no graph for it
        assert G.prefetch(spec(k=48), 0, w, store=Store((2, {"b64": ""})), device_name="H200") == 0
        assert G.prefetch(spec(k=64), 0, w, store=Store((2, None)), device_name="H200") == 1
        assert w.submitted[-1][2] == 2                                   # the known plan alone
    finally:
        G.clear()
    assert all(x[3].cancelled() for x in w.submitted)                   # clear() drops the queue


def _done(value):
    fut = futures.Future()
    fut.set_result(value)
    return fut


def test_collect_waits_for_the_first_plan_then_the_budget():
    slow = futures.Future()
    crashed = futures.Future()
    crashed.set_exception(RuntimeError("worker exited"))
    pending = {0: _done({"index": 0, "blob": None}), 1: slow, 2: crashed,
               3: _done({"index": 3, "worker_error": "ImportError: no cupy"})}
    t0 = time.monotonic()
    got = G.collect(pending, budget_s=0.2)
    assert 0.15 < time.monotonic() - t0 < 5
    assert list(got) == [0] and slow.cancelled()      # crashed and worker_error: built here


def test_collect_gives_up_on_a_first_plan_that_never_comes():
    never = futures.Future()
    assert G.collect({0: never}, budget_s=10, first_timeout_s=0.1) == {}


def test_collect_returns_as_soon_as_all_are_done():
    late = futures.Future()
    threading.Timer(0.1, late.set_result, [{"index": 1, "blob": None}]).start()
    t0 = time.monotonic()
    got = G.collect({0: _done({"index": 0, "error": "x"}), 1: late}, budget_s=30)
    assert sorted(got) == [0, 1] and time.monotonic() - t0 < 5


# -- matmul graphs (kernels/gpu/cudnn_matmul.py) -------------------------------------------

def mspec(**kw):
    from kernels.gpu.cudnn_matmul import MatmulSpec
    return MatmulSpec(**{**dict(m=128, n=768, k=3072), **kw})


@pytest.mark.parametrize("kw, words", [
    (dict(k=3070), "multiples of 8"),
    (dict(n=12), "multiples of 8"),
    (dict(m=0), "empty matmul"),
    (dict(act="SELU"), "activation SELU not fused"),
    (dict(out_dtype="int8"), "output dtype int8"),
])
def test_matmul_specs_a_graph_cannot_express_say_why(kw, words):
    assert words in mspec(**kw).reason()
    assert mspec().reason() is None and mspec(act="GELU_ERF", residual=True).reason() is None


def test_matmul_spec_kind_survives_json_and_keys_differ_from_convs():
    a = mspec(act="GELU_ERF", residual=True, out_dtype="float32")
    doc = json.loads(json.dumps(a.to_json()))
    assert doc["kind"] == "matmul" and G.spec_from_json(doc) == a
    c = spec(act="RELU")
    assert G.spec_from_json(json.loads(json.dumps(c.to_json()))) == c       # no kind: a conv
    assert len({a.key("H200"), mspec().key("H200"), a.key("H100"), c.key("H200")}) == 4
    with pytest.raises(ValueError, match="kind 'pool'"):
        G.spec_from_json({"kind": "pool"})


def test_matmul_graph_reads_the_nk_weight_transposed_and_fuses_its_epilogue(fake):
    fake()
    g = G.ConvGraph(mspec(m=64, n=96, k=32, act="GELU_ERF", residual=True))
    t = g.tensors
    assert (t["X"].dim, t["X"].stride) == ([1, 64, 32], [64 * 32, 32, 1])
    assert (t["W"].dim, t["W"].stride) == ([1, 32, 96], [96 * 32, 1, 32])    # (n, k) memory
    assert (t["B"].dim, t["R"].dim, t["Y"].dim) == ([1, 1, 96], [1, 64, 96], [1, 64, 96])
    assert [op for op, _ in g.graph.ops] == ["matmul", "add", "add", "gelu"]
    assert {n: x.uid for n, x in t.items()} == {n: G.UIDS[n] for n in t}
    plain = G.ConvGraph(mspec(m=64, n=96, k=32))
    assert [op for op, _ in plain.graph.ops] == ["matmul", "add"] and "R" not in plain.tensors


def test_matmul_fused_refuses_bad_operands_before_touching_a_gpu():
    import numpy as np
    from kernels.gpu import cudnn_matmul as CM
    s = mspec(m=4, n=8, k=16)
    a, w, b = (np.zeros(shape, dt) for shape, dt in (((4, 16), np.float16), ((8, 16), np.float16),
                                                       ((8,), np.float32)))
    with pytest.raises(ValueError, match="multiples of 8"):
        CM.matmul_fused(a, w, b, mspec(m=4, n=8, k=12))
    with pytest.raises(ValueError, match=r"cuDNN matmul w: found float16 \(16, 8\)"):
        CM.matmul_fused(a, np.zeros((16, 8), np.float16), b, s)
    with pytest.raises(ValueError, match="a: found float32"):
        CM.matmul_fused(a.astype(np.float32), w, b, s)
    with pytest.raises(ValueError, match="residual was given"):
        CM.matmul_fused(a, w, b, s, residual=np.zeros((4, 8), np.float16))
    with pytest.raises(ValueError, match="cuDNN matmul residual: found None"):
        CM.matmul_fused(a, w, b, mspec(m=4, n=8, k=16, residual=True))


def test_a_known_plan_whose_blob_does_not_load_is_built_and_marked_for_replacing(fake):
    f = fake(plan_count=6)
    g = G.ConvGraph(spec(), max_plans=4)
    assert g.gather(known=(2, {"b64": "bm90IGpzb24="})) == [2]       # "not json": does not deserialize
    assert f.builds == [2] and g.deserialized == 0 and g.known_failed
    ok = G.ConvGraph(spec(), max_plans=4)
    queried = f.heuristics
    assert ok.gather(known=(2, G.encode_blob(json.dumps({"plan": 2}).encode()))) == [2]
    assert not ok.known_failed
    # a stored plan that loads needs no operation graph and no heuristics query
    assert f.heuristics == queried and ok._defined is None


def test_a_known_plan_index_past_the_heuristics_list_without_a_blob_gets_nothing(fake):
    fake(plan_count=3)
    g = G.ConvGraph(spec(), max_plans=4)
    assert g.gather(known=(5, None)) == [] and g.plan_times == {}


class _Stream:
    ptr = 0


@pytest.mark.parametrize("known_runs", [True, False])
def test_a_stored_plan_that_cannot_run_here_is_replaced_by_choosing_again(fake, monkeypatch, known_runs):
    """The plan an earlier process (or an engine's plan file) chose fails here: the graph
    is chosen again from the heuristics' plans, and the store is told the new choice."""
    import sys
    import types
    fake(plan_count=4)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(
        cuda=types.SimpleNamespace(get_current_stream=lambda: _Stream())))
    times = {0: 0.30, 1: 0.10, 2: 0.20 if known_runs else math.inf, 3: 0.40}
    monkeypatch.setattr(G.ConvGraph, "_time_plan", lambda self, i, *a: times[i])

    class Store:
        def __init__(self):
            self.puts = []

        def get(self, spec, name):
            return 2, G.encode_blob(json.dumps({"plan": 2}).encode())

        def put(self, spec, name, index, plan_times, blob):
            self.puts.append(index)
    monkeypatch.setattr(G, "_device_name", lambda device_id: "Fake GPU")
    store = Store()
    graph = G._build(spec(), 0, None, None, None, None, None, None, 4, 6.0, store)
    if known_runs:                     # the stored plan alone, as before: nothing to tell the store
        assert graph.index == 2 and list(graph.plan_times) == [2] and store.puts == []
    else:
        assert graph.index == 1 and graph.known_failed and store.puts == [1]
        assert graph.plan_times[2] == math.inf and set(graph.plan_times) == {0, 1, 2, 3}


def test_stats_count_the_chosen_plan_index_per_graph_kind(fake, monkeypatch):
    """Which plan of the heuristics' order won, per spec kind, over graphs that timed more
    than one plan (a stored plan loaded alone says nothing about the others)."""
    fake(plan_count=6)
    monkeypatch.setattr(G, "_graphs", {})
    graphs = []
    for i, (out, times, index) in enumerate([("float16", {0: 2.0, 1: 1.0, 2: 3.0}, 1),
                                             ("float16", {0: 1.0, 1: 2.0}, 0),
                                             ("float32", {0: 5.0, 3: 1.0, 1: math.inf}, 3),
                                             ("float16", {2: 1.0}, 2),           # one plan: not counted
                                             ("float16", {}, None)]):            # not chosen yet
        g = G.ConvGraph(spec(out_dtype=out, k=8 * (i + 1)))
        g.plan_times, g.index = times, index
        g.plan_build_seconds = {j: 0.25 * (j + 1) for j in times}
        G._graphs[(g.spec, 0, 4)] = g
        graphs.append(g)
    G._graphs[(spec(k=64), 0, 4)] = "no plan built"                               # a failed graph
    st = G.stats()
    assert st["built"] == 5 and st["failed"] == 1 and st["plans_timed"] == 9
    assert st["chosen"] == {"ConvSpec float16": {0: 1, 1: 1}, "ConvSpec float32": {3: 1}}
    assert list(st["chosen"]["ConvSpec float16"]) == [0, 1]                        # by index
    # what each plan index cost to compile, summed per kind, one-plan graphs included
    assert st["build_s_by_plan"] == {"ConvSpec float16": {0: 0.5, 1: 1.0, 2: 1.5},
                                     "ConvSpec float32": {0: 0.2, 1: 0.5, 3: 1.0}}
