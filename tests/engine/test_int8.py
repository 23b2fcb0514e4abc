"""INT8 execution: the quantization contract, bit-exact integer paths, INT8
precision assignment and storage, whole networks with each calibrator, and the
per-layer precision debugger."""
import logging

import numpy as np
import pytest

import engine as rt
from engine import quantization as q8
from engine.testing import fma_f32_exact, rel_l2
from kernels import quantize as Q

RNG = np.random.default_rng(5)


def randn(*shape, scale=1.0):
    return (scale * RNG.standard_normal(shape)).astype(np.float32)


# -- the contract -----------------------------------------------------------------

def test_quantize_rounds_half_to_even_and_saturates():
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 126.5, 300.0, -300.0, -128.4], np.float32)
    np.testing.assert_array_equal(Q.quantize(x, 1.0), [0, 2, 2, 0, -2, 126, 127, -128, -128])
    assert Q.quantize(x, 1.0).dtype == np.int8
    np.testing.assert_array_equal(Q.dequantize(np.array([-128, 3], np.int8), 0.5), [-64.0, 1.5])


def test_weights_per_output_channel():
    w = randn(4, 3, 2, 2)
    w[2] = 0.0
    q, s = Q.quantize_weights(w)
    assert q.dtype == np.int8 and s.shape == (4,) and s[2] == 1.0 and not q[2].any()
    for k in (0, 1, 3):
        assert np.abs(q[k]).max() == 127
        assert s[k] == np.float32(np.abs(w[k]).max()) / np.float32(127)
        assert np.abs(q[k] * s[k] - w[k]).max() <= s[k] / 2 * (1 + 1e-6)


@pytest.mark.parametrize("stride, pre, dilation, groups", [
    ((1, 1), (0, 0), (1, 1), 1), ((2, 1), (1, 2), (1, 1), 1), ((1, 1), (2, 2), (2, 2), 2),
    ((1, 1), (1, 1), (1, 1), 4)])
def test_conv_accumulators_are_bit_exact_against_a_direct_loop(stride, pre, dilation, groups):
    x = RNG.integers(-128, 128, size=(2, 4, 7, 6)).astype(np.int8)
    w = RNG.integers(-127, 128, size=(8, 4 // groups, 3, 3)).astype(np.int8)
    out = [(i + 2 * p - d * 2 - 1) // s + 1 for i, p, d, s in zip((7, 6), pre, dilation, stride)]
    acc = Q.conv_int8(x, w, stride, pre, out, dilation, groups)
    np.testing.assert_array_equal(acc, Q.conv_int8_direct(x, w, stride, pre, out, dilation, groups))


def test_gemm_accumulators_are_exact():
    x = RNG.integers(-128, 128, size=(5, 300)).astype(np.int8)
    w = RNG.integers(-127, 128, size=(7, 300)).astype(np.int8)
    np.testing.assert_array_equal(Q.gemm_int8(x, w), x.astype(np.int64) @ w.astype(np.int64).T)


# -- networks -------------------------------------------------------------------------

def cnn(builder, residual=False):
    """conv-relu-conv-maxpool-shuffle-FC (optionally a residual add after conv 2)."""
    net = builder.create_network()
    x = net.add_input("x", rt.float32, (-1, 3, 10, 10))
    c1 = net.add_convolution_nd(x, 8, (3, 3), kernel=randn(8, 3, 3, 3, scale=0.3), bias=randn(8, scale=0.1))
    c1.padding_nd = (1, 1)
    h = net.add_activation(c1.get_output(0), rt.ActivationType.RELU).get_output(0)
    c2 = net.add_convolution_nd(h, 8, (3, 3), kernel=randn(8, 8, 3, 3, scale=0.2), bias=randn(8, scale=0.1))
    c2.padding_nd = (1, 1)
    h = c2.get_output(0)
    if residual:
        h = net.add_elementwise(h, c1.get_output(0), rt.ElementWiseOperation.SUM).get_output(0)
    p = net.add_pooling_nd(h, rt.PoolingType.MAX, (2, 2))
    p.stride_nd = (2, 2)
    s = net.add_shuffle(p.get_output(0))
    s.reshape_dims = (-1, 8 * 5 * 5)
    fc = net.add_fully_connected(s.get_output(0), 10, randn(10, 200, scale=0.1), randn(10))
    net.mark_output(fc.get_output(0))
    return net


def build(builder, net, calibrator=None, flags=()):
    cfg = builder.create_builder_config()
    cfg.backend = "numpy"
    for f in flags:
        cfg.set_flag(f)
    if calibrator is not None or flags:
        cfg.int8_calibrator = calibrator
    return rt.Runtime(backend="numpy").deserialize_cuda_engine(
        builder.build_serialized_network(net, cfg))


def run(engine, x):
    return engine.create_execution_context().execute({"x": x})[engine.output_names[0]]


CALIB = [randn(16, 3, 10, 10) for _ in range(3)]
TEST = randn(200, 3, 10, 10)
INT8 = (rt.BuilderFlag.INT8,)


@pytest.mark.parametrize("make", [rt.EntropyCalibrator2, rt.MinMaxCalibrator, rt.PercentileCalibrator])
def test_cnn_top1_agrees_with_fp32_for_each_calibrator(make):
    b = rt.Builder()
    net = cnn(b)
    ref = run(build(b, net), TEST)
    e = build(b, net, make(CALIB), INT8)
    assert [i.precision for i in e.layers] == [rt.DataType.INT8] * 5
    got = run(e, TEST)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.95
    assert rel_l2(got, ref) < 0.1


def test_int8_tensors_flow_between_int8_layers_and_outputs_are_float():
    b = rt.Builder()
    e = build(b, cnn(b), rt.MinMaxCalibrator(CALIB), INT8)
    stored = {t.name for layer in e.network._layers for t in layer._outputs
              if e._storage_dtype(layer, t) == rt.DataType.INT8}
    assert len(stored) == 4 and e.output_names[0] not in stored
    assert run(e, TEST[:3]).dtype == np.float32


def manual_int8(net_engine, x):
    """The same network computed independently: int64 direct loops, the
    contract's float32 epilogue written out by hand (fused multiply-adds through exact
    rationals; into ReLU'd int8 codes the output scale folded into the coefficients)."""
    net = net_engine.network
    layers = net._layers

    def scale(t):
        return np.float32(max(abs(t.dynamic_range[0]), abs(t.dynamic_range[1]))) / np.float32(127)

    def quant(v, s):
        return np.clip(np.rint(v.astype(np.float32) * (np.float32(1) / s)), -128, 127).astype(np.int64)

    q = quant(x, scale(net._inputs[0]))
    for layer in layers:
        t_in, t_out = layer._inputs[0], layer._outputs[0]
        last = t_out.is_network_output
        if layer.layer_type == rt.LayerType.CONVOLUTION:
            wq, sw = Q.quantize_weights(layer.kernel)
            acc = Q.conv_int8_direct(q, wq, (1, 1), (1, 1), q.shape[2:], (1, 1), 1)
            inv = np.float32(1) / scale(t_out)              # ReLU or none: the folded form
            a = ((scale(t_in) * sw) * inv).reshape(1, -1, 1, 1)
            b = (layer.bias.astype(np.float32) * inv).reshape(1, -1, 1, 1)
            y = fma_f32_exact(acc.astype(np.float32), a, b)
            if layer.post_activation is not None:
                y = np.maximum(y, 0)
            q = np.clip(np.rint(y), -128, 127).astype(np.int64)
        elif layer.layer_type == rt.LayerType.POOLING:
            n, c, h, w = q.shape
            q = q.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
        elif layer.layer_type == rt.LayerType.SHUFFLE:
            q = q.reshape(q.shape[0], -1)
        else:
            wq, sw = Q.quantize_weights(layer.kernel)
            acc = q @ wq.astype(np.int64).T
            y = fma_f32_exact(acc.astype(np.float32), scale(t_in) * sw, layer.bias)
            assert last
            return y


def test_whole_int8_network_is_bit_exact_against_an_independent_emulation():
    b = rt.Builder()
    e = build(b, cnn(b), rt.PercentileCalibrator(CALIB), INT8)
    np.testing.assert_array_equal(run(e, TEST[:4]), manual_int8(e, TEST[:4]))


def test_int8_conv_with_residual_within_quantization_error():
    b = rt.Builder()
    net = cnn(b, residual=True)
    ref = run(build(b, net), TEST)
    e = build(b, net, rt.MinMaxCalibrator(CALIB), INT8)
    conv2 = [layer for layer in e.network._layers if layer.num_inputs == 2]
    assert conv2 and e._precision[conv2[0].name] == rt.DataType.INT8
    assert rel_l2(run(e, TEST), ref) < 0.05


def test_user_ranges_without_calibrator_and_missing_ranges():
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (2, 6))
    fc = net.add_fully_connected(x, 4, randn(4, 6), randn(4))
    sm = net.add_softmax(fc.get_output(0))
    net.mark_output(sm.get_output(0))
    with pytest.raises(rt.BuildError, match="neither config.int8_calibrator nor any tensor dynamic range"):
        build(b, net, None, INT8)
    x.set_dynamic_range(-3, 3)                  # explicit quantization: ranges only
    e = build(b, net, None, INT8)
    assert e._precision[fc.name] == rt.DataType.FLOAT    # output range unknown: FP32
    fc.get_output(0).set_dynamic_range(-8, 8)
    e = build(b, net, None, INT8 + (rt.BuilderFlag.FP16,))
    assert e._precision[fc.name] == rt.DataType.INT8
    assert e._precision[sm.name] == rt.DataType.HALF       # no INT8 kernel: FP16 fallback
    xv = np.clip(randn(2, 6), -3, 3)
    ref = run(build(b, net), xv)
    assert rel_l2(run(e, xv), ref) < 0.05


def test_precision_constraints_keep_layers_out_of_int8(caplog):
    b = rt.Builder()
    net = cnn(b)
    first = net.get_layer(0)
    first.precision = rt.DataType.FLOAT
    softmax_free = build(b, net, rt.MinMaxCalibrator(CALIB), INT8)
    assert softmax_free._precision[first.name] == rt.DataType.INT8     # not obeyed without the flag
    e = build(b, net, rt.MinMaxCalibrator(CALIB), INT8 + (rt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS,))
    assert e._precision[first.name] == rt.DataType.FLOAT
    assert run(e, TEST[:2]).shape == (2, 10)
    # INT8 asked of a layer with no INT8 kernel: a warning and the fallback
    net2 = b.create_network()
    x = net2.add_input("x", rt.float32, (2, 6))
    sm = net2.add_softmax(x)
    sm.precision = rt.DataType.INT8
    net2.mark_output(sm.get_output(0))
    x.set_dynamic_range(-1, 1)
    with caplog.at_level(logging.WARNING):
        e = build(b, net2, None, INT8 + (rt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS,))
    assert e._precision[sm.name] == rt.DataType.FLOAT and "no INT8 kernel" in caplog.text


def test_int8_plan_metadata_lists_int8_layers():
    b = rt.Builder()
    e = build(b, cnn(b), rt.MinMaxCalibrator(CALIB), INT8)
    assert len(e.meta["int8_layers"]) == 5 and e.meta["precisions"][e.meta["int8_layers"][0]] == "INT8"


# -- the precision debugger ---------------------------------------------------------------

def test_debug_precision_ranks_layers_and_keeps_the_worst_out():
    b = rt.Builder()
    net = cnn(b)
    feeds = {"x": TEST[:32]}
    rep = rt.debug_precision(net, rt.MinMaxCalibrator(CALIB), feeds)
    errs = [r[2] for r in rep.rows]
    assert len(rep.rows) == 5 and errs == sorted(errs, reverse=True) and errs[-1] >= 0
    table = rt.precision_table(rep)
    assert rep.rows[0][0] in table.splitlines()[1] and "outputs:" in table
    budget = rep.max_output_error / 3
    kept, final = rt.keep_worst_in_fp16(net, rep, budget)
    assert kept and final.max_output_error <= budget
    assert all(net.get_layer(i).precision == rt.DataType.HALF
               for i in range(net.num_layers) if net.get_layer(i).name in kept)
    by_range = rt.debug_precision(net, {"x": (-4.0, 4.0)}, feeds, metric="max_abs")
    assert by_range.metric == "max_abs"


def test_debug_precision_errors():
    b = rt.Builder()
    net = cnn(b)
    with pytest.raises(rt.BuildError, match="metric 'l1'; valid: rel_l2, max_abs"):
        rt.debug_precision(net, {"x": 1.0}, {"x": TEST[:2]}, metric="l1")
    with pytest.raises(rt.BuildError, match="takes a Calibrator or a dict"):
        rt.debug_precision(net, [1.0], {"x": TEST[:2]})
    rep = rt.debug_precision(net, rt.MinMaxCalibrator(CALIB), {"x": TEST[:2]})
    with pytest.raises(rt.BuildError, match="positive error bound"):
        rt.keep_worst_in_fp16(net, rep, 0)
