"""The FP16 range check through the converters (issue 11): engines built with sample
inputs -- INT8 calibration (TrtGraphConverter.calibrate) or TrtGraphConverterV2.build --
name the layers FP16 cannot hold in the report and summary(); fp16_range_fallback=True
keeps them in FP32 and the answer matches TensorFlow again."""
import numpy as np
import pytest
import tensorflow as tf

from engine.precision_range import FP16RangeWarning
from engine.testing import rel_l2
from tf_integration.graph_converter import TrtGraphConverter
from tf_integration.engine_node import import_graph_def
from tf_integration.errors import ConverterArgumentError
from tf_integration.saved_model import TrtGraphConverterV2

RNG = np.random.default_rng(11)
X = RNG.standard_normal((4, 16)).astype(np.float32)
# TINY: values ~1e-9 after the first MatMul (below FP16's 2**-24: zeros), ~1e-5 after
# the second; BIG: ~1e5 after the first (above 65504: inf), ~1 after the second
TINY = (RNG.standard_normal((16, 8)).astype(np.float32) * 1e-9,
        RNG.standard_normal(8).astype(np.float32) * 1e-9,
        RNG.standard_normal((8, 4)).astype(np.float32) * 1e3)
BIG = (RNG.standard_normal((16, 8)).astype(np.float32) * 3e4,
       RNG.standard_normal(8).astype(np.float32) * 3e4,
       RNG.standard_normal((8, 4)).astype(np.float32) * 1e-5)


def mlp(x, w1, b1, w2):
    return tf.matmul(tf.nn.bias_add(tf.matmul(x, w1), b1), w2)


def frozen(weights):
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, (None, 16), name="x")
        tf.identity(mlp(x, *[tf.constant(w) for w in weights]), name="y")
    gd = g.as_graph_def()
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        tf.import_graph_def(gd, name="")
        ref = sess.run("y:0", {"x:0": X})
    return gd, ref


def run_frozen(gd):
    g = tf.Graph()
    with g.as_default():
        import_graph_def(gd, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            return sess.run("y:0", {"x:0": X})


def calibrated(gd, fallback):
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["y"], precision_mode="INT8",
                             minimum_segment_size=1, max_batch_size=4,
                             fp16_range_fallback=fallback)
    conv.convert()
    out = conv.calibrate(["y:0"], 2, feed_dict_fn=lambda: {"x:0": X})
    (engine,) = conv.report["engines"]
    return conv, out, engine


def test_frozen_int8_tiny_activations_named_and_kept_fp32():
    gd, ref = frozen(TINY)
    assert 1e-7 < np.abs(ref).max() < 1e-3
    with pytest.warns(FP16RangeWarning, match="underflow"):
        conv, out, engine = calibrated(gd, fallback=False)
    kinds = {f["layer"]: f["kind"] for f in engine["fp16_range"]}
    assert kinds and set(kinds.values()) == {"underflow"}
    assert not any(f.get("kept_fp32") for f in engine["fp16_range"])
    line = [ln for ln in conv.summary().splitlines() if "FP16 range" in ln]
    assert len(line) == 1 and "underflow" in line[0] and "still FP16" in line[0]
    assert all(k in line[0] for k in kinds)
    assert not np.any(run_frozen(out))             # the layers without INT8 kernels: FP16 zeros
    with pytest.warns(FP16RangeWarning, match="kept in FP32"):
        conv, out, engine = calibrated(gd, fallback=True)
    assert engine["fp16_range"] and all(f["kept_fp32"] for f in engine["fp16_range"])
    assert "kept in FP32" in conv.summary()
    assert conv.report["parameters"]["fp16_range_fallback"] is True
    assert rel_l2(run_frozen(out), ref) <= 2e-2


def test_frozen_int8_overflow_named_and_fallback_is_finite():
    gd, ref = frozen(BIG)
    with pytest.warns(FP16RangeWarning, match="overflow"):
        conv, out, engine = calibrated(gd, fallback=False)
    assert "overflow" in {f["kind"] for f in engine["fp16_range"]}
    assert not np.isfinite(run_frozen(out)).all()
    with pytest.warns(FP16RangeWarning, match="kept in FP32"):
        conv, out, engine = calibrated(gd, fallback=True)
    y = run_frozen(out)
    assert np.isfinite(y).all() and rel_l2(y, ref) <= 2e-2


def test_frozen_in_range_graph_has_no_findings(recwarn):
    gd, _ = frozen((RNG.standard_normal((16, 8)).astype(np.float32),
                    RNG.standard_normal(8).astype(np.float32),
                    RNG.standard_normal((8, 4)).astype(np.float32)))
    conv, _, engine = calibrated(gd, fallback=True)
    assert engine["fp16_range"] == []
    assert "FP16 range" not in conv.summary()
    assert not [w for w in recwarn if issubclass(w.category, FP16RangeWarning)]


def saved_model(tmp_path, weights):
    w1, b1, w2 = (tf.constant(w) for w in weights)
    module = tf.Module()
    module.f = tf.function(lambda x: {"y": mlp(x, w1, b1, w2)},
                           input_signature=[tf.TensorSpec((None, 16), tf.float32, name="x")])
    path = str(tmp_path / "model")
    tf.saved_model.save(module, path, signatures={"serving_default": module.f})
    return path, mlp(X, w1, b1, w2).numpy()


def built_v2(path, fallback, precision="FP16"):
    conv = TrtGraphConverterV2(input_saved_model_dir=path, precision_mode=precision,
                               minimum_segment_size=1, fp16_range_fallback=fallback)
    if precision == "INT8":
        conv.convert(calibration_input_fn=lambda: iter([X, X]))
    else:
        conv.convert()
    conv.build(input_fn=lambda: iter([X]))
    (engine,) = conv.report["serving_default"]["engines"]
    y = conv.signatures["serving_default"](x=tf.constant(X))["y"].numpy()
    return conv, engine, y


@pytest.mark.parametrize("weights,kind", [(TINY, "underflow"), (BIG, "overflow")])
def test_saved_model_build_names_layers_and_fallback_matches_tf(tmp_path, weights, kind):
    path, ref = saved_model(tmp_path, weights)
    with pytest.warns(FP16RangeWarning, match=kind):
        conv, engine, y = built_v2(path, fallback=False)
    assert kind in {f["kind"] for f in engine["fp16_range"]}
    assert list(engine["fp16_range_by_shape"]) == ["[[4, 16]]"]
    line = [ln for ln in conv.summary().splitlines() if "FP16 range" in ln]
    assert len(line) == 1 and kind in line[0] and "still FP16" in line[0]
    assert rel_l2(y, ref) > 0.5 or not np.isfinite(y).all()     # FP16 alone is wrong
    with pytest.warns(FP16RangeWarning, match="kept in FP32"):
        conv, engine, y = built_v2(path, fallback=True)
    assert all(f["kept_fp32"] for f in engine["fp16_range"])
    assert "kept in FP32" in conv.summary()
    assert np.isfinite(y).all() and rel_l2(y, ref) <= 2e-2


def test_saved_model_int8_calibration_reports_the_range(tmp_path):
    path, ref = saved_model(tmp_path, TINY)
    with pytest.warns(FP16RangeWarning, match="kept in FP32"):
        conv, engine, y = built_v2(path, fallback=True, precision="INT8")
    assert engine["fp16_range"] and all(f["kept_fp32"] for f in engine["fp16_range"])
    assert rel_l2(y, ref) <= 2e-2


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_fp16_range_fallback_must_be_a_bool(tmp_path, value):
    gd, _ = frozen(TINY)
    with pytest.raises(ConverterArgumentError, match="fp16_range_fallback.*True or False"):
        TrtGraphConverter(input_graph_def=gd, fp16_range_fallback=value)
    path, _ = saved_model(tmp_path, TINY)
    with pytest.raises(ConverterArgumentError, match="fp16_range_fallback.*True or False"):
        TrtGraphConverterV2(input_saved_model_dir=path, fp16_range_fallback=value)
