"""INT8 in TensorFlow: converter.calibrate() (TF-TRT's TF1 API), calibration tables
stored in engine nodes, the FP16 fallback without calibration, and explicit
quantization from Q/DQ nodes."""
import contextlib
import logging

import numpy as np
import pytest
import tensorflow as tf

import engine as rt
from engine.calibration import read_cache
from tf_integration import TrtGraphConverter, segment_to_engine
from tf_integration.calibration import calibrate_graph
from tf_integration.calibration_table import TableCalibrator
from tf_integration.engine_node import ENGINE_OP, engine_runners
from tf_integration.engine_storage import stored_plan
from tf_integration.errors import ConversionError, ConverterArgumentError, TFIntegrationError
from tfi_helpers import build_graph, rel_l2, run_graph

RNG = np.random.default_rng(8)
W1 = (0.3 * RNG.standard_normal((3, 3, 3, 8))).astype(np.float32)
W2 = (0.2 * RNG.standard_normal((3, 3, 8, 8))).astype(np.float32)
CALIB = [RNG.standard_normal((4, 8, 8, 3)).astype(np.float32) for _ in range(3)]
X = RNG.standard_normal((4, 8, 8, 3)).astype(np.float32)


def cnn(x):
    h = tf.nn.relu(tf.nn.conv2d(x, W1, 1, "SAME") + 0.1)
    h = tf.nn.relu(tf.nn.conv2d(h, W2, 1, "SAME"))
    return tf.nn.max_pool2d(h, 2, 2, "VALID")


def converter(gd, **kw):
    kw = dict(dict(nodes_denylist=["out0"], precision_mode="INT8", minimum_segment_size=1,
                   max_batch_size=4), **kw)
    return TrtGraphConverter(input_graph_def=gd, **kw)


def feeds():
    it = iter(CALIB)
    return lambda: {"x0:0": next(it)}


def engine_nodes(gd):
    return [n for n in gd.node if n.op == ENGINE_OP]


@pytest.mark.parametrize("dynamic", [False, True])
def test_calibrate_returns_an_int8_graph_that_tracks_tensorflow(dynamic):
    gd, outs = build_graph(cnn, [X.shape])
    conv = converter(gd, is_dynamic_op=dynamic)
    conv.convert()
    int8 = conv.calibrate(outs, len(CALIB), feed_dict_fn=feeds())
    assert conv.converted_graph_def is int8
    (node,) = engine_nodes(int8)
    table = node.attr["calibration_table"].s
    assert table.startswith(b"TRT-8601-EntropyCalibration2\n")
    scales = read_cache(table, rt.CalibrationAlgoType.ENTROPY_CALIBRATION_2)
    assert "input_0" in scales and all(s > 0 for s in scales.values())
    assert conv.report["engines"][0]["calibration_batches"] == len(CALIB)
    ref = run_graph(gd, outs, {"x0:0": X})[0]
    got = run_graph(int8, outs, {"x0:0": X}, converted=True)[0]
    err = rel_l2(got, ref)
    assert 1e-5 < err < 0.05, err          # quantized (not FP32), and close
    if dynamic:
        ctx = next(iter(engine_runners()[-1].cache.values()))
        precisions = [li.precision for li in ctx.engine.layers]
    else:
        precisions = [li.precision for li in
                      rt.Runtime().deserialize_cuda_engine(stored_plan(node)).layers]
        assert conv.report["engines"][0]["layer_precisions"]["INT8"] == 3
    assert precisions.count(rt.DataType.INT8) == 3      # two convolutions and the max pool


@pytest.mark.parametrize("algorithm, header", [("minmax", b"MinMaxCalibration"),
                                               ("percentile", b"PercentileCalibration")])
def test_calibration_algorithm_is_selectable(algorithm, header):
    gd, outs = build_graph(cnn, [X.shape])
    conv = converter(gd, calibration_algorithm=algorithm)
    conv.convert()
    int8 = conv.calibrate(outs, len(CALIB), feed_dict_fn=feeds())
    assert engine_nodes(int8)[0].attr["calibration_table"].s.split(b"\n")[0].endswith(header)
    assert conv.report["calibration"]["algorithm"] == algorithm
    got = run_graph(int8, outs, {"x0:0": X}, converted=True)[0]
    assert rel_l2(got, run_graph(gd, outs, {"x0:0": X})[0]) < 0.05


def test_saved_int8_pb_is_self_contained(tmp_path):
    gd, outs = build_graph(cnn, [X.shape])
    conv = converter(gd, is_dynamic_op=True)
    conv.convert()
    int8 = conv.calibrate(outs, len(CALIB), feed_dict_fn=feeds())
    before = run_graph(int8, outs, {"x0:0": X}, converted=True)[0]
    path = conv.save(str(tmp_path))
    loaded = tf.compat.v1.GraphDef.FromString(open(path, "rb").read())
    np.testing.assert_array_equal(run_graph(loaded, outs, {"x0:0": X}, converted=True)[0],
                                  before)


def test_calibrate_with_input_map_fn():
    gd, outs = build_graph(cnn, [X.shape])
    conv = converter(gd)
    conv.convert()
    int8 = conv.calibrate(outs, 2, input_map_fn=lambda: {"x0:0": tf.constant(CALIB[0])})
    got = run_graph(int8, outs, {"x0:0": CALIB[0]}, converted=True)[0]
    assert rel_l2(got, run_graph(gd, outs, {"x0:0": CALIB[0]})[0]) < 0.05


def test_uncalibrated_int8_graph_runs_fp32_and_says_so(caplog):
    gd, outs = build_graph(cnn, [X.shape])
    conv = converter(gd, is_dynamic_op=True)
    pending = conv.convert()
    with caplog.at_level(logging.WARNING, logger="tf_integration.engine_node"):
        got = run_graph(pending, outs, {"x0:0": X}, converted=True)[0]
    assert "not calibrated yet" in caplog.text
    assert rel_l2(got, run_graph(gd, outs, {"x0:0": X})[0]) <= 1e-5


def test_int8_without_calibration_or_qdq_falls_back_to_fp16():
    gd, outs = build_graph(cnn, [X.shape])
    conv = converter(gd, use_calibration=False)
    with pytest.warns(UserWarning, match="built in FP16"):
        out = conv.convert()
    rep = conv.report["engines"][0]
    assert rep["precision"] == "FP16" and "INT8" not in rep["layer_precisions"]
    assert rel_l2(run_graph(out, outs, {"x0:0": X}, converted=True)[0],
                  run_graph(gd, outs, {"x0:0": X})[0]) < 1e-2


def test_an_int8_build_without_ranges_is_fp16(caplog):
    gd, _ = build_graph(cnn, [X.shape])
    conv = converter(gd, precision_mode="FP32")
    conv.convert()
    seg = tf.compat.v1.GraphDef.FromString(engine_nodes(conv.converted_graph_def)[0]
                                           .attr["segment_graph"].s)
    _, network = segment_to_engine.build_network(seg)
    with caplog.at_level(logging.WARNING, logger="tf_integration.segment_to_engine"):
        plan = segment_to_engine.build_network_plan(network, "INT8")
    assert "built in FP16" in caplog.text
    assert "INT8" not in segment_to_engine.engine_precision_histogram(plan)
    with pytest.raises(ConversionError, match="'FP8'; expected one of FP32, FP16, INT8"):
        segment_to_engine.build_plan(seg, "FP8")


# -- errors ------------------------------------------------------------------------------

def test_calibrate_misuse_raises_with_the_fix():
    gd, outs = build_graph(cnn, [X.shape])
    conv = converter(gd)
    with pytest.raises(TFIntegrationError, match="calibrate\\(\\) before convert"):
        conv.calibrate(outs, 1, feed_dict_fn=feeds())
    conv.convert()
    for kw, match in ((dict(), "exactly one of feed_dict_fn and input_map_fn"),
                      (dict(feed_dict_fn=feeds(), input_map_fn=dict), "'both'"),
                      (dict(feed_dict_fn=feeds(), num_runs=0), "num_runs"),
                      (dict(input_map_fn=lambda: {"x0:0": CALIB[0]}), "tf.Tensor"),
                      (dict(input_map_fn=lambda: {0: tf.constant(CALIB[0])}), "tensor name")):
        kw = dict(dict(num_runs=1), **kw)
        with pytest.raises(ConverterArgumentError, match=match):
            conv.calibrate(outs, **kw)
    with pytest.raises(rt.CalibrationError, match="(?s)received no inputs.*fetch the model's"):
        conv.calibrate(["x0:0"], 1, feed_dict_fn=feeds())
    conv.calibrate(outs, 1, feed_dict_fn=feeds())
    with pytest.raises(TFIntegrationError, match="already called"):
        conv.calibrate(outs, 1, feed_dict_fn=feeds())
    for kw in (dict(precision_mode="FP16"), dict(use_calibration=False)):
        other = converter(gd, **kw)
        with pytest.warns(UserWarning) if kw.get("use_calibration") is False else contextlib.nullcontext():
            other.convert()
        with pytest.raises(TFIntegrationError, match="needs precision_mode='INT8' and "
                                                     "use_calibration=True"):
            other.calibrate(outs, 1, feed_dict_fn=feeds())


def test_bad_algorithm_and_bad_tables_are_named():
    gd, _ = build_graph(cnn, [X.shape])
    with pytest.raises(ConverterArgumentError, match="'entropy', 'minmax', 'percentile'"):
        converter(gd, calibration_algorithm="kl")
    with pytest.raises(TFIntegrationError, match="header 'TRT-8601-Legacy'"):
        TableCalibrator(b"TRT-8601-Legacy\nx: 3c000000\n")
    table = TableCalibrator(b"TRT-8601-MinMaxCalibration\nx: 3c000000\n")
    assert table.get_algorithm() == rt.CalibrationAlgoType.MINMAX_CALIBRATION
    assert table.get_batch(["x"]) is None
    with pytest.raises(rt.CalibrationError, match="CupyrtEngine_0 received no inputs"):
        conv = converter(gd)
        calibrate_graph(conv.convert(), {})


def test_exported_int8_engine_rebuilds_from_its_calibration_cache(tmp_path):
    from tf_integration import export_engines
    from tf_integration.export import load_manifest

    gd, outs = build_graph(cnn, [X.shape])
    conv = converter(gd, is_dynamic_op=True)
    conv.convert()
    int8 = conv.calibrate(outs, len(CALIB), feed_dict_fn=feeds())
    export_engines(int8, str(tmp_path))
    (entry,) = load_manifest(str(tmp_path))["engines"]
    cache = tmp_path / entry["calibration_cache"]
    assert cache.read_bytes() == engine_nodes(int8)[0].attr["calibration_table"].s
    net = rt.deserialize_network((tmp_path / entry["file"]).read_bytes())
    builder = rt.Builder()
    config = builder.create_builder_config()
    config.set_flag(rt.BuilderFlag.INT8)
    config.set_flag(rt.BuilderFlag.FP16)      # as the converter builds INT8 (FP16 fallback)
    config.int8_calibrator = rt.EntropyCalibrator2([], cache_file=str(cache))  # no data: cache
    eng = rt.Runtime().deserialize_cuda_engine(builder.build_serialized_network(net, config))
    assert [li.precision for li in eng.layers].count(rt.DataType.INT8) == 3
    got = eng.create_execution_context().execute({"input_0": X})["output_0"]
    ref = run_graph(int8, outs, {"x0:0": X}, converted=True)[0]
    assert rel_l2(got, ref) < 1e-6
