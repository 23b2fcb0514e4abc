"""The INT8 stem tactic (ConvInt8SmallC) is registered once and is a candidate unless
CUPYRT_INT8_SMALLC=0 (read through engine.settings when candidates are asked for)."""
import numpy as np

import engine as rt
from engine import kernel_table
from engine.gpu import conv_int8_tactics as I
from engine.gpu.tactics import candidates
from engine.types import LayerType
from kernels.gpu import conv_int8, conv_int8_smallc, conv_stem


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


def _stem_k(k):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 3, 32, 32))
    rng = np.random.default_rng(3)
    conv = net.add_convolution_nd(x, k, (7, 7), kernel=rng.standard_normal((k, 3, 7, 7)).astype(np.float32),
                                  bias=rng.standard_normal(k).astype(np.float32))
    conv.stride_nd, conv.padding_nd = (2, 2), (3, 3)
    conv.get_output(0).set_dynamic_range(-6.0, 6.0)
    return conv


def _stem_int8(layer):
    return [t for t in candidates(layer, rt.DataType.INT8) if isinstance(t, I.ConvStemInt8)]


def test_fp16_stem_kernel_for_int8_stems_is_a_candidate_when_switched_on(monkeypatch):
    registered = [t for t in kernel_table.TACTICS[LayerType.CONVOLUTION] if isinstance(t, I.ConvStemInt8)]
    assert len(registered) == 2 * len(conv_stem.STEM_TILES)
    assert len({t.name for t in registered}) == len(registered)
    assert all(t.name.startswith("conv.stem_") and t.name.endswith("_i8") and t.int8 for t in registered)
    layer = _stem_k(64)
    monkeypatch.delenv("CUPYRT_STEM_INT8", raising=False)
    assert len(_stem_int8(layer)) == len(registered)    # on by default
    monkeypatch.setenv("CUPYRT_STEM_INT8", "1")
    assert len(_stem_int8(layer)) == len(registered)
    assert not [t for t in candidates(layer, rt.DataType.HALF) if isinstance(t, I.ConvStemInt8)]
    monkeypatch.setenv("CUPYRT_STEM_INT8", "0")
    assert _stem_int8(layer) == []


def test_int8_stem_on_the_fp16_kernel_supports_only_float_inputs_in_int8_with_k_a_multiple_of_16():
    t = I.ConvStemInt8(conv_stem.STEM_TILES[0], direct=True)
    ok = _stem_k(64)
    shape = [(2, 3, 32, 32)]
    assert t.supports(ok, shape, ["float32"], rt.DataType.INT8) is None
    assert t.supports(ok, shape, ["float16"], rt.DataType.INT8) is None
    assert t.supports(ok, shape, ["float32"], rt.DataType.HALF) == "INT8 tactic"
    assert t.supports(ok, shape, ["int8"], rt.DataType.INT8) == \
        "input int8; the INT8 stem tactic reads the float input"
    assert t.supports(_stem_k(24), shape, ["float32"], rt.DataType.INT8) == \
        "24 output channels; int8 codes are stored 16 at once"
    assert "stem kernel takes multiples of 8" in t.supports(_stem_k(20), shape, ["float32"], rt.DataType.INT8)
    assert "input channels" in t.supports(ok, [(2, 5, 32, 32)], ["float32"], rt.DataType.INT8)
    opts = t.compile_options(ok, shape, ["float32"])
    assert opts == {"geometry": [7, 7, 2, 2], "in_kinds": [1], "out_dtypes": ["int8"]}
    assert I.ConvStemInt8(conv_stem.STEM_TILES[0]).compile_options(ok, shape, ["float32"])["in_kinds"] == [0]

