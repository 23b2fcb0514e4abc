"""Which INT8 tiles the builder times for a fully connected layer (engine/gpu/fc_tactics.py
``underfills``): none launching under half the CTAs of the tile launching the most, capped
at the device's SMs; the precompile list follows (no NVRTC run for a tile never timed)."""
import numpy as np
import pytest

import engine as rt
from engine.gpu import fc_tactics as F
from engine.gpu import precompile
from engine.gpu import tactics as T
from engine.types import DataType
from kernels.gpu import conv_int8

ALL = {t.name for t in conv_int8.INT8_TACTICS}


def kept(rows, k, sms):
    return {t.name for t in conv_int8.INT8_TACTICS if F.underfills(t, rows, k, sms) is None}


def test_ctas_are_row_tiles_times_output_tiles():
    t64 = next(t for t in conv_int8.INT8_TACTICS if t.name == "i8_64x64x64_w2x2_s4")
    t256 = next(t for t in conv_int8.INT8_TACTICS if t.name == "i8_256x128x64_w4x2_s3")
    assert F.fc_ctas(t64, 256, 1000) == 4 * 16 and F.fc_ctas(t256, 256, 1000) == 1 * 8
    assert F.fc_ctas(t64, 1, 1) == 1


def test_resnet50s_classifier_at_batch_256_keeps_the_tiles_that_fill_most_sms():
    """64 CTAs at most (64x64); the 32-CTA 128x64 tiles stay, the 8-16 CTA ones go (they ran
    1.57-2.36x the 64x64 tile on an H100)."""
    assert kept(256, 1000, 132) == {"i8_64x64x64_w2x2_s4", "i8_128x64x64_w2x2_s4", "i8_128x64x64_w4x2_s3_mb2"}
    why = F.underfills(conv_int8.INT8_TACTICS[2], 256, 1000, 132)       # 256x128: 8 CTAs
    assert "8 CTAs for 256 x 1000" in why and "64" in why and "132 SMs" in why


def test_a_layer_every_tile_fills_keeps_every_tile():
    # 4096 rows: the biggest tiles launch 128 CTAs, within half of 132 SMs
    assert kept(4096, 1000, 132) == ALL
    assert kept(4096, 1000, None) != ALL               # uncapped: relative to 1024 CTAs


@pytest.mark.parametrize("rows", [-1, 0])
def test_a_dynamic_row_count_times_every_tile(rows):
    assert kept(rows, 1000, 132) == ALL


def test_some_tile_is_always_kept_and_the_most_launching_one_among_them():
    rng = np.random.default_rng(5)
    for _ in range(300):
        rows, k = int(rng.integers(1, 5000)), int(rng.integers(1, 5000))
        sms = [None, int(rng.integers(1, 200))][int(rng.integers(0, 2))]
        names = kept(rows, k, sms)
        most = max(conv_int8.INT8_TACTICS, key=lambda t: F.fc_ctas(t, rows, k))
        assert most.name in names, (rows, k, sms)


def _fc(batch=256, c=2048, k=1000):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (batch, c))
    rng = np.random.default_rng(0)
    return net.add_fully_connected(x, k, rng.standard_normal((k, c)).astype(np.float32),
                                   np.zeros(k, np.float32))


def test_the_builder_times_and_precompile_lists_only_the_kept_tiles(monkeypatch):
    monkeypatch.setattr(F, "sm_count", lambda device_id=0: 132)
    layer = _fc()
    shapes, dtypes = ((256, 2048),), ("int8",)
    timed = {t.name for t in T.supported(layer, shapes, dtypes, DataType.INT8) if t.name.startswith("fc.i8_")}
    assert timed == {f"fc.{n}" for n in kept(256, 1000, 132)}
    items = precompile.layer_items(layer, shapes, dtypes, DataType.INT8)
    assert {t for f, t, _ in items if f == "conv_int8"} == kept(256, 1000, 132)
    monkeypatch.setattr(F, "sm_count", lambda device_id=0: None)      # a small batch, no device
    small = _fc(batch=16)
    timed = {t.name for t in T.supported(small, ((16, 2048),), dtypes, DataType.INT8) if t.name.startswith("fc.i8_")}
    assert timed == {f"fc.{n}" for n in ALL - {"i8_128x256x64_w2x4_s3"}}


def test_sm_count_is_none_without_a_device_or_while_listing_for_another():
    from engine.gpu import device
    from kernels.gpu import compile as kernel_compile
    with kernel_compile.offline("sm_90a", True):
        assert device.sm_count() is None
    if not device.available():
        assert device.sm_count() is None
