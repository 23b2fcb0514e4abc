"""Differential fuzzing against TensorFlow (tf_integration/fuzz.py): 100 seeded
random graphs convert and match TensorFlow, or are refused with a reason.

The 5,000-graph run is ``CUPYRT_FUZZ_LONG=1`` here (or ``python -m
tf_integration.fuzz --long``); CI skips it.
"""
import os

import numpy as np
import pytest
import tensorflow as tf

from tf_integration import fuzz


def test_100_random_graphs_match_tensorflow_or_are_refused_with_a_reason():
    counts, failures = fuzz.run(100, seed=0)
    assert not failures, "\n\n".join(str(f) for f in failures)
    assert counts["converted"] + counts["refused"] + counts["tf_rejects"] == 100
    # the generator reaches the engines and the refusals both
    assert counts["converted"] >= 60 and counts["refused_nodes"] > 0, dict(counts)


@pytest.mark.skipif(not os.environ.get("CUPYRT_FUZZ_LONG"), reason="long run: CUPYRT_FUZZ_LONG=1")
def test_5000_random_graphs_long():
    counts, failures = fuzz.run(fuzz.LONG_GRAPHS, seed=0)
    assert not failures, "\n\n".join(str(f) for f in failures[:5])


def test_the_same_seed_gives_the_same_graph_and_settings():
    a, b = fuzz.generate(7), fuzz.generate(7)
    assert a.graph_def == b.graph_def
    assert (a.precision, a.dynamic, a.minimum_segment_size) == \
        (b.precision, b.dynamic, b.minimum_segment_size)
    for k in a.feeds:
        np.testing.assert_array_equal(a.feeds[k], b.feeds[k])
    assert fuzz.generate(8).graph_def != a.graph_def


def test_generated_graphs_cover_the_op_families_and_settings():
    ops, settings = set(), set()
    for seed in range(60):
        fg = fuzz.generate(seed)
        ops |= {n.op for n in fg.graph_def.node}
        settings.add((fg.precision, fg.dynamic))
    for op in ("Conv2D", "DepthwiseConv2dNative", "MaxPool", "AvgPool", "MatMul", "ConcatV2",
               "StridedSlice", "Transpose", "Reshape", "Mean", "Sum"):
        assert op in ops, op
    assert ops & {"Cumsum", "ReverseV2", "Atan2", "Cumprod"}          # no converter: refused
    assert ops & {"While", "StatelessWhile", "Enter"}                # loops
    assert len(settings) == 4


def test_a_wrong_engine_is_reported_as_a_mismatch_with_its_seed_and_graph(monkeypatch):
    real = fuzz._run

    def corrupt(graph_def, fetches, feeds, converted):
        out = real(graph_def, fetches, feeds, converted)
        return [o * 1.01 if converted and np.asarray(o).dtype.kind == "f" else o for o in out]

    monkeypatch.setattr(fuzz, "_run", corrupt)
    seed = next(s for s in range(20) if fuzz.generate(s).precision == "FP32")
    res = fuzz.check(seed)
    assert res.status == "mismatch" and res.failed
    assert f"seed {seed}" in str(res) and "rel. L2 error" in str(res)
    assert "Placeholder()" in str(res)          # the graph's listing comes with it


def test_an_integer_output_that_differs_is_a_mismatch(monkeypatch):
    real = fuzz._run

    def corrupt(graph_def, fetches, feeds, converted):
        out = real(graph_def, fetches, feeds, converted)
        return [o + 1 if converted and np.asarray(o).dtype.kind == "i" else o for o in out]

    seed = next(s for s in range(200) if any(
        np.asarray(v).dtype.kind == "i" for v in real(
            fuzz.generate(s).graph_def, fuzz.generate(s).outputs, fuzz.generate(s).feeds,
            False)))
    monkeypatch.setattr(fuzz, "_run", corrupt)
    res = fuzz.check(seed)
    assert res.status == "mismatch" and "values differ" in res.detail, str(res)


def test_a_converter_crash_is_reported_not_raised(monkeypatch):
    def boom(self):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(fuzz.TrtGraphConverter, "convert", boom)
    res = fuzz.check(3)
    assert res.status == "crash" and "converter exploded" in res.detail and res.failed


def test_a_generator_bug_is_reported_as_a_crash(monkeypatch):
    monkeypatch.setattr(fuzz, "generate", lambda seed, max_ops=8: 1 / 0)
    res = fuzz.check(5)
    assert res.status == "crash" and "ZeroDivisionError" in res.detail


def test_a_graph_tensorflow_cannot_run_is_not_a_finding(monkeypatch):
    def refuse(graph_def, fetches, feeds, converted):
        raise tf.errors.InvalidArgumentError(None, None, "Input dims must be <= 5")

    monkeypatch.setattr(fuzz, "_run", refuse)
    res = fuzz.check(2)
    assert res.status == "tf_rejects" and not res.failed


def test_an_engine_fallback_is_a_failure(monkeypatch):
    import warnings

    real = fuzz._run

    def falls_back(graph_def, fetches, feeds, converted):
        if converted:
            warnings.warn("engine node E: engine execution failed", fuzz.EngineFallbackWarning)
        return real(graph_def, fetches, feeds, converted)

    monkeypatch.setattr(fuzz, "_run", falls_back)
    seed = next(s for s in range(20) if fuzz.generate(s).precision == "FP32")
    res = fuzz.check(seed)
    assert res.status == "fallback" and "execution failed" in res.detail


def test_cli_runs_graphs_and_prints_counts(capsys):
    assert fuzz.main(["--graphs", "3", "--seed", "11"]) == 0
    out = capsys.readouterr().out
    assert "3 graphs (seeds 11..13)" in out and "mismatch 0" in out


def test_cli_only_prints_the_graph(capsys):
    fuzz.main(["--only", "4"])
    out = capsys.readouterr().out
    assert "seed 4:" in out and "steps:" in out
