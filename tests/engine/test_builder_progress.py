"""engine.builder's progress events: what a front end (the CLI's bars) hears during a build."""
import numpy as np
import pytest

import engine as rt
from engine import builder as builder_mod


def _net():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 4))
    y = net.add_activation(x, rt.ActivationType.TANH).get_output(0)
    z = net.add_activation(y, rt.ActivationType.RELU).get_output(0)
    net.mark_output(z)
    return net


def test_a_build_emits_start_stages_and_end_to_listeners_and_config():
    heard, own = [], []
    listener = lambda event, **info: heard.append((event, info))  # noqa: E731
    builder_mod.PROGRESS_LISTENERS.append(listener)
    try:
        b = rt.Builder()
        config = b.create_builder_config()
        config.backend = "numpy"
        config.progress = lambda event, **info: own.append(event)
        b.build_serialized_network(_net(), config)
    finally:
        builder_mod.PROGRESS_LISTENERS.remove(listener)
    events = [e for e, _ in heard]
    assert events == ["build_start", "stage", "stage", "build_end"] == own
    assert heard[0][1] == {"layers": 2}
    assert [i["name"] for e, i in heard if e == "stage"] == ["passes", "precision"]
    assert heard[-1][1]["layers"] >= 1 and heard[-1][1]["seconds"] >= 0


def test_a_failing_listener_never_fails_the_build():
    def broken(event, **info):
        raise RuntimeError("display gone")

    b = rt.Builder()
    config = b.create_builder_config()
    config.backend = "numpy"
    config.progress = broken
    plan = b.build_serialized_network(_net(), config)
    out = rt.Runtime(backend="numpy").deserialize_cuda_engine(plan).create_execution_context() \
        .execute({"x": np.full((2, 4), 0.5, np.float32)})
    np.testing.assert_allclose(next(iter(out.values())), np.tanh(np.full((2, 4), 0.5)), rtol=1e-6)


def test_the_tactic_run_reports_one_layer_event_per_layer():
    # the tactic-timing run is an ordinary execution with this object as its profiler;
    # on the NumPy backend the same layer loop calls it once per layer
    b = rt.Builder()
    config = b.create_builder_config()
    config.backend = "numpy"
    eng = rt.Runtime(backend="numpy").deserialize_cuda_engine(
        b.build_serialized_network(_net(), config))
    seen = []
    config.progress = lambda event, **info: seen.append((event, info["index"], info["total"]))
    ctx = eng.create_execution_context()
    ctx.profiler = builder_mod._TacticProgress(config, eng.num_layers)
    ctx.execute({"x": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)})
    assert seen == [("layer", i + 1, eng.num_layers) for i in range(eng.num_layers)]


@pytest.mark.parametrize("flag", [None, rt.BuilderFlag.FP16])
def test_the_stage_list_names_int8_only_for_int8_builds(flag):
    names = []
    b = rt.Builder()
    config = b.create_builder_config()
    config.backend = "numpy"
    if flag is not None:
        config.set_flag(flag)
    config.progress = lambda event, **info: names.append(info.get("name"))
    b.build_serialized_network(_net(), config)
    assert "int8" not in names and "passes" in names
