"""The INT8 wgmma tile capped for three CTAs an SM (conv.wgi8_128x64_s3_3cta): registered
once, a candidate while CUPYRT_WGMMA_INT8_3CTA (the default) and CUPYRT_WGMMA are both on,
INT8 only, otherwise declined for the plain wgmma tactic's reasons; its timing-cache key
differs with the switch. Its arithmetic is the plain tiles' (tests/gpu/test_conv_wgmma_gpu.py runs it
among them)."""
import numpy as np

import engine as rt
from engine import kernel_table
from engine.gpu import conv_int8_tactics as I
from engine.gpu.tactics import candidates
from engine.settings import tactic_key
from engine.types import LayerType
from kernels.gpu import conv_wgmma

RNG = np.random.default_rng(9)


def _conv3x3(c=64, k=64, hw=(56, 56)):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, c, *hw))
    layer = net.add_convolution_nd(x, k, (3, 3), kernel=RNG.standard_normal((k, c, 3, 3)).astype(np.float32))
    layer.padding_nd = (1, 1)
    return layer


def _count(layer, precision=rt.DataType.INT8):
    return sum(isinstance(t, I.ConvWgmmaInt8Occupancy) for t in candidates(layer, precision))


def test_registered_once_and_a_candidate_unless_switched_off(monkeypatch):
    registered = [t for t in kernel_table.TACTICS[LayerType.CONVOLUTION]
                  if isinstance(t, I.ConvWgmmaInt8Occupancy)]
    assert [t.name for t in registered] == ["conv.wgi8_128x64_s3_3cta"]
    assert registered[0].tile is conv_wgmma.TACTICS_BY_NAME["wgi8_128x64_s3_3cta"]
    assert registered[0].launch is conv_wgmma.conv2d_wgmma_int8
    layer = _conv3x3()
    monkeypatch.delenv("CUPYRT_WGMMA_INT8_3CTA", raising=False)
    assert _count(layer) == 1 and _count(layer, rt.DataType.HALF) == 0   # on by default
    assert "CUPYRT_WGMMA_INT8_3CTA" not in tactic_key()
    monkeypatch.setenv("CUPYRT_WGMMA_INT8_3CTA", "0")
    assert _count(layer) == 0
    assert tactic_key()["CUPYRT_WGMMA_INT8_3CTA"] is False    # tiles timed one way are not reused


def test_no_candidate_with_the_wgmma_switch_off_else_as_the_plain_wgmma_tactic(monkeypatch):
    monkeypatch.delenv("CUPYRT_WGMMA_INT8_3CTA", raising=False)
    occ = next(t for t in kernel_table.TACTICS[LayerType.CONVOLUTION]
               if isinstance(t, I.ConvWgmmaInt8Occupancy))
    plain = next(t for t in kernel_table.TACTICS[LayerType.CONVOLUTION]
                 if type(t) is I.ConvWgmmaInt8 and t.tile.name == "wgi8_128x64_s4")
    layer = _conv3x3()
    shape = tuple(layer._inputs[0].shape)
    args = (layer, (shape,), ("int8",), rt.DataType.INT8)
    monkeypatch.setenv("CUPYRT_WGMMA", "0")
    assert _count(layer) == 0                                   # both switches must be on
    monkeypatch.setenv("CUPYRT_WGMMA", "1")
    assert _count(layer) == 1
    assert occ.supports(*args) == plain.supports(*args)         # no GPU here: the device reason
    assert occ.supports(layer, (shape,), ("int8",), rt.DataType.HALF) == plain.supports(
        layer, (shape,), ("int8",), rt.DataType.HALF)
