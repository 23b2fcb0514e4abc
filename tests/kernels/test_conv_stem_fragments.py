"""conv_stem.cu's B operand and epilogue on the CPU, the parts test_conv_stem_args.py's
emulation takes as given: the resident-filter copy (cp_async16 rows of LDB halves), the
ldmatrix.x4 lane addresses (b_row, b_col) and which register of which lane holds which
B[k][n] of the m16n8k16 col operand, and both epilogues' mapping of the accumulator
fragment (c0..c3) to output pixel and channel (the float2 stores; the half staging tile
of LDC and its 16-byte stores), including the partial channel block of K % 64 != 0."""
import numpy as np
import pytest

BN, TQ = 64, 16


def _smem_filter(wp, n0, K):
    """The weight prologue: 16-byte chunks of each packed row at row * LDB, zero rows
    past kn. Returns (flat half array, LDB, KS)."""
    KR = wp.shape[1] * 4
    KS, LDB, WCH = KR // 16, KR + 8, KR // 8
    kn = min(BN, K - n0)
    flat = wp.reshape(K, KR)
    sW = np.full(BN * LDB, np.nan, np.float32)        # the LDB pad columns stay unwritten
    for i in range(BN * WCH):
        row, ch = divmod(i, WCH)
        dst = row * LDB + ch * 8
        sW[dst:dst + 8] = flat[n0 + row, ch * 8:ch * 8 + 8] if row < kn else 0.0
    return sW, LDB, KS


def _ldmatrix_x4(sW, lane_addr_halves):
    """ldmatrix.sync.m8n8.x4.b16: lanes 8m..8m+7 give the rows of matrix m; register m
    of lane L holds row L // 4, columns 2 (L % 4) and 2 (L % 4) + 1 of matrix m."""
    regs = np.zeros((32, 4, 2), np.float32)
    for m in range(4):
        for L in range(32):
            a = lane_addr_halves[8 * m + L // 4] + 2 * (L % 4)
            regs[L, m] = sW[a:a + 2]
    return regs


@pytest.mark.parametrize("K, n0, R, S", [(64, 0, 7, 7), (72, 64, 7, 7), (128, 64, 3, 3), (32, 0, 1, 1)])
def test_ldmatrix_lanes_give_the_col_operand_of_every_n8_fragment(K, n0, R, S):
    rng = np.random.default_rng(K + R)
    T = -(-R * S // 4) * 4
    wp = rng.standard_normal((K, T, 4)).astype(np.float16).astype(np.float32)
    sW, LDB, KS = _smem_filter(wp, n0, K)
    kn = min(BN, K - n0)
    wfull = np.zeros((BN, T * 4), np.float32)
    wfull[:kn] = wp.reshape(K, -1)[n0:n0 + kn]
    lanes = np.arange(32)
    b_row = (lanes & 7) + ((lanes >> 4) << 3)         # conv_stem.cu
    b_col = ((lanes >> 3) & 1) * 8
    b_base = b_row * LDB + b_col                      # halves (the CUDA's 2u * ... in bytes)
    for ks in range(KS):
        bf = np.zeros((8, 32, 2, 2), np.float32)      # [j][lane][reg][half]
        for jj in range(4):
            r4 = _ldmatrix_x4(sW, b_base + jj * 16 * LDB + ks * 16)
            bf[2 * jj, :, 0], bf[2 * jj, :, 1] = r4[:, 0], r4[:, 1]
            bf[2 * jj + 1, :, 0], bf[2 * jj + 1, :, 1] = r4[:, 2], r4[:, 3]
        for j in range(8):
            for L in range(32):
                g, t = L >> 2, L & 3
                # PTX m16n8k16 B (col): b0, b1 = B[2t, 2t+1][g]; b2, b3 = B[2t+8, 2t+9][g]
                for reg in range(2):
                    k = 16 * ks + 2 * t + 8 * reg
                    np.testing.assert_array_equal(bf[j, L, reg], wfull[8 * j + g, k:k + 2])
    assert not np.isnan(sW[:BN * LDB].reshape(BN, LDB)[:, :T * 4]).any()


def _c_fragments(MT, rng):
    """Accumulators acc[i][j][e] of one warp with the PTX C layout: c0, c1 = C[g][2t, 2t+1],
    c2, c3 = C[g+8][2t, 2t+1] of m-fragment i (rows: output columns) and n8 fragment j.
    Returns (acc [MT, 8, 32 lanes, 4], C [MT, 16, 64])."""
    Cm = rng.standard_normal((MT, 16, BN)).astype(np.float32)
    acc = np.zeros((MT, 8, 32, 4), np.float32)
    for L in range(32):
        g, t = L >> 2, L & 3
        for e in range(4):
            acc[:, :, L, e] = Cm[:, g + 8 * (e >> 1), np.arange(8) * 8 + 2 * t + (e & 1)]
    return acc, Cm


@pytest.mark.parametrize("out_f32", [False, True])
@pytest.mark.parametrize("TP, WARPS", [(8, 4), (16, 4)])
@pytest.mark.parametrize("P, Q, K, n0, p0, q0, ld, off", [
    (15, 16, 64, 0, 8, 0, 64, 0),        # a partial last tile row
    (12, 11, 136, 64, 8, 0, 144, 8),     # partial rows and columns, a concat offset
    (20, 35, 72, 64, 16, 32, 72, 0),     # the 8-channel block of K = 72
])
def test_epilogue_maps_each_accumulator_to_its_pixel_and_channel_once(out_f32, TP, WARPS, P, Q, K,
                                                                       n0, p0, q0, ld, off):
    rng = np.random.default_rng(P * Q + K)
    MT, LDC, N, n = TP // WARPS, BN + 8, 2, 1
    kn = min(BN, K - n0)
    out = np.full(N * P * Q * ld, np.nan, np.float32)
    writes = np.zeros(out.size, np.int64)
    for warp in range(WARPS):
        acc, Cm = _c_fragments(MT, rng)
        pw0 = p0 + warp * MT
        if out_f32:
            for j in range(8):
                for L in range(32):
                    g, t = L >> 2, L & 3
                    c = j * 8 + 2 * t
                    if c >= kn:
                        continue
                    for i in range(MT):
                        for hh in range(2):
                            p, q = pw0 + i, q0 + g + 8 * hh
                            if p >= P or q >= Q:
                                continue
                            o = ((n * P + p) * Q + q) * ld + off + n0 + c
                            assert o % 2 == 0                      # float2
                            out[o:o + 2] = acc[i, j, L, 2 * hh:2 * hh + 2]
                            writes[o:o + 2] += 1
        else:
            cw = np.full(MT * 16 * LDC, np.nan, np.float32)
            for j in range(8):
                for L in range(32):
                    g, t = L >> 2, L & 3
                    c = j * 8 + 2 * t
                    for i in range(MT):
                        for hh in range(2):
                            r = i * 16 + g + 8 * hh
                            cw[r * LDC + c:r * LDC + c + 2] = acc[i, j, L, 2 * hh:2 * hh + 2]
            for k in range(MT * 16 * 8 // 32):
                for L in range(32):
                    idx = k * 32 + L
                    r, ch = idx >> 3, idx & 7
                    p, q = pw0 + (r >> 4), q0 + (r & 15)
                    if p < P and q < Q and ch * 8 < kn:
                        o = ((n * P + p) * Q + q) * ld + off + n0 + ch * 8
                        assert o % 8 == 0 and (r * LDC + ch * 8) % 8 == 0   # uint4 both sides
                        out[o:o + 8] = cw[r * LDC + ch * 8:r * LDC + ch * 8 + 8]
                        writes[o:o + 8] += 1
        # every output of this warp's rows, from C[i][q - q0][channel]
        for i in range(MT):
            p = pw0 + i
            for q in range(q0, min(q0 + TQ, Q)):
                if p >= P:
                    continue
                o = ((n * P + p) * Q + q) * ld + off + n0
                np.testing.assert_array_equal(out[o:o + kn], Cm[i, q - q0, :kn])
    assert writes.max() == 1
    rows = min(P, p0 + TP) - p0
    cols = min(Q, q0 + TQ) - q0
    assert writes.sum() == rows * cols * kn                # nothing outside the tile's block
