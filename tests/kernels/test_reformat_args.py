"""Which padded NCHW -> NHWC reformats the dedicated kernel (reformat.cu's
nchw_to_nhwc_pad) takes and why it leaves the rest to the generic elementwise kernel;
checked on NumPy arrays (the rule reads shapes, dtypes and flags only)."""
import numpy as np
import pytest

from kernels.gpu.reformat import padded_kernel_reason


def _x(shape=(2, 3, 5, 7), dtype=np.float32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("Cp", [4, 8])
def test_contiguous_nchw_float_to_half_with_4_or_8_channels_takes_the_kernel(dtype, Cp):
    assert padded_kernel_reason(_x(dtype=dtype), np.float16, Cp) is None
    assert padded_kernel_reason(_x(dtype=dtype), np.float16, Cp,
                                out=np.empty((2, 5, 7, Cp), np.float16)) is None


@pytest.mark.parametrize("x, dtype, Cp, out, match", [
    (_x((2, 3, 5)), np.float16, 4, None, "rank 3; expected NCHW rank 4"),
    (_x(dtype=np.float64), np.float16, 4, None, "input dtype float64; expected float32 or float16"),
    (_x(), np.float32, 4, None, "output dtype float32; expected float16"),
    (_x(), np.float16, 3, None, "3 padded channels; expected 4 or 8"),
    (_x(), np.float16, 16, None, "16 padded channels; expected 4 or 8"),
    (_x((2, 5, 7, 3)).transpose(0, 3, 1, 2), np.float16, 4, None, "not C-contiguous NCHW"),
    (_x((2, 3, 5, 14))[..., ::2], np.float16, 4, None, "not C-contiguous NCHW"),
    (_x(), np.float16, 4, np.empty((2, 5, 7, 8), np.float16), r"out \(2, 5, 7, 8\) float16; expected"),
    (_x(), np.float16, 4, np.empty((2, 5, 7, 4), np.float32), "out .* float32; expected contiguous"),
    (_x(), np.float16, 4, np.empty((2, 5, 4, 7), np.float16).transpose(0, 1, 3, 2), "expected contiguous"),
])
def test_other_reformats_go_to_the_generic_kernel_with_the_reason(x, dtype, Cp, out, match):
    reason = padded_kernel_reason(x, dtype, Cp, out)
    assert reason is not None
    import re
    assert re.search(match, reason), reason


def test_an_out_view_off_8_byte_alignment_goes_to_the_generic_kernel():
    raw = np.zeros(2 * 5 * 7 * 4 + 16, np.float16)
    start = (-raw.ctypes.data % 16) // 2                   # raw[start] 16-byte aligned
    view = lambda off: raw[start + off:start + off + 2 * 5 * 7 * 4].reshape(2, 5, 7, 4)  # noqa: E731
    assert padded_kernel_reason(_x(), np.float16, 4, view(4)) is None      # 8 bytes past: 8-byte stores
    assert "8-byte alignment" in padded_kernel_reason(_x(), np.float16, 4, view(1))


def test_huge_images_and_batches_are_left_to_the_generic_kernel():
    class Big:                                   # shape and flags only: no 2**31 allocation
        ndim, dtype = 4, np.dtype(np.float32)
        flags = np.empty(1).flags

        def __init__(self, shape):
            self.shape = shape
    assert "2**31" in padded_kernel_reason(Big((1, 3, 32768, 32768)), np.float16, 4)
    assert "batch > 65535" in padded_kernel_reason(Big((65536, 3, 8, 8)), np.float16, 4)
    assert padded_kernel_reason(Big((65535, 3, 224, 224)), np.float16, 8) is None


def test_the_dedicated_kernel_runs_only_when_asked(monkeypatch):
    """Without ``dedicated`` every reformat takes the generic kernel (the dedicated one has
    not run on a GPU yet); with it, the cases the rule admits take the dedicated kernel."""
    from kernels.gpu import reformat as R
    calls = []
    monkeypatch.setattr(R, "_pad_kernel", lambda x, Cp, out: calls.append(("dedicated", Cp)) or out)
    monkeypatch.setattr(R, "generic_padded", lambda x, dtype, Cp, out=None: calls.append(("generic", Cp)) or out)
    out4, out8 = np.empty((2, 5, 7, 4), np.float16), np.empty((2, 5, 7, 8), np.float16)
    assert R.nchw_to_nhwc_padded(_x(), np.float16, 4, out=out4) is out4
    assert R.nchw_to_nhwc_padded(_x(), np.float16, 8, out=out8, dedicated=True) is out8
    R.nchw_to_nhwc_padded(_x(dtype=np.float64), np.float16, 4, out=out4, dedicated=True)
    assert calls == [("generic", 4), ("dedicated", 8), ("generic", 4)]


def test_the_engine_asks_for_it_under_the_stem_kernel_setting(monkeypatch):
    from engine.gpu import base
    seen = []
    monkeypatch.setattr(base, "nchw_to_nhwc_padded",
                        lambda x, dtype, c_to, dedicated=False: seen.append(dedicated))
    x = _x()
    base.as_nhwc(x, np.float16, 4)                       # on by default
    monkeypatch.setenv("CUPYRT_STEM_KERNEL", "0")
    base.as_nhwc(x, np.float16, 4)
    assert seen == [True, False]
