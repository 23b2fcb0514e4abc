"""The FP16 stem tactic (ConvStem, kernels/gpu/conv_stem.py) on the CPU: registered once
per tile and input flavour, a candidate unless CUPYRT_STEM_KERNEL=0 (on by default since
its GPU tests passed), and the layers it refuses, each with its reason."""
import re

import numpy as np
import pytest

import engine as rt
from engine import kernel_table
from engine.gpu import conv_tactics as T
from engine.gpu.tactics import candidates
from engine.types import LayerType
from kernels.gpu import conv_stem

HALF, FLOAT = rt.DataType.HALF, rt.DataType.FLOAT


def _conv(C=3, K=64, k=(7, 7), hw=(32, 32)):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, C) + hw)
    rng = np.random.default_rng(0)
    conv = net.add_convolution_nd(x, K, k, kernel=rng.standard_normal((K, C) + k).astype(np.float32))
    conv.stride_nd, conv.padding_nd = (2, 2), (3, 3)
    return conv


def _stems(layer, precision=HALF):
    return [t for t in candidates(layer, precision) if type(t) is T.ConvStem]


def test_registered_once_per_tile_and_flavour():
    registered = [t for t in kernel_table.TACTICS[LayerType.CONVOLUTION] if type(t) is T.ConvStem]
    assert sorted(t.name for t in registered) == sorted(
        f"conv.{tile.name}{suffix}" for tile in conv_stem.STEM_TILES for suffix in ("", "_nchw"))
    assert {t.direct for t in registered} == {False, True}


def test_a_candidate_unless_the_setting_is_off(monkeypatch):
    layer = _conv()
    monkeypatch.delenv("CUPYRT_STEM_KERNEL", raising=False)
    stems = _stems(layer)                                        # on by default
    assert len(stems) == 2 * len(conv_stem.STEM_TILES)
    assert all(t.supports(layer, ((2, 3, 32, 32),), ("float32",), HALF) is None for t in stems)
    assert _stems(layer, rt.DataType.INT8) == []                 # float tactics: no INT8 layer
    monkeypatch.setenv("CUPYRT_STEM_KERNEL", "0")
    assert _stems(layer) == []


def _reason(layer, shapes=((2, 3, 32, 32),), precision=HALF):
    return T.ConvStem(conv_stem.STEM_TILES[0], direct=True).supports(layer, shapes, ("float32",), precision)


def test_accepts_the_stem_and_other_small_filters():
    assert _reason(_conv()) is None
    assert _reason(_conv(C=1, K=32, k=(3, 3)), ((2, 1, 32, 32),)) is None
    assert _reason(_conv(C=4, K=72, k=(5, 7)), ((2, 4, 32, 32),)) is None


def _with(**attrs):
    layer = _conv()
    for name, value in attrs.items():
        setattr(layer, name, value)
    return layer


@pytest.mark.parametrize("make, shapes, precision, reason", [
    (lambda: _conv(), ((2, 3, 32, 32),), FLOAT, "the stem kernel runs in FP16"),
    (lambda: _conv(C=6, K=64), ((2, 6, 32, 32),), HALF, "grouped convolution"),
    (lambda: _conv(), ((2, 3, 32),), HALF, "only 2-D convolutions"),
    (lambda: _conv(C=5), ((2, 5, 32, 32),), HALF, "5 input channels; the stem kernel takes 1 to 4"),
    (lambda: _conv(C=8), ((2, 8, 32, 32),), HALF, "8 input channels; the stem kernel takes 1 to 4"),
    (lambda: _conv(K=60), ((2, 3, 32, 32),), HALF, "60 output channels; the stem kernel takes multiples of 8"),
    (lambda: _with(dilation_nd=(2, 2)), ((2, 3, 32, 32),), HALF, "dilated convolution"),
    (lambda: _conv(k=(9, 9)), ((2, 3, 32, 32),), HALF, r"filter \(9, 9\) larger than 7x7"),
    (lambda: _with(stride_nd=(4, 4)), ((2, 3, 32, 32),), HALF, r"stride \(4, 4\); the stem kernel takes 1 or 2"),
    (lambda: _conv(), ((2, 3, 32, 32), (2, 64, 16, 16)), HALF, "residual not fused by the stem kernel"),
])
def test_refuses_with_the_reason(make, shapes, precision, reason):
    layer = make()
    if reason == "grouped convolution":
        layer.num_groups = 2
    got = _reason(layer, shapes, precision)
    assert got is not None and re.search(reason, got), got


def test_precompile_builds_the_layers_geometry_and_the_input_kind_each_flavour_reads(monkeypatch):
    layer = _conv(k=(5, 3))
    layer.stride_nd = (2, 1)
    by = {(t.tile.name, t.direct): t for t in _stems(layer)}
    plain, direct = by[("stem_t8w4", False)], by[("stem_t8w4", True)]
    shapes = [(2, 3, 32, 32)]
    assert plain.compile_options(layer, shapes, ["float32"]) == {"geometry": [5, 3, 2, 1], "in_kinds": [0]}
    assert direct.compile_options(layer, shapes, ["float32"])["in_kinds"] == [1]    # NCHW float32
    assert direct.compile_options(layer, shapes, ["float16"])["in_kinds"] == [2]    # NCHW float16
    built = []
    monkeypatch.setattr(conv_stem, "get_function", lambda src, name, **kw: built.append(name))
    conv_stem.compile_all((conv_stem.TILES_BY_NAME["stem_t16w4"],), geometry=[5, 3, 2, 1], in_kinds=[0, 1],
                          out_dtypes=["float16", "float32"])
    tile = conv_stem.TILES_BY_NAME["stem_t16w4"]
    # t16w4 does not read NCHW into float32 (its registers would spill): that one is left out
    assert built == [tile.name_expression(5, 3, 2, 1, 0, False), tile.name_expression(5, 3, 2, 1, 0, True),
                     tile.name_expression(5, 3, 2, 1, 1, False)]
