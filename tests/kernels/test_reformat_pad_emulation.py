"""reformat.cu's nchw_to_nhwc_pad on the CPU: each thread's pixels, load path and stores
emulated in NumPy (the grid and block of reformat.py's _pad_kernel), every store checked
for the alignment its width needs and every output element written exactly once."""
import numpy as np
import pytest


def _emulate_pad(x, Cp, vec, y_base=256):
    """nchw_to_nhwc_pad<TI, Cp, vec> over the launch grid (ceil(HW / 1024), N) x 256
    threads; ``y_base``: the byte address of y (CuPy allocations are 256-byte aligned,
    an ``out`` view may sit 8 bytes past). Returns (y, counts, widths of the stores)."""
    N, C, H, W = x.shape
    HW = H * W
    xf = x.reshape(N, C, HW)
    y = np.zeros(N * HW * Cp, np.float16)
    counts = np.zeros(N * HW * Cp, np.int64)
    widths = set()

    def store(elem, vals, nbytes):
        addr = y_base + 2 * elem
        assert addr % nbytes == 0, f"{nbytes}-byte store at byte address {addr}"
        y[elem:elem + len(vals)] = vals
        counts[elem:elem + len(vals)] += 1
        widths.add(nbytes)

    for n in range(N):                                  # blockIdx.y
        for bx in range(-(-HW // 1024)):                # blockIdx.x
            for tid in range(256):
                p0 = (bx * 256 + tid) * 4
                if p0 >= HW:
                    continue
                yn = (n * HW + p0) * Cp                 # element offset of this thread's pixels
                v = np.zeros((Cp, 4), np.float32)       # [channel][pixel]
                npx = min(4, HW - p0)
                if vec and npx == 4:
                    assert (n * C * HW + p0) % 4 == 0   # the float4 / uint2 plane load
                for c in range(min(C, Cp)):
                    v[c, :npx] = xf[n, c, p0:p0 + npx]
                px = v.T.astype(np.float16)             # [pixel][channel]
                if npx == 4 and (y_base + 2 * yn) % 16 == 0:
                    flat = px.ravel()
                    for o in range(0, 4 * Cp, 8):       # 16-byte stores
                        store(yn + o, flat[o:o + 8], 16)
                else:
                    for e in range(npx):                # 8-byte stores, 4 channels each
                        for k in range(Cp // 4):
                            store(yn + e * Cp + 4 * k, px[e, 4 * k:4 * k + 4], 8)
    return y.reshape(N, H, W, Cp), counts, widths


@pytest.mark.parametrize("Cp", [4, 8])
@pytest.mark.parametrize("N, C, H, W", [(3, 3, 7, 9), (2, 3, 13, 5), (2, 4, 13, 8), (1, 1, 5, 5),
                                        (2, 3, 33, 35)])
def test_every_store_is_aligned_and_every_element_written_once(Cp, N, C, H, W):
    x = np.random.default_rng(H * W).standard_normal((N, C, H, W)).astype(np.float32)
    vec = int(H * W % 4 == 0)
    y, counts, widths = _emulate_pad(x, Cp, vec)
    assert (counts == 1).all()
    ref = np.zeros((N, H, W, Cp), np.float16)
    ref[..., :C] = x.transpose(0, 2, 3, 1).astype(np.float16)
    np.testing.assert_array_equal(y, ref)
    assert 16 in widths                                 # the vector path is taken where it can be


def test_an_out_view_8_bytes_past_alignment_takes_the_8_byte_stores():
    x = np.random.default_rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)
    y, counts, widths = _emulate_pad(x, 4, 1, y_base=256 + 8)
    assert (counts == 1).all() and widths == {8}
    np.testing.assert_array_equal(y[..., :3], x.transpose(0, 2, 3, 1).astype(np.float16))
