"""Explicit quantization: Q/DQ nodes (QuantizeAndDequantizeV2/V3/V4, FakeQuant*) pass
their value through and put their constant range on the engine tensor, so INT8
engines need no calibration; unsupported forms stay in TensorFlow with a reason."""
import numpy as np
import pytest
import tensorflow as tf

import engine as rt
from tf_integration import TrtGraphConverter
from tf_integration.engine_node import ENGINE_OP
from tf_integration.engine_storage import stored_network
from tfi_helpers import build_graph, rel_l2, run_graph

RNG = np.random.default_rng(12)
W1 = (0.3 * RNG.standard_normal((3, 3, 3, 8))).astype(np.float32)
W2 = (0.2 * RNG.standard_normal((3, 3, 8, 8))).astype(np.float32)
X = RNG.standard_normal((2, 8, 8, 3)).astype(np.float32)

QDQ = {
    "FakeQuantWithMinMaxVars": lambda x, lo, hi: tf.quantization.fake_quant_with_min_max_vars(
        x, lo, hi, num_bits=8),
    "FakeQuantWithMinMaxArgs": lambda x, lo, hi: tf.quantization.fake_quant_with_min_max_args(
        x, min=lo, max=hi, num_bits=8),
    "QuantizeAndDequantizeV2": lambda x, lo, hi: tf.raw_ops.QuantizeAndDequantizeV2(
        input=x, input_min=lo, input_max=hi, range_given=True),
    "QuantizeAndDequantizeV3": lambda x, lo, hi: tf.raw_ops.QuantizeAndDequantizeV3(
        input=x, input_min=lo, input_max=hi, num_bits=8, range_given=True),
    "QuantizeAndDequantizeV4": lambda x, lo, hi: tf.raw_ops.QuantizeAndDequantizeV4(
        input=x, input_min=lo, input_max=hi, range_given=True),
}


def qat_cnn(qdq, amax=4.0):
    """conv -> relu -> conv -> relu -> max pool, each tensor a conv reads or writes quantized."""
    def body(x):
        h = qdq(x, -amax, amax)
        h = qdq(tf.nn.relu(tf.nn.conv2d(h, W1, 1, "SAME") + 0.1), 0.0, amax)
        h = qdq(tf.nn.relu(tf.nn.conv2d(h, W2, 1, "SAME")), 0.0, amax)
        return tf.nn.max_pool2d(h, 2, 2, "VALID")
    return body


def convert(gd, **kw):
    kw = dict(dict(nodes_denylist=["out0"], minimum_segment_size=1, max_batch_size=2,
                   precision_mode="INT8", use_calibration=False), **kw)
    conv = TrtGraphConverter(input_graph_def=gd, **kw)
    return conv, conv.convert()


@pytest.mark.parametrize("op", sorted(QDQ))
def test_qdq_ranges_make_int8_engines_without_calibration(op):
    gd, outs = build_graph(qat_cnn(QDQ[op]), [X.shape])
    assert any(n.op == op for n in gd.node)
    conv, out = convert(gd)
    rep = conv.report["engines"]
    assert len(rep) == 1 and rep[0]["ops"][op] == 3 and rep[0]["precision"] == "INT8"
    assert rep[0]["layer_precisions"]["INT8"] == 3        # two convolutions and the max pool
    ref = run_graph(gd, outs, {"x0:0": X})[0]
    got = run_graph(out, outs, {"x0:0": X}, converted=True)[0]
    assert rel_l2(got, ref) < 0.03, rel_l2(got, ref)


def test_qdq_ranges_reach_the_stored_network_of_dynamic_engines():
    gd, outs = build_graph(qat_cnn(QDQ["FakeQuantWithMinMaxVars"]), [X.shape])
    _, out = convert(gd, is_dynamic_op=True)
    (node,) = [n for n in out.node if n.op == ENGINE_OP]
    net = rt.deserialize_network(stored_network(node))
    ranges = sorted(t.dynamic_range for t in [net.get_input(0)] +
                    [o for i in range(net.num_layers) for o in net.get_layer(i)._outputs]
                    if t.dynamic_range is not None)
    # the input, its NCHW transpose (same values, same range) and the two ReLU outputs
    assert ranges == [(-4.0, 4.0), (-4.0, 4.0), (0.0, 4.0), (0.0, 4.0)]
    got = run_graph(out, outs, {"x0:0": X}, converted=True)[0]
    assert rel_l2(got, run_graph(gd, outs, {"x0:0": X})[0]) < 0.03


def test_qdq_in_fp32_engines_is_an_identity():
    # a range wide enough that TF never saturates: FP32 engines neither round nor clip
    gd, outs = build_graph(qat_cnn(QDQ["QuantizeAndDequantizeV4"], amax=8.0), [X.shape])
    conv, out = convert(gd, precision_mode="FP32")
    assert "INT8" not in conv.report["engines"][0]["layer_precisions"]
    got = run_graph(out, outs, {"x0:0": X}, converted=True)[0]
    # TF rounds to the 8-bit grid, the FP32 engine does not: a few steps apart at most
    assert rel_l2(got, run_graph(gd, outs, {"x0:0": X})[0]) < 0.03


@pytest.mark.parametrize("make, detail", [
    (lambda x: tf.raw_ops.QuantizeAndDequantizeV2(input=x, input_min=-1.0, input_max=1.0,
                                                  range_given=False), "range_given=False"),
    (lambda x: tf.raw_ops.QuantizeAndDequantizeV4(input=x, input_min=[-1.0] * 3,
                                                  input_max=[1.0] * 3, range_given=True,
                                                  axis=3), "axis=3: per-channel"),
    (lambda x: tf.quantization.fake_quant_with_min_max_vars(x, -1.0, 1.0, num_bits=4),
     "num_bits=4"),
    (lambda x: tf.raw_ops.QuantizeAndDequantizeV3(input=x, input_min=-1.0, input_max=1.0,
                                                  num_bits=tf.reduce_max(tf.cast(x, tf.int32)),
                                                  range_given=True), "num_bits=None"),
    (lambda x: tf.quantization.fake_quant_with_min_max_vars(x, 2.0, 1.0), "min 2.0 >= max 1.0"),
    (lambda x: tf.quantization.fake_quant_with_min_max_vars(x, tf.reduce_min(x), 1.0),
     "min (input 1) is computed"),
    (lambda x: tf.quantization.fake_quant_with_min_max_vars_per_channel(
        x, [-1.0] * 3, [1.0] * 3), "op not supported"),
])
def test_unsupported_qdq_stays_in_tensorflow_with_the_reason(make, detail):
    def body(x):
        return tf.nn.relu(make(tf.nn.relu(x) - 0.5))
    gd, _ = build_graph(body, [X.shape])
    qdq = [n.name for n in gd.node if "Quant" in n.op]
    conv, _ = convert(gd, precision_mode="FP32")
    left = conv.report["left_to_tensorflow"]
    assert detail in f"{left[qdq[0]]['kind']}: {left[qdq[0]]['detail']}"


def test_qdq_graph_without_calibration_does_not_warn_about_fp16(recwarn):
    gd, _ = build_graph(qat_cnn(QDQ["FakeQuantWithMinMaxArgs"]), [X.shape])
    convert(gd)
    assert not [w for w in recwarn if "FP16" in str(w.message)]
