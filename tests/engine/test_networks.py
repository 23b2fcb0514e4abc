"""Whole networks built through the API, checked end to end against TensorFlow
ops computing the same function from the same weights."""
import numpy as np
import pytest

import engine as rt
from engine.testing import rel_l2

tf = pytest.importorskip("tensorflow")
RNG = np.random.default_rng(7)


def randn(*shape, scale=1.0):
    return (scale * RNG.standard_normal(shape)).astype(np.float32)


class ResNetWeights:
    """conv-bn-relu stem, one residual block, max pool, global avg pool, FC, softmax."""

    def __init__(self, c=3, k=8, classes=10):
        self.stem_w, self.stem_b = randn(k, c, 3, 3, scale=0.3), randn(k, scale=0.1)
        self.bn = dict(gamma=1 + randn(k, scale=0.1), beta=randn(k, scale=0.1),
                       mean=randn(k, scale=0.1), var=0.5 + np.abs(randn(k)), eps=1e-3)
        self.b1_w, self.b2_w = randn(k, k, 3, 3, scale=0.2), randn(k, k, 3, 3, scale=0.2)
        self.b1_b, self.b2_b = randn(k, scale=0.1), randn(k, scale=0.1)
        self.fc_w, self.fc_b = randn(classes, k, scale=0.5), randn(classes, scale=0.1)


def build_resnet(w, fp16=False):
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("image", rt.float32, (-1, 3, 16, 16))
    stem = net.add_convolution_nd(x, 8, (3, 3), kernel=w.stem_w, bias=w.stem_b)
    stem.padding_nd = (1, 1)
    bn = w.bn
    s = bn["gamma"] / np.sqrt(bn["var"] + bn["eps"])
    h = net.add_scale(stem.get_output(0), rt.ScaleMode.CHANNEL, bn["beta"] - bn["mean"] * s, s,
                      None).get_output(0)
    h = net.add_activation(h, rt.ActivationType.RELU).get_output(0)
    c1 = net.add_convolution_nd(h, 8, (3, 3), kernel=w.b1_w, bias=w.b1_b)
    c1.padding_nd = (1, 1)
    r = net.add_activation(c1.get_output(0), rt.ActivationType.RELU).get_output(0)
    c2 = net.add_convolution_nd(r, 8, (3, 3), kernel=w.b2_w, bias=w.b2_b)
    c2.padding_nd = (1, 1)
    h = net.add_elementwise(c2.get_output(0), h, rt.ElementWiseOperation.SUM).get_output(0)
    h = net.add_activation(h, rt.ActivationType.RELU).get_output(0)
    p = net.add_pooling_nd(h, rt.PoolingType.MAX, (2, 2))
    p.stride_nd = (2, 2)
    g = net.add_reduce(p.get_output(0), rt.ReduceOperation.AVG, 0b1100, True).get_output(0)
    fc = net.add_fully_connected(g, 10, w.fc_w, w.fc_b).get_output(0)
    sm = net.add_softmax(fc)
    sm.axes = 1 << 1
    y = sm.get_output(0)
    y.name = "prob"
    net.mark_output(y)
    cfg = b.create_builder_config()
    if fp16:
        cfg.set_flag(rt.BuilderFlag.FP16)
    return net, b.build_engine(net, cfg)


def tf_resnet(w, x_nchw):
    x = tf.constant(x_nchw.transpose(0, 2, 3, 1))

    def conv(t, k, bias):
        return tf.nn.conv2d(t, k.transpose(2, 3, 1, 0), 1, "SAME") + bias

    bn = w.bn
    h = conv(x, w.stem_w, w.stem_b)
    h = tf.nn.relu(tf.nn.batch_normalization(h, bn["mean"], bn["var"], bn["beta"], bn["gamma"],
                                             bn["eps"]))
    r = tf.nn.relu(conv(h, w.b1_w, w.b1_b))
    h = tf.nn.relu(conv(r, w.b2_w, w.b2_b) + h)
    h = tf.nn.max_pool2d(h, 2, 2, "VALID")
    g = tf.reduce_mean(h, axis=[1, 2])
    return tf.nn.softmax(tf.matmul(g, w.fc_w.T) + w.fc_b).numpy()


def test_resnet_style_network_matches_tensorflow():
    w = ResNetWeights()
    net, engine = build_resnet(w)
    types = [i.type for i in engine.layers]
    # BN folded, both activations and the residual add fused into the convolutions
    assert types.count(rt.LayerType.CONVOLUTION) == 3
    assert rt.LayerType.SCALE not in types and rt.LayerType.ELEMENTWISE not in types
    assert rt.LayerType.ACTIVATION not in types
    x = randn(4, 3, 16, 16)
    y = engine.create_execution_context().execute({"image": x})["prob"]
    ref = tf_resnet(w, x)
    assert y.shape == (4, 10, 1, 1)
    assert rel_l2(y.reshape(4, 10), ref) <= 1e-5


def test_resnet_style_network_fp16_within_fp16_tolerance():
    w = ResNetWeights()
    _, engine = build_resnet(w, fp16=True)
    x = randn(2, 3, 16, 16)
    y = engine.create_execution_context().execute({"image": x})["prob"]
    assert rel_l2(y.reshape(2, 10), tf_resnet(w, x)) <= 1e-2


def test_resnet_plan_round_trip_gives_identical_results():
    w = ResNetWeights()
    net, engine = build_resnet(w)
    b = rt.Builder()
    plan = b.build_serialized_network(net, b.create_builder_config())
    again = rt.Runtime().deserialize_cuda_engine(plan)
    x = randn(3, 3, 16, 16)
    np.testing.assert_array_equal(again.create_execution_context().execute({"image": x})["prob"],
                                  engine.create_execution_context().execute({"image": x})["prob"])


def test_lstm_network_matches_keras():
    n, seq, din, hidden = 3, 7, 5, 6
    keras = tf.keras
    inp = keras.Input((seq, din))
    out = keras.layers.LSTM(hidden, return_sequences=True)(inp)
    model = keras.Model(inp, out)
    kernel, recurrent, bias = [v.numpy() if hasattr(v, "numpy") else v for v in model.layers[1].get_weights()]
    # Keras gate order i, f, c, o along the last axis
    gates = {"i": rt.RNNGateType.INPUT, "f": rt.RNNGateType.FORGET, "c": rt.RNNGateType.CELL,
             "o": rt.RNNGateType.OUTPUT}
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("seq", rt.float32, (-1, seq, din))
    rnn = net.add_rnn_v2(x, 1, hidden, seq, rt.RNNOperation.LSTM)
    for j, g in enumerate("ifco"):
        sl = slice(j * hidden, (j + 1) * hidden)
        rnn.set_weights_for_gate(0, gates[g], True, kernel[:, sl].T.copy())
        rnn.set_weights_for_gate(0, gates[g], False, recurrent[:, sl].T.copy())
        rnn.set_bias_for_gate(0, gates[g], True, bias[sl].copy())
        rnn.set_bias_for_gate(0, gates[g], False, np.zeros(hidden, np.float32))
    y = rnn.get_output(0)
    y.name = "hidden_seq"
    net.mark_output(y)
    engine = b.build_engine(net, b.create_builder_config())
    xs = randn(n, seq, din)
    got = engine.create_execution_context().execute({"seq": xs})["hidden_seq"]
    assert rel_l2(got, model(xs).numpy()) <= 1e-5
