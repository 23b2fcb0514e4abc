"""The INT8 stem tactic (ConvInt8SmallC) is registered once and is a candidate unless
CUPYRT_INT8_SMALLC=0 (read through engine.settings when candidates are asked for)."""
import numpy as np

import engine as rt
from engine import kernel_table
from engine.gpu import conv_int8_tactics as I
from engine.gpu.tactics import candidates
from engine.types import LayerType
from kernels.gpu import conv_int8, conv_int8_smallc


def _stem():
    net = rt.Network()
    x = net.add_input("x", rt.float32, (1, 3, 16, 16))
    return net.add_convolution_nd(x, 8, (7, 7), kernel=np.ones((8, 3, 7, 7), np.float32))


def _count(layer):
    return sum(isinstance(t, I.ConvInt8SmallC) for t in candidates(layer, rt.DataType.INT8))


def test_registered_once_and_a_candidate_unless_switched_off(monkeypatch):
    registered = [t for t in kernel_table.TACTICS[LayerType.CONVOLUTION] if isinstance(t, I.ConvInt8SmallC)]
    assert len(registered) == len(conv_int8_smallc.SMALLC_TACTICS)
    layer = _stem()
    monkeypatch.delenv("CUPYRT_INT8_SMALLC", raising=False)
    assert _count(layer) == len(conv_int8_smallc.SMALLC_TACTICS)
    monkeypatch.setenv("CUPYRT_INT8_SMALLC", "1")
    assert _count(layer) == len(conv_int8_smallc.SMALLC_TACTICS)
    monkeypatch.setenv("CUPYRT_INT8_SMALLC", "0")
    assert _count(layer) == 0
    assert any(type(t) is I.ConvInt8 for t in candidates(layer, rt.DataType.INT8))


def test_each_int8_conv_tactic_launches_and_packs_for_its_kernel():
    assert I.ConvInt8.launch is conv_int8.conv2d_int8
    assert I.ConvInt8.pack_weights is conv_int8.pack_weight_int8_krsc
    assert I.ConvWgmmaInt8.pack_weights is I.ConvInt8.pack_weights
    assert I.ConvInt8SmallC.launch is conv_int8_smallc.conv2d_int8_smallc
    assert I.ConvInt8SmallC.pack_weights is conv_int8_smallc.pack_weight_int8_smallc
