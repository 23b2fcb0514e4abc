"""The persistent 1x1 INT8 kernel without a GPU: tile / shared-memory arithmetic, the grid,
residual prefetch rules, and the launcher's argument checks (NumPy arrays stand in for CuPy
ones: every check runs before the device is touched). The CUDA source itself is compiled
by test_cuda_compile (every kernels/cuda source, its explicit instantiations, no spills)."""
import re
from pathlib import Path

import numpy as np
import pytest

from kernels.gpu import UnsupportedError
from kernels.gpu import conv_pw as P

CUDA_DIR = Path(__file__).resolve().parents[2] / "kernels" / "cuda"
# ResNet-50's bottleneck expand layers: (C, K)
EXPAND = ((64, 256), (128, 512), (256, 1024), (512, 2048))


# ---- tiles and shared memory -----------------------------------------------------------
def test_tactic_names_unique_and_kinds_split():
    names = [t.name for t in P.PW_TACTICS + P.PW16_TACTICS + P.PW3_TACTICS]
    assert len(names) == len(set(names)) == len(P.TACTICS_BY_NAME)
    assert all(t.name.startswith("pwi8_") and t.kind == "pw_int8" for t in P.PW_TACTICS)
    assert all(t.name.startswith("pw16_") and t.kind == "pw_f16" for t in P.PW16_TACTICS)
    assert all(t.name.startswith("pw3i8_") and t.kind == "pw3_int8" for t in P.PW3_TACTICS)
    assert (P.PW_TACTICS[0].c_align, P.PW16_TACTICS[0].c_align, P.PW3_TACTICS[0].c_align) == (16, 8, 32)
    assert [t.taps for t in (P.PW_TACTICS[0], P.PW16_TACTICS[0], P.PW3_TACTICS[0])] == [1, 1, 3]
    assert set(P.FAMILY.int8_tiles) == set(P.PW_TACTICS + P.PW3_TACTICS)


def test_smem_layout_example():
    t = P.TACTICS_BY_NAME["pwi8_64x128_s3"]
    coef = 2 * 128 * 4                              # INT8: a[BN] and b[BN], float32
    staging = 4 * 16 * (64 + 8) * 4                 # 4 warps, 16 rows of 64 + 8 int32 each
    wslice = 128 * (64 + 16)                        # 128 rows of C + 16 bytes
    ring = 3 * (64 * 80 + 64 * 128)                 # X tile + int8 residual tile, 3 stages
    assert t.smem_bytes(64, 1) == coef + staging + wslice + ring == 69632
    assert t.smem_bytes(64) == coef + staging + wslice + 3 * 64 * 80
    t = P.TACTICS_BY_NAME["pw16_64x64_s2"]               # FP16: rows of 2 C + 16 bytes
    staging, wslice, ring = 4 * 16 * (32 + 8) * 4, 64 * 1040, 2 * (64 * 1040 + 64 * 64 * 2)
    assert t.smem_bytes(512, 2) == staging + wslice + ring == 226304 <= P.SMEM_LIMIT


def test_smem_layout_example_3x3():
    t = P.TACTICS_BY_NAME["pw3i8_128x64_s3"]
    coef = 2 * 64 * 4                               # a[BN] and b[BN], float32
    staging = 4 * 16 * (32 + 8) * 4                 # 4 warps, 16 rows of 32 + 8 int32 each
    wslice = 64 * (9 * 64 + 16)                     # 64 rows of 9 C + 16 bytes
    zero = 64 + 16                                  # the masked taps' zero row
    ring = 3 * ((128 + 2 * 57) * 80)                # 128 rows and a 57-row halo each side
    assert t.smem_bytes(64, 0, 56) == coef + staging + wslice + zero + ring == 106800
    assert t.smem_bytes(64, 1, 56) == 106800 + 3 * 128 * 64       # + an int8 residual tile


@pytest.mark.parametrize("t", P.PW_TACTICS + P.PW16_TACTICS + P.PW3_TACTICS, ids=lambda t: t.name)
def test_max_channels_is_the_fit_boundary(t):
    for rb in (0, 1, 2, 4):
        for w in ((0,) if t.taps == 1 else (7, 56)):
            c = t.max_channels(rb, w)
            assert c % t.c_align == 0 and c >= (64 if rb <= 1 else t.c_align)
            assert t.smem_bytes(c, rb, w) <= P.SMEM_LIMIT < t.smem_bytes(c + t.c_align, rb, w)


@pytest.mark.parametrize("t", P.PW3_TACTICS, ids=lambda t: t.name)
def test_3x3_tiles_hold_resnet_stage_1_and_2(t):
    assert P.pointwise3_reason(t, 64, 64, 3, 3, (1, 1), (1, 1), (1, 1), 56, 56, 56, 56) is None
    assert P.pointwise3_reason(t, 128, 128, 3, 3, (1, 1), (1, 1), (1, 1), 28, 28, 28, 28) is None
    assert "shared memory" in P.pointwise3_reason(t, 512, 512, 3, 3, (1, 1), (1, 1), (1, 1), 7, 7, 7, 7)


def test_first_tile_holds_every_resnet_expand_layer_with_an_int8_residual():
    t = P.PW_TACTICS[0]
    for c, _ in EXPAND:
        assert t.smem_bytes(c, 1) <= P.SMEM_LIMIT
    assert P.pointwise_reason(t, 512, 2048, 1, 1, (1, 1), (0, 0), (1, 1)) is None
    t16 = P.TACTICS_BY_NAME["pw16_64x64_s2"]                # and with a float16 residual
    assert all(t16.smem_bytes(c, 2) <= P.SMEM_LIMIT for c, _ in EXPAND)


def test_name_expressions_and_nvcc_instantiations():
    t = P.TACTICS_BY_NAME["pwi8_128x128_s2"]
    assert [t.name_expression(d) for d in (np.int8, np.float32, np.float16)] == [
        "conv_pw_int8<128,128,4,2,2,0,0>", "conv_pw_int8<128,128,4,2,2,1,0>",
        "conv_pw_int8<128,128,4,2,2,2,0>"]
    t = P.TACTICS_BY_NAME["pw16_128x64_s2"]
    assert [t.name_expression(d) for d in (np.float16, np.float32)] == [
        "conv_pw_f16<128,64,4,1,2,0,0>", "conv_pw_f16<128,64,4,1,2,1,0>"]
    with pytest.raises(UnsupportedError, match="out dtype int8; valid: float16, float32"):
        t.name_expression(np.int8)
    # the CI compile check (test_cuda_compile) only sees the explicit instantiations
    block = (CUDA_DIR / P.SOURCE).read_text().split("#ifdef CUPYRT_NVCC_INSTANTIATE", 1)[1]
    inst = {re.sub(r"\s", "", m) for m in re.findall(r"template __global__ void (\w+<[^>]*>)", block)}
    for t in P.PW_TACTICS + P.PW16_TACTICS + P.PW3_TACTICS:
        for dt in (t.out_dtypes if t.kind == "pw_f16" else (np.int8,)):
            assert t.name_expression(dt) in inst, (t.name, dt)
    t = P.TACTICS_BY_NAME["pw3i8_256x64_s2"]
    assert [t.name_expression(d) for d in (np.int8, np.float32, np.float16)] == [
        "conv_pw3_int8<256,64,4,2,2,0,1>", "conv_pw3_int8<256,64,4,2,2,1,1>",
        "conv_pw3_int8<256,64,4,2,2,2,1>"]


# ---- occupancy and grid ----------------------------------------------------------------
def test_ctas_per_sm_takes_the_tightest_resource():
    assert P.ctas_per_sm(68608, 128, 128) == 3           # shared memory: 3 x 69632 <= 233472
    assert P.ctas_per_sm(20000, 128, 128) == 4           # registers: 65536 / (128 * 128)
    assert P.ctas_per_sm(8000, 64, 32) == 25             # shared memory: 233472 // 9000
    assert P.ctas_per_sm(1000, 32, 16) == 32             # the hardware's 32 CTAs per SM
    assert P.ctas_per_sm(1000, 1024, 16) == 2            # 2048 threads per SM
    assert P.ctas_per_sm(P.SMEM_LIMIT, 256, 255) == 1    # never below one


def test_grid_divides_the_resident_ctas_among_weight_slices():
    t = P.TACTICS_BY_NAME["pwi8_64x128_s3"]
    # ResNet-50 s1 expand at b256: M = 256 * 56 * 56, K = 256 -> 2 slices
    assert P.grid_for(256 * 3136, 256, t, per_sm=3, num_sms=132) == (2, 198)
    # s4 expand: 16 slices, one CTA per SM -> 8 per slice (128 CTAs resident)
    assert P.grid_for(256 * 49, 2048, t, per_sm=1, num_sms=132) == (16, 8)
    # few M tiles: no CTA without a tile; K not a multiple of BN: one more slice
    assert P.grid_for(100, 200, t, per_sm=3, num_sms=132) == (2, 2)
    # more slices than resident CTAs: still one CTA per slice
    assert P.grid_for(640, 128 * 500, t, per_sm=1, num_sms=132) == (500, 1)
    # forced (tests): more M tiles than CTAs, the persistent loop wraps
    assert P.grid_for(64 * 10, 256, t, per_sm=3, num_sms=132, ctas_per_slice=3) == (2, 3)


# ---- residual prefetch -------------------------------------------------------------------
class _Res:
    """Stands in for a CuPy residual: dtype and device pointer only."""
    def __init__(self, dtype, ptr=1 << 20):
        self.dtype = np.dtype(dtype)
        self.data = type("D", (), {"ptr": ptr})()


@pytest.mark.parametrize("C, K, dtype, ptr, want", [
    (64, 256, np.int8, 1 << 20, 1),
    (64, 256, np.float16, 1 << 20, 2),
    (64, 256, np.float32, 1 << 20, 4),
    (64, 72, np.int8, 1 << 20, 0),          # 72-byte rows: chunks would straddle K
    (64, 72, np.float16, 1 << 20, 2),       # 144-byte rows do not
    (64, 256, np.int8, (1 << 20) + 8, 0),   # misaligned pointer
    (512, 2048, np.int8, 1 << 20, 1),       # 207 KiB: fits
    (512, 2048, np.float16, 1 << 20, 0),    # 231 KiB: does not
])
def test_residual_prefetch_bytes(C, K, dtype, ptr, want):
    t = P.TACTICS_BY_NAME["pwi8_64x128_s3"]
    assert P.residual_prefetch_bytes(t, C, K, _Res(dtype, ptr)) == want
    assert P.residual_prefetch_bytes(t, C, K, None) == 0


# ---- argument checks (before the device) ------------------------------------------------
X8 = np.zeros((1, 4, 4, 16), np.int8)
W8 = np.zeros((8, 1, 1, 16), np.int8)
SW = np.ones(8, np.float32)


@pytest.mark.parametrize("kw, match", [
    (dict(tactic="nope"), "valid: pwi8_64x128_s3"),
    (dict(tactic=object()), "expected a PwTactic"),
    (dict(tactic="pw16_64x64_s2"), "'pw_f16' tactic; this function takes 'pw_int8' tactics: pwi8_"),
    (dict(w_q=np.zeros((8, 3, 3, 16), np.int8), padding=1), "1x1 convolutions only"),
    (dict(stride=2), "expected stride 1"),
    (dict(padding=1), "expected stride 1, no padding"),
    (dict(dilation=2), "dilation 1"),
    (dict(out_hw=(3, 3)), "keeps the size"),
    (dict(x_q=np.zeros((1, 2, 2, 1024), np.int8), w_q=np.zeros((8, 1, 1, 1024), np.int8)),
     r"C = 1024: .* holds C <= 640"),
    # conv_int8's own rules, shared
    (dict(x_q=np.zeros((1, 4, 4, 8), np.int8), w_q=np.zeros((8, 1, 1, 8), np.int8)), "multiple of 16"),
    (dict(s_out=None), "needs s_out"),
])
def test_argument_errors(kw, match):
    args = dict(x_q=X8, w_q=W8, s_out=1.0)
    args.update(kw)
    x, w = args.pop("x_q"), args.pop("w_q")
    with pytest.raises(UnsupportedError, match=match):
        P.conv2d_pw_int8(x, w, 1.0, SW, **args)


X32 = np.zeros((1, 4, 4, 32), np.int8)
W32 = np.zeros((8, 3, 3, 32), np.int8)


@pytest.mark.parametrize("kw, match", [
    (dict(tactic="pwi8_64x128_s3"), "'pw_int8' tactic; this function takes 'pw3_int8' tactics: pw3i8_"),
    (dict(w_q=np.zeros((8, 1, 1, 32), np.int8), padding=0), "3x3 convolutions only"),
    (dict(w_q=np.zeros((8, 5, 5, 32), np.int8), padding=2), "5x5 filter"),
    (dict(stride=2), "expected stride 1, padding 1"),
    (dict(padding=0), "expected stride 1, padding 1"),
    (dict(dilation=2, padding=2), "dilation 1"),
    (dict(out_hw=(3, 3)), "padding 1 on every side keeps the size"),
    (dict(x_q=np.zeros((1, 4, 4, 48), np.int8), w_q=np.zeros((8, 3, 3, 48), np.int8)), "C = 48 is not a multiple of 32"),
    (dict(x_q=np.zeros((1, 4, 4, 512), np.int8), w_q=np.zeros((8, 3, 3, 512), np.int8)),
     r"C = 512, W = 4: .* bytes of shared memory.* holds C <= \d+ at this width"),
    (dict(s_out=None), "needs s_out"),                   # conv_int8's own rules, shared
])
def test_3x3_argument_errors(kw, match):
    args = dict(x_q=X32, w_q=W32, s_out=1.0)
    args.update(kw)
    x, w = args.pop("x_q"), args.pop("w_q")
    with pytest.raises(UnsupportedError, match=match):
        P.conv2d_pw3_int8(x, w, 1.0, SW, **args)


def test_3x3_launcher_refuses_a_misaligned_output_before_the_device():
    with pytest.raises(UnsupportedError, match="conv2d_pw3_int8: out starts at address"):
        P.conv2d_pw3_int8(_dev(X32, 1 << 20), _dev(W32, 1 << 21), 1.0, SW, s_out=1.0,
                          out=_dev(np.zeros((1, 4, 4, 8), np.int8), (1 << 22) + 4))


def test_pointwise_reason_c_not_multiple_of_16():
    t = P.PW_TACTICS[0]
    assert "multiple of 16" in P.pointwise_reason(t, 40, 64, 1, 1, (1, 1), (0, 0), (1, 1))


X16 = np.zeros((1, 4, 4, 8), np.float16)
W16 = np.zeros((8, 1, 1, 8), np.float16)


@pytest.mark.parametrize("kw, match", [
    (dict(tactic="pwi8_64x128_s3"), "takes 'pw_f16' tactics: pw16_"),
    (dict(x=X16.astype(np.float32)), "takes float16"),
    (dict(x=np.zeros((1, 4, 4, 12), np.float16), w=np.zeros((8, 1, 1, 12), np.float16)), "multiple of 8"),
    (dict(w=np.zeros((8, 3, 3, 8), np.float16), padding=1), "conv2d_pw_f16: 3x3 filter"),
    (dict(stride=2), "expected stride 1"),
    (dict(out_hw=(5, 5)), "keeps the size"),
    (dict(out_dtype=np.int8), "valid: float16, float32"),
    (dict(x=np.zeros((1, 2, 2, 1024), np.float16), w=np.zeros((8, 1, 1, 1024), np.float16)),
     r"C = 1024: .* holds C <= "),
])
def test_f16_argument_errors(kw, match):
    args = dict(x=X16, w=W16)
    args.update(kw)
    x, w = args.pop("x"), args.pop("w")
    with pytest.raises(UnsupportedError, match=match):
        P.conv2d_pw_f16(x, w, **args)


# ---- 16-byte aligned device addresses -------------------------------------------------------
class _Dev(np.ndarray):
    """A NumPy array that reports a device address (``.data.ptr``), as a CuPy array does."""
    @property
    def data(self):
        return type("D", (), {"ptr": self.ptr})()


def _dev(a, ptr):
    d = np.asarray(a).view(_Dev)
    d.ptr = ptr
    return d


def test_check_aligned_names_the_first_misaligned_array():
    P.check_aligned("f", x=_dev(X8, 256), w=_dev(W8, 4096), out=None)       # aligned, absent: pass
    P.check_aligned("f", x=X8)                                               # no device pointer: pass
    with pytest.raises(UnsupportedError, match=r"f: w starts at address 0x1008, not a multiple of 16"):
        P.check_aligned("f", x=_dev(X8, 256), w=_dev(W8, 0x1008), out=_dev(X8, 3))


@pytest.mark.parametrize("which", ["x_q", "w_q", "residual"])
def test_int8_launcher_refuses_a_misaligned_array_before_the_device(which):
    args = dict(x_q=_dev(X8, 1 << 20), w_q=_dev(W8, 1 << 21), residual=None)
    if which == "residual":
        args["residual"] = _dev(np.zeros((1, 4, 4, 8), np.int8), (1 << 22) + 4)
    else:
        args[which] = _dev(args[which], (1 << 23) + 8)
    x, w = args.pop("x_q"), args.pop("w_q")
    with pytest.raises(UnsupportedError, match=f"conv2d_pw_int8: {which} starts at address"):
        P.conv2d_pw_int8(x, w, 1.0, SW, s_out=1.0, residual_scale=1.0 if args["residual"] is not None else None,
                         **args)


def test_f16_launcher_refuses_a_misaligned_input_before_the_device():
    with pytest.raises(UnsupportedError, match="conv2d_pw_f16: x starts at address 0x102"):
        P.conv2d_pw_f16(_dev(X16, 0x102), _dev(W16, 0x200))
