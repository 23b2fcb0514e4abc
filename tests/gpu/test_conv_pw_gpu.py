"""The persistent 1x1 kernel (kernels/gpu/conv_pw.py) on the GPU, on random non-zero data.

INT8 (conv2d_pw_int8): bit-identical to the mma.sync INT8 kernel (conv_int8.conv2d_int8,
itself bit-exact with kernels/quantize.py's emulation): ResNet-50's four expand shapes, with
and without an int8 / float16 / float32 residual, ReLU and none, int8 / float16 / float32
output, a channel slice of a wider output, M not a multiple of BM, more M tiles than CTAs.
FP16 (conv2d_pw_f16): within FP16 tolerance of a float64 reference and equal to conv_igemm's
V2 tile (same epilogue, same k order of float32 accumulation). Then both tactics in engines
with a bottleneck block, forced onto the expand layer against conv.i8_* / conv.igemm2_*."""
import numpy as np
import pytest

cp = pytest.importorskip("cupy")

from gpu_helpers import (TOL, both_outputs, conv_nhwc, forced_outputs, int8_conv_inputs,  # noqa: E402
                         int8_residual, rel_l2, replayed_in_graph)
from kernels import quantize as Q  # noqa: E402
from kernels.gpu import UnsupportedError  # noqa: E402
from kernels.gpu import conv_igemm, conv_int8, conv_pw  # noqa: E402

REF = conv_int8.INT8_TACTICS[0]
PW = conv_pw.PW_TACTICS
# ResNet-50's bottleneck expand layers at a small batch: (name, N, H, W, C, K)
EXPAND = [("s1_64_256", 2, 56, 56, 64, 256), ("s2_128_512", 2, 28, 28, 128, 512),
          ("s3_256_1024", 2, 14, 14, 256, 1024), ("s4_512_2048", 4, 7, 7, 512, 2048)]
# odd ones: C % 32 == 16 (the W slice's zero pad), K not a multiple of BN or of 16, tiny M
ODD = [("c48_k72_m35", 1, 5, 7, 40, 72), ("c16_k20_m392", 2, 14, 14, 16, 20),
       ("c96_k200_m130", 2, 5, 13, 96, 200)]


def _fits(t, C):
    return t.smem_bytes(-(-C // 16) * 16) <= conv_pw.SMEM_LIMIT


def _inputs(N, H, W, C, K, seed):
    return int8_conv_inputs(cp, N, H, W, C, K, seed)


def _residual(rng, shape, kind):
    return int8_residual(cp, rng, shape, kind)


def _both(t, xq, wq, s_w, s_in, shape, dtype, poison, **kw):
    """(ours, reference) outputs in poisoned buffers of ``shape``."""
    return both_outputs(cp, ((conv_pw.conv2d_pw_int8, t), (conv_int8.conv2d_int8, REF)),
                        xq, wq, s_w, s_in, shape, dtype, poison, **kw)


@pytest.mark.parametrize("t", PW, ids=lambda t: t.name)
@pytest.mark.parametrize("case", EXPAND + ODD, ids=lambda c: c[0])
@pytest.mark.parametrize("res, act", [("int8", "RELU"), (None, None), (np.float16, "RELU")])
def test_int8_out_bit_identical_to_conv_int8(t, case, res, act):
    _, N, H, W, C, K = case
    if not _fits(t, C):
        pytest.skip(f"{t.name} declines C = {C}")
    rng, xq, wq, s_w, bias, s_in = _inputs(N, H, W, C, K, 11)
    kw = dict(bias=bias, act=act, **_residual(rng, (N, H, W, K), res))
    ref_f = cp.empty((N, H, W, K), cp.float32)
    conv_int8.conv2d_int8(xq, wq, s_in, s_w, out=ref_f, out_dtype=np.float32, tactic=REF, **kw)
    s_out = Q.scale_from_amax(0.7 * float(cp.abs(ref_f).max()))      # top values saturate
    got, ref = _both(t, xq, wq, s_w, s_in, (N, H, W, K), cp.int8, 99, s_out=s_out, **kw)
    assert ((ref == 127) | (ref == -128)).any() and len(np.unique(ref)) > 50   # saturated, varied
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("t", PW, ids=lambda t: t.name)
@pytest.mark.parametrize("case", [EXPAND[0], EXPAND[3], ODD[0]], ids=lambda c: c[0])
@pytest.mark.parametrize("out_dtype, res", [(np.float32, np.float32), (np.float16, "int8"),
                                            (np.float16, np.float16), (np.float32, None)])
def test_float_out_bit_identical_to_conv_int8(t, case, out_dtype, res):
    _, N, H, W, C, K = case
    if not _fits(t, C):
        pytest.skip(f"{t.name} declines C = {C}")
    rng, xq, wq, s_w, bias, s_in = _inputs(N, H, W, C, K, 23)
    kw = dict(bias=bias, act="LEAKY_RELU", alpha=0.1, out_dtype=out_dtype,
              **_residual(rng, (N, H, W, K), res))
    got, ref = _both(t, xq, wq, s_w, s_in, (N, H, W, K), out_dtype, np.nan, **kw)
    assert np.isfinite(ref).all()
    np.testing.assert_array_equal(got, ref)


def test_matches_the_numpy_emulation():
    """One case against kernels/quantize.py directly, not only through conv_int8."""
    N, H, W, C, K = 2, 9, 11, 64, 256
    rng, xq, wq, s_w, bias, s_in = _inputs(N, H, W, C, K, 3)
    acc = xq.get().reshape(-1, C).astype(np.int64) @ wq.get().reshape(K, C).astype(np.int64).T
    r = _residual(rng, (N, H, W, K), "int8")
    res_ref = (r["residual"].get(), r["residual_scale"])
    yf = Q.epilogue_int8(acc.reshape(N, H, W, K).astype(np.float64), s_in, s_w.get(), bias.get(),
                         res_ref, "RELU", channel_axis=3)
    s_out = Q.scale_from_amax(0.7 * float(np.abs(yf).max()))
    ref = Q.epilogue_int8(acc.reshape(N, H, W, K).astype(np.float64), s_in, s_w.get(), bias.get(),
                          res_ref, "RELU", s_out=s_out, channel_axis=3)
    got = conv_pw.conv2d_pw_int8(xq, wq, s_in, s_w, bias=bias, act="RELU", s_out=s_out, **r)
    np.testing.assert_array_equal(got.get(), ref)


@pytest.mark.parametrize("t", PW, ids=lambda t: t.name)
@pytest.mark.parametrize("ctas", [1, 3])
def test_persistent_loop_wraps_when_m_tiles_outnumber_ctas(t, ctas):
    N, H, W, C, K = 2, 28, 28, 128, 512                # 1568 rows: 25 or 13 tiles per slice
    rng, xq, wq, s_w, bias, s_in = _inputs(N, H, W, C, K, 31)
    kw = dict(bias=bias, act="RELU", s_out=Q.scale_from_amax(6.0),
              **_residual(rng, (N, H, W, K), "int8"))
    ref = conv_int8.conv2d_int8(xq, wq, s_in, s_w, tactic=REF, **kw).get()
    got = conv_pw.conv2d_pw_int8(xq, wq, s_in, s_w, tactic=t, ctas_per_slice=ctas, **kw).get()
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("t", PW, ids=lambda t: t.name)
@pytest.mark.parametrize("offset, res", [(8, "int8"), (3, np.float16)])   # 3: unaligned rows
def test_channel_slice_of_a_wider_output(t, offset, res):
    N, H, W, C, K = 2, 14, 14, 64, 256
    rng, xq, wq, s_w, bias, s_in = _inputs(N, H, W, C, K, 41)
    kw = dict(bias=bias, act="RELU", s_out=Q.scale_from_amax(5.0),
              **_residual(rng, (N, H, W, K), res))
    ref = conv_int8.conv2d_int8(xq, wq, s_in, s_w, tactic=REF, **kw).get()
    out = cp.full((N, H, W, K + 16), 77, cp.int8)
    conv_pw.conv2d_pw_int8(xq, wq, s_in, s_w, out=out, out_channel_offset=offset, tactic=t, **kw)
    got = out.get()
    np.testing.assert_array_equal(got[..., offset:offset + K], ref)
    assert (got[..., :offset] == 77).all() and (got[..., offset + K:] == 77).all()


def test_bigger_tiles_decline_c512():
    _, xq, wq, s_w, _, s_in = _inputs(1, 7, 7, 512, 2048, 1)
    with pytest.raises(UnsupportedError, match="shared memory"):
        conv_pw.conv2d_pw_int8(xq, wq, s_in, s_w, s_out=1.0, tactic="pwi8_128x128_s2")


def test_replays_in_a_cuda_graph():
    N, H, W, C, K = 2, 14, 14, 128, 512
    rng, xq, wq, s_w, bias, s_in = _inputs(N, H, W, C, K, 9)
    kw = dict(bias=bias, act="RELU", s_out=Q.scale_from_amax(4.0),
              **_residual(rng, (N, H, W, K), "int8"))
    ref = conv_int8.conv2d_int8(xq, wq, s_in, s_w, tactic=REF, **kw).get()
    out = cp.empty((N, H, W, K), cp.int8)
    got = replayed_in_graph(cp, lambda: conv_pw.conv2d_pw_int8(xq, wq, s_in, s_w, out=out, **kw),
                            out, 100)
    np.testing.assert_array_equal(got, ref)


# -- FP16 ------------------------------------------------------------------------------------
REF16 = conv_igemm.TACTICS_BY_NAME["igemm2_128x128x32_w2x4_s4"]     # V2: the staged epilogue
PW16 = conv_pw.PW16_TACTICS
# (name, N, H, W, C, K): the expand shapes, C % 16 == 8 (the X and W pads), tiny M, odd K
SHAPES16 = EXPAND + [("c24_k72_m35", 1, 5, 7, 24, 72), ("c8_k20_m130", 2, 5, 13, 8, 20)]


def _inputs16(N, H, W, C, K, seed, out_dtype, res):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H, W, C)).astype(np.float16)
    w = (rng.standard_normal((K, C, 1, 1)) / np.sqrt(C)).astype(np.float16)
    scale = (1 + 0.1 * rng.standard_normal(K)).astype(np.float32)
    bias = (0.5 * rng.standard_normal(K)).astype(np.float32)
    r = rng.standard_normal((N, H, W, K)).astype(out_dtype) if res else None
    ref = conv_nhwc(x, w.transpose(0, 2, 3, 1)) * scale + bias + (0 if r is None else r)
    dev = dict(scale=cp.asarray(scale), bias=cp.asarray(bias),
               residual=None if r is None else cp.asarray(r))
    return cp.asarray(x), conv_igemm.pack_weight_krsc(w), dev, ref


@pytest.mark.parametrize("t", PW16, ids=lambda t: t.name)
@pytest.mark.parametrize("case", SHAPES16, ids=lambda c: c[0])
@pytest.mark.parametrize("out_dtype, res, act", [(np.float16, True, "RELU"), (np.float32, True, None),
                                                 (np.float16, False, None)])
def test_fp16_matches_reference_and_conv_igemm(t, case, out_dtype, res, act):
    _, N, H, W, C, K = case
    if t.smem_bytes(-(-C // 8) * 8) > conv_pw.SMEM_LIMIT:
        with pytest.raises(UnsupportedError, match="shared memory"):
            conv_pw.conv2d_pw_f16(*_inputs16(N, H, W, C, K, 5, out_dtype, res)[:2], tactic=t)
        return
    x, w, dev, ref = _inputs16(N, H, W, C, K, 5, out_dtype, res)
    if act == "RELU":
        ref = np.maximum(ref, 0)
    outs = []
    for launch, tac in ((conv_pw.conv2d_pw_f16, t), (conv_igemm.conv2d_igemm, REF16)):
        out = cp.full((N, H, W, K), np.nan, out_dtype)
        launch(x, w, act=act, out=out, tactic=tac, **dev)
        outs.append(out.get())
    assert rel_l2(outs[0], ref) <= TOL[np.dtype(out_dtype)]
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("t", PW16, ids=lambda t: t.name)
def test_fp16_loop_wraps_and_channel_slice(t):
    N, H, W, C, K = 2, 14, 14, 64, 256
    x, w, dev, _ = _inputs16(N, H, W, C, K, 8, np.float16, True)
    ref = conv_igemm.conv2d_igemm(x, w, act="RELU", tactic=REF16, **dev).get()
    got = conv_pw.conv2d_pw_f16(x, w, act="RELU", tactic=t, ctas_per_slice=2, **dev).get()
    np.testing.assert_array_equal(got, ref)
    for offset in (8, 3):                                   # 3: the element-by-element path
        out = cp.full((N, H, W, K + 16), 7, cp.float16)
        conv_pw.conv2d_pw_f16(x, w, act="RELU", tactic=t, out=out, out_channel_offset=offset, **dev)
        got = out.get()
        np.testing.assert_array_equal(got[..., offset:offset + K], ref)
        assert (got[..., :offset] == 7).all() and (got[..., offset + K:] == 7).all()


# -- the engine: a bottleneck block, conv.pwi8_* forced on its expand layer ------------------

def _bottleneck(rng):
    """x -> 3x3 conv to 128 (r0) -> 1x1 reduce to 32 -> 3x3 -> 1x1 expand to 128, + r0, ReLU."""
    import engine as rt

    def randn(*s):
        return rng.standard_normal(s).astype(np.float32)
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 16, 14, 14))

    def conv(t, k, rs, scale, relu=True):
        c = net.add_convolution_nd(t, k, (rs, rs), kernel=randn(k, t.shape[1], rs, rs) * scale,
                                   bias=randn(k) * 0.3, padding_nd=(rs // 2, rs // 2))
        out = c.get_output(0)
        return net.add_activation(out, rt.ActivationType.RELU).get_output(0) if relu else out
    r0 = conv(x, 128, 3, 0.1)
    y = conv(conv(conv(r0, 32, 1, 0.1), 32, 3, 0.06), 128, 1, 0.15, relu=False)
    s = net.add_elementwise(y, r0, rt.ElementWiseOperation.SUM).get_output(0)
    net.mark_output(net.add_activation(s, rt.ActivationType.RELU).get_output(0))
    return net


@pytest.mark.parametrize("int8", [True, False], ids=["int8", "fp16"])
def test_engine_times_the_tactic_and_forced_matches_the_mma_sync_kernel(monkeypatch, int8):
    import engine as rt
    from engine.types import LayerType
    monkeypatch.setenv("CUPYRT_PW_PERSISTENT" if int8 else "CUPYRT_PW_PERSISTENT_F16", "1")
    if not int8:        # in FP16 cuDNN's graphs take the layer: our tiles are timed only with this on
        monkeypatch.setenv("CUPYRT_TILES_WHERE_SPECIALISED", "1")
    rng = np.random.default_rng(7)
    net = _bottleneck(rng)
    data = [rng.uniform(-2, 2, (2, 16, 14, 14)).astype(np.float32) for _ in range(3)]
    feeds = {"x": rng.uniform(-2, 2, (2, 16, 14, 14)).astype(np.float32)}
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    cfg.set_flag(rt.BuilderFlag.FP16)
    if int8:
        cfg.precision_by_timing = False          # the layers stay INT8: the tactics are compared
        cfg.set_flag(rt.BuilderFlag.INT8)
        cfg.int8_calibrator = rt.MinMaxCalibrator(data)
    plan = b.build_serialized_network(net, cfg)
    eng = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
    layers = eng.network._layers
    expand = [i for i, la in enumerate(layers) if la.layer_type == LayerType.CONVOLUTION
              and la.kernel_size_nd == (1, 1) and len(la._inputs) == 2]
    assert len(expand) == 1, [(la.name, la.layer_type) for la in layers]
    name = layers[expand[0]].name
    assert eng.meta["precisions"][name] == ("INT8" if int8 else "HALF")
    ours, ref_name = (PW, f"conv.{REF.name}") if int8 else (PW16, f"conv.{REF16.name}")
    timed = eng.meta.get("tactic_ms", {}).get(name, {})
    assert all(timed.get(f"conv.{t.name}") is not None for t in ours), timed   # each ran

    def is_expand(layer):
        assert layer.kernel_size_nd == (1, 1) and len(layer._inputs) == 2
    names = [f"conv.{t.name}" for t in ours] + [ref_name]
    outs = forced_outputs(plan, names, feeds, is_expand, index=expand[0])
    ref = outs.pop(ref_name)
    for tactic, got in outs.items():
        for k in ref:
            np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(ref[k]), err_msg=tactic)
