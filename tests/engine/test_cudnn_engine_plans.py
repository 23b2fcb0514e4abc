"""cuDNN plans that travel with the engine (engine/gpu/cudnn_tactics.py ``EnginePlans``,
``plans_in_use``): the store the cuDNN tactics use inside a CuPy backend's build or run is
that engine's, its plans are written into the plan file, and an engine deserialized in a
fresh process finds them there (no compile) without any cache file; the file store behind
it is read through and written to, and a store that cannot be written warns and goes on.
The build runs on tests/engine/test_tactic_faults.py's stand-in device, with a stand-in
cuDNN tactic that asks the store as ConvCudnn's kernels do."""
import json
import logging
import os
import sys
import threading

import numpy as np
import pytest

import engine as rt
from engine.backends import cupy_backend
from engine.gpu import cudnn_tactics as CT
from kernels.gpu import cudnn_graphs as G
sys.path.insert(0, os.path.dirname(__file__))
from test_tactic_faults import Injected, build, conv_name, fake_gpu  # noqa: E402,F401  (stand-in device)

SPEC = G.ConvSpec(n=2, c=16, h=9, w=11, k=32, r=3, s=3, act="RELU")
BLOB = G.encode_blob(b"\x02serialized plan")


def test_engine_plans_come_first_then_the_file_read_through(tmp_path):
    path = str(tmp_path / "timing.cache")
    CT.PlanStore(path).put(SPEC, "H200", 3, {3: 0.1}, BLOB)
    wider = G.ConvSpec(**{**SPEC.to_json(), "k": 48})
    CT.PlanStore(path).put(wider, "H200", 1, {1: 0.2}, None)        # index only: not serializable
    plans = CT.EnginePlans({}, CT.plan_store(path))
    assert plans.get(SPEC, "H200") == (3, BLOB)
    assert plans.entries == {CT.plan_key(SPEC, "H200"): {"index": 3, "blob": BLOB}}   # read through
    assert plans.get(wider, "H200") == (1, None) and len(plans.entries) == 1        # nothing to carry
    assert plans.get(SPEC, "H100") is None
    own = CT.EnginePlans({CT.plan_key(SPEC, "H200"): {"index": 0, "blob": "other"}}, CT.plan_store(path))
    assert own.get(SPEC, "H200") == (0, "other")                     # the engine's own plan wins


def test_engine_plans_record_what_is_put_and_forward_it(tmp_path):
    path = str(tmp_path / "t.cache")
    plans = CT.EnginePlans(None, CT.PlanStore(path))
    plans.put(SPEC, "H200", 2, {0: 0.3, 2: 0.1}, BLOB)
    plans.put(G.ConvSpec(**{**SPEC.to_json(), "k": 8}), "H200", 0, {0: 0.1}, None)
    assert list(plans.entries.values()) == [{"index": 2, "blob": BLOB}]
    assert CT.PlanStore(path).get(SPEC, "H200") == (2, BLOB)        # the file has it too
    alone = CT.EnginePlans()
    alone.put(SPEC, "H200", 1, {1: 0.5}, BLOB)
    assert alone.get(SPEC, "H200") == (1, BLOB)


def test_plan_options_use_the_running_engines_plans_in_this_thread_only(monkeypatch, tmp_path):
    monkeypatch.setenv("CUPYRT_TIMING_CACHE", str(tmp_path / "env.cache"))
    monkeypatch.delenv("CUPYRT_CUDNN_PLAN_CACHE", raising=False)
    plans = CT.EnginePlans()
    seen = {}
    with CT.plans_in_use(plans):
        assert CT.plan_options()["store"] is plans
        t = threading.Thread(target=lambda: seen.setdefault("other", CT.plan_options()["store"]))
        t.start()
        t.join()
    assert seen["other"].path == str(tmp_path / "env.cache")          # another thread: the settings'
    assert CT.plan_options()["store"].path == str(tmp_path / "env.cache")


def test_a_store_that_cannot_be_written_warns_and_the_plan_still_counts(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = CT.PlanStore(str(blocker / "t.cache"))
    with caplog.at_level(logging.WARNING):
        store.put(SPEC, "H200", 1, {1: 0.2}, BLOB)
    assert "not written" in caplog.text
    assert store.cache.peek(store.key(SPEC, "H200"))["tactic"] == "cudnn.plan.1"   # this process keeps it


class CudnnLike(Injected):
    """Runs like a cuDNN tactic: its plan comes from the store the tactics are given
    (``plan_options``), else it is 'compiled' (counted) and put there."""
    compiled = 0
    loaded = 0

    def run(self, state, layer, inputs, precision, out_dtypes):
        store = CT.plan_options()["store"]
        spec = G.ConvSpec(**{**SPEC.to_json(), "n": inputs[0].shape[0], "k": 6})
        known = store.get(spec, "Fake GPU") if store is not None else None
        if known is not None and known[1] is not None:
            CudnnLike.loaded += 1
        else:
            CudnnLike.compiled += 1
            if store is not None:
                store.put(spec, "Fake GPU", 1, {0: 0.2, 1: 0.1}, BLOB)
        return super().run(state, layer, inputs, precision, out_dtypes)


def test_a_deserialized_engine_loads_the_plans_its_build_chose(fake_gpu, monkeypatch):
    monkeypatch.delenv("CUPYRT_CUDNN_PLAN_CACHE", raising=False)
    monkeypatch.setattr(CudnnLike, "compiled", 0)
    monkeypatch.setattr(CudnnLike, "loaded", 0)
    meta, plan = build(monkeypatch, [Injected("inject.slow", 0.5), CudnnLike("inject.cudnn", 0.1)])
    assert meta["kernels"][conv_name(meta)] == "inject.cudnn"
    assert CudnnLike.compiled == 1 and CudnnLike.loaded >= 1       # built once, then its own plan
    assert list(meta["cudnn_plans"].values()) == [{"index": 1, "blob": BLOB}]
    json.dumps(meta["cudnn_plans"])                                 # plain JSON in the plan file
    # another process: no registry, no cache file; the plan file alone
    monkeypatch.setattr(cupy_backend, "_caches", {})
    monkeypatch.setattr(CT, "_stores", {})
    compiled_before = CudnnLike.compiled
    engine = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
    x = np.random.default_rng(4).standard_normal((2, 3, 9, 9)).astype(np.float32)
    engine.create_execution_context().execute({"x": x})
    assert CudnnLike.compiled == compiled_before                    # loaded, not compiled
    # without the plans in the file, the same run compiles
    bare = dict(engine.meta)
    bare.pop("cudnn_plans")
    backend = cupy_backend.CupyBackend(bare)
    with CT.plans_in_use(backend.cudnn_plans):
        assert CT.plan_options()["store"].get(
            G.ConvSpec(**{**SPEC.to_json(), "n": 2, "k": 6}), "Fake GPU") is None


def test_a_build_without_cudnn_plans_writes_none(fake_gpu, monkeypatch):
    meta, _ = build(monkeypatch, [Injected("inject.a", 0.2)])
    assert "cudnn_plans" not in meta


def test_a_prefetch_look_does_not_make_the_engine_carry_a_plan(tmp_path):
    path = str(tmp_path / "timing.cache")
    CT.PlanStore(path).put(SPEC, "H200", 3, {3: 0.1}, BLOB)
    plans = CT.EnginePlans({}, CT.plan_store(path))
    assert plans.peek(SPEC, "H200") == (3, BLOB) and plans.entries == {}     # looked at only
    assert plans.get(SPEC, "H200") == (3, BLOB) and len(plans.entries) == 1  # about to run: kept
