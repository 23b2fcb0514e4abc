"""wgmma convolution tactics without a GPU: the tactic table, argument checks (NumPy
arrays stand in for CuPy ones: every check runs before the device is touched), the
device gate, and an NVRTC build of every tactic with CuPy's own option order."""
import re
from pathlib import Path

import numpy as np
import pytest

from kernels.gpu import UnsupportedError
from kernels.gpu import conv_wgmma as W
from kernels.gpu.compile import nvrtc_library

CUDA_DIR = Path(__file__).resolve().parents[2] / "kernels" / "cuda"
SMEM_MAX = 227 * 1024           # opt-in dynamic shared memory per block on sm_90


def _no_sm90():
    return not W.available()


# ---- the tactic table ------------------------------------------------------------------
def test_tactic_names_unique_and_kinds_split():
    names = [t.name for t in W.TACTICS + W.INT8_TACTICS + W.INT8_OCC_TACTICS]
    assert len(names) == len(set(names)) == len(W.TACTICS_BY_NAME)
    assert {t.kind for t in W.TACTICS} == {"wgmma"}
    assert {t.kind for t in W.INT8_TACTICS + W.INT8_OCC_TACTICS} == {"wgmma_int8"}
    assert set(W.FAMILY.int8_tiles) == set(W.INT8_TACTICS + W.INT8_OCC_TACTICS)


ALL = W.TACTICS + W.INT8_TACTICS + W.INT8_OCC_TACTICS


@pytest.mark.parametrize("t", ALL, ids=lambda t: t.name)
def test_tile_fits_one_warpgroup_per_64_rows_and_smem(t):
    assert t.bm in (64, 128) and t.bn in (64, 128, 256) and t.stages >= 3
    assert t.threads == 2 * t.bm
    ring = t.stages * (t.bm + t.bn) * 128
    assert t.smem_bytes >= ring + 1024 and t.smem_bytes >= t.bm * (t.bn + 8) * 4 + 1024
    assert t.smem_bytes <= SMEM_MAX


@pytest.mark.parametrize("t", ALL, ids=lambda t: t.name)
def test_smem_for_short_reductions_holds_only_the_stages_filled(t):
    stage, epi = (t.bm + t.bn) * 128, t.bm * (t.bn + 8) * 4
    sizes = [t.smem_for(kb) for kb in (16, 64, 128, 129, 256, 384, 512, 4608, 10**6)]
    assert sizes == sorted(sizes) and max(sizes) == t.smem_bytes == t.smem_for(None)
    for kb, used in ((16, 1), (128, 1), (129, 2), (256, 2), (384, 3), (10**6, t.stages)):
        assert t.smem_for(kb) == max(min(used, t.stages) * stage, epi) + 1024, kb


def test_smem_for_examples():
    t = W.TACTICS_BY_NAME["wgi8_64x64_s4"]
    assert t.smem_for(64) == 64 * 72 * 4 + 1024 == 19456          # 1x1, 64 int8 channels
    assert t.smem_bytes == 4 * 128 * 128 + 1024
    t = W.TACTICS_BY_NAME["wg_128x128_s3"]                         # 64 halves = one k-tile
    assert t.smem_for(2 * 64) == 128 * 136 * 4 + 1024 < t.smem_bytes == 3 * 256 * 128 + 1024


def test_name_expressions():
    t = W.TACTICS_BY_NAME["wg_128x256_s4"]
    assert t.name_expression(np.float16) == "conv_wgmma_f16<128,256,4,0>"
    assert t.name_expression(np.float32) == "conv_wgmma_f16<128,256,4,1>"
    assert t.name_expression(np.float32, fast=True) == "conv_wgmma_f16<128,256,4,1,1>"
    t = W.TACTICS_BY_NAME["wgi8_64x128_s4"]
    assert [t.name_expression(d) for d in (np.int8, np.float32, np.float16)] == [
        "conv_wgmma_s8<64,128,4,0>", "conv_wgmma_s8<64,128,4,1>", "conv_wgmma_s8<64,128,4,2>"]


def test_the_three_cta_tile():
    # 128x64, a three-stage ring, __launch_bounds__(256, 3): on a 3x3 layer of 64 channels
    # (576 bytes a reduction row: 4.5 k-tiles) it takes 73 KiB, so three CTAs fit an SM's
    # 228 KiB (1 KiB of each reserved) where the s4 tile's 97 KiB fit two
    t = W.TACTICS_BY_NAME["wgi8_128x64_s3_3cta"]
    assert (t.bm, t.bn, t.stages, t.minb) == (128, 64, 3, 3)
    assert t.name_expression(np.int8) == "conv_wgmma_s8<128,64,3,0,3>"
    assert t.name_expression(np.float32) == "conv_wgmma_s8<128,64,3,1,3>"
    assert t.smem_for(576) == 3 * 192 * 128 + 1024 == 74752
    s4 = W.TACTICS_BY_NAME["wgi8_128x64_s4"]
    assert 3 * (t.smem_for(576) + 1024) <= 228 * 1024 < 3 * (s4.smem_for(576) + 1024)
    assert all(u.minb == 1 for u in W.TACTICS + W.INT8_TACTICS)


def test_nvcc_instantiation_list_covers_every_tactic():
    # the CI compile check (test_cuda_compile) only sees the explicit instantiations
    text = (CUDA_DIR / W.SOURCE).read_text()
    block = text.split("#ifdef CUPYRT_NVCC_INSTANTIATE", 1)[1]
    inst = {re.sub(r"\s", "", m) for m in re.findall(r"template __global__ void (\w+<[^>]*>)", block)}
    for t in ALL:
        dt = np.float16 if t.kind == "wgmma" else np.int8
        assert t.name_expression(dt) in inst, t.name


def test_source_is_marked_sm90a():
    first = (CUDA_DIR / W.SOURCE).read_text().splitlines()[0]
    assert first.strip() == "// cupyrt-arch: sm_90a"
    assert W.ARCH_OPTIONS == ("-arch=sm_90a",)


# ---- tactic lookup ---------------------------------------------------------------------
X16 = np.zeros((1, 4, 4, 8), np.float16)
W16 = np.zeros((8, 1, 1, 8), np.float16)
X8 = np.zeros((1, 4, 4, 16), np.int8)
W8 = np.zeros((8, 1, 1, 16), np.int8)
SW = np.ones(8, np.float32)


def test_unknown_tactic_name_lists_valid_ones():
    with pytest.raises(UnsupportedError, match="valid: wg_128x128_s4"):
        W.conv2d_wgmma(X16, W16, tactic="nope")


def test_int8_tactic_rejected_by_fp16_launcher_and_back():
    with pytest.raises(UnsupportedError, match="'wgmma' tactics: wg_"):
        W.conv2d_wgmma(X16, W16, tactic=W.INT8_TACTICS[0])
    with pytest.raises(UnsupportedError, match="'wgmma_int8' tactics: wgi8_"):
        W.conv2d_wgmma_int8(X8, W8, 1.0, SW, s_out=1.0, tactic="wg_128x128_s4")


def test_foreign_tactic_object_rejected():
    from kernels.gpu import conv_igemm
    with pytest.raises(UnsupportedError, match="expected a WgmmaTactic"):
        W.conv2d_wgmma(X16, W16, tactic=conv_igemm.IGEMM_TACTICS[0])


# ---- FP16 argument checks (before the device) ------------------------------------------
@pytest.mark.parametrize("x,w,match", [
    (X16.astype(np.float32), W16, "takes float16"),
    (X16[0], W16, "rank 4"),
    (np.zeros((1, 4, 4, 12), np.float16), np.zeros((8, 1, 1, 12), np.float16), "multiple of 8"),
    (X16, np.zeros((8, 1, 1, 16), np.float16), r"expected \[K, R, S, 8\]"),
])
def test_fp16_argument_errors(x, w, match):
    with pytest.raises(UnsupportedError, match=match):
        W.conv2d_wgmma(x, w)


# ---- INT8 argument checks (conv_int8.conv2d_int8's rules) ------------------------------
class _Huge:
    """Stands in for an int8 activation of 2**31 elements (never allocated)."""
    dtype = np.dtype(np.int8)
    ndim = 4
    shape = (2, 16384, 4096, 16)
    size = 2 * 16384 * 4096 * 16

    class flags:
        c_contiguous = True


@pytest.mark.parametrize("kw,match", [
    (dict(x_q=X8.astype(np.float16)), "int8 codes"),
    (dict(x_q=np.zeros((1, 4, 8, 16), np.int8)[:, :, ::2]), "contiguous NHWC"),
    (dict(w_q=np.zeros((8, 1, 1, 32), np.int8)[..., ::2]), "contiguous rank 4"),
    (dict(x_q=np.zeros((1, 4, 4, 8), np.int8), w_q=np.zeros((8, 1, 1, 8), np.int8)), "multiple of 16"),
    (dict(w_q=np.zeros((8, 1, 1, 32), np.int8)), r"expected \[K, R, S, 16\]"),
    (dict(x_q=_Huge(), w_q=np.zeros((8, 1, 1, 16), np.int8)), "split the batch"),
    (dict(w_q=np.zeros((8, 7, 7, 16), np.int8)), "expected positive"),
    (dict(out_dtype=np.int32), "out dtype"),
    (dict(s_out=None), "needs s_out"),
    (dict(out_dtype=np.float32), "float output takes none"),
    (dict(residual=np.zeros((1, 4, 4, 4), np.int8), residual_scale=1.0), "residual"),
    (dict(residual=np.zeros((1, 4, 4, 8), np.int8)), "residual_scale"),
    (dict(residual=np.zeros((1, 4, 4, 8), np.float32), residual_scale=0.5), "takes none"),
])
def test_int8_argument_errors(kw, match):
    args = dict(x_q=X8, w_q=W8, s_out=1.0)
    args.update(kw)
    x, w = args.pop("x_q"), args.pop("w_q")
    with pytest.raises(UnsupportedError, match=match):
        W.conv2d_wgmma_int8(x, w, 1.0, SW, **args)


# ---- the device gate -------------------------------------------------------------------
@pytest.mark.skipif(not _no_sm90(), reason="a compute capability 9.0 device is present")
def test_valid_arguments_without_sm90_device_raise_unsupported():
    assert W.available() is False
    with pytest.raises(UnsupportedError, match="compute capability 9.0"):
        W.conv2d_wgmma(X16, W16)
    with pytest.raises(UnsupportedError, match="compute capability 9.0"):
        W.conv2d_wgmma_int8(X8, W8, 1.0, SW, s_out=1.0)
    with pytest.raises(UnsupportedError, match="conv_igemm / conv_int8"):
        W.compile_all()


# ---- NVRTC build of every tactic, as CuPy runs it --------------------------------------
def _nvrtc():
    return nvrtc_library()


@pytest.mark.parametrize("t", W.TACTICS + W.INT8_TACTICS, ids=lambda t: t.name)
def test_nvrtc_builds_tactic_with_cupy_option_order(t):
    """CuPy appends its own -arch=sm_90 after ours (cupy/cuda/compiler.py): NVRTC must still
    build the sm_90a target (wgmma does not assemble for sm_90), with no spills."""
    nvrtc = _nvrtc()
    if nvrtc is None:
        pytest.skip("NVRTC is not available")
    from kernels.gpu.compile import DEFAULT_OPTIONS, read_source
    outs = (np.float16, np.float32) if t.kind == "wgmma" else (np.int8, np.float32, np.float16)
    names = [t.name_expression(d) for d in outs]
    if t.kind == "wgmma":                    # and the FAST instantiations (not yet the default)
        names += [t.name_expression(d, fast=True) for d in outs]
    prog = nvrtc.createProgram(read_source(W.SOURCE), W.SOURCE, (), ())
    for n in names:
        nvrtc.addNameExpression(prog, n)
    opts = list(DEFAULT_OPTIONS) + list(W.ARCH_OPTIONS) + [
        "-ftz=true", "-arch=sm_90", "--device-as-default-execution-space", "-Xptxas", "-v"]
    try:
        nvrtc.compileProgram(prog, opts)
        log = nvrtc.getProgramLog(prog)
        for n in names:
            assert nvrtc.getLoweredName(prog, n)
    except Exception as exc:
        pytest.fail(f"NVRTC failed on {names}: {exc}\n{nvrtc.getProgramLog(prog)}")
    finally:
        nvrtc.destroyProgram(prog)
    # spills only: a stack frame without spills is the 8 values handed to the out-of-line
    # activation (common.cuh apply_act8_outline, non-linear codes only), by design
    spills = [ln for ln in log.splitlines() if re.search(r"[1-9]\d* bytes spill (stores|loads)", ln)]
    assert not spills, "\n".join(spills)


# ---- the INT8 residual prefetch (res_kind | 4) --------------------------------------------
class _Res:
    """Stands in for a CuPy residual: dtype, shape and device pointer only."""
    def __init__(self, K, dtype, ptr=1 << 20):
        self.dtype, self.shape = np.dtype(dtype), (2, 7, 7, K)
        self.data = type("D", (), {"ptr": ptr})()


@pytest.mark.parametrize("name, K, dtype, want", [
    ("wgi8_64x128_s4", 512, np.int8, 64 * 128),          # 1x1 expand layer, int8 residual
    ("wgi8_64x64_s4", 256, np.float32, 64 * 64 * 4),
    ("wgi8_128x256_s4", 1024, np.int8, 128 * 256),       # 193 + 32 KiB still fits
    ("wgi8_128x256_s4", 1024, np.float16, 0),            # 193 + 64 KiB does not
    ("wgi8_64x128_s4", 72, np.int8, 0),                  # 72-byte rows: not 16-byte aligned
    ("wgi8_64x128_s4", 72, np.float16, 64 * 128 * 2),    # 144-byte rows are
])
def test_residual_prefetch_bytes(name, K, dtype, want):
    t = W.TACTICS_BY_NAME[name]
    assert W.residual_prefetch_bytes(t, t.smem_bytes, _Res(K, dtype)) == want
    if want:
        assert t.smem_bytes + want <= W.SMEM_LIMIT == SMEM_MAX


def test_residual_prefetch_needs_a_residual_and_an_aligned_pointer():
    t = W.TACTICS_BY_NAME["wgi8_64x128_s4"]
    assert W.residual_prefetch_bytes(t, t.smem_bytes, None) == 0
    assert W.residual_prefetch_bytes(t, t.smem_bytes, _Res(512, np.int8, ptr=(1 << 20) + 8)) == 0


def _params(kernel):
    """Parameter names of a conv_wgmma.cu kernel, in order."""
    sig = (CUDA_DIR / "conv_wgmma.cu").read_text().split(kernel + "(", 1)[1].split(")", 1)[0]
    return [p.split()[-1].strip("*") for p in sig.replace("\n", " ").split(",")]


def test_res_flags_land_in_the_int8_kernels_res_kind(monkeypatch):
    # the launcher ORs 4 (residual prefetched) into res_kind through the argument builder
    from kernels.gpu import conv_int8
    monkeypatch.setattr(conv_int8, "prepare_output", lambda N, P, Q, K, out, *a: (out, K, None))
    monkeypatch.setattr(conv_int8, "_f32vec", lambda v, K, what: v)
    x = np.zeros((1, 4, 4, 16), np.int8)
    w = np.zeros((32, 1, 1, 16), np.int8)
    res = np.zeros((1, 4, 4, 32), np.float16)
    g = conv_int8.check_int8_args(x, w, 1, 0, 1, None, None, np.int8, 0.1, res, None)
    _, args = conv_int8._int8_launch_args(x, w, g, 0.02, np.ones(32, np.float32), None, 0.1,
                                          np.zeros((1, 4, 4, 32), np.int8), 0, res, None,
                                          "RELU", 0.0, 0.0, res_flags=4)
    params = _params("conv_wgmma_s8")
    assert len(args) == len(params)
    assert args[params.index("res_kind")] == g["res_kind"] | 4 == 7


# ---- the FP16 fast epilogue (FAST = 1, has_res bit 2; on unless CUPYRT_WGMMA_F16_FAST_EPILOGUE=0)
def test_f16_fast_epilogue_is_an_argument_on_by_default():
    """The kernel module reads no switch: the engine passes its setting."""
    import inspect
    from pathlib import Path
    assert inspect.signature(W.conv2d_wgmma).parameters["fast_epilogue"].default is True
    assert "os.environ" not in Path(W.__file__).read_text()


@pytest.mark.parametrize("name, residual, fast, want", [
    ("wg_64x128_s4", None, False, (0, 0)),
    ("wg_64x128_s4", _Res(512, np.float16), False, (1, 0)),           # the validated path
    ("wg_64x128_s4", None, True, (0, 0)),
    ("wg_64x128_s4", _Res(512, np.float16), True, (3, 64 * 128 * 2)),
    ("wg_64x128_s4", _Res(512, np.float32), True, (3, 64 * 128 * 4)),
    ("wg_128x256_s4", _Res(1024, np.float16), True, (1, 0)),          # 193 + 64 KiB: no room
    ("wg_64x128_s4", _Res(20, np.float16), True, (1, 0)),             # 40-byte rows
])
def test_f16_epilogue_flags(name, residual, fast, want):
    t = W.TACTICS_BY_NAME[name]
    assert W.f16_epilogue_flags(t, t.smem_bytes, residual, fast) == want


def test_res_flags_land_in_the_f16_kernels_has_res():
    from kernels.gpu import conv_igemm
    g = conv_igemm._Geometry()
    for k in ("x", "w", "out", "sc", "bi", "res"):
        setattr(g, k, None)
    for k in ("N", "H", "W", "C", "K", "R", "S", "P", "Q", "sh", "sw", "ph", "pw", "dh", "dw",
              "out_ld", "out_off", "res_ld"):
        setattr(g, k, 1)
    g.has_res = True
    params = _params("conv_wgmma_f16")
    args = g.args("RELU", 0.0, 0.0, res_flags=3)
    assert len(args) == len(params) and args[params.index("has_res")] == 3
    assert g.args("RELU", 0.0, 0.0)[params.index("has_res")] == 1


def test_compile_all_builds_the_fast_or_the_plain_fp16_instantiations_not_both(monkeypatch):
    """A launch with fast_epilogue runs the FAST instantiation only, so a precompile for
    it builds those alone; INT8 tiles have one kind."""
    built = []
    monkeypatch.setattr(W, "require_available", lambda: None)
    monkeypatch.setattr(W, "_kernel", lambda t, dt, fast=False: built.append((t.kind, np.dtype(dt).name, fast)))
    W.compile_all(W.TACTICS[:1] + W.INT8_TACTICS[:1], out_dtypes=(np.float16, np.float32), fast=True)
    assert built == [("wgmma", "float16", True), ("wgmma", "float32", True),
                     ("wgmma_int8", "float16", False), ("wgmma_int8", "float32", False)]
    built.clear()
    W.compile_all(W.TACTICS[:1])
    assert built == [("wgmma", "float16", False)]
