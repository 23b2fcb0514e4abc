"""FP16 stem kernel (kernels/cuda/conv_stem.cu) on the CPU: the packed weight layout, the
kernel's patch / fragment / epilogue index arithmetic emulated in NumPy against a direct
convolution, the shared-memory budget of each tile, and every argument check of the
launcher before any device work (NumPy arrays stand in)."""
import os
import sys

import numpy as np
import pytest

from kernels.gpu import UnsupportedError, conv_stem
sys.path.insert(0, os.path.dirname(__file__))
from test_conv_int8_smallc_args import PERMS, _weights  # noqa: E402  (this folder's weight helpers)


@pytest.mark.parametrize("layout", list(PERMS))
@pytest.mark.parametrize("C, R, S", [(3, 7, 7), (1, 3, 3), (4, 5, 5), (2, 1, 1), (3, 3, 5)])
def test_packed_layout_matches_a_plain_loop(layout, C, R, S):
    w = _weights(8, C, R, S)
    got = conv_stem.pack_weight_stem(w.transpose(PERMS[layout]), layout, host=True)
    T = conv_stem.stem_taps(R, S)
    assert T % 4 == 0 and T - 4 < R * S <= T
    ref = np.zeros((8, T, 4), np.float16)
    for k in range(8):
        for r in range(R):
            for s in range(S):
                for c in range(C):
                    ref[k, r * S + s, c] = w[k, r, s, c]
    assert got.dtype == np.float16 and got.flags.c_contiguous and got.shape == (8, T, 4)
    np.testing.assert_array_equal(got, ref)


def test_pack_rejects_wrong_rank_layout_and_channel_count():
    with pytest.raises(UnsupportedError, match="rank 3 in layout 'KCRS'; expected rank 4"):
        conv_stem.pack_weight_stem(np.zeros((8, 3, 3), np.float32), host=True)
    with pytest.raises(UnsupportedError, match="layout 'NCHW'; expected rank 4 in one of KCRS"):
        conv_stem.pack_weight_stem(np.zeros((8, 3, 3, 3), np.float32), "NCHW", host=True)
    with pytest.raises(UnsupportedError, match="1 to 4 input channels; got 5"):
        conv_stem.pack_weight_stem(np.zeros((8, 5, 3, 3), np.float32), host=True)


# ---- the kernel's arithmetic, step by step ---------------------------------------------

def _tap_off_words(tap, S, PW, RS):
    """conv_stem.cu tap_off(tap) / 4: 32-bit words from the patch base."""
    return ((tap // S) * PW + tap % S) * 2 if tap < RS else 0


def _decode(tile_id, tiles_p, tiles_q):
    """conv_stem.cu decode: tile -> (n, tp, tq)."""
    r, tq = divmod(tile_id, tiles_q)
    n, tp = divmod(r, tiles_p)
    return n, tp, tq


def _cta_tiles(cta, grid, tiles, tiles_p, tiles_q):
    """The (tile, n, tp, tq) a persistent CTA visits: the first decoded by division, each
    next one by conv_stem.cu's advance (gridDim.x's digits added with carries)."""
    step_n, step_p, step_q = _decode(grid, tiles_p, tiles_q)
    n, tp, tq = _decode(cta, tiles_p, tiles_q)
    out, tile = [], cta
    while tile < tiles:
        out.append((tile, n, tp, tq))
        tq += step_q
        cq = tq >= tiles_q
        tq = tq - tiles_q if cq else tq
        tp += step_p + cq
        cpp = tp >= tiles_p
        tp = tp - tiles_p if cpp else tp
        n += step_n + cpp
        tile += grid
    return out


def _fetch_patch_nchw(x_nchw, n, p0, q0, R, S, SH, SW, pad, TP, threads):
    """conv_stem.cu IN 1/2 fetch_patch + store_patch: thread tid < FT * PW takes patch
    column tid % PW and rows tid / PW + FT j (j < PF); returns the patch [PH * PW, 4] and
    how often each of its pixels was written."""
    _, C, H, W = x_nchw.shape
    PH, PW = (TP - 1) * SH + R, 15 * SW + S
    FT = threads // PW
    PF = -(-PH // FT)
    patch = np.full((PH * PW, 4), np.nan, np.float16)
    writes = np.zeros(PH * PW, np.int64)
    flat = x_nchw[n].reshape(-1)                        # the image's planes, 32-bit indexed
    for tid in range(threads):
        f_pw, f_ph0 = tid % PW, tid // PW
        if tid >= FT * PW:
            continue
        h0, ww = p0 * SH - pad[0] + f_ph0, q0 * SW - pad[1] + f_pw
        idx = h0 * W + ww
        for j in range(PF):
            row = f_ph0 + FT * j
            if row >= PH:
                continue
            ok = 0 <= ww < W and 0 <= h0 + FT * j < H
            patch[row * PW + f_pw] = [flat[idx + c * H * W] if ok and c < C else 0 for c in range(4)]
            writes[row * PW + f_pw] += 1
            idx += FT * W
    return patch, writes


def _emulate(x_nhwc4, wp, R, S, SH, SW, pad, P, Q, tile, K, grid=3, x_nchw=None):
    """conv_stem_f16 in NumPy: persistent CTAs (``grid`` of them) visiting their tiles by
    advance; per tile the patch load (IN 0: load_patch_async; IN 1 with ``x_nchw``: the
    column-mapped fetch), per warp and lane the four 32-bit shared loads of each A fragment
    (a_word, tap_off, ROW8, the okA / okB zeroing), B[k][n] = weights[n][16 ks + k]
    (ldmatrix of the resident filter), the m16n8k16 products, and the epilogue's
    (row -> p, q) mapping."""
    N, H, W, _ = x_nhwc4.shape
    TP, WARPS = tile.tp, tile.warps
    TQ, MT = 16, tile.tp // tile.warps
    PH, PW = (TP - 1) * SH + R, (TQ - 1) * SW + S
    RS, KS = R * S, -(-R * S // 4)
    ROW8 = 8 * SW * 2
    Kp = -(-K // 64) * 64
    wfull = np.zeros((Kp, KS * 16), np.float32)
    wfull[:K] = wp.reshape(K, -1).astype(np.float32)
    out = np.full((N, P, Q, K), np.nan, np.float32)
    tiles_q, tiles_p = -(-Q // TQ), -(-P // TP)
    tiles = N * tiles_p * tiles_q
    visits = [v for cta in range(min(grid, tiles)) for v in _cta_tiles(cta, grid, tiles, tiles_p, tiles_q)]
    assert sorted(v[0] for v in visits) == list(range(tiles))          # each tile once
    for tile_id, n, tp, tq in visits:
        assert (n, tp, tq) == _decode(tile_id, tiles_p, tiles_q)
        p0, q0 = tp * TP, tq * TQ
        if x_nchw is not None:
            patch, writes = _fetch_patch_nchw(x_nchw, n, p0, q0, R, S, SH, SW, pad, TP, tile.threads)
            assert (writes == 1).all()                                # every pixel once
        else:
            patch = np.zeros((PH * PW, 4), np.float16)
            for i in range(PH * PW):
                ph, pw = divmod(i, PW)
                h, ww = p0 * SH - pad[0] + ph, q0 * SW - pad[1] + pw
                if 0 <= h < H and 0 <= ww < W:
                    patch[i] = x_nhwc4[n, h, ww, :4]
        words = patch.reshape(-1, 2)                    # word = two halves of one pixel
        for nb in range(Kp // 64):
            B = wfull[nb * 64:(nb + 1) * 64]            # [n, k]
            for warp in range(WARPS):
                acc = np.zeros((MT, 16, 64), np.float32)
                for ks in range(KS):
                    A = np.zeros((MT, 16, 16), np.float32)
                    for lane in range(32):
                        g, t = lane >> 2, lane & 3
                        hi = (t >> 1) != 0
                        a_word = ((warp * MT * SH) * PW + g * SW) * 2 + (t & 1)
                        tA, tB = 4 * ks, 4 * ks + 2
                        offA = _tap_off_words(tA + 1 if hi else tA, S, PW, RS)
                        offB = _tap_off_words(tB + 1 if hi else tB, S, PW, RS)
                        okA = (tA + 1 < RS) if hi else (tA < RS)
                        okB = (tB + 1 < RS) if hi else (tB < RS)
                        for i in range(MT):
                            base = a_word + i * SH * PW * 2
                            regs = [(okA, base + offA), (okA, base + offA + ROW8),
                                    (okB, base + offB), (okB, base + offB + ROW8)]
                            # PTX m16n8k16 A layout: a0 (g, 2t..), a1 (g+8, 2t..),
                            # a2 (g, 2t+8..), a3 (g+8, 2t+8..)
                            for (ok, wi), (row, col) in zip(regs, [(g, 2 * t), (g + 8, 2 * t),
                                                                   (g, 2 * t + 8), (g + 8, 2 * t + 8)]):
                                if ok:
                                    A[i, row, col:col + 2] = words[wi]
                    acc += A @ B[:, ks * 16:(ks + 1) * 16].T
                for i in range(MT):
                    for rr in range(16):
                        p, q = p0 + warp * MT + i, q0 + rr
                        if p < P and q < Q:
                            kn = min(64, K - nb * 64)
                            out[n, p, q, nb * 64:nb * 64 + kn] = acc[i, rr, :kn]
    return out


def _direct(x, w_krsc, SH, SW, pad, P, Q):
    """Plain direct convolution (float64), NHWC x [N, H, W, C], KRSC weights."""
    N, H, W, C = x.shape
    K, R, S, _ = w_krsc.shape
    xp = np.zeros((N, H + R + SH * P, W + S + SW * Q, C))
    xp[:, pad[0]:pad[0] + H, pad[1]:pad[1] + W] = x
    out = np.zeros((N, P, Q, K))
    for r in range(R):
        for s in range(S):
            win = xp[:, r:r + SH * P:SH, s:s + SW * Q:SW][:, :P, :Q]
            out += win @ w_krsc[:, r, s, :].T.astype(np.float64)
    return out


@pytest.mark.parametrize("tile", conv_stem.STEM_TILES, ids=lambda t: t.name)
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("C, R, S, stride, pad, H, W, K, grid", [
    (3, 7, 7, (2, 2), (3, 3), 37, 35, 64, 3),    # the ResNet stem, odd sizes, partial tiles
    (4, 3, 3, (1, 1), (1, 1), 9, 19, 32, 5),     # grid past a row of tiles: carries into tp
    (1, 5, 5, (2, 1), (2, 2), 17, 12, 72, 2),    # uneven stride, two channel blocks
])
def test_emulated_kernel_indexing_gives_the_convolution(tile, layout, C, R, S, stride, pad, H, W, K, grid):
    rng = np.random.default_rng(3)
    N = 2
    x = rng.standard_normal((N, H, W, C)).astype(np.float16)
    x4 = np.zeros((N, H, W, 4), np.float16)
    x4[..., :C] = x
    w = _weights(K, C, R, S, 1).astype(np.float16)
    wp = conv_stem.pack_weight_stem(w, "KRSC", host=True)
    P = (H + 2 * pad[0] - R) // stride[0] + 1
    Q = (W + 2 * pad[1] - S) // stride[1] + 1
    got = _emulate(x4, wp, R, S, *stride, pad, P, Q, tile, K, grid=grid,
                   x_nchw=x.transpose(0, 3, 1, 2).copy() if layout == "NCHW" else None)
    assert not np.isnan(got).any()                                  # every output written
    ref = _direct(x.astype(np.float64), w.astype(np.float64), *stride, pad, P, Q)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tiles_p, tiles_q, N", [(14, 7, 256), (1, 1, 5), (3, 1, 4), (1, 4, 3), (5, 3, 2)])
@pytest.mark.parametrize("grid", [1, 2, 3, 7, 20, 21, 22, 396])
def test_tile_advance_visits_what_division_would(tiles_p, tiles_q, N, grid):
    """conv_stem.cu's advance (no division a tile) against decoding blockIdx.x + i gridDim.x,
    grids smaller and larger than a row and an image of tiles."""
    tiles = N * tiles_p * tiles_q
    seen = []
    for cta in range(min(grid, tiles)):
        visits = _cta_tiles(cta, grid, tiles, tiles_p, tiles_q)
        assert [v[0] for v in visits] == list(range(cta, tiles, grid))
        for tile_id, n, tp, tq in visits:
            assert (n, tp, tq) == _decode(tile_id, tiles_p, tiles_q)
            assert 0 <= tp < tiles_p and 0 <= tq < tiles_q
        seen += [v[0] for v in visits]
    assert sorted(seen) == list(range(tiles))


@pytest.mark.parametrize("tile", conv_stem.STEM_TILES, ids=lambda t: t.name)
@pytest.mark.parametrize("R, S, SH, SW", [(7, 7, 2, 2), (3, 3, 1, 1), (5, 5, 2, 1)])
def test_nchw_fetch_writes_each_patch_pixel_once_from_its_source(tile, R, S, SH, SW):
    """The column-mapped fetch of an NCHW patch: every pixel written once, equal to the
    input (zero past the image and in channel 3), at tiles on the image's edges."""
    rng = np.random.default_rng(R * 10 + SW)
    N, C, H, W = 2, 3, 23, 29
    x = rng.standard_normal((N, C, H, W)).astype(np.float16)
    PH, PW = (tile.tp - 1) * SH + R, 15 * SW + S
    pad = (R // 2, S // 2)
    xp = np.zeros((N, 4, H + 2 * PH + 4 * tile.tp * SH, W + 2 * PW + 64 * SW), np.float16)
    xp[:, :C, PH + pad[0]:PH + pad[0] + H, PW + pad[1]:PW + pad[1] + W] = x
    for n, p0, q0 in [(0, 0, 0), (1, tile.tp, 16), (1, 3 * tile.tp, 32)]:
        patch, writes = _fetch_patch_nchw(x, n, p0, q0, R, S, SH, SW, pad, tile.tp, tile.threads)
        assert (writes == 1).all()
        h0, w0 = p0 * SH + PH, q0 * SW + PW                 # the padded array's origin
        want = xp[n, :, h0:h0 + PH, w0:w0 + PW].transpose(1, 2, 0).reshape(-1, 4)
        np.testing.assert_array_equal(patch, want)


@pytest.mark.parametrize("tile", conv_stem.STEM_TILES, ids=lambda t: t.name)
@pytest.mark.parametrize("out_kind", [0, 1, 2])
def test_each_tile_fits_its_ctas_per_sm_in_shared_memory(tile, out_kind):
    """H100/H200: 227 KiB of shared memory per CTA at most, 228 KiB per SM with 1 KiB
    reserved per CTA."""
    smem = tile.smem_bytes(7, 7, 2, 2, out_kind)
    assert smem <= 227 * 1024
    assert tile.minb * (smem + 1024) <= 228 * 1024
    # the resident filter, two 21x37 (37x37) pixel patches, half staging
    assert smem >= 64 * 216 * 2 + 2 * ((tile.tp - 1) * 2 + 7) * 37 * 8


def test_name_expression_names_every_template_argument():
    t = conv_stem.STEM_TILES[0]
    assert t.name_expression(7, 7, 2, 2, 1, True) == f"conv_stem_f16<7,7,2,2,{t.tp},{t.warps},1,1,{t.minb}>"
    assert t.name_expression(7, 7, 2, 2, 2, 2) == f"conv_stem_f16<7,7,2,2,{t.tp},{t.warps},2,2,{t.minb}>"


@pytest.mark.parametrize("tile", conv_stem.STEM_TILES, ids=lambda t: t.name)
def test_int8_epilogue_stores_every_row_and_16_channel_chunk_of_a_warp_once(tile):
    """conv_stem.cu OUT 2: lane l of store step k takes staged row idx >> 2, chunk idx & 3
    (idx = 32k + l); the warp's MT * 16 rows x 64 channels are written exactly once, and
    the four lanes of one row write its 64 contiguous bytes."""
    mt = tile.tp // tile.warps
    seen = {}
    for k in range(mt * 16 * 4 // 32):
        for lane in range(32):
            idx = k * 32 + lane
            seen.setdefault((idx >> 2, idx & 3), []).append(lane)
    assert sorted(seen) == [(r, c) for r in range(mt * 16) for c in range(4)]
    assert all(len(v) == 1 for v in seen.values())
    # the staged bytes of one lane (two channels, one 16-bit store) stay inside one row
    LDC8 = 64 + 16
    assert LDC8 % 16 == 0 and all((8 * j + 2 * t) + 1 < 64 for j in range(8) for t in range(4))


# ---- argument checks --------------------------------------------------------------------

X = np.zeros((1, 10, 10, 4), np.float16)
WP = np.zeros((8, 52, 4), np.float16)              # a packed 7x7 filter, K = 8


def _conv(x=X, w=WP, **kw):
    kw.setdefault("kernel_size", 7)
    return conv_stem.conv2d_stem(x, w, **kw)


@pytest.mark.parametrize("args, match", [
    (dict(tactic="stem_t99"), "stem tile 'stem_t99'; valid: stem_t8w4, stem_t16w4"),
    (dict(layout="NCWH"), "layout 'NCWH'; valid: NHWC, NCHW"),
    (dict(x=np.zeros((1, 10, 10), np.float16)), r"x \(1, 10, 10\) \(contiguous=True\); expected a contiguous rank-4"),
    (dict(x=np.zeros((1, 10, 20, 4), np.float16)[:, :, ::2]), "contiguous=False"),
    (dict(x=np.zeros((1, 10, 10, 4), np.float32)), "NHWC x float32 with 4 stored channels; expected float16 with 4 or 8"),
    (dict(x=np.zeros((1, 10, 10, 3), np.float16)), "with 3 stored channels; expected float16 with 4 or 8"),
    (dict(x=np.zeros((1, 3, 10, 10), np.float64), layout="NCHW"), "NCHW x float64; expected float32 or float16"),
    (dict(x=np.zeros((1, 5, 10, 10), np.float32), layout="NCHW"), "NCHW x with 5 channels; expected 1 to 4"),
    (dict(dilation=2), "dilation 2; the stem kernel takes 1"),
    (dict(kernel_size=9), "filter 9x9; the stem kernel takes 1..7 per dim"),
    (dict(kernel_size=(7, 0)), "filter 7x0"),
    (dict(stride=3), r"stride \(3, 3\); the stem kernel takes 1 or 2"),
    (dict(stride=(1, 2, 3)), r"stride \(1, 2, 3\); expected an int or a pair"),
    (dict(w=np.zeros((8, 52, 4), np.float32)), r"weights \(8, 52, 4\) float32; expected contiguous float16 \[K, 52, 4\]"),
    (dict(w=np.zeros((8, 48, 4), np.float16)), r"expected contiguous float16 \[K, 52, 4\] \(pack_weight_stem, 7x7\)"),
    (dict(w=np.zeros((8, 104, 4), np.float16)[:, ::2]), r"expected contiguous float16"),
    (dict(w=np.zeros((12, 52, 4), np.float16)), "12 output channels; the stem kernel takes a positive multiple of 8"),
    (dict(w=np.zeros((0, 52, 4), np.float16)), "0 output channels"),
    (dict(x=np.zeros((1, 3, 3, 4), np.float16), padding=0), "output size -1x-1 from input 3x3; expected positive"),
    (dict(out_dtype=np.float64), "out dtype float64; valid: float16, float32, int8"),
    (dict(out_dtype=np.int8), r"s_out goes with int8 output, and int8 output needs it \(out int8, s_out None\)"),
    (dict(s_out=0.5), r"\(out float16, s_out 0.5\)"),
    (dict(out_dtype=np.int8, s_out=0.0), "s_out 0.0; expected a positive finite scale"),
    (dict(out_dtype=np.int8, s_out=float("nan")), "s_out nan; expected a positive finite scale"),
    (dict(out_dtype=np.int8, s_out=0.1), "8 output channels into int8; the int8 epilogue stores 16 at once"),
    (dict(w=np.zeros((16, 52, 4), np.float16), out=np.zeros((1, 2, 2, 24), np.int8), s_out=0.1),
     r"out \(1, 2, 2, 24\)"),
    (dict(w=np.zeros((16, 52, 4), np.float16), out=np.zeros((1, 5, 5, 40), np.int8), s_out=0.1,
          out_channel_offset=8), "out with 40 channels at offset 8; the int8 epilogue stores 16"),
    (dict(out=np.zeros((1, 2, 2, 8), np.float16)), r"out \(1, 2, 2, 8\)"),
    (dict(out=np.zeros((1, 5, 5, 12), np.float16)), "out with 12 channels at offset 0; the float16 epilogue stores 8"),
    (dict(out=np.zeros((1, 5, 5, 24), np.float16), out_channel_offset=4), "at offset 4; the float16 epilogue"),
    (dict(out=np.zeros((1, 5, 5, 9), np.float32), out_channel_offset=1), "at offset 1; the float32 epilogue stores 2"),
    (dict(x=np.zeros((1, 3, 10, 10), np.float32), layout="NCHW", out_dtype=np.float32, tactic="stem_t16w4"),
     "stem tile stem_t16w4 does not write float32 from an NCHW input .* valid: the NHWC layout, or tiles stem_t8w4"),
])
def test_launcher_rejects_bad_arguments_before_any_device_work(args, match):
    with pytest.raises(UnsupportedError, match=match):
        _conv(**args)


def _offset(shape, dtype, nbytes):
    """A C-contiguous array ``nbytes`` past a 64-byte-aligned address."""
    dt = np.dtype(dtype)
    raw = np.zeros(int(np.prod(shape)) * dt.itemsize + 128, np.uint8)
    start = -raw.ctypes.data % 64 + nbytes
    return raw[start:start + int(np.prod(shape)) * dt.itemsize].view(dt).reshape(shape)


@pytest.mark.parametrize("args, match", [
    (dict(x=_offset((1, 10, 10, 4), np.float16, 4)), "x at address .*; the stem kernel needs it 8-byte"),
    (dict(x=_offset((1, 3, 10, 10), np.float32, 2), layout="NCHW"), "x at address .* 4-byte aligned"),
    (dict(w=_offset((8, 52, 4), np.float16, 8)), "w_packed at address .* 16-byte aligned"),
    (dict(out=_offset((1, 5, 5, 8), np.float16, 8)), "out at address .* 16-byte aligned"),
    (dict(out=_offset((1, 5, 5, 8), np.float32, 4)), "out at address .* 8-byte aligned"),
    (dict(w=_offset((16, 52, 4), np.float16, 0), out=_offset((1, 5, 5, 16), np.int8, 8), s_out=0.1),
     "out at address .* 16-byte aligned"),
])
def test_launcher_rejects_misaligned_arrays(args, match):
    """A misaligned vector access would be a sticky fault of the CUDA context."""
    kw = dict(x=_offset((1, 10, 10, 4), np.float16, 0), w=_offset((8, 52, 4), np.float16, 0),
              out=_offset((1, 5, 5, 8), np.float16, 0))
    kw.update(args)
    with pytest.raises(UnsupportedError, match=match):
        _conv(**kw)


def test_launcher_rejects_images_too_large_for_32_bit_offsets():
    class Big:                                   # shape and flags only: no 2**31 allocation
        ndim = 4
        flags = np.empty(1).flags

        def __init__(self, shape, dtype):
            self.shape, self.dtype = shape, np.dtype(dtype)
    with pytest.raises(UnsupportedError, match="an image of 2147483648 elements"):
        _conv(x=Big((1, 16384, 16384, 8), np.float16))
    with pytest.raises(UnsupportedError, match="an image of 3221225472 elements"):
        _conv(x=Big((1, 3, 32768, 32768), np.float32), layout="NCHW")
