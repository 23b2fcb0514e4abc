"""FP16 range check (engine/precision_range.py): layers whose FP32 values on sample inputs
overflow or underflow FP16 are named in a warning and in the plan; with
config.fp16_range_fallback they compute in FP32 and the answer is right again."""
import numpy as np
import pytest

import engine as rt
from engine.precision_range import FP16RangeWarning
from engine.testing import interpret, rel_l2

RNG = np.random.default_rng(7)
X = RNG.standard_normal((4, 16)).astype(np.float32)


def tiny_net():
    """An FC layer with weights ~1e-9 (outputs ~4e-9, below FP16's 2**-24) and an FC
    after it (weights ~1e3, outputs ~1e-5), like a random-weight MobileNetV2's tiny
    logits: in FP16 the second layer reads zeros and the answer is all zeros."""
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 16))
    h = net.add_fully_connected(x, 8, RNG.standard_normal((8, 16)).astype(np.float32) * 1e-9)
    h.name = "fc_small"
    y = net.add_fully_connected(h.get_output(0), 4,
                                RNG.standard_normal((4, 8)).astype(np.float32) * 1e3)
    y.name = "fc_mix"
    net.mark_output(y.get_output(0))
    return net


def big_net():
    """FC with weights ~3e4 (values ~1e5 > 65504), then a scale back to ~1."""
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 16))
    h = net.add_fully_connected(x, 8, RNG.standard_normal((8, 16)).astype(np.float32) * 3e4)
    h.name = "fc_big"
    s = net.add_activation(h.get_output(0), rt.ActivationType.TANH)   # not foldable into the FC
    s.name = "tanh"
    y = net.add_fully_connected(h.get_output(0), 4,
                                RNG.standard_normal((4, 8)).astype(np.float32) * 1e-5)
    y.name = "fc_down"
    net.mark_output(y.get_output(0))
    net.mark_output(s.get_output(0))
    return net


def build(net, samples=None, fallback=False):
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.set_flag(rt.BuilderFlag.FP16)
    cfg.range_check_inputs = samples
    cfg.fp16_range_fallback = fallback
    return b.build_engine(net, cfg)


def test_fp16_tiny_activations_are_zeros_without_the_check():
    net = tiny_net()
    ref = list(interpret(net, {"x": X}).values())[0]
    assert 1e-7 < np.abs(ref).max() < 1e-3
    y = list(build(net).create_execution_context().execute({"x": X}).values())[0]
    assert not np.any(y)                          # the issue: FP16 gives all zeros, silently


def test_underflow_named_in_warning_and_plan_and_fallback_keeps_fp32():
    net = tiny_net()
    ref = list(interpret(net, {"x": X}).values())[0]
    with pytest.warns(FP16RangeWarning, match=r"fc_small \(underflow.*fp16_range_fallback"):
        eng = build(net, samples=[{"x": X}])
    found = {f["layer"]: f for f in eng.meta["fp16_range"]}
    assert set(found) == {"fc_small", "fc_mix"}
    assert all(f["kind"] == "underflow" and not f.get("kept_fp32") for f in found.values())
    with pytest.warns(FP16RangeWarning, match="kept in FP32"):
        eng = build(net, samples={"x": X}, fallback=True)
    assert all(f["kept_fp32"] for f in eng.meta["fp16_range"])
    assert {f["layer"]: f["kind"] for f in eng.meta["fp16_range"]} == {
        "fc_small": "underflow", "fc_mix": "underflow"}
    assert {i.name: i.precision for i in eng.layers}["fc_mix"] == rt.float32
    y = list(eng.create_execution_context().execute({"x": X}).values())[0]
    assert rel_l2(y, ref) < 1e-2


def test_overflow_named_and_fallback_gives_finite_answer():
    net = big_net()
    refs = interpret(net, {"x": X})
    with pytest.warns(FP16RangeWarning, match=r"fc_big \(overflow"):
        eng = build(net, samples=[{"x": X}])
    kinds = {f["layer"]: f["kind"] for f in eng.meta["fp16_range"]}
    assert kinds.get("fc_big") == "overflow" and "tanh" not in kinds
    ys = eng.create_execution_context().execute({"x": X})
    assert not all(np.isfinite(v).all() for v in ys.values())   # FP16 alone: inf / NaN
    with pytest.warns(FP16RangeWarning, match=r"fc_down \(reads fc_big\)"):
        eng = build(net, samples=[{"x": X}], fallback=True)
    kept = {f["layer"]: f["kind"] for f in eng.meta["fp16_range"] if f["kept_fp32"]}
    assert kept == {"fc_big": "overflow", "fc_down": "overflow input", "tanh": "overflow input"}
    ys = eng.create_execution_context().execute({"x": X})
    for name, ref in refs.items():
        assert np.isfinite(ys[name]).all()
        assert rel_l2(ys[name], ref) < 1e-2


def test_in_range_network_builds_without_warning(recwarn):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 16))
    y = net.add_fully_connected(x, 4, RNG.standard_normal((4, 16)).astype(np.float32))
    net.mark_output(y.get_output(0))
    eng = build(net, samples=[{"x": X}])
    assert eng.meta["fp16_range"] == []
    assert not [w for w in recwarn if issubclass(w.category, FP16RangeWarning)]


@pytest.mark.parametrize("samples,match", [([], "is empty"), ([{"y": X}], r"found \['y'\]"),
                                           ([X], "found ndarray")])
def test_bad_range_check_inputs_are_typed_errors(samples, match):
    with pytest.raises(rt.BuildError, match=match):
        build(tiny_net(), samples=samples)
