"""engine/gpu/cudnn_s2d_tactics.py without a GPU: which convolutions conv.cudnn_s2d
declines and why, the stride-1 spec it builds for ResNet's stem, that it is a candidate
beside conv.cudnn, and that the network-wide plan prefetch queues its spec."""
import numpy as np
import pytest

import engine as rt
from engine.gpu import cudnn_s2d_tactics as S2D
from engine.gpu import cudnn_tactics as CT
from kernels.gpu import cudnn_graphs as G
from kernels.gpu import cudnn_workers as W

RNG = np.random.default_rng(77)


def stem(c=3, k=64, hw=224, r=7, stride=(2, 2), pad=(3, 3), act=rt.ActivationType.RELU, batch=256,
         residual=False, groups=1, dilation=(1, 1), dtype=rt.float32):
    net = rt.Network()
    x = net.add_input("x", dtype, (batch, c, hw, hw))
    w = RNG.standard_normal((k, c // groups, r, r)).astype(np.float32)
    conv = net.add_convolution_nd(x, k, (r, r), kernel=w, bias=RNG.standard_normal(k).astype(np.float32))
    conv.stride_nd, conv.padding_nd, conv.num_groups, conv.dilation_nd = stride, pad, groups, dilation
    if act is not None:
        conv.post_activation = act
    if residual:
        other = net.add_input("r", dtype, (batch, k, hw // 2, hw // 2))
        conv.set_input(1, other)
    net.mark_output(conv.get_output(0))
    return conv


def test_spec_of_resnet_stem_at_b256():
    layer = stem()
    spec = S2D.s2d_spec(layer, (256, 3, 224, 224), np.float16)
    assert (spec.n, spec.c, spec.h, spec.w, spec.k, spec.r, spec.s) == (256, 16, 112, 112, 64, 4, 4)
    assert spec.stride == (1, 1) and spec.dilation == (1, 1)
    assert spec.pre_padding == (2, 2) and spec.post_padding == (1, 1)
    assert spec.out_hw() == (112, 112) == tuple(layer.geometry((256, 3, 224, 224))[0])
    assert (spec.act, spec.residual, spec.out_dtype, spec.out_ldc) == ("RELU", False, "float16", 0)
    assert spec.reason() is None


@pytest.mark.parametrize("c, hw, r, pad, want_c", [(1, 31, 3, (1, 1), 8), (2, 17, 5, (2, 2), 8),
                                                    (4, 20, 1, (0, 0), 16), (3, 33, 7, (3, 3), 16)])
def test_spec_keeps_the_layers_output_size(c, hw, r, pad, want_c):
    layer = stem(c=c, k=16, hw=hw, r=r, pad=pad, batch=2)
    spec = S2D.s2d_spec(layer, (2, c, hw, hw), np.float32)
    assert spec.c == want_c and spec.out_dtype == "float32"
    assert spec.out_hw() == tuple(layer.geometry((2, c, hw, hw))[0])


def test_same_padding_takes_the_layers_asymmetric_padding():
    layer = stem(k=16, hw=12, r=3, pad=(0, 0), batch=2)
    layer.padding_mode = rt.PaddingMode.SAME_UPPER           # 12 -> 6: pad 0 before, 1 after
    shape = (2, 3, 12, 12)
    _, pre, post = layer.geometry(shape)
    assert (tuple(pre), tuple(post)) == ((0, 0), (1, 1))
    spec = S2D.s2d_spec(layer, shape, np.float16)
    assert spec.out_hw() == (6, 6) and spec.pre_padding == (0, 0)


@pytest.mark.parametrize("kw, shape, dtype, precision, words", [
    ({}, None, "float32", rt.DataType.FLOAT, "FP16 layers"),
    ({}, None, "float32", rt.DataType.INT8, "FP16 layers"),
    ({"stride": (1, 1)}, None, "float32", rt.DataType.HALF, "takes stride (2, 2)"),
    ({"stride": (2, 1)}, None, "float32", rt.DataType.HALF, "takes stride (2, 2)"),
    ({"dilation": (2, 2)}, None, "float32", rt.DataType.HALF, "takes dilation (1, 1)"),
    ({"c": 4, "groups": 2}, None, "float32", rt.DataType.HALF, "grouped"),
    ({"c": 8}, None, "float32", rt.DataType.HALF, "8 input channels; the space-to-depth rewrite takes 1..4"),
    ({"k": 60}, None, "float32", rt.DataType.HALF, "60 output channels; expected a multiple of 8"),
    ({"residual": True}, None, "float32", rt.DataType.HALF, "a residual input"),
    ({"act": rt.ActivationType.SELU}, None, "float32", rt.DataType.HALF, "activation SELU not fused"),
    ({}, None, "int8", rt.DataType.HALF, "input dtype int8; expected float32 or float16"),
    ({}, (256, 3, 224), "float32", rt.DataType.HALF, "rank-4"),
])
def test_declines_what_it_cannot_run_and_says_why(kw, shape, dtype, precision, words):
    layer = stem(**kw)
    shape = shape or tuple(layer.get_input(0).shape)
    reason = S2D.ConvCudnnS2d().supports(layer, [shape], [dtype], precision)
    assert reason is not None and words in reason, reason


def test_switch_and_missing_frontend_say_why(monkeypatch):
    t = S2D.ConvCudnnS2d()
    layer = stem(batch=2, hw=32)
    args = ([(2, 3, 32, 32)], ["float32"], rt.DataType.HALF)
    monkeypatch.setenv("CUPYRT_CUDNN", "0")
    assert "CUPYRT_CUDNN=0" in t.supports(layer, *args)
    monkeypatch.delenv("CUPYRT_CUDNN")
    monkeypatch.setenv("CUPYRT_PRECOMPILE_WORKERS", "0")      # no worker processes from this test
    monkeypatch.setattr(G, "_frontend_state", {"module": None, "reason": "ImportError: no cudnn"})
    reason = t.supports(layer, *args)
    assert reason is not None and "cupyrt[cudnn]" in reason and "no cudnn" in reason


def test_is_a_candidate_beside_conv_cudnn_and_names_its_kernel(monkeypatch):
    from engine.gpu.tactics import candidates
    from kernels.gpu import space_to_depth
    monkeypatch.delenv("CUPYRT_CUDNN_S2D", raising=False)
    assert "conv.cudnn_s2d" not in [t.name for t in candidates(stem(batch=2, hw=32))]   # off by default
    monkeypatch.setenv("CUPYRT_CUDNN_S2D", "1")
    names = [t.name for t in candidates(stem(batch=2, hw=32))]
    # timed right after conv.cudnn, before our own kernels (the first time bounds the rest)
    assert names[:2] == ["conv.cudnn", "conv.cudnn_s2d"]
    assert S2D.ConvCudnnS2d.launch is space_to_depth.space_to_depth_nhwc
    assert not S2D.ConvCudnnS2d.writes_into_concat


def test_prefetch_queues_the_stem_spec_beside_conv_cudnns(monkeypatch):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 3, 32, 32))
    a = net.add_convolution_nd(x, 16, (7, 7), kernel=RNG.standard_normal((16, 3, 7, 7)).astype(np.float32))
    a.stride_nd, a.padding_nd, a.post_activation = (2, 2), (3, 3), rt.ActivationType.RELU
    b = net.add_convolution_nd(a.get_output(0), 16, (3, 3),
                               kernel=RNG.standard_normal((16, 16, 3, 3)).astype(np.float32))
    b.padding_nd = (1, 1)
    net.mark_output(b.get_output(0))
    queued = []          # what reaches the kernels' prefetch (plans per spec: max_plans)
    monkeypatch.setattr(W, "shared", lambda n: "workers")
    monkeypatch.setattr(G, "prefetch", lambda spec, dev, workers, plans, store, name:
                        queued.append((spec, dev, workers)) or plans)
    opts = {"max_plans": 2, "build_budget_s": 1.0, "store": None, "workers": 3}
    monkeypatch.delenv("CUPYRT_CUDNN_S2D", raising=False)
    assert S2D.prefetch_spec(a, 4) is None                  # switched off: nothing queued for it
    monkeypatch.setenv("CUPYRT_CUDNN_S2D", "1")
    assert CT.prefetch_network(a, 4, opts, device_id=0) == 4
    assert queued == [(S2D.s2d_spec(a, (4, 3, 32, 32), np.float16), 0, "workers"),    # the stem, rewritten
                      (CT.conv_spec(b, (4, 16, 16, 16), np.float32), 0, "workers")]   # conv.cudnn's as before
    assert S2D.prefetch_spec(b, 4) is None and CT._prefetch_spec(a, 4) is None
    assert S2D.prefetch_spec(a, 8).n == 8
