"""engine/gpu/cudnn_tactics.py without a GPU: which layers the cuDNN tactic declines
and why, the switch, and the spec it derives from a layer."""
import numpy as np

import engine as rt
from engine.gpu import cudnn_tactics as CT
from kernels.gpu import cudnn_graphs as G


def conv_layer(act=None, residual=False, groups=1, pad=(1, 1), stride=(1, 1)):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 8, 10, 12))
    w = np.random.default_rng(0).standard_normal((8, 8 // groups, 3, 3)).astype(np.float32)
    conv = net.add_convolution_nd(x, 8, (3, 3), kernel=w)
    conv.num_groups = groups
    conv.padding_nd, conv.stride_nd = pad, stride
    if act is not None:
        conv.post_activation = act
    if residual:
        conv.set_input(1, x)
    net.mark_output(conv.get_output(0))
    return conv


def test_spec_carries_geometry_activation_and_residual():
    layer = conv_layer(act=rt.ActivationType.CLIP, residual=True)
    layer.post_alpha, layer.post_beta = 0.0, 6.0
    s = CT.conv_spec(layer, (2, 8, 10, 12), np.float16)
    assert (s.n, s.c, s.h, s.w, s.k, s.r, s.s) == (2, 8, 10, 12, 8, 3, 3)
    assert s.pre_padding == (1, 1) and s.post_padding == (1, 1) and s.out_hw() == (10, 12)
    assert (s.act, s.alpha, s.beta, s.residual, s.out_dtype) == ("CLIP", 0.0, 6.0, True, "float16")
    s2 = CT.conv_spec(conv_layer(stride=(2, 2)), (2, 8, 10, 12), np.float32)
    assert s2.out_hw() == (5, 6) and s2.act is None and not s2.residual and s2.out_dtype == "float32"


def test_declines_what_it_cannot_run_and_says_why(monkeypatch):
    t = CT.ConvCudnn()
    shapes, dtypes = [(2, 8, 10, 12)], ["float32"]
    assert "FP16" in t.supports(conv_layer(), shapes, dtypes, rt.DataType.FLOAT)
    assert "grouped" in t.supports(conv_layer(groups=2), shapes, dtypes, rt.DataType.HALF)
    assert "rank-4" in t.supports(conv_layer(), [(2, 8, 10)], dtypes, rt.DataType.HALF)
    assert "multiples of 8" in t.supports(conv_layer(), [(2, 3, 10, 12)], dtypes, rt.DataType.HALF)
    monkeypatch.setenv("CUPYRT_CUDNN", "0")
    assert "CUPYRT_CUDNN=0" in t.supports(conv_layer(), shapes, dtypes, rt.DataType.HALF)
    monkeypatch.delenv("CUPYRT_CUDNN")
    reason = t.supports(conv_layer(act=rt.ActivationType.GELU_TANH), shapes, dtypes, rt.DataType.HALF)
    if G.available():
        assert "GELU_TANH" in reason
        assert t.supports(conv_layer(act=rt.ActivationType.RELU), shapes, dtypes, rt.DataType.HALF) is None
    else:
        assert "cupyrt[cudnn]" in reason


def test_switch_defaults_on_and_joins_the_timing_cache_key():
    from engine.gpu.timing import kernel_switches
    assert CT.enabled({}) and CT.enabled({"CUPYRT_CUDNN": "1"}) and not CT.enabled({"CUPYRT_CUDNN": "0"})
    assert kernel_switches({"CUPYRT_CUDNN": "0"}) == {"CUPYRT_CUDNN": False}
    assert kernel_switches({}) == {}
