"""engine/gpu/conv_s2d_tactics.py without a GPU: the INT8 space-to-depth stem is bit-exact
with engine.int8_exec's direct INT8 arithmetic on the original layer (NumPy emulation,
several geometries incl. odd sizes and SAME padding, int8 and float output, float and
int8 input); the s2d filter keeps every per-channel weight scale; which convolutions the
tactics decline and why; that they are candidates only with CUPYRT_S2D_STEM=1; and that
precompile finds their tiles."""
import numpy as np
import pytest

import engine as rt
from engine import int8_exec
from engine.gpu import conv_s2d_tactics as S
from kernels import quantize as Q
from kernels.gpu import space_to_depth

RNG = np.random.default_rng(909)


def stem(c=3, k=16, h=32, w=32, r=7, stride=(2, 2), pad=(3, 3), act=rt.ActivationType.RELU, batch=2,
         residual=False, groups=1, dilation=(1, 1), bias=True):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (batch, c, h, w))
    wt = (RNG.standard_normal((k, c // groups, r, r)) / np.sqrt(c * r * r)).astype(np.float32)
    wt[1] *= 20                                            # per-channel scales far apart
    conv = net.add_convolution_nd(x, k, (r, r), kernel=wt,
                                  bias=RNG.standard_normal(k).astype(np.float32) if bias else None)
    conv.stride_nd, conv.padding_nd, conv.num_groups, conv.dilation_nd = stride, pad, groups, dilation
    if act is not None:
        conv.post_activation = act
    if residual:
        conv.set_input(1, net.add_input("r", rt.float32, (batch, k, h // 2, w // 2)))
    net.mark_output(conv.get_output(0))
    x.dynamic_range = (-2.5, 2.5)                         # some inputs saturate
    conv.get_output(0).dynamic_range = (-6.0, 6.0)
    return conv


# (C, H, W, R, pad, padding mode or None, activation)
GEOMS = [
    (3, 32, 32, 7, (3, 3), None, rt.ActivationType.RELU),       # ResNet's stem, small
    (3, 57, 61, 7, (3, 3), None, rt.ActivationType.RELU),       # odd sizes
    (1, 17, 14, 3, (1, 1), None, None),
    (2, 12, 12, 3, (0, 0), rt.PaddingMode.SAME_UPPER, rt.ActivationType.CLIP),  # pad after only
    (4, 15, 16, 5, (2, 2), None, rt.ActivationType.LEAKY_RELU),
    (3, 9, 11, 1, (0, 0), None, None),
    # ceil mode: the last window reaches past the post padding (one more output row and
    # column than the floor rule; the second: only the columns)
    (3, 16, 18, 3, (1, 1), rt.PaddingMode.EXPLICIT_ROUND_UP, rt.ActivationType.RELU),
    (3, 17, 16, 7, (3, 3), rt.PaddingMode.EXPLICIT_ROUND_UP, None),
]


@pytest.mark.parametrize("geom", GEOMS, ids=lambda g: f"c{g[0]}-{g[1]}x{g[2]}-{g[3]}x{g[3]}-{g[5]}")
@pytest.mark.parametrize("out", ["int8", "float32"])
@pytest.mark.parametrize("x_kind", ["float32", "float16", "int8"])
def test_int8_s2d_is_bit_exact_with_the_direct_int8_conv(geom, out, x_kind):
    c, h, w, r, pad, mode, act = geom
    layer = stem(c=c, h=h, w=w, r=r, pad=pad, act=act)
    if mode is not None:
        layer.padding_mode = mode
    if act == rt.ActivationType.CLIP:
        layer.post_alpha, layer.post_beta = -0.5, 1.5
    elif act == rt.ActivationType.LEAKY_RELU:
        layer.post_alpha = 0.1
    x = (1.5 * RNG.standard_normal((2, c, h, w))).astype(x_kind if x_kind != "int8" else np.float32)
    if x_kind == "int8":                                   # codes another INT8 layer wrote
        x = Q.quantize(x, int8_exec.tensor_scale(layer.get_input(0)))
    out_dt = rt.DataType.INT8 if out == "int8" else rt.DataType.FLOAT
    (ref,) = int8_exec.run_int8_layer(layer, [x], [out_dt])
    s_out = int8_exec.tensor_scale(layer.get_output(0)) if out == "int8" else None
    got = S.int8_reference(layer, x, s_out)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert len(np.unique(ref)) > 10                       # real data through the epilogue
    np.testing.assert_array_equal(got, ref)


def test_s2d_filter_keeps_every_weight_scale_and_code():
    layer = stem(k=64, h=224, w=224, batch=1)
    kcrs = layer.weights(3)
    q, s_w = Q.quantize_weights(kcrs)
    q2, s_w2 = Q.quantize_weights(S.s2d_weights(kcrs, (3, 3), 16))
    assert q2.shape == (64, 4, 4, 16)
    np.testing.assert_array_equal(s_w2, s_w)
    for k in (0, 1, 63):
        assert sorted(q2[k][q2[k] != 0].tolist()) == sorted(q[k][q[k] != 0].tolist())
    # the folded stem at 224: 112x112 over 16 channels, 4x4 taps, padding 2 before, 1 after
    g = S.s2d_geometry(layer, (256, 3, 224, 224))
    assert (g.hs, g.ws, g.r, g.s, g.pre, g.post, g.p, g.q) == (112, 112, 4, 4, (2, 2), (1, 1), 112, 112)


@pytest.mark.parametrize("kw, dtype, precision, words", [
    ({}, "float32", rt.DataType.FLOAT, "INT8 tactic"),
    ({"stride": (1, 1)}, "float32", rt.DataType.INT8, "takes stride (2, 2)"),
    ({"stride": (2, 1)}, "float32", rt.DataType.INT8, "takes stride (2, 2)"),
    ({"dilation": (2, 2)}, "float32", rt.DataType.INT8, "takes dilation (1, 1)"),
    ({"c": 4, "groups": 2}, "float32", rt.DataType.INT8, "ungrouped"),
    ({"c": 8}, "float32", rt.DataType.INT8, "8 input channels; the space-to-depth rewrite takes 1..4"),
    ({"residual": True}, "float32", rt.DataType.INT8, "a residual input"),
    ({}, "int32", rt.DataType.INT8, "input dtype int32; expected float32 or float16 or int8"),
])
def test_int8_tactic_declines_what_it_cannot_run_and_says_why(kw, dtype, precision, words):
    layer = stem(**kw)
    shapes = [tuple(t.shape) for t in layer._inputs if t is not None]
    reason = S.ConvS2dInt8(S.I8_TILES[0]).supports(layer, shapes, [dtype] * len(shapes), precision)
    assert reason is not None and words in reason, reason


def test_half_tactic_declines_int8_input_and_other_precisions():
    layer = stem()
    t = S.ConvS2dHalf(S.IGEMM_TILES[0])
    shapes = [(2, 3, 32, 32)]
    assert t.supports(layer, shapes, ["float32"], rt.DataType.HALF) is None
    assert "runs in FP16" in t.supports(layer, shapes, ["float32"], rt.DataType.INT8)
    assert "input dtype int8; expected float32 or float16" in t.supports(layer, shapes, ["int8"],
                                                                        rt.DataType.HALF)
    assert "rank-4" in t.supports(layer, [(2, 3, 32)], ["float32"], rt.DataType.HALF)


def test_wgmma_flavours_need_the_wgmma_setting_and_an_sm90_device(monkeypatch):
    layer = stem()
    args = ([(2, 3, 32, 32)], ["float32"])
    wgi8, wg = S.ConvS2dWgmmaInt8(S.WGI8_TILES[0]), S.ConvS2dWgmma(S.WG_TILES[0])
    monkeypatch.setattr(S, "wgmma_reason", lambda: None)           # as on an H100 / H200
    assert wgi8.supports(layer, *args, rt.DataType.INT8) is None
    assert wg.supports(layer, *args, rt.DataType.HALF) is None
    monkeypatch.setenv("CUPYRT_WGMMA", "0")
    assert "CUPYRT_WGMMA=0" in wgi8.supports(layer, *args, rt.DataType.INT8)
    assert "CUPYRT_WGMMA=0" in wg.supports(layer, *args, rt.DataType.HALF)
    monkeypatch.delenv("CUPYRT_WGMMA")
    monkeypatch.setattr(S, "wgmma_reason", lambda: "wgmma needs compute capability 9.0")
    assert "compute capability 9.0" in wgi8.supports(layer, *args, rt.DataType.INT8)


def test_candidates_only_when_switched_on_and_named_after_their_tiles(monkeypatch):
    from engine.gpu.tactics import candidates
    from kernels.gpu import conv_igemm, conv_int8, conv_wgmma
    monkeypatch.delenv("CUPYRT_S2D_STEM", raising=False)
    monkeypatch.delenv("CUPYRT_S2D_STEM_F16", raising=False)
    assert not [t for t in candidates(stem()) if t.name.startswith("conv.s2d_")]    # off by default
    monkeypatch.setenv("CUPYRT_S2D_STEM", "1")                                     # INT8 only
    assert [t.name for t in candidates(stem()) if t.name.startswith("conv.s2d_")] == [
        "conv.s2d_wgi8_128x64_s4", "conv.s2d_wgi8_64x64_s4", "conv.s2d_i8_128x64x64_w2x2_s4"]
    monkeypatch.setenv("CUPYRT_S2D_STEM_F16", "1")
    names = [t.name for t in candidates(stem()) if t.name.startswith("conv.s2d_")]
    assert names == ["conv.s2d_wgi8_128x64_s4", "conv.s2d_wgi8_64x64_s4", "conv.s2d_i8_128x64x64_w2x2_s4",
                     "conv.s2d_wg_128x64_s4", "conv.s2d_wg_64x64_s4", "conv.s2d_igemm2_128x64x32_w2x2_s4"]
    int8 = [t.name for t in candidates(stem(), rt.DataType.INT8) if t.name.startswith("conv.s2d_")]
    assert int8 == names[:3]
    assert S.ConvS2dInt8.launch is conv_int8.conv2d_int8
    assert S.ConvS2dWgmmaInt8.launch is conv_wgmma.conv2d_wgmma_int8
    assert S.ConvS2dHalf.launch is conv_igemm.conv2d_igemm
    assert S.ConvS2dWgmma.launch is conv_wgmma.conv2d_wgmma
    assert all(not t.writes_into_concat for t in S.TACTICS)


def test_precompile_finds_each_tactics_tile_in_its_family():
    from engine.gpu import precompile
    from kernels.gpu import conv_igemm, conv_int8, conv_wgmma
    fams = [precompile.tactic_tile(t)[0] for t in S.TACTICS]
    assert fams == [conv_wgmma.FAMILY] * 2 + [conv_int8.FAMILY] + [conv_wgmma.FAMILY] * 2 + [conv_igemm.FAMILY]
    assert all(precompile.tactic_tile(t)[1] is t.tile for t in S.TACTICS)


def test_int8_reference_folds_what_the_pass_makes():
    layer = stem(h=9, w=11)
    x = RNG.standard_normal((2, 3, 9, 11)).astype(np.float32)
    g = S.s2d_geometry(layer, x.shape)
    s_in = int8_exec.tensor_scale(layer.get_input(0))
    xs = space_to_depth.s2d_int8_reference(x, s_in, g.hs, g.ws)
    assert xs.shape == (2, g.hs, g.ws, 16) and S.f16_c_pad(3) == 16 and S.f16_c_pad(2) == 8
    np.testing.assert_array_equal(xs[..., :12:4], Q.quantize(x[:, :, 0:2 * g.hs:2, 0:2 * g.ws:2],
                                                              s_in).transpose(0, 2, 3, 1))
