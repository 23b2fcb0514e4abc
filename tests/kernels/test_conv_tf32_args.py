"""kernels.gpu.conv_tf32 without a GPU: the tile table, the NumPy model of the
kernel's TF32 rounding, 3xTF32 split and truncating MMA accumulation (and the
accuracy it predicts with and without promotion), and every
argument error the launcher raises before touching the device (NumPy arrays
stand in for CuPy ones: the checks read only shape, dtype and flags)."""
import numpy as np
import pytest

from kernels.gpu import conv_tf32 as T
from kernels.gpu.errors import UnsupportedError

RNG = np.random.default_rng(7)
SMEM_LIMIT = 227 * 1024          # H100 / H200 opt-in shared memory per block


def x_w(C=8, K=16, R=3, dtype=np.float32):
    return np.zeros((1, 6, 6, C), dtype), np.zeros((K, R, R, C), dtype)


# ---- the tile table -------------------------------------------------------------
@pytest.mark.parametrize("t", T.TACTICS, ids=lambda t: t.name)
def test_tiles_satisfy_the_kernel_static_asserts(t):
    ch = t.bk // 4                                 # 16-byte chunks per smem row
    rows = t.threads // ch
    assert t.threads % ch == 0 and t.bm % rows == 0 and t.bn % rows == 0
    assert (t.bm // t.wm) % 16 == 0 and (t.bn // t.wn) % 16 == 0
    assert t.bk % 16 == 0                          # an even number of k8 steps (fragment double buffer)
    assert t.smem_bytes <= SMEM_LIMIT
    base = f"{t.bm}x{t.bn}x{t.bk}_w{t.wm}x{t.wn}_s{t.stages}"
    assert t.name == (f"3xtf32_{base}_p{t.promote}" if t.precise else f"tf32_{base}")
    if t.precise:
        # promotion windows end inside a k-tile; a second accumulator set fits only
        # with 32 accumulators per thread (32x32 warp tiles)
        assert (t.bk // 8) % t.promote == 0
        assert t.bm // t.wm == 32 and t.bn // t.wn == 32


def test_each_precision_has_tiles_and_fc_tiles():
    assert T.PRECISE_TACTICS and T.TF32_TACTICS
    assert all(t.precise for t in T.PRECISE_TACTICS) and not any(t.precise for t in T.TF32_TACTICS)
    assert T.tactics_for(True) == T.PRECISE_TACTICS and T.tactics_for(False) == T.TF32_TACTICS
    assert {t.precise for t in T.FC_TACTICS} == {True, False}
    assert T.tactic_default(True).precise and not T.tactic_default(False).precise


def test_name_expression_and_smem_formula():
    t = T.TACTICS_BY_NAME["tf32_128x128x32_w2x4_s3"]
    assert t.name_expression(True) == "conv_tf32<128,128,32,2,4,3,0,0,1>"
    assert t.name_expression(False) == "conv_tf32<128,128,32,2,4,3,0,0,0>"
    p = T.TACTICS_BY_NAME["3xtf32_128x64x32_w4x2_s4_p2"]
    assert p.name_expression(True) == "conv_tf32<128,64,32,4,2,4,1,2,1>"
    assert p.threads == 256
    assert t.threads == 256
    assert t.smem_bytes == 3 * 256 * 36 * 4                    # ring > staged epilogue
    assert T.TACTICS_BY_NAME["tf32_64x64x32_w2x2_s4"].smem_bytes == 4 * 128 * 36 * 4
    assert set(T.FC_TACTICS) <= set(T.TACTICS)


def test_every_tile_is_instantiated_for_nvcc():
    """The CI compile check builds the explicit instantiations: each tile must be there."""
    src = (T.conv_igemm.__file__.rsplit("/", 2)[0] + "/cuda/conv_tf32.cu")
    text = open(src).read()
    for t in T.TACTICS:
        args = f"{t.bm}, {t.bn}, {t.bk}, {t.wm}, {t.wn}, {t.stages}"
        inst = f"CUPYRT_3XTF32_TILE({args}, {t.promote})" if t.precise else f"CUPYRT_TF32_TILE({args})"
        assert inst in text, t.name


# ---- the NumPy model of the operand rounding -------------------------------------
def test_tf32_round_keeps_10_mantissa_bits_ties_away_from_zero():
    one = np.float32(1.0)
    ulp = np.float32(2.0 ** -10)
    vals = np.array([1 + 2.0 ** -11, -(1 + 2.0 ** -11), 1 + 2.0 ** -12, 1 + 3 * 2.0 ** -11, 3.0],
                    np.float32)
    got = T.tf32_round(vals)
    np.testing.assert_array_equal(got, [one + ulp, -(one + ulp), one, one + 2 * ulp, 3.0])
    assert not (T.tf32_round(RNG.standard_normal(1000).astype(np.float32)).view(np.uint32)
                & 0x1FFF).any()


def test_split_3xtf32_is_exact_to_22_bits():
    x = RNG.standard_normal(100_000).astype(np.float32)
    big, small = T.split_3xtf32(x)
    assert not ((big.view(np.uint32) | small.view(np.uint32)) & 0x1FFF).any()
    err = np.abs(x.astype(np.float64) - big - small) / np.abs(x)
    assert err.max() <= 2.0 ** -21


def test_split_3xtf32_puts_an_activations_infinity_in_its_small_part():
    x = np.array([np.inf, -np.inf, np.nan, 1.5, -2.0, 0.1], np.float32)
    big, small = T.split_3xtf32(x, inf_in_small=True)
    np.testing.assert_array_equal(big[:2], 0.0)                       # not inf - inf = NaN
    assert small[0] == np.inf and small[1] == -np.inf and np.isnan(big[2])
    plain_big, plain_small = T.split_3xtf32(x)
    np.testing.assert_array_equal(big[3:], plain_big[3:])              # finite: as before
    np.testing.assert_array_equal(small[3:], plain_small[3:])
    assert small[5] != 0 and plain_big[0] == np.inf and np.isnan(plain_small[0])


def test_3xtf32_model_keeps_an_infinite_input_infinite_where_fp32_does():
    """Rows of a holding +inf, -inf, NaN, against weights with exact-TF32 values (small part
    0: inf * 0 in the cross term would be NaN) and ones whose parts differ in sign: the
    model's inf / NaN pattern is float64's, and its finite rows are unchanged."""
    a = RNG.standard_normal((16, 16)).astype(np.float32)
    b = RNG.standard_normal((16, 8)).astype(np.float32)
    b[:, :3] = np.float32(0.5)                                   # TF32-exact: small part 0
    b[2, 3] = np.float32(0.0)                                    # inf * 0 is NaN in FP32 too
    a[0, 2], a[1, 5], a[2, 7] = np.inf, -np.inf, np.nan
    with np.errstate(invalid="ignore", over="ignore"):
        want = a.astype(np.float64) @ b.astype(np.float64)
        got = T.gemm_3xtf32_model(a, b)
    for f in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(f(got), f(want))
    assert np.isposinf(want).any() and np.isneginf(want).any() and np.isnan(want[0, 3])
    fin = np.isfinite(want)
    assert np.abs(got[fin] - want[fin]).max() <= 1e-4 * np.abs(want[fin]).max()


def test_3xtf32_model_predicts_fp32_accuracy_and_tf32_does_not():
    """The products the kernel forms (small terms dropped), summed in float64: the
    3xTF32 error is ~1e-7, inside the FP32 tolerance (1e-5); plain TF32 ~1e-4."""
    a = RNG.standard_normal((64, 4608)).astype(np.float32)      # C = 512, 3x3 reduction
    b = RNG.standard_normal((4608, 32)).astype(np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    (ab, as_), (bb, bs) = T.split_3xtf32(a), T.split_3xtf32(b)
    f = np.float64
    three = as_.astype(f) @ bb.astype(f) + ab.astype(f) @ bs.astype(f) + ab.astype(f) @ bb.astype(f)
    one = ab.astype(f) @ bb.astype(f)

    def rel(v):
        return np.linalg.norm(v - exact) / np.linalg.norm(exact)
    assert rel(three) < 1e-6
    assert 1e-5 < rel(one) < 1e-3


def test_mma_model_truncates_towards_zero_below_the_largest_addend():
    """One mma: c = 1 plus products of 2**-22 (1 bit below 21 kept bits) are lost
    one by one, while IEEE FP32 (24 bits) would keep their sum, 2**-19."""
    a = np.full((1, 8), 2.0 ** -11)
    b = np.full((8, 1), 2.0 ** -11)
    assert T.mma_tf32_model(np.ones((1, 1)), a, b)[0, 0] == 1.0
    assert T.mma_tf32_model(np.ones((1, 1)), a, b, align_bits=24)[0, 0] == 1.0 + 2.0 ** -19
    assert T.mma_tf32_model(-np.ones((1, 1)), a, -b)[0, 0] == -1.0            # towards zero
    assert T.mma_tf32_model(np.zeros((1, 1)), a, b)[0, 0] == 2.0 ** -19       # exact from zero


@pytest.fixture(scope="module")
def deep_reduction():
    """The GPU test's deep case in GEMM form: Kr = 4608 (C = 512, 3x3), N(0, 1)."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((32, 4608)).astype(np.float32)
    b = rng.standard_normal((4608, 32)).astype(np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    return a, b, lambda v: np.linalg.norm(v - exact) / np.linalg.norm(exact)


def test_accumulation_model_reproduces_the_h200_error_without_promotion(deep_reduction):
    """H200, 2026-11-27: 3xTF32 without promotion gave 2.8e-5..3.0e-5 on this
    reduction, over the FP32 tolerance (1e-5); the model must predict that."""
    a, b, rel = deep_reduction
    err = rel(T.gemm_3xtf32_model(a, b, promote=0))
    assert 1.5e-5 < err < 6e-5, err


@pytest.mark.parametrize("t", T.PRECISE_TACTICS, ids=lambda t: t.name)
def test_promoting_tiles_are_predicted_fp32_accurate(deep_reduction, t):
    """Each 3xTF32 tile's promotion window keeps the deep reduction well inside
    the GPU test's bound (rel L2 <= 1e-5 / 2 for the deep case)."""
    a, b, rel = deep_reduction
    err = rel(T.gemm_3xtf32_model(a, b, promote=t.promote))
    assert err < 3e-6, err


# ---- argument errors (no device needed) ------------------------------------------
@pytest.mark.parametrize("precise,tile", [(True, "tf32_64x64x32_w2x2_s4"),
                                          (False, "3xtf32_64x64x32_w2x2_s4_p2")])
def test_rejects_a_tile_of_the_other_precision(precise, tile):
    x, w = x_w()
    with pytest.raises(UnsupportedError, match=f"tactic {tile} is a .*; valid: "
                                               f"{T.tactics_for(precise)[0].name}"):
        T.conv2d_tf32(x, w, precise=precise, tactic=tile)


def test_tf32_tactics_import_first_in_a_fresh_interpreter():
    """engine.gpu.conv_tf32_tactics imported before anything else of engine.gpu: no
    circle to trip over (it used to import conv_tactics back)."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", "from engine.gpu import conv_tf32_tactics; "
                           "from engine.gpu.tactics import candidates"],
                          cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_rejects_unknown_tactic_name():
    x, w = x_w()
    with pytest.raises(UnsupportedError, match="valid: 3xtf32_128x64x32"):
        T.conv2d_tf32(x, w, tactic="nope")


def test_rejects_a_tactic_of_another_kernel():
    x, w = x_w()
    with pytest.raises(UnsupportedError, match="expected a Tf32Tactic or one of "):
        T.conv2d_tf32(x, w, tactic=T.conv_igemm.IGEMM_TACTICS[0])


@pytest.mark.parametrize("precise", [1, "yes", None])
def test_rejects_non_bool_precise(precise):
    x, w = x_w()
    with pytest.raises(UnsupportedError, match="precise="):
        T.conv2d_tf32(x, w, precise=precise)


@pytest.mark.parametrize("C", [3, 6, 10])
def test_rejects_channels_not_multiple_of_4(C):
    x, w = x_w(C=C)
    with pytest.raises(UnsupportedError, match="multiple of 4"):
        T.conv2d_tf32(x, w)


def test_rejects_weights_with_other_channel_count():
    x, _ = x_w(C=8)
    _, w = x_w(C=12)
    with pytest.raises(UnsupportedError, match=r"expected \[K, R, S, 8\]"):
        T.conv2d_tf32(x, w)


@pytest.mark.parametrize("xd,wd", [(np.float16, np.float32), (np.float32, np.float16),
                                   (np.float64, np.float64)])
def test_rejects_other_operand_dtypes(xd, wd):
    x, _ = x_w(dtype=xd)
    _, w = x_w(dtype=wd)
    with pytest.raises(UnsupportedError, match="takes float32"):
        T.conv2d_tf32(x, w)


def test_rejects_non_contiguous_or_wrong_rank_input():
    x, w = x_w()
    with pytest.raises(UnsupportedError, match="contiguous NHWC rank 4"):
        T.conv2d_tf32(np.zeros((8, 8, 8), np.float32), w)
    with pytest.raises(UnsupportedError, match="contiguous NHWC rank 4"):
        T.conv2d_tf32(np.zeros((1, 6, 12, 8), np.float32)[:, :, ::2], w)
    with pytest.raises(UnsupportedError, match="contiguous rank 4"):
        T.conv2d_tf32(x, np.zeros((16, 3 * 3 * 8), np.float32))


def test_rejects_bad_geometry():
    x, w = x_w()
    with pytest.raises(UnsupportedError, match="expected an int or a pair"):
        T.conv2d_tf32(x, w, stride=(1, 1, 1))
    with pytest.raises(UnsupportedError, match="expected positive"):
        T.conv2d_tf32(np.zeros((1, 2, 2, 8), np.float32), np.zeros((4, 5, 5, 8), np.float32))


def test_rejects_integer_output_dtype():
    x, w = x_w()
    with pytest.raises(UnsupportedError, match="valid: float16, float32"):
        T.conv2d_tf32(x, w, padding=1, out_dtype=np.int8)


def test_rejects_bad_output_buffer_and_residual():
    """prepare_output's checks (shared with conv_igemm) run before any allocation here."""
    pytest.importorskip("cupy")                  # prepare_output imports it (no device needed)
    x, w = x_w(K=16)
    with pytest.raises(UnsupportedError, match="out dtype int32; valid"):
        T.conv2d_tf32(x, w, padding=1, out=np.zeros((1, 6, 6, 16), np.int32))
    with pytest.raises(UnsupportedError, match="needs a preallocated"):
        T.conv2d_tf32(x, w, padding=1, out_channel_offset=8)
    with pytest.raises(UnsupportedError, match="do not fit"):
        T.conv2d_tf32(x, w, padding=1, out=np.zeros((1, 6, 6, 20), np.float32), out_channel_offset=8)
    with pytest.raises(UnsupportedError, match="expected contiguous"):
        T.conv2d_tf32(x, w, padding=1, out=np.zeros((1, 5, 6, 16), np.float32))
    with pytest.raises(UnsupportedError, match="residual"):
        T.conv2d_tf32(x, w, padding=1, out=np.zeros((1, 6, 6, 16), np.float32),
                      residual=np.zeros((1, 6, 6, 16), np.float16))


def test_pack_rejects_padding_not_multiple_of_4():
    with pytest.raises(UnsupportedError, match="c_pad_to=6"):
        T.pack_weight_krsc_f32(np.zeros((8, 3, 3, 3), np.float32), c_pad_to=6)


# ---- the engine tactics' bookkeeping (no device: supports() reads attributes only) --
def test_engine_tactics_registered_once_and_plain_tf32_marked():
    import engine as rt
    from engine.gpu import conv_tf32_tactics, fc_tactics
    from engine.gpu.tactics import candidates
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 8, 6, 6))
    layer = net.add_convolution_nd(x, 8, (3, 3), kernel=np.ones((8, 8, 3, 3), np.float32))
    ours = [t for t in candidates(layer) if isinstance(t, conv_tf32_tactics.ConvTf32)]
    assert len(ours) == len(T.TACTICS) == len({t.name for t in ours})
    for t in ours:
        assert t.tf32 == (not t.precise) and t.capturable and t.precise == t.tile.precise
        assert t.name == f"conv.{t.tile.name}"
        assert t.supports(layer, [(2, 8, 6, 6)], ["float32"], rt.float32) is None
        assert "FLOAT layers only" in t.supports(layer, [(2, 8, 6, 6)], ["float32"], rt.float16)
    fc = [t for t in fc_tactics.TACTICS if isinstance(t, fc_tactics.FcTf32)]
    assert [t.tile for t in fc] == list(T.FC_TACTICS) and all(t.launch is T.conv2d_tf32 for t in fc)
