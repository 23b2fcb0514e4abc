"""Bad input at run time: shapes outside an optimization profile, batches above an
engine's max_batch_size, and constant calibration data, each a typed error naming
the tensor, what was found and what was expected. (Missing feeds, wrong rank and
dtype: tests/engine/test_runtime.py; empty, NaN and misshapen calibration data:
tests/engine/test_calibration.py.)"""
import logging

import numpy as np
import pytest

import engine as rt

RNG = np.random.default_rng(1411)
W = RNG.standard_normal((3, 8)).astype(np.float32)
B = RNG.standard_normal(3).astype(np.float32)


def fc_network(builder, two_inputs=False):
    net = builder.create_network()
    x = net.add_input("x", rt.float32, (-1, 8))
    h = x
    if two_inputs:
        y = net.add_input("y", rt.float32, (-1, 8))
        h = net.add_elementwise(x, y, rt.ElementWiseOperation.SUM).get_output(0)
    out = net.add_fully_connected(h, 3, W, B).get_output(0)
    out.name = "out"
    net.mark_output(out)
    return net


def build(profiles=(), max_batch_size=None, two_inputs=False, calibrator=None):
    b = rt.Builder()
    net = fc_network(b, two_inputs)
    cfg = b.create_builder_config()
    cfg.backend = "numpy"
    for lo, opt, hi in profiles:
        p = b.create_optimization_profile()
        p.set_shape("x", lo, opt, hi)
        cfg.add_optimization_profile(p)
    cfg.max_batch_size = max_batch_size
    if calibrator is not None:
        cfg.set_flag(rt.BuilderFlag.INT8)
        cfg.int8_calibrator = calibrator
    plan = b.build_serialized_network(net, cfg)
    return rt.Runtime(backend="numpy").deserialize_cuda_engine(plan)


def x_of(n):
    return RNG.standard_normal((n, 8)).astype(np.float32)


def reference(x):
    return x.astype(np.float64) @ W.T.astype(np.float64) + B


PROFILES = [((1, 8), (4, 8), (6, 8)), ((8, 8), (12, 8), (16, 8))]


def test_shapes_inside_the_profile_run_and_match_the_reference():
    e = build(PROFILES[:1])
    assert e.num_optimization_profiles == 1
    assert e.get_tensor_profile_shape("x", 0) == ((1, 8), (4, 8), (6, 8))
    ctx = e.create_execution_context()
    for n in (1, 4, 6):
        x = x_of(n)
        np.testing.assert_allclose(ctx.execute({"x": x})["out"], reference(x), rtol=1e-5,
                                   atol=1e-5)


@pytest.mark.parametrize("n", [7, 40])
def test_a_batch_outside_the_profile_is_refused_with_its_bounds(n):
    ctx = build(PROFILES[:1]).create_execution_context()
    with pytest.raises(rt.ExecutionError, match=rf"input 'x' has shape \({n}, 8\); optimization "
                       r"profile 0 allows min \(1, 8\) to max \(6, 8\) \(dims \[0\] outside\)$"):
        ctx.execute({"x": x_of(n)})
    with pytest.raises(rt.ExecutionError, match=r"profile 0 allows min \(1, 8\)"):
        ctx.set_input_shape("x", (n, 8))
    assert ctx.set_input_shape("x", (3, 8))


def test_the_active_profile_decides_and_can_be_switched():
    e = build(PROFILES)
    ctx = e.create_execution_context()
    x = x_of(12)
    with pytest.raises(rt.ExecutionError, match=r"allows min \(1, 8\) to max \(6, 8\).*"
                                                r"set_optimization_profile_async \(valid: \[0, 1\]\)"):
        ctx.execute({"x": x})
    assert ctx.set_optimization_profile_async(1)
    np.testing.assert_allclose(ctx.execute({"x": x})["out"], reference(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(rt.ExecutionError, match=r"profile 1 allows min \(8, 8\) to max \(16, 8\)"):
        ctx.execute({"x": x_of(4)})
    for bad in (2, -1, "0"):
        with pytest.raises(rt.ExecutionError, match=r"optimization profile .*; valid: \[0, 1\]"):
            ctx.set_optimization_profile_async(bad)


def test_profile_lookups_name_what_exists():
    e = build(PROFILES)
    with pytest.raises(rt.ExecutionError, match=r"profile 2; this engine has 2 \(valid: 0..1\)"):
        e.get_tensor_profile_shape("x", 2)
    with pytest.raises(rt.ExecutionError, match="'nope' is not an input or output"):
        e.get_tensor_profile_shape("nope", 0)
    with pytest.raises(rt.ExecutionError, match=r"profile 0 sets no shapes for 'out'; it sets "
                                                r"\['x'\]"):
        e.get_tensor_profile_shape("out", 0)
    plain = build()
    assert plain.num_optimization_profiles == 0
    with pytest.raises(rt.ExecutionError, match="built without optimization profiles"):
        plain.get_tensor_profile_shape("x", 0)
    ctx = plain.create_execution_context()      # no profile: every batch runs
    assert ctx.set_optimization_profile_async(0)
    x = x_of(50)
    np.testing.assert_allclose(ctx.execute({"x": x})["out"], reference(x), rtol=1e-5, atol=1e-5)


def test_an_input_without_profile_shapes_is_not_limited():
    b = rt.Builder()
    net = fc_network(b, two_inputs=True)
    cfg = b.create_builder_config()
    cfg.backend = "numpy"
    p = b.create_optimization_profile()
    p.set_shape("x", (1, 8), (2, 8), (2, 8))
    cfg.add_optimization_profile(p)
    ctx = rt.Runtime(backend="numpy").deserialize_cuda_engine(
        b.build_serialized_network(net, cfg)).create_execution_context()
    with pytest.raises(rt.ExecutionError, match="input 'x' has shape \\(3, 8\\)"):
        ctx.execute({"x": x_of(3), "y": x_of(3)})
    x, y = x_of(2), x_of(2)
    np.testing.assert_allclose(ctx.execute({"x": x, "y": y})["out"], reference(x + y),
                               rtol=1e-5, atol=1e-5)


def test_a_batch_above_max_batch_size_is_refused():
    e = build(max_batch_size=4)
    assert e.max_batch_size == 4
    ctx = e.create_execution_context()
    x = x_of(4)
    np.testing.assert_allclose(ctx.execute({"x": x})["out"], reference(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(rt.ExecutionError, match=r"input 'x' has batch 5 \(shape \(5, 8\)\); this "
                                                r"engine takes batches up to its max_batch_size 4"):
        ctx.execute({"x": x_of(5)})
    with pytest.raises(rt.ExecutionError, match="max_batch_size 4"):
        ctx.set_input_shape("x", (9, 8))
    assert build().max_batch_size is None


# ---------------------------------------------------------------------------- calibration

@pytest.mark.parametrize("value", [0.0, 0.5])
def test_constant_calibration_data_is_refused_with_likely_causes(value):
    data = [np.full((4, 8), value, np.float32) for _ in range(3)]
    with pytest.raises(rt.CalibrationError,
                       match=rf"(?s)input 'x' is {value!r} in every element of all 3 batches"
                             r".*Likely causes:.*1\. placeholder data"):
        build(calibrator=rt.MinMaxCalibrator(data))


def test_one_constant_input_among_varying_ones_is_a_warning(caplog):
    data = [{"x": x_of(4), "y": np.ones((4, 8), np.float32)} for _ in range(2)]
    with caplog.at_level(logging.WARNING, logger="engine.calibration"):
        e = build(two_inputs=True, calibrator=rt.MinMaxCalibrator(data))
    assert "input 'y' is 1.0 in every element of all 2 batches" in caplog.text
    assert e.network.get_tensor("x").dynamic_range is not None
    x, y = x_of(4), x_of(4)
    got = e.create_execution_context().execute({"x": x, "y": y})["out"]
    assert np.linalg.norm(got - reference(x + y)) / np.linalg.norm(reference(x + y)) < 0.1


def test_varying_calibration_data_calibrates():
    e = build(calibrator=rt.MinMaxCalibrator([x_of(4) for _ in range(2)]))
    assert e.network.get_tensor("x").dynamic_range[1] > 0
