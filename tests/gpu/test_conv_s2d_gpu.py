"""The space-to-depth stem on our own kernels, on a GPU (engine/gpu/conv_s2d_tactics.py):
the quantising fold (space_to_depth_int8) bit-exact against its NumPy reference and
against the INT8 input path's codes (quantize_nchw_to_nhwc), float32 / float16 / int8
input, contiguous NCHW and NHWC-backed views, odd sizes; the INT8 tactics bit-exact with
conv.i8sc_* and conv.i8_* on the original layer (N = 2..4, 224x224 and odd sizes, int8 and
float16 output, ReLU) and with the NumPy emulation; the FP16 tactics against a float64
convolution; a captured CUDA-graph replay; and INT8 / FP16 engines with the stem forced onto
each tactic (CUPYRT_S2D_STEM=1). The wgmma flavours need sm_90a and skip elsewhere."""
import numpy as np
import pytest

cp = pytest.importorskip("cupy")

import engine as rt  # noqa: E402
from engine.gpu import conv_s2d_tactics as T  # noqa: E402
from engine.gpu.conv_int8_tactics import ConvInt8, ConvInt8SmallC  # noqa: E402
from engine.int8_exec import tensor_scale  # noqa: E402
from gpu_helpers import (act_ref, check_is_stem, conv_nhwc, fixed_precision_plan, forced_outputs, rel_l2,  # noqa: E402
                         stem_net)
from kernels.gpu import conv_int8, conv_int8_smallc, conv_wgmma, quantize_int8  # noqa: E402
from kernels.gpu import space_to_depth as S  # noqa: E402

RNG = np.random.default_rng(9191)
HAS_WGMMA = conv_wgmma.available()
INT8_TACTICS = [t for t in T.TACTICS if t.int8 and (HAS_WGMMA or not t.needs_wgmma)]
HALF_TACTICS = [t for t in T.TACTICS if not t.int8 and (HAS_WGMMA or not t.needs_wgmma)]


def _special(x):
    """Ties at s = 0.5 (half to even), saturation, inf and NaN in the first elements."""
    flat = x.reshape(-1)
    flat[:9] = [0.25, 0.75, -0.25, -0.75, 1e6, -1e6, np.inf, -np.inf, np.nan]
    return x


# -- the quantising fold ------------------------------------------------------------------

# (N, C, H, W, dtype, layout)
FOLD_CASES = [
    (2, 3, 15, 17, np.float32, "nchw"),       # odd H and W: scalar loads, zero last row / column
    (2, 3, 16, 20, np.float32, "nchw"),       # even W: pair loads
    (1, 3, 224, 224, np.float32, "nchw"),
    (3, 2, 9, 12, np.float16, "nchw"),
    (2, 1, 7, 7, np.float16, "nchw"),
    (2, 4, 11, 13, np.float16, "nhwc"),
    (2, 3, 10, 12, np.float32, "nhwc"),
    (2, 3, 10, 12, np.int8, "nchw"),
    (2, 3, 9, 11, np.int8, "nhwc"),
]


def _device(host, layout):
    if layout == "nhwc":
        x = cp.asarray(np.ascontiguousarray(host.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
        assert not x.flags.c_contiguous
        return x
    return cp.asarray(host)


@pytest.mark.parametrize("case", FOLD_CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}x{c[3]}-"
                         f"{np.dtype(c[4]).name}-{c[5]}")
def test_fold_is_bit_exact_against_numpy_and_the_int8_input_path(case):
    n, c, h, w, dtype, layout = case
    s = np.float32(0.5)
    if dtype == np.int8:
        host = RNG.integers(-128, 128, (n, c, h, w), dtype=np.int8)
    else:
        host = _special((3 * RNG.standard_normal((n, c, h, w))).astype(np.float32)).astype(dtype)
    x = _device(host, layout)
    hs, ws = -(-h // 2), -(-w // 2)
    out = cp.full((n, hs, ws, 16), 99, cp.int8)
    assert S.space_to_depth_int8(x, s, out=out) is out
    got = out.get()
    if dtype == np.int8:
        np.testing.assert_array_equal(got, S.s2d_int8_reference(host, None, hs, ws))
        return
    # the INT8 input path's codes (inf, NaN included), folded on the host
    codes = quantize_int8.quantize_nchw_to_nhwc(cp.ascontiguousarray(x), s, c_pad_to=4).get()
    np.testing.assert_array_equal(got, S.s2d_reference(codes[..., :c].transpose(0, 3, 1, 2), hs, ws, 16))
    fin = np.isfinite(host.astype(np.float32))
    ref = S.s2d_int8_reference(np.where(fin, host, 0), s, hs, ws)       # the contract, finite inputs
    mask = S.s2d_reference(fin, hs, ws, 16)
    assert mask.sum() > 0.9 * fin.size
    np.testing.assert_array_equal(got[mask], ref[mask])


def test_fold_makes_fewer_rows_when_asked_and_defaults_to_a_fresh_buffer():
    host = RNG.standard_normal((2, 3, 9, 11)).astype(np.float32)
    out = cp.full((2, 4, 5, 16), 99, cp.int8)
    S.space_to_depth_int8(cp.asarray(host), 0.02, out=out, hs=4, ws=5)
    np.testing.assert_array_equal(out.get(), S.s2d_int8_reference(host, 0.02, 4, 5))
    fresh = S.space_to_depth_int8(cp.asarray(host), 0.02)
    assert fresh.shape == (2, 5, 6, 16) and fresh.dtype == np.int8 and fresh.flags.c_contiguous


def test_fold_refuses_a_misaligned_out_on_the_device():
    buf = cp.zeros(2 * 5 * 6 * 16 + 16, cp.int8)
    with pytest.raises(S.UnsupportedError, match="16-byte aligned"):
        S.space_to_depth_int8(cp.ones((2, 3, 9, 11), cp.float32), 1.0, out=buf[1:1 + 960].reshape(2, 5, 6, 16))


# -- the tactics on one layer -------------------------------------------------------------

def _layer(n, c, h, w, k=64, r=7, pad=3, act="RELU", seed=0):
    rng = np.random.default_rng(seed)
    net = rt.Network()
    x = net.add_input("x", rt.float32, (n, c, h, w))
    wt = (rng.standard_normal((k, c, r, r)) / np.sqrt(c * r * r)).astype(np.float32)
    wt[1] *= 20                                            # per-channel scales far apart
    conv = net.add_convolution_nd(x, k, (r, r), kernel=wt, bias=rng.standard_normal(k).astype(np.float32))
    conv.stride_nd, conv.padding_nd = (2, 2), (pad, pad)
    if act is not None:
        conv.post_activation = getattr(rt.ActivationType, act)
    net.mark_output(conv.get_output(0))
    x.dynamic_range = (-2.5, 2.5)
    conv.get_output(0).dynamic_range = (-4.0, 4.0)
    return conv, wt


def _run(tactic, layer, x, out_dt, precision=rt.DataType.INT8):
    assert tactic.supports(layer, [x.shape], [x.dtype.name], precision) is None, tactic.name
    state = tactic.prepare(layer)
    (y,) = tactic.run(state, layer, [x], precision, [out_dt])
    return y


# (N, H, W, out dtype, input layout)
INT8_CASES = [(2, 224, 224, rt.DataType.INT8, "nchw"), (3, 57, 61, rt.DataType.INT8, "nchw"),
              (4, 57, 61, rt.DataType.HALF, "nchw"), (2, 33, 30, rt.DataType.INT8, "nhwc")]


@pytest.mark.parametrize("tactic", INT8_TACTICS, ids=lambda t: t.name)
@pytest.mark.parametrize("case", INT8_CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-{c[3].name}-{c[4]}")
def test_int8_tactic_is_bit_exact_with_the_small_c_and_direct_tactics(tactic, case):
    n, h, w, out_dt, layout = case
    layer, _ = _layer(n, 3, h, w, seed=n + h)
    host = (1.2 * RNG.standard_normal((n, 3, h, w))).astype(np.float32)
    x = _device(host, layout)
    got = _run(tactic, layer, x, out_dt)
    assert got.shape == (n, 64) + tuple(layer.geometry(x.shape)[0])
    ref_sc = _run(ConvInt8SmallC(conv_int8_smallc.SMALLC_TACTICS[0]), layer, x, out_dt)
    ref_i8 = _run(ConvInt8(conv_int8.INT8_TACTICS[0]), layer, x, out_dt)
    np.testing.assert_array_equal(got.get(), ref_sc.get())
    np.testing.assert_array_equal(got.get(), ref_i8.get())
    if n * h * w <= 4 * 57 * 61:                           # and the NumPy emulation (small cases)
        s_out = tensor_scale(layer.get_output(0)) if out_dt == rt.DataType.INT8 else None
        emu = T.int8_reference(layer, host, s_out)
        np.testing.assert_array_equal(got.get().astype(np.float32), emu.astype(np.float16).astype(np.float32)
                                      if out_dt == rt.DataType.HALF else emu)
    if out_dt == rt.DataType.INT8:
        o = got.get()
        assert (o == 127).any() and (o == 0).any() and len(np.unique(o)) > 50   # saturation, ReLU, data


@pytest.mark.parametrize("tactic", INT8_TACTICS, ids=lambda t: t.name)
def test_int8_tactic_in_ceil_mode_writes_the_layers_output_size(tactic):
    """EXPLICIT_ROUND_UP: 224 rows with pad 3 give 113 outputs (the last window past the post
    padding), one more than the floor rule (225 columns: 113 either way); the rows past the
    folded input read as zeros."""
    layer, _ = _layer(2, 3, 224, 225, seed=13)
    layer.padding_mode = rt.PaddingMode.EXPLICIT_ROUND_UP
    x = cp.asarray((1.2 * RNG.standard_normal((2, 3, 224, 225))).astype(np.float32))
    got = _run(tactic, layer, x, rt.DataType.INT8)
    assert got.shape == (2, 64, 113, 113)
    ref = _run(ConvInt8SmallC(conv_int8_smallc.SMALLC_TACTICS[0]), layer, x, rt.DataType.INT8)
    np.testing.assert_array_equal(got.get(), ref.get())


@pytest.mark.parametrize("tactic", INT8_TACTICS, ids=lambda t: t.name)
def test_int8_tactic_folds_int8_codes_like_the_small_c_tactic(tactic):
    layer, _ = _layer(2, 3, 40, 38, k=64, seed=5)
    codes = RNG.integers(-128, 128, (2, 40, 38, 3), dtype=np.int8)
    x = cp.asarray(codes).transpose(0, 3, 1, 2)            # an INT8 layer's NHWC output as input
    got = _run(tactic, layer, x, rt.DataType.INT8)
    ref = _run(ConvInt8SmallC(conv_int8_smallc.SMALLC_TACTICS[0]), layer, x, rt.DataType.INT8)
    np.testing.assert_array_equal(got.get(), ref.get())


def _float_reference(host, wt, bias, pad, act):
    v = conv_nhwc(host.transpose(0, 2, 3, 1), wt.transpose(0, 2, 3, 1), (2, 2), (pad, pad))
    return act_ref(v + bias.astype(np.float64), act).transpose(0, 3, 1, 2)


# (N, C, H, W, K, R, pad, input dtype, layout, out)
HALF_CASES = [
    (2, 3, 224, 224, 64, 7, 3, np.float32, "nchw", rt.DataType.HALF),
    (3, 3, 57, 61, 64, 7, 3, np.float32, "nchw", rt.DataType.FLOAT),
    (2, 2, 17, 19, 16, 3, 1, np.float32, "nchw", rt.DataType.HALF),     # C = 2: 8 folded channels
    (2, 4, 15, 16, 24, 5, 2, np.float16, "nhwc", rt.DataType.HALF),
]


@pytest.mark.parametrize("tactic", HALF_TACTICS, ids=lambda t: t.name)
@pytest.mark.parametrize("case", HALF_CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}x{c[3]}-k{c[4]}-{c[5]}x{c[5]}-"
                         f"{np.dtype(c[7]).name}-{c[8]}-{c[9].name}")
def test_half_tactic_matches_float64_conv_bias_relu(tactic, case):
    n, c, h, w, k, r, pad, dtype, layout, out_dt = case
    layer, wt = _layer(n, c, h, w, k=k, r=r, pad=pad, seed=c + h)
    host = RNG.standard_normal((n, c, h, w)).astype(dtype)
    y = _run(tactic, layer, _device(host, layout), out_dt, rt.DataType.HALF)
    assert y.dtype == out_dt.to_numpy() and y.shape == (n, k) + tuple(layer.geometry((n, c, h, w))[0])
    err = rel_l2(y.get(), _float_reference(host.astype(np.float64), wt, layer.bias, pad, "RELU"))
    assert err <= 1e-2, err


def test_int8_tactic_replays_inside_a_captured_cuda_graph_on_new_inputs():
    tactic = INT8_TACTICS[0]
    layer, _ = _layer(2, 3, 32, 32, seed=3)
    state = tactic.prepare(layer)
    x = cp.asarray(RNG.standard_normal((2, 3, 32, 32)).astype(np.float32))
    tactic.run(state, layer, [x], rt.DataType.INT8, [rt.DataType.INT8])       # compiled outside
    cp.cuda.Device().synchronize()
    stream = cp.cuda.Stream(non_blocking=True)
    pool = cp.cuda.MemoryPool()
    with cp.cuda.using_allocator(pool.malloc), stream:
        tactic.run(state, layer, [x], rt.DataType.INT8, [rt.DataType.INT8])   # rehearsal: blocks cached
        stream.synchronize()
        stream.begin_capture()
        (y,) = tactic.run(state, layer, [x], rt.DataType.INT8, [rt.DataType.INT8])
        graph = stream.end_capture()
        host = RNG.standard_normal((2, 3, 32, 32)).astype(np.float32)
        x.set(host)
        y.fill(99)
        graph.launch(stream)
        stream.synchronize()
    np.testing.assert_array_equal(y.get(), T.int8_reference(layer, host, tensor_scale(layer.get_output(0))))


# -- engines ------------------------------------------------------------------------------

def test_int8_engine_with_the_stem_forced_onto_each_s2d_tactic_is_bit_exact(monkeypatch):
    monkeypatch.setenv("CUPYRT_S2D_STEM", "1")             # off by default until these tests pass
    net, randn = stem_net(2, 57, 61, tail_k=16)
    data = [randn(2, 3, 57, 61) for _ in range(3)]
    feeds = {"x": randn(2, 3, 57, 61)}
    plan = fixed_precision_plan(net, rt.BuilderFlag.INT8, data)
    names = ["conv." + conv_int8_smallc.SMALLC_TACTICS[0].name] + [t.name for t in INT8_TACTICS]
    outs = forced_outputs(plan, names, feeds, check_is_stem)
    ref = outs.pop(names[0])
    for name, out in outs.items():
        for key in ref:
            np.testing.assert_array_equal(out[key], ref[key], err_msg=name)


def test_fp16_engine_with_the_stem_forced_onto_each_s2d_tactic(monkeypatch):
    from kernels.gpu import conv_igemm
    monkeypatch.setenv("CUPYRT_S2D_STEM_F16", "1")
    net, randn = stem_net(3, 45, 43)
    feeds = {"x": randn(3, 3, 45, 43)}
    plan = fixed_precision_plan(net, rt.BuilderFlag.FP16)
    names = ["conv." + conv_igemm.SMALLC_TACTICS[0].name] + [t.name for t in HALF_TACTICS]
    outs = forced_outputs(plan, names, feeds, check_is_stem)
    ref = outs.pop(names[0])
    for name, out in outs.items():
        for key in ref:
            assert rel_l2(out[key], ref[key]) < 2e-3, name
