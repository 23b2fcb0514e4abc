"""The persistent 3x3 INT8 kernel (kernels/gpu/conv_pw.py conv2d_pw3_int8) on the GPU, on
random non-zero data: bit-identical to the mma.sync INT8 kernel (conv_int8.conv2d_int8, itself
bit-exact with kernels/quantize.py's emulation) on ResNet-50's stride-1 3x3 shapes and on odd
ones where a tile's halo crosses image edges and images (H or W of 1, images smaller than a
tile, K not a multiple of BN, M not a multiple of BM), with and without an int8 / float16 /
float32 residual, int8 / float output, a channel slice of a wider output, more M tiles than
CTAs, a CUDA graph; then forced onto a 3x3 layer of an engine against conv.i8_*."""
import numpy as np
import pytest

cp = pytest.importorskip("cupy")

from gpu_helpers import (both_outputs, forced_outputs, int8_conv_inputs, int8_residual,  # noqa: E402
                         replayed_in_graph)
from kernels import quantize as Q  # noqa: E402
from kernels.gpu import UnsupportedError  # noqa: E402
from kernels.gpu import conv_int8, conv_pw  # noqa: E402

REF = conv_int8.INT8_TACTICS[0]
PW3 = conv_pw.PW3_TACTICS
# (name, N, H, W, C, K)
RESNET = [("s1_64", 2, 56, 56, 64, 64), ("s2_128", 2, 28, 28, 128, 128)]
ODD = [("c32_k72_5x7", 1, 5, 7, 32, 72),        # K past BN, one image smaller than a tile
       ("c96_k40_3x4", 3, 3, 4, 96, 40),        # a tile spans three images
       ("h1_w9", 2, 1, 9, 64, 64),              # only the middle row of taps is inside
       ("w1_h9", 2, 9, 1, 32, 16),              # only the middle column
       ("c64_k64_13x11", 3, 13, 11, 64, 64)]    # rows and images cut tiles anywhere


def _inputs(N, H, W, C, K, seed):
    return int8_conv_inputs(cp, N, H, W, C, K, seed, rs=3)


def _residual(rng, shape, kind):
    return int8_residual(cp, rng, shape, kind)


def _both(t, xq, wq, s_w, s_in, shape, dtype, poison, **kw):
    """(ours, reference) outputs in poisoned buffers of ``shape``, padding 1."""
    return both_outputs(cp, ((conv_pw.conv2d_pw3_int8, t), (conv_int8.conv2d_int8, REF)),
                        xq, wq, s_w, s_in, shape, dtype, poison, padding=1, **kw)


@pytest.mark.parametrize("t", PW3, ids=lambda t: t.name)
@pytest.mark.parametrize("case", RESNET + ODD, ids=lambda c: c[0])
@pytest.mark.parametrize("res, act", [(None, "RELU"), ("int8", "RELU"), (np.float16, None)])
def test_int8_out_bit_identical_to_conv_int8(t, case, res, act):
    _, N, H, W, C, K = case
    rng, xq, wq, s_w, bias, s_in = _inputs(N, H, W, C, K, 11)
    kw = dict(bias=bias, act=act, **_residual(rng, (N, H, W, K), res))
    ref_f = conv_int8.conv2d_int8(xq, wq, s_in, s_w, padding=1, out_dtype=np.float32, tactic=REF, **kw)
    s_out = Q.scale_from_amax(0.7 * float(cp.abs(ref_f).max()))      # top values saturate
    got, ref = _both(t, xq, wq, s_w, s_in, (N, H, W, K), cp.int8, 99, s_out=s_out, **kw)
    assert ((ref == 127) | (ref == -128)).any() and len(np.unique(ref)) > 50   # saturated, varied
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("t", PW3, ids=lambda t: t.name)
@pytest.mark.parametrize("case", [RESNET[0], ODD[1], ODD[2]], ids=lambda c: c[0])
@pytest.mark.parametrize("out_dtype, res", [(np.float32, np.float32), (np.float16, "int8"),
                                            (np.float32, None)])
def test_float_out_bit_identical_to_conv_int8(t, case, out_dtype, res):
    _, N, H, W, C, K = case
    rng, xq, wq, s_w, bias, s_in = _inputs(N, H, W, C, K, 23)
    kw = dict(bias=bias, act="LEAKY_RELU", alpha=0.1, out_dtype=out_dtype,
              **_residual(rng, (N, H, W, K), res))
    got, ref = _both(t, xq, wq, s_w, s_in, (N, H, W, K), out_dtype, np.nan, **kw)
    assert np.isfinite(ref).all()
    np.testing.assert_array_equal(got, ref)


def test_matches_the_numpy_emulation():
    """One case against kernels/quantize.py directly (zero padding included), not only
    through conv_int8."""
    N, H, W, C, K = 2, 6, 9, 32, 64
    rng, xq, wq, s_w, bias, s_in = _inputs(N, H, W, C, K, 3)
    xp = np.pad(xq.get().astype(np.int64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    wk = wq.get().astype(np.int64)                                   # [K, 3, 3, C]
    acc = sum(np.einsum("nhwc,kc->nhwk", xp[:, r:r + H, s:s + W], wk[:, r, s])
              for r in range(3) for s in range(3))
    yf = Q.epilogue_int8(acc.astype(np.float64), s_in, s_w.get(), bias.get(), None, "RELU",
                         channel_axis=3)
    s_out = Q.scale_from_amax(0.7 * float(np.abs(yf).max()))
    ref = Q.epilogue_int8(acc.astype(np.float64), s_in, s_w.get(), bias.get(), None, "RELU",
                          s_out=s_out, channel_axis=3)
    got = conv_pw.conv2d_pw3_int8(xq, wq, s_in, s_w, bias=bias, act="RELU", s_out=s_out)
    assert len(np.unique(ref)) > 50
    np.testing.assert_array_equal(got.get(), ref)


@pytest.mark.parametrize("t", PW3, ids=lambda t: t.name)
@pytest.mark.parametrize("ctas", [1, 3])
def test_persistent_loop_wraps_when_m_tiles_outnumber_ctas(t, ctas):
    N, H, W, C, K = 2, 28, 28, 64, 64                  # 1568 rows: 13 or 7 tiles per CTA
    rng, xq, wq, s_w, bias, s_in = _inputs(N, H, W, C, K, 31)
    kw = dict(bias=bias, act="RELU", s_out=Q.scale_from_amax(6.0),
              **_residual(rng, (N, H, W, K), "int8"))
    ref = conv_int8.conv2d_int8(xq, wq, s_in, s_w, padding=1, tactic=REF, **kw).get()
    got = conv_pw.conv2d_pw3_int8(xq, wq, s_in, s_w, tactic=t, ctas_per_slice=ctas, **kw).get()
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("offset", [8, 3])                 # 3: unaligned rows
def test_channel_slice_of_a_wider_output(offset):
    N, H, W, C, K = 2, 14, 14, 64, 64
    rng, xq, wq, s_w, bias, s_in = _inputs(N, H, W, C, K, 41)
    kw = dict(bias=bias, act="RELU", s_out=Q.scale_from_amax(5.0))
    ref = conv_int8.conv2d_int8(xq, wq, s_in, s_w, padding=1, tactic=REF, **kw).get()
    out = cp.full((N, H, W, K + 16), 77, cp.int8)
    conv_pw.conv2d_pw3_int8(xq, wq, s_in, s_w, out=out, out_channel_offset=offset, **kw)
    got = out.get()
    np.testing.assert_array_equal(got[..., offset:offset + K], ref)
    assert (got[..., :offset] == 77).all() and (got[..., offset + K:] == 77).all()


def test_declines_what_it_cannot_run():
    _, xq, wq, s_w, _, s_in = _inputs(1, 8, 8, 48, 64, 1)              # C = 48: not % 32
    with pytest.raises(UnsupportedError, match="multiple of 32"):
        conv_pw.conv2d_pw3_int8(xq, wq, s_in, s_w, s_out=1.0)
    _, xq, wq, s_w, _, s_in = _inputs(1, 8, 8, 64, 64, 1)
    with pytest.raises(UnsupportedError, match="stride"):
        conv_pw.conv2d_pw3_int8(xq, wq, s_in, s_w, stride=2, s_out=1.0)
    with pytest.raises(UnsupportedError, match="padding 1 on every side"):
        conv_pw.conv2d_pw3_int8(xq, wq, s_in, s_w, out_hw=(7, 7), s_out=1.0)
    _, xq, wq, s_w, _, s_in = _inputs(1, 4, 4, 512, 64, 1)              # 9C-byte weight rows
    with pytest.raises(UnsupportedError, match="shared memory"):
        conv_pw.conv2d_pw3_int8(xq, wq, s_in, s_w, s_out=1.0)


def test_replays_in_a_cuda_graph():
    N, H, W, C, K = 2, 14, 14, 64, 64
    rng, xq, wq, s_w, bias, s_in = _inputs(N, H, W, C, K, 9)
    kw = dict(bias=bias, act="RELU", s_out=Q.scale_from_amax(4.0),
              **_residual(rng, (N, H, W, K), "int8"))
    ref = conv_int8.conv2d_int8(xq, wq, s_in, s_w, padding=1, tactic=REF, **kw).get()
    out = cp.empty((N, H, W, K), cp.int8)
    got = replayed_in_graph(cp, lambda: conv_pw.conv2d_pw3_int8(xq, wq, s_in, s_w, out=out, **kw),
                            out, 100)
    np.testing.assert_array_equal(got, ref)


def _block(rng):
    """x (32 channels) -> 3x3 conv to 64 + ReLU -> 3x3 conv to 64 + ReLU."""
    import engine as rt
    net = rt.Network()
    x = net.add_input("x", rt.float32, (2, 32, 12, 10))
    t = x
    for c in (64, 64):
        conv = net.add_convolution_nd(
            t, c, (3, 3), kernel=rng.standard_normal((c, t.shape[1], 3, 3)).astype(np.float32) * 0.06,
            bias=rng.standard_normal(c).astype(np.float32) * 0.3, padding_nd=(1, 1))
        t = net.add_activation(conv.get_output(0), rt.ActivationType.RELU).get_output(0)
    net.mark_output(t)
    return net


def test_engine_times_the_tactic_and_forced_matches_the_mma_sync_kernel(monkeypatch):
    import engine as rt
    from engine.types import LayerType
    monkeypatch.setenv("CUPYRT_PW3_PERSISTENT", "1")
    rng = np.random.default_rng(7)
    net = _block(rng)
    data = [rng.uniform(-2, 2, (2, 32, 12, 10)).astype(np.float32) for _ in range(3)]
    feeds = {"x": rng.uniform(-2, 2, (2, 32, 12, 10)).astype(np.float32)}
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    cfg.set_flag(rt.BuilderFlag.FP16)
    cfg.precision_by_timing = False              # the layers stay INT8: the tactics are compared
    cfg.set_flag(rt.BuilderFlag.INT8)
    cfg.int8_calibrator = rt.MinMaxCalibrator(data)
    plan = b.build_serialized_network(net, cfg)
    eng = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
    layers = eng.network._layers
    convs = [i for i, la in enumerate(layers) if la.layer_type == LayerType.CONVOLUTION]
    assert len(convs) == 2
    for i in convs:                               # both 3x3 layers: C = 32, then C = 64
        name = layers[i].name
        assert eng.meta["precisions"][name] == "INT8"
        timed = eng.meta.get("tactic_ms", {}).get(name, {})
        assert all(timed.get(f"conv.{t.name}") is not None for t in PW3), timed   # each ran

        def is_3x3(layer):
            assert layer.kernel_size_nd == (3, 3)
        names = [f"conv.{t.name}" for t in PW3] + [f"conv.{REF.name}"]
        outs = forced_outputs(plan, names, feeds, is_3x3, index=i)
        ref = outs.pop(f"conv.{REF.name}")
        for tactic, got in outs.items():
            for k in ref:
                np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(ref[k]), err_msg=tactic)
