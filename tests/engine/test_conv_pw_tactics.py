"""The persistent 1x1 tactics (conv.pwi8_* INT8, conv.pw16_* FP16): registered once,
candidates only when CUPYRT_PW_PERSISTENT is on, and declining, with a reason, every
convolution the kernel cannot run."""
import numpy as np
import pytest

import engine as rt
from engine import kernel_table
from engine.gpu import conv_int8_tactics as I
from engine.gpu import conv_pw_tactics as PW
from engine.gpu.conv_tactics import ConvIgemm
from engine.gpu.tactics import candidates
from engine.types import LayerType
from kernels.gpu import conv_igemm, conv_int8, conv_pw

RNG = np.random.default_rng(5)


def _conv(c=64, k=256, rs=(1, 1), hw=(14, 14), **attrs):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, c, *hw))
    w = RNG.standard_normal((k, c, *rs)).astype(np.float32)
    layer = net.add_convolution_nd(x, k, rs, kernel=w)
    for name, value in attrs.items():
        setattr(layer, name, value)
    return layer


def _reason(tactic, layer, precision=rt.DataType.INT8):
    shape = tuple(layer._inputs[0].shape)
    return tactic.supports(layer, (shape,), ("int8",), precision)


def _count(layer, kind=PW.ConvPwInt8, precision=rt.DataType.INT8):
    return sum(isinstance(t, kind) for t in candidates(layer, precision))


def test_registered_once_int8_on_by_default_fp16_only_when_switched_on(monkeypatch):
    registered = [t for t in kernel_table.TACTICS[LayerType.CONVOLUTION]
                  if isinstance(t, (PW.ConvPwInt8, PW.ConvPwF16))]
    assert [t.name for t in registered] == [f"conv.{t.name}" for t in
                                            conv_pw.PW_TACTICS + conv_pw.PW16_TACTICS]
    layer = _conv()
    half = dict(kind=PW.ConvPwF16, precision=rt.DataType.HALF)
    monkeypatch.delenv("CUPYRT_PW_PERSISTENT", raising=False)
    monkeypatch.delenv("CUPYRT_PW_PERSISTENT_F16", raising=False)
    assert _count(layer) == len(conv_pw.PW_TACTICS)              # INT8 on by default, FP16 off
    assert _count(layer, **half) == 0
    monkeypatch.setenv("CUPYRT_PW_PERSISTENT", "0")
    assert _count(layer) == _count(layer, **half) == 0
    monkeypatch.setenv("CUPYRT_PW_PERSISTENT", "1")              # INT8 only
    assert _count(layer) == len(conv_pw.PW_TACTICS)
    assert _count(layer, **half) == 0
    monkeypatch.setenv("CUPYRT_PW_PERSISTENT_F16", "1")
    assert _count(layer, **half) == len(conv_pw.PW16_TACTICS)
    assert _count(layer, PW.ConvPwInt8, rt.DataType.HALF) == _count(layer, PW.ConvPwF16) == 0
    monkeypatch.setenv("CUPYRT_PW_PERSISTENT", "0")
    assert _count(layer) == 0 and _count(layer, **half) == len(conv_pw.PW16_TACTICS)
    monkeypatch.setenv("CUPYRT_PW_PERSISTENT_F16", "0")
    assert _count(layer, **half) == 0


def test_shares_conv_int8_weights_and_run():
    assert PW.ConvPwInt8.launch is conv_pw.conv2d_pw_int8
    assert PW.ConvPwInt8.pack_weights is conv_int8.pack_weight_int8_krsc
    assert PW.ConvPwInt8.run is I.ConvInt8.run and PW.ConvPwInt8.prepare is I.ConvInt8.prepare
    assert PW.ConvPwF16.launch is conv_pw.conv2d_pw_f16
    assert PW.ConvPwF16.pack is conv_igemm.pack_weight_krsc and PW.ConvPwF16.run is ConvIgemm.run


@pytest.mark.parametrize("c, k, hw", [(64, 256, (56, 56)), (128, 512, (28, 28)),
                                      (256, 1024, (14, 14)), (512, 2048, (7, 7)),
                                      (40, 72, (5, 9))])      # C padded to 48, odd sizes
def test_accepts_resnet_expand_layers_and_odd_channels(c, k, hw):
    assert _reason(PW.TACTICS[0], _conv(c, k, hw=hw)) is None


@pytest.mark.parametrize("build, precision, match", [
    (lambda: _conv(), rt.DataType.HALF, "INT8 tactic"),
    (lambda: _conv(64, 64, num_groups=2), rt.DataType.INT8, "ungrouped"),
    (lambda: _conv(rs=(3, 3), padding_nd=(1, 1)), rt.DataType.INT8, "1x1 convolutions only"),
    (lambda: _conv(stride_nd=(2, 2)), rt.DataType.INT8, "expected stride 1"),
    (lambda: _conv(padding_nd=(1, 1)), rt.DataType.INT8, "no padding"),
    (lambda: _conv(dilation_nd=(2, 2)), rt.DataType.INT8, "dilation 1"),
    (lambda: _conv(1024, 256, hw=(4, 4)), rt.DataType.INT8, "holds C <= 640"),
])
def test_declines_with_a_reason(build, precision, match):
    reason = _reason(PW.TACTICS[0], build(), precision)
    assert reason is not None and match in reason, reason


def test_bigger_tiles_decline_c512_the_first_takes_it():
    layer = _conv(512, 2048, hw=(7, 7))
    by_name = {t.tile.name: t for t in PW.TACTICS}
    assert _reason(by_name["pwi8_64x128_s3"], layer) is None
    for name in ("pwi8_128x128_s2", "pwi8_64x256_s2"):
        assert "shared memory" in _reason(by_name[name], layer)


F16 = {t.tile.name: t for t in PW.TACTICS if isinstance(t, PW.ConvPwF16)}


@pytest.mark.parametrize("c, k, hw, fits", [
    (64, 256, (56, 56), {"pw16_64x128_s3", "pw16_128x64_s2", "pw16_64x64_s2"}),
    (256, 1024, (14, 14), {"pw16_64x128_s3", "pw16_128x64_s2", "pw16_64x64_s2"}),   # no residual
    (512, 2048, (7, 7), {"pw16_64x64_s2"}),
    (20, 40, (5, 9), {"pw16_64x128_s3", "pw16_128x64_s2", "pw16_64x64_s2"}),   # C padded to 24
])
def test_fp16_tiles_take_the_channels_their_shared_memory_holds(c, k, hw, fits):
    layer = _conv(c, k, hw=hw)
    got = {name for name, t in F16.items()
           if t.supports(layer, (tuple(layer._inputs[0].shape),), ("float16",), rt.DataType.HALF) is None}
    assert got == fits
    for name in set(F16) - fits:
        reason = F16[name].supports(layer, (tuple(layer._inputs[0].shape),), ("float16",), rt.DataType.HALF)
        assert "shared memory" in reason, reason


@pytest.mark.parametrize("build, precision, match", [
    (lambda: _conv(), rt.DataType.INT8, "runs in FP16"),
    (lambda: _conv(64, 64, num_groups=2), rt.DataType.HALF, "grouped"),
    (lambda: _conv(stride_nd=(2, 2)), rt.DataType.HALF, "expected stride 1"),
    (lambda: _conv(rs=(3, 3), padding_nd=(1, 1)), rt.DataType.HALF, "1x1 convolutions only"),
])
def test_fp16_declines_with_a_reason(build, precision, match):
    layer = build()
    reason = F16["pw16_64x64_s2"].supports(layer, (tuple(layer._inputs[0].shape),), ("float16",), precision)
    assert reason is not None and match in reason, reason


# -- the 3x3 tactics (conv.pw3i8_*) ----------------------------------------------------------
PW3 = [t for t in PW.TACTICS if isinstance(t, PW.ConvPw3Int8)]


def test_3x3_registered_once_and_a_candidate_only_when_switched_on(monkeypatch):
    assert [t.name for t in PW3] == [f"conv.{t.name}" for t in conv_pw.PW3_TACTICS]
    assert PW.ConvPw3Int8.launch is conv_pw.conv2d_pw3_int8
    assert PW.ConvPw3Int8.pack_weights is conv_int8.pack_weight_int8_krsc
    assert PW.ConvPw3Int8.run is I.ConvInt8.run
    layer = _conv(64, 64, rs=(3, 3), hw=(56, 56), padding_nd=(1, 1))
    monkeypatch.delenv("CUPYRT_PW3_PERSISTENT", raising=False)
    assert _count(layer, PW.ConvPw3Int8) == 0                       # off by default
    monkeypatch.setenv("CUPYRT_PW3_PERSISTENT", "1")
    assert _count(layer, PW.ConvPw3Int8) == len(conv_pw.PW3_TACTICS)
    assert _count(layer, PW.ConvPw3Int8, rt.DataType.HALF) == 0


@pytest.mark.parametrize("c, k, hw", [(64, 64, (56, 56)), (128, 128, (28, 28)), (32, 72, (5, 9)),
                                      (20, 64, (6, 6))])            # C = 20 padded to 32
def test_3x3_accepts_resnet_stage_1_and_2_and_odd_sizes(c, k, hw):
    for t in PW3:
        assert _reason(t, _conv(c, k, rs=(3, 3), hw=hw, padding_nd=(1, 1))) is None


@pytest.mark.parametrize("build, precision, match", [
    (lambda: _conv(64, 64, rs=(3, 3), padding_nd=(1, 1)), rt.DataType.HALF, "INT8 tactic"),
    (lambda: _conv(64, 64, rs=(3, 3), padding_nd=(1, 1), num_groups=2), rt.DataType.INT8, "ungrouped"),
    (lambda: _conv(64, 64), rt.DataType.INT8, "3x3 convolutions only"),
    (lambda: _conv(64, 64, rs=(3, 3), padding_nd=(1, 1), stride_nd=(2, 2)), rt.DataType.INT8,
     "expected stride 1, padding 1"),
    (lambda: _conv(64, 64, rs=(3, 3)), rt.DataType.INT8, "expected stride 1, padding 1"),
    (lambda: _conv(48, 64, rs=(3, 3), padding_nd=(1, 1)), rt.DataType.INT8, "not a multiple of 32"),
    (lambda: _conv(512, 512, rs=(3, 3), hw=(7, 7), padding_nd=(1, 1)), rt.DataType.INT8,
     "shared memory"),
])
def test_3x3_declines_with_a_reason(build, precision, match):
    reason = _reason(PW3[0], build(), precision)
    assert reason is not None and match in reason, reason
