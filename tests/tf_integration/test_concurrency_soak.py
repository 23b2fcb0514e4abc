"""One converted graph under load (issue 11, "Concurrency and soak", "Faults"): 8 threads
x 200 runs through one shared tf.compat.v1.Session and through a session per thread
give exactly the single-threaded answers; a short soak (1,000 runs) keeps host RSS
flat after warm-up; an engine that fails at run time inside a session falls back to
its TensorFlow segment, from many threads, with every fallback counted in summary().
NumPy backend (tests/conftest.py). The 10,000-run soak: `python benchmarks/host.py soak`."""
import os
import sys
import threading
import warnings

import numpy as np
import pytest
import tensorflow as tf

from engine.backends.numpy_backend import NumpyBackend
from engine.errors import ExecutionError
from tf_integration import EngineFallbackWarning, engine_node, import_graph_def
from tf_integration.engine_node import runtime_stats
from tfi_helpers import rel_l2

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from benchmarks import host  # noqa: E402

THREADS, RUNS = 8, 200


def converted_session(converted):
    g = tf.Graph()
    with g.as_default():
        import_graph_def(converted, name="")
    return tf.compat.v1.Session(graph=g), g.get_tensor_by_name("out:0")


def hammer(sessions, pool, runs=RUNS, threads=THREADS):
    """{thread: [(input index, output)]}: each thread runs ``runs`` times through
    ``sessions[thread]`` (one shared object or one each), inputs in its own order."""
    results, errors = {}, []
    start = threading.Barrier(threads)

    def work(t):
        sess, out = sessions[t]
        order = np.random.default_rng(100 + t).integers(0, len(pool), runs)
        mine = []
        try:
            start.wait()
            for k in order:
                mine.append((int(k), sess.run(out, {"x:0": pool[k]})))
        except Exception as exc:        # noqa: BLE001  (said by the test, not lost in a thread)
            errors.append(exc)
        results[t] = mine
    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    return results


@pytest.mark.parametrize("shared", [True, False], ids=["one-session", "session-per-thread"])
def test_eight_threads_give_the_single_threaded_results(shared):
    gd, converted, _, fetches = host.make_model(seed=21 + shared)
    pool = host.input_pool(seed=5)
    single = host.run_graph(converted, fetches, pool, converted=True)
    tf_ref = host.run_graph(gd, fetches, pool, converted=False)
    assert all(rel_l2(s, r) <= 1e-5 for s, r in zip(single, tf_ref))
    sessions = ([converted_session(converted)] * THREADS if shared
                else [converted_session(converted) for _ in range(THREADS)])
    try:
        results = hammer(sessions, pool)
    finally:
        for sess, _ in set(sessions):
            sess.close()
    assert sum(len(r) for r in results.values()) == THREADS * RUNS
    for mine in results.values():
        for k, got in mine:
            np.testing.assert_array_equal(got, single[k])      # bit for bit: no torn state
    stats = runtime_stats(converted)
    assert len(stats) == 2
    for st in stats.values():
        assert st["native_runs"] == 0 and st["fallbacks"] == {}
        # one engine per batch size and import, never one per thread
        assert st["engines_built"] == len(host.BATCHES) * (2 if shared else 1 + THREADS)


def test_short_soak_keeps_host_memory_flat():
    result = host.soak(1000, sample_every=50, seed=31)
    assert result["mismatches"] == 0 and result["max_rel_l2"] <= 1e-5
    assert result["engine_runs"] == 2 * 1000 and result["native_runs"] == 0
    assert result["engines_built"] == 2 * len(host.BATCHES)
    # after warm-up (the first 20%) RSS moves by less than a few MB; a leak of one
    # 8x8x6 float32 activation per run would already add 1.5 MB over these 800 runs
    assert abs(result["growth_mb_last_80pct"]) < 3.0, result["samples"]
    assert result["spread_mb_last_80pct"] < 3.0, result["samples"]
    assert len(result["samples"]) == 20 and result["samples"][-1][0] == 1000


def test_threaded_soak_counts_runs_over_every_thread():
    result = host.soak(120, threads=4, sample_every=50, seed=41)
    assert [n for n, _ in result["samples"]] == [50, 100, 120]
    assert result["engine_runs"] == 2 * 120 and result["mismatches"] == 0


def test_soak_runner_command_line(tmp_path, capsys):
    out = tmp_path / "soak.json"
    assert host.main(["soak", "--runs", "30", "--sample-every", "10", "--json", str(out)]) == 0
    assert '"runs": 30' in capsys.readouterr().out
    assert out.exists() and len(__import__("json").loads(out.read_text())["samples"]) == 3
    with pytest.raises(SystemExit):
        host.main(["soak", "--runs", "0"])


def test_an_engine_failing_at_run_time_falls_back_from_every_thread_and_is_counted(monkeypatch):
    """Every run at batch 2 fails inside the engine (as a device fault would): those
    runs take the TensorFlow segment, answers stay right, and summary() counts them."""
    gd, converted, conv, fetches = host.make_model(seed=51)
    pool = host.input_pool(seed=6)
    tf_ref = host.run_graph(gd, fetches, pool, converted=False)
    real = NumpyBackend.run_layer

    def faulty(layer, inputs, precision, out_dtypes):
        if inputs[0] is not None and inputs[0].shape[0] == 2:
            raise ExecutionError(f"{layer.name}: injected fault (an illegal address on a device)")
        return real(layer, inputs, precision, out_dtypes)
    monkeypatch.setattr(NumpyBackend, "run_layer", staticmethod(faulty))
    sessions = [converted_session(converted)] * THREADS
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", EngineFallbackWarning)
        results = hammer(sessions, pool, runs=50)
    sessions[0][0].close()
    at_batch_2 = 0
    for mine in results.values():
        for k, got in mine:
            assert rel_l2(got, tf_ref[k]) <= 1e-5
            at_batch_2 += pool[k].shape[0] == 2
    assert at_batch_2 > 0
    stats = runtime_stats(converted)
    text = conv.summary()
    for name, st in stats.items():
        # the first failure says why; later calls at that shape skip the failed engine
        # (engine_node counts those under the shape's missing engine)
        assert sum(st["fallbacks"].values()) == at_batch_2, (name, st)
        assert st["fallbacks"][engine_node.RUN_FAILED] >= 1, (name, st)
        assert st["native_runs"] == at_batch_2
        assert st["engine_runs"] == THREADS * 50 - at_batch_2
        for reason, n in st["fallbacks"].items():
            assert f"fallback: {reason}: {n} call(s)" in text
    # said once per engine node and reason, however many threads hit it
    fallbacks = [w for w in said if issubclass(w.category, EngineFallbackWarning)]
    assert len(fallbacks) == sum(len(st["fallbacks"]) for st in stats.values())
    assert "injected fault" in str(fallbacks[0].message)


def test_engine_only_soak_runs_the_engine_api_from_threads_and_checks_each_answer():
    """The GPU machine's soak (no TensorFlow there): one engine, dynamic batch,
    answers against the NumPy backend's; here both sides are NumPy, so exact."""
    result = host.engine_soak(240, threads=3, sample_every=80, seed=7)
    assert result["mode"] == "engine-only" and result["mismatches"] == 0
    assert result["max_rel_l2"] == 0.0 and result["tolerance"] == 1e-5
    assert [n for n, _ in result["samples"]] == [80, 160, 240]
    assert "device_pool_used_mb_end" not in result          # device memory only on cupy


def test_engine_only_soak_counts_wrong_answers(monkeypatch):
    """A run whose answer differs from the reference is counted (the check can fail)."""
    real = host.rel_l2
    calls = []

    def off_every_fifth(a, b):
        calls.append(1)
        return real(a, b) + (0.5 if len(calls) % 5 == 0 else 0.0)
    monkeypatch.setattr(host, "rel_l2", off_every_fifth)
    result = host.engine_soak(50, sample_every=25, seed=8)
    assert result["mismatches"] == 10 and result["max_rel_l2"] == 0.5


def test_engine_only_soak_command_line(tmp_path, capsys):
    out = tmp_path / "engine_soak.json"
    assert host.main(["soak", "--engine-only", "--runs", "20", "--sample-every", "10", "--json", str(out)]) == 0
    assert '"mode": "engine-only"' in capsys.readouterr().out
    assert len(__import__("json").loads(out.read_text())["samples"]) == 2
