"""FP16 stem on the GPU: the dedicated padded reformat (reformat.cu nchw_to_nhwc_pad)
equal to NumPy bit for bit, conv2d_stem (conv_stem.cu) against the float64 NumPy
convolution at the ResNet stem and odd shapes (every tile, NHWC 4/8 stored channels and
the NCHW float32/float16 input read directly, batch 1 and 3, C 1..4, K 32/64/72/128,
bias, ReLU / none / leaky, half and float out, a concat offset, a persistent grid of one
SM), CUDA-graph replay, and the engine tactic forced on a stem against the igemm small-C
tactic. Random non-zero data, NaN-poisoned outputs."""
import numpy as np
import pytest

cp = pytest.importorskip("cupy")

from gpu_helpers import (act_ref, check_is_stem, conv_nhwc, fixed_precision_plan, forced_outputs, poison,  # noqa: E402
                         rel_l2, stem_net)
from kernels.gpu import UnsupportedError, conv_stem  # noqa: E402
from kernels.gpu.reformat import generic_padded, nchw_to_nhwc_padded, padded_kernel_reason  # noqa: E402

TILES = conv_stem.STEM_TILES


# ---- the reformat ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("Cp", [4, 8])
@pytest.mark.parametrize("N, C, H, W", [(3, 3, 224, 224), (2, 3, 7, 9), (1, 1, 5, 5), (2, 4, 13, 8)])
def test_padded_reformat_kernel_equals_numpy(dtype, Cp, N, C, H, W):
    x = np.random.default_rng(N * C + H).standard_normal((N, C, H, W)).astype(dtype)
    assert padded_kernel_reason(x, np.float16, Cp) is None          # the dedicated kernel
    out = cp.full((N, H, W, Cp), np.nan, cp.float16)
    got = nchw_to_nhwc_padded(cp.asarray(x), np.float16, Cp, out=out, dedicated=True)
    assert got is out
    ref = np.zeros((N, H, W, Cp), np.float16)
    ref[..., :C] = x.transpose(0, 2, 3, 1).astype(np.float16)
    np.testing.assert_array_equal(got.get(), ref)


def test_padded_reformat_misaligned_planes_and_the_generic_fallback():
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(np.float32)   # H*W % 4 == 0
    flat = cp.asarray(np.concatenate([[0.0], x.ravel()]).astype(np.float32))
    xd = flat[1:].reshape(x.shape)             # C-contiguous, planes 4 bytes past 16-byte alignment
    assert xd.flags.c_contiguous and xd.data.ptr % 16 == 4
    assert padded_kernel_reason(xd, np.float16, 4) is None      # the kernel, scalar loads
    ref = np.zeros((2, 4, 5, 4), np.float16)
    ref[..., :3] = x.transpose(0, 2, 3, 1).astype(np.float16)
    np.testing.assert_array_equal(nchw_to_nhwc_padded(xd, np.float16, 4, dedicated=True).get(), ref)
    # strided input: the generic kernel, same values; and the generic kernel on the
    # contiguous input equals the dedicated one
    xs = cp.asarray(x.transpose(0, 2, 3, 1).copy()).transpose(0, 3, 1, 2)
    assert padded_kernel_reason(xs, np.float16, 4) is not None
    np.testing.assert_array_equal(nchw_to_nhwc_padded(xs, np.float16, 4, dedicated=True).get(), ref)
    np.testing.assert_array_equal(generic_padded(cp.asarray(x), np.float16, 4).get(), ref)


@pytest.mark.parametrize("Cp", [4, 8])
def test_padded_reformat_into_an_out_view_8_bytes_past_alignment(Cp):
    """16-byte stores only where y is 16-byte aligned: an odd H*W at odd n (Cp = 4) and an
    ``out`` view 8 bytes past alignment take the 8-byte stores."""
    x = np.random.default_rng(7).standard_normal((3, 3, 7, 9)).astype(np.float32)
    flat = cp.full(3 * 7 * 9 * Cp + 4, np.nan, cp.float16)
    out = flat[4:].reshape(3, 7, 9, Cp)
    assert out.data.ptr % 16 == 8 and padded_kernel_reason(x, np.float16, Cp, out) is None
    nchw_to_nhwc_padded(cp.asarray(x), np.float16, Cp, out=out, dedicated=True)
    ref = np.zeros((3, 7, 9, Cp), np.float16)
    ref[..., :3] = x.transpose(0, 2, 3, 1).astype(np.float16)
    np.testing.assert_array_equal(out.get(), ref)
    assert np.isnan(flat[:4].get()).all()


# ---- the convolution --------------------------------------------------------------------

def _case(N, C, H, W, K, R, S, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(np.float16)               # NCHW
    w = (rng.standard_normal((K, C, R, S)) / np.sqrt(R * S * C)).astype(np.float16)
    bias = (0.5 * rng.standard_normal(K)).astype(np.float32)
    return x, w, bias


def _ref(x, w, bias, stride, pad, act, alpha=0.0):
    y = conv_nhwc(x.transpose(0, 2, 3, 1).astype(np.float64),
                  w.transpose(0, 2, 3, 1).astype(np.float64), stride, pad)
    return act_ref(y + bias, act, alpha)


def _input(x, kind):
    """The device input of a layout kind: NHWC4 / NHWC8 half, NCHW float32 / float16."""
    N, C, H, W = x.shape
    if kind.startswith("NHWC"):
        cs = int(kind[4:])
        xs = np.zeros((N, H, W, cs), np.float16)
        xs[..., :C] = x.transpose(0, 2, 3, 1)
        xs[..., 4:] = 7.0                            # stored channels past 4 are never read
        return cp.asarray(xs), "NHWC"
    return cp.asarray(x.astype(np.float32 if kind == "NCHW32" else np.float16)), "NCHW"


GEOMS = [  # (name, H, W, R, S, stride, pad)
    ("resnet_stem", 224, 224, 7, 7, (2, 2), (3, 3)),
    ("stem_odd", 37, 35, 7, 7, (2, 2), (3, 3)),
    ("3x3s1", 19, 13, 3, 3, (1, 1), (1, 1)),
    ("5x5_s2x1", 17, 22, 5, 5, (2, 1), (2, 2)),
]


@pytest.mark.parametrize("tile", TILES, ids=lambda t: t.name)
@pytest.mark.parametrize("geom", GEOMS, ids=lambda g: g[0])
@pytest.mark.parametrize("kind", ["NHWC4", "NHWC8", "NCHW32", "NCHW16"])
@pytest.mark.parametrize("N, C, K", [(1, 3, 64), (3, 4, 32), (3, 3, 72), (1, 1, 128)])
def test_stem_matches_reference_half_out(tile, geom, kind, N, C, K):
    _, H, W, R, S, st, pd = geom
    if geom[0] == "resnet_stem" and N * K > 64:
        pytest.skip("the 224x224 case runs at batch 1, K 64 (the float64 reference is slow)")
    x, w, bias = _case(N, C, H, W, K, R, S, seed=H + C + K)
    xin, layout = _input(x, kind)
    P = (H + 2 * pd[0] - R) // st[0] + 1
    Q = (W + 2 * pd[1] - S) // st[1] + 1
    out = poison(cp, (N, P, Q, K), cp.float16)
    got = conv_stem.conv2d_stem(xin, conv_stem.pack_weight_stem(w), kernel_size=(R, S), stride=st,
                                padding=pd, bias=cp.asarray(bias), act="RELU", out=out,
                                layout=layout, tactic=tile)
    assert got is out
    ref = _ref(x, w, bias, st, pd, "RELU")
    assert (ref == 0).any() and (ref > 0).any()
    assert rel_l2(got.get(), ref) < 2e-3


@pytest.mark.parametrize("tile", TILES, ids=lambda t: t.name)
@pytest.mark.parametrize("kind", ["NHWC4", "NCHW32"])
@pytest.mark.parametrize("act, alpha", [(None, 0.0), ("LEAKY_RELU", 0.1), ("GELU_ERF", 0.0)])
def test_stem_float_out_and_other_activations(tile, kind, act, alpha):
    x, w, bias = _case(3, 3, 29, 31, 64, 7, 7, seed=11)
    xin, layout = _input(x, kind)
    if layout == "NCHW" and not tile.nchw_f32_out:
        with pytest.raises(UnsupportedError, match="does not write float32 from an NCHW input"):
            conv_stem.conv2d_stem(xin, conv_stem.pack_weight_stem(w), kernel_size=7, layout=layout,
                                  out_dtype=np.float32, tactic=tile)
        return
    got = conv_stem.conv2d_stem(xin, conv_stem.pack_weight_stem(w), kernel_size=7, stride=2,
                                padding=3, bias=cp.asarray(bias), act=act, alpha=alpha,
                                out=poison(cp, (3, 15, 16, 64), cp.float32), layout=layout, tactic=tile)
    assert rel_l2(got.get(), _ref(x, w, bias, (2, 2), (3, 3), act or "NONE", alpha)) < 2e-3


@pytest.mark.parametrize("tile", TILES, ids=lambda t: t.name)
@pytest.mark.parametrize("dtype, off", [(np.float16, 8), (np.float16, 64), (np.float32, 2)])
def test_stem_writes_into_a_concat_buffer_and_nothing_else(tile, dtype, off):
    x, w, bias = _case(2, 3, 23, 21, 64, 7, 7, seed=5)
    buf = cp.full((2, 12, 11, 136), 3.5, dtype)
    kind = "NCHW32" if dtype == np.float16 or tile.nchw_f32_out else "NHWC4"
    xin, layout = _input(x, kind)
    conv_stem.conv2d_stem(xin, conv_stem.pack_weight_stem(w),
                          kernel_size=7, stride=2, padding=3, bias=cp.asarray(bias), act="RELU",
                          out=buf, out_channel_offset=off, layout=layout, tactic=tile)
    host = buf.get()
    assert rel_l2(host[..., off:off + 64], _ref(x, w, bias, (2, 2), (3, 3), "RELU")) < 2e-3
    assert (host[..., :off] == 3.5).all() and (host[..., off + 64:] == 3.5).all()


@pytest.mark.parametrize("tile", TILES, ids=lambda t: t.name)
def test_persistent_ctas_loop_over_many_tiles(tile):
    """A grid of one SM: each CTA takes dozens of tiles (double-buffered patches), the
    result the same as the full grid's, bit for bit."""
    x, w, bias = _case(3, 3, 64, 48, 64, 7, 7, seed=9)
    wp, b = conv_stem.pack_weight_stem(w), cp.asarray(bias)
    for kind in ("NHWC4", "NCHW32"):
        xin, layout = _input(x, kind)
        run = lambda sms: conv_stem.conv2d_stem(xin, wp, kernel_size=7, stride=2, padding=3,  # noqa: E731
                                                bias=b, act="RELU", layout=layout, tactic=tile,
                                                num_sms=sms).get()
        one, full = run(1), run(None)
        np.testing.assert_array_equal(one, full)
        assert rel_l2(full, _ref(x, w, bias, (2, 2), (3, 3), "RELU")) < 2e-3


def test_stem_replays_in_a_cuda_graph():
    x, w, bias = _case(2, 3, 40, 40, 64, 7, 7, seed=3)
    xin, wp, b = cp.asarray(x.astype(np.float32)), conv_stem.pack_weight_stem(w), cp.asarray(bias)
    out = cp.empty((2, 20, 20, 64), cp.float16)
    ones = cp.ones(64, cp.float32)             # no allocation inside the capture
    call = lambda: conv_stem.conv2d_stem(xin, wp, kernel_size=7, stride=2, padding=3, bias=b,  # noqa: E731
                                         scale=ones, act="RELU", out=out, layout="NCHW",
                                         tactic=TILES[0])
    call()
    eager = out.get()
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        call()
        graph = stream.end_capture()
    out.fill(np.nan)
    graph.launch(stream)
    stream.synchronize()
    np.testing.assert_array_equal(out.get(), eager)


def test_stem_rejects_misaligned_concat_offsets_on_the_device():
    x, w, _ = _case(1, 3, 16, 16, 64, 7, 7, seed=2)
    with pytest.raises(UnsupportedError, match="at offset 4; the float16 epilogue stores 8"):
        conv_stem.conv2d_stem(cp.asarray(x), conv_stem.pack_weight_stem(w), kernel_size=7,
                              out=cp.empty((1, 8, 8, 72), cp.float16), out_channel_offset=4,
                              layout="NCHW")


# ---- the engine tactic ------------------------------------------------------------------

def test_engine_stem_tactics_match_the_igemm_small_c_tactic(monkeypatch):
    """Each ConvStem tactic (both flavours) forced on the stem of an FP16 engine, against
    the igemm small-C tactic forced there (CUPYRT_STEM_KERNEL=1 makes them candidates)."""
    import engine as rt
    from kernels.gpu import conv_igemm
    monkeypatch.setenv("CUPYRT_STEM_KERNEL", "1")
    net, randn = stem_net(3, 45, 43)
    feeds = {"x": randn(3, 3, 45, 43)}
    plan = fixed_precision_plan(net, rt.BuilderFlag.FP16)
    names = ["conv." + conv_igemm.SMALLC_TACTICS[0].name] + [
        f"conv.{t.name}{s}" for t in TILES for s in ("", "_nchw")]
    outs = forced_outputs(plan, names, feeds, check_is_stem)
    ref = outs.pop(names[0])
    for name, out in outs.items():
        for k in ref:
            assert rel_l2(out[k], ref[k]) < 2e-3, name


# ---- int8 output (an INT8 stem computed in FP16 from the float input) ---------------------

def _codes(v, s_out):
    return np.clip(np.rint(v * (np.float32(1) / np.float32(s_out)).astype(np.float64)), -128, 127)


@pytest.mark.parametrize("tile", TILES, ids=lambda t: t.name)
@pytest.mark.parametrize("kind", ["NCHW32", "NCHW16", "NHWC4"])
@pytest.mark.parametrize("N, H, W, K", [(2, 224, 224, 64), (3, 37, 35, 32), (1, 29, 31, 128)])
def test_stem_int8_out_codes_match_the_rounded_reference(tile, kind, N, H, W, K):
    if H == 224 and kind != "NCHW32":
        pytest.skip("the 224x224 case reads the network input (NCHW float32) only")
    x, w, bias = _case(N, 3, H, W, K, 7, 7, seed=H + K)
    xin, layout = _input(x, kind)
    ref = _ref(x, w, bias, (2, 2), (3, 3), "RELU")
    s_out = float(np.percentile(ref, 99.0)) / 127          # about 1 % of the codes saturate
    P, Q = ref.shape[1:3]
    out = cp.full((N, P, Q, K), 85, cp.int8)                # a code the epilogue must overwrite
    got = conv_stem.conv2d_stem(xin, conv_stem.pack_weight_stem(w), kernel_size=7, stride=2,
                                padding=3, bias=cp.asarray(bias), act="RELU", out=out, s_out=s_out,
                                layout=layout, tactic=tile)
    assert got is out and got.dtype == np.int8
    q = got.get().astype(np.int32)
    want = _codes(ref, s_out)
    assert (want == 127).any() and (want == 0).any() and ((want > 0) & (want < 127)).any()
    diff = np.abs(q - want)
    assert diff.max() <= 1                                  # float32 sums vs float64: ties only
    assert (diff != 0).mean() < 2e-2


@pytest.mark.parametrize("tile", TILES, ids=lambda t: t.name)
@pytest.mark.parametrize("act, alpha", [("LEAKY_RELU", 0.1), ("RELU6", 0.0), ("GELU_ERF", 0.0), ("RELU", 0.0),
                                        (None, 0.0)])
def test_stem_int8_out_each_epilogue_form(tile, act, alpha):
    """int8 codes through each form of the epilogue: the folded ReLU and identity (scale and
    bias in code units) and any other activation applied before the output's scale."""
    x, w, bias = _case(2, 3, 37, 35, 64, 7, 7, seed=11)
    xin, layout = _input(x, "NCHW32")
    ref = _ref(x, w, bias, (2, 2), (3, 3), act or "NONE", alpha)
    s_out = float(np.abs(ref).max()) / 120
    P, Q = ref.shape[1:3]
    out = cp.full((2, P, Q, 64), 85, cp.int8)
    conv_stem.conv2d_stem(xin, conv_stem.pack_weight_stem(w), kernel_size=7, stride=2, padding=3,
                          bias=cp.asarray(bias), act=act, alpha=alpha, out=out, s_out=s_out,
                          layout=layout, tactic=tile)
    q, want = out.get().astype(np.int32), _codes(ref, s_out)
    assert len(np.unique(want)) > 60                        # the codes spread over the range
    assert ((want >= 0).all() if act in ("RELU", "RELU6") else (want < 0).any())
    diff = np.abs(q - want)
    assert diff.max() <= 1 and (diff != 0).mean() < 2e-2


@pytest.mark.parametrize("tile", TILES, ids=lambda t: t.name)
@pytest.mark.parametrize("sms", [1, 2, 5, 7])
def test_stem_int8_persistent_grids_of_any_size_give_the_same_codes(tile, sms):
    """Grids of minb x (1, 2, 5, 7) CTAs over 3 images of 4 x 3 tiles each (the next tile's
    coordinates by carries, not division), bit-equal to one CTA per tile."""
    x, w, bias = _case(3, 3, 2 * 4 * tile.tp - 1, 95, 64, 7, 7, seed=sms)
    xin, _ = _input(x, "NCHW32")
    wp, b = conv_stem.pack_weight_stem(w), cp.asarray(bias)
    run = lambda n: conv_stem.conv2d_stem(xin, wp, kernel_size=7, stride=2, padding=3, bias=b,  # noqa: E731
                                          act="RELU", out_dtype=np.int8, s_out=0.05, layout="NCHW", tactic=tile,
                                          num_sms=n).get()
    full = run(None)
    assert full.shape[1:3] == (4 * tile.tp, 48) and full.any()
    np.testing.assert_array_equal(run(sms), full)


def test_stem_int8_out_into_a_wider_buffer_leaves_the_other_channels():
    x, w, bias = _case(2, 3, 21, 19, 32, 7, 7, seed=5)
    xin, layout = _input(x, "NCHW32")
    ref = _ref(x, w, bias, (2, 2), (3, 3), "NONE")
    s_out = float(np.abs(ref).max()) / 127
    P, Q = ref.shape[1:3]
    buf = cp.full((2, P, Q, 64), 85, cp.int8)
    conv_stem.conv2d_stem(xin, conv_stem.pack_weight_stem(w), kernel_size=7, stride=2, padding=3,
                          bias=cp.asarray(bias), out=buf, out_channel_offset=16, s_out=s_out,
                          layout=layout)
    h = buf.get().astype(np.int32)
    assert (h[..., :16] == 85).all() and (h[..., 48:] == 85).all()
    assert np.abs(h[..., 16:48] - _codes(ref, s_out)).max() <= 1
    assert (h[..., 16:48] < 0).any()                        # no activation: negative codes too


def test_engine_int8_stem_on_the_fp16_kernel_against_the_int8_small_c_tactic(monkeypatch):
    """Each ConvStemInt8 tactic forced on the stem of an INT8 engine (stem + ReLU + a 3x3
    INT8 convolution): close to the INT8 small-C tactic there (the one does not quantise
    the input, so they agree to INT8 accuracy, not bit for bit), and closer to the float
    network than it."""
    import engine as rt
    from kernels.gpu import conv_int8_smallc
    monkeypatch.setenv("CUPYRT_STEM_INT8", "1")
    net, randn = stem_net(2, 40, 40, tail_k=16)
    data = [randn(2, 3, 40, 40) for _ in range(3)]
    feeds = {"x": randn(2, 3, 40, 40)}
    plan = fixed_precision_plan(net, rt.BuilderFlag.INT8, data)
    names = ["conv." + conv_int8_smallc.SMALLC_TACTICS[0].name] + [
        f"conv.{t.name}{s}_i8" for t in TILES for s in ("", "_nchw")]
    outs = forced_outputs(plan, names, feeds, check_is_stem)
    b = rt.Builder()
    cfg32 = b.create_builder_config()
    cfg32.backend = "numpy"
    exact = rt.Runtime(backend="numpy").deserialize_cuda_engine(b.build_serialized_network(net, cfg32))
    f32 = exact.create_execution_context().execute(feeds)
    ref = outs.pop(names[0])
    for name, out in outs.items():
        for k in ref:
            assert rel_l2(out[k], ref[k]) < 3e-2, name
            assert rel_l2(out[k], f32[k]) <= rel_l2(ref[k], f32[k]) * 1.05, name
