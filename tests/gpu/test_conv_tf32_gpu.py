"""FP32 tensor-core convolution (3xTF32 and plain TF32) vs a float64 NumPy reference.

Ordered so that a first GPU run pinpoints a bug:
1. exact integer cases (TF32 and 3xTF32 are exact there): a wrong fragment
   layout, gather or epilogue shows as a mismatch at a named (n, p, q, k),
   with the residues of the wrong rows / channels (mod 16 / mod 8) that name
   the fragment register at fault;
2. random N(0, 1) data on every tile x shape (each tile is built for one
   precision: 3xtf32_* / tf32_*): 3xTF32 within the FP32 tolerance (rel L2 <=
   1e-5, the deep 4608-long reduction included; the NumPy model of the
   truncating MMA accumulation, T.gemm_3xtf32_model, predicts ~1.5e-6 there
   with promotion and 3e-5 without), TF32 within 1e-3;
3. the fused epilogue, output types, concat offsets, CUDA-graph capture;
4. the engine tactics (engine/gpu/conv_tf32_tactics.py, fc_tactics.py) in small networks, FP32 engines
   on both backends, including the engine's own CUDA-graph replay.
"""
import functools

import numpy as np
import pytest

cp = pytest.importorskip("cupy")

import engine as rt  # noqa: E402
from engine import kernel_table  # noqa: E402
from gpu_helpers import act_ref, conv_nhwc, poison, rel_l2  # noqa: E402
from kernels.gpu import conv_igemm  # noqa: E402
from kernels.gpu import conv_tf32 as T  # noqa: E402

TOL = {True: 1e-5, False: 1e-3}          # precise (3xTF32) / plain TF32
PRECISE = [True, False]


def pid(p):
    return "3xtf32" if p else "tf32"


def tid(t):
    return t.name


# the 64x64 tile of each precision (the single-tile and engine tests)
SMALL = {True: "3xtf32_64x64x32_w2x2_s4_p2", False: "tf32_64x64x32_w2x2_s4"}


def mismatch_report(got, ref):
    """Where ``got`` differs from ``ref`` ([N, P, Q, K]): first index and the residues."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    bad = ~np.isclose(got, ref, rtol=0, atol=0) | ~np.isfinite(got)
    if not bad.any():
        return ""
    n, p, q, k = (int(i[0]) for i in np.nonzero(bad))
    K = ref.shape[3]
    m_bad = np.nonzero(bad.reshape(-1, K).any(axis=1))[0]
    k_bad = np.nonzero(bad.reshape(-1, K).any(axis=0))[0]
    return (f"{int(bad.sum())} of {bad.size} wrong; first at (n={n}, p={p}, q={q}, k={k}): "
            f"got {got[n, p, q, k]!r}, want {ref[n, p, q, k]!r}; wrong rows m mod 16: "
            f"{sorted(set((m_bad % 16).tolist()))}; wrong channels k mod 8: "
            f"{sorted(set((k_bad % 8).tolist()))}; rows {m_bad[:8].tolist()}..., "
            f"channels {k_bad[:8].tolist()}...")


def run(x, w, *, precise, tactic, **kw):
    return T.conv2d_tf32(cp.asarray(x), cp.asarray(w), precise=precise, tactic=tactic, **kw)


# ---- 1. exact integer cases -------------------------------------------------------
@pytest.mark.parametrize("tactic", T.TACTICS, ids=tid)
@pytest.mark.parametrize("R,stride,pad", [(1, 1, 0), (3, 1, 1), (3, 2, 1)], ids=["1x1", "3x3", "3x3s2"])
def test_integer_data_is_exact(tactic, R, stride, pad):
    """Small integers: every product and partial sum is exact in TF32 and FP32, so
    any difference is a layout / indexing bug, reported by position."""
    rng = np.random.default_rng(11)
    N, H, W, C, K = 2, 9, 11, 36, 72          # M, K, C not tile multiples
    x = rng.integers(-3, 4, (N, H, W, C)).astype(np.float32)
    w = rng.integers(-3, 4, (K, R, R, C)).astype(np.float32)
    ref = conv_nhwc(x, w, (stride, stride), (pad, pad))
    out = poison(cp, ref.shape, np.float32)
    run(x, w, precise=tactic.precise, tactic=tactic, stride=stride, padding=pad, out=out)
    report = mismatch_report(out.get(), ref)
    assert not report, report


def test_integer_data_single_tile_identity_pattern():
    """One 64x64 tile, pixel m = one-hot channel m % 32, w[k, c] = 32 k + c (< 2048:
    exact in TF32): out[m, k] = 32 k' + c' names the (k', c') the kernel paired, so
    a swapped fragment register reads off directly."""
    C, K = 32, 64
    x = np.zeros((1, 8, 8, C), np.float32)
    for m in range(64):
        x[0, m // 8, m % 8, m % C] = 1.0
    w = (32 * np.arange(K)[:, None] + np.arange(C)[None, :]).astype(np.float32).reshape(K, 1, 1, C)
    ref = conv_nhwc(x, w)
    for precise in PRECISE:
        out = run(x, w, precise=precise, tactic=SMALL[precise])
        report = mismatch_report(out.get(), ref)
        assert not report, f"{pid(precise)}: {report}"


# ---- 2. random data, every tile x precision x shape ---------------------------
# (N, H, W, C, K, R, S, stride, pad, dil)
SHAPES = [
    (2, 9, 9, 32, 64, 1, 1, (1, 1), (0, 0), (1, 1)),          # 1x1 s1
    (2, 14, 14, 64, 136, 1, 1, (2, 2), (0, 0), (1, 1)),       # 1x1 s2, K not a tile multiple
    (2, 11, 13, 32, 72, 3, 3, (1, 1), (1, 1), (1, 1)),        # 3x3 s1, K = 72, M = 286
    (1, 9, 9, 16, 40, 3, 3, (2, 2), (1, 1), (1, 1)),          # 3x3 s2, C < BK, batch 1
    (2, 23, 21, 3, 64, 7, 7, (2, 2), (3, 3), (1, 1)),         # stem: C = 3 padded to 4
    (3, 8, 8, 12, 24, 3, 3, (1, 1), (1, 1), (1, 1)),          # C = 12, batch 3
    (1, 10, 10, 20, 1000, 1, 1, (1, 1), (0, 0), (1, 1)),      # C = 20, K = 1000
    (2, 12, 10, 24, 32, 3, 3, (1, 1), (2, 2), (2, 2)),        # dilation 2
    (2, 7, 7, 512, 128, 3, 3, (1, 1), (1, 1), (1, 1)),        # reduction 4608: precision holds
    (2, 5, 7, 8, 13, 1, 1, (1, 1), (0, 0), (1, 1)),           # odd K: scalar epilogue tail
]


@functools.lru_cache(maxsize=None)
def case(shape):
    """(x padded to C % 4 == 0, packed w, float64 reference) for a shape, made once."""
    N, H, W, C, K, R, S, st, pd, dl = shape
    rng = np.random.default_rng(abs(hash(shape)) % 2**32)
    x = rng.standard_normal((N, H, W, C)).astype(np.float32)
    w = rng.standard_normal((K, R, S, C)).astype(np.float32)
    ref = conv_nhwc(x, w, st, pd, dl)
    xp = conv_igemm.pad_channels(cp.asarray(x), 4)
    wp = T.pack_weight_krsc_f32(w, "KRSC")
    return xp, wp, ref


@pytest.mark.parametrize("tactic", T.TACTICS, ids=tid)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:7])) + f"_s{s[7][0]}d{s[9][0]}")
def test_random_data_within_tolerance(shape, tactic):
    precise = tactic.precise
    xp, wp, ref = case(shape)
    st, pd, dl = shape[7:]
    out = poison(cp, ref.shape, np.float32)
    T.conv2d_tf32(xp, wp, precise=precise, stride=st, padding=pd, dilation=dl, out=out,
                  tactic=tactic)
    err = rel_l2(out.get(), ref)
    assert err <= TOL[precise], f"{pid(precise)} rel L2 {err:.3e} > {TOL[precise]:.0e}"
    if not precise:
        # plain TF32 really is the one-MMA path (not silently the 3xTF32 one)
        assert err > 1e-5, f"TF32 rel L2 {err:.3e} is FP32-accurate: PRECISE=0 not in effect?"


@pytest.mark.parametrize("tactic", T.PRECISE_TACTICS, ids=tid)
def test_precise_is_fp32_class_on_a_deep_reduction(tactic):
    """3xTF32 on a 4608-long reduction: well inside the FP32 tolerance, and how far
    from FP32's own rounding floor (the float64 result rounded once) it sits. The
    tensor cores' truncating accumulation lost 3e-5 here before promotion; the
    model (T.gemm_3xtf32_model) predicts ~1.5e-6 (promote=2), ~2.4e-6 (promote=4)."""
    shape = SHAPES[8]
    xp, wp, ref = case(shape)
    got = T.conv2d_tf32(xp, wp, padding=1, precise=True, tactic=tactic).get()
    x32, w32 = xp.get(), wp.get()
    fp32 = conv_nhwc(x32, w32, (1, 1), (1, 1)).astype(np.float32)   # rounded once: lower bound
    err, floor = rel_l2(got, ref), rel_l2(fp32, ref)
    assert err <= TOL[True] / 2, f"3xTF32 rel L2 {err:.3e} (float32 rounding alone: {floor:.3e})"


@pytest.mark.parametrize("tactic", T.TACTICS, ids=tid)
def test_infinite_and_nan_inputs_give_fp32s_pattern(tactic):
    """+inf, -inf and NaN in the input: every output whose window holds one is +inf, -inf
    or NaN exactly as FP32 arithmetic gives it (a window with +inf and -inf, or inf times
    a zero weight, is NaN), against products summed elementwise in float64 (no BLAS).
    Weights of 0.5 and 0 have a zero small part: the 3xTF32 cross term must not make
    inf * 0 there. The finite outputs keep the tile's tolerance."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 6, 6, 8)).astype(np.float32)
    x[0, 1, 1, 2], x[0, 4, 4, 5], x[1, 2, 3, 0], x[1, 0, 5, 7] = np.inf, -np.inf, np.nan, np.inf
    w = (rng.standard_normal((16, 3, 3, 8)) * 0.3).astype(np.float32)
    w[:4] = np.float32(0.5)
    w[4, :, :, 2] = np.float32(0.0)
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    with np.errstate(invalid="ignore"):
        patches = np.stack([xp[:, r:r + 6, s:s + 6, :] for r in range(3) for s in range(3)], axis=3)
        ref = (patches[..., None, :] * w.reshape(16, 9, 8).transpose(1, 0, 2)[None, None, None]
               ).sum(axis=(3, 5))                                           # [N, P, Q, K]
    assert np.isnan(ref).any() and np.isposinf(ref).any() and np.isneginf(ref).any()
    out = run(x, w, precise=tactic.precise, tactic=tactic, padding=1).get()
    for what, f in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        np.testing.assert_array_equal(f(out), f(ref), err_msg=f"{what} positions differ")
    fin = np.isfinite(ref)
    assert rel_l2(out[fin], ref[fin]) <= TOL[tactic.precise]


# ---- 3. epilogue, output types, concat offsets, graphs ------------------------
def _epi_data(N=2, H=10, W=10, C=48, K=96, R=3, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H, W, C)).astype(np.float32)
    w = rng.standard_normal((K, R, R, C)).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, K).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32)
    return x, w, scale, bias


@pytest.mark.parametrize("tactic", T.TACTICS, ids=tid)
def test_scale_bias_relu(tactic):
    precise = tactic.precise
    x, w, scale, bias = _epi_data()
    ref = np.maximum(conv_nhwc(x, w, (1, 1), (1, 1)) * scale + bias, 0)
    out = poison(cp, ref.shape, np.float32)
    run(x, w, precise=precise, tactic=tactic, padding=1, scale=scale, bias=bias, act="RELU", out=out)
    assert rel_l2(out.get(), ref) <= TOL[precise]


@pytest.mark.parametrize("tactic", T.PRECISE_TACTICS, ids=tid)
@pytest.mark.parametrize("act", ["LEAKY_RELU", "SIGMOID", "CLIP"])
def test_residual_and_activation(tactic, act):
    x, w, scale, bias = _epi_data()
    res = np.random.default_rng(6).standard_normal((2, 10, 10, 96)).astype(np.float32) * 10
    alpha, beta = (0.1, 0.0) if act == "LEAKY_RELU" else (-5.0, 7.0)
    ref = act_ref(conv_nhwc(x, w, (1, 1), (1, 1)) * scale + bias + res, act, alpha, beta)
    out = run(x, w, precise=True, tactic=tactic, padding=1, scale=scale, bias=bias,
              residual=cp.asarray(res), act=act, alpha=alpha, beta=beta)
    assert out.dtype == np.float32
    assert rel_l2(out.get(), ref) <= TOL[True]


@pytest.mark.parametrize("tactic", T.PRECISE_TACTICS, ids=tid)
@pytest.mark.parametrize("K", [96, 13])             # 8-channel stores / scalar tail
def test_half_output_with_half_residual(tactic, K):
    x, w, scale, bias = _epi_data(K=K)
    res = np.random.default_rng(6).standard_normal((2, 10, 10, K)).astype(np.float16)
    ref = np.maximum(conv_nhwc(x, w, (1, 1), (1, 1)) * scale + bias + res, 0)
    out = poison(cp, ref.shape, np.float16)
    run(x, w, precise=True, tactic=tactic, padding=1, scale=scale, bias=bias,
        residual=cp.asarray(res), act="RELU", out=out)
    assert rel_l2(out.get(), ref) <= 1e-3           # float16 rounding of the output only


@pytest.mark.parametrize("tactic", ["3xtf32_128x64x32_w4x2_s4_p2", SMALL[True]])
@pytest.mark.parametrize("dtype,off", [(np.float32, 24), (np.float32, 4), (np.float32, 2),
                                       (np.float16, 8), (np.float16, 4)])
def test_writes_into_concat_buffer_at_channel_offset(tactic, dtype, off):
    x, w, scale, bias = _epi_data(C=32, K=40, R=1)
    buf = poison(cp, (2, 10, 10, 104), dtype)
    run(x, w, precise=True, tactic=tactic, scale=scale, bias=bias, act="RELU", out=buf,
        out_channel_offset=off)
    got = buf.get().astype(np.float32)
    ref = np.maximum(conv_nhwc(x, w) * scale + bias, 0)
    assert rel_l2(got[..., off:off + 40], ref) <= (TOL[True] if dtype == np.float32 else 1e-3)
    assert np.isnan(got[..., :off]).all() and np.isnan(got[..., off + 40:]).all()


def test_asymmetric_same_padding_via_out_hw():
    x, w, scale, bias = _epi_data(H=8, W=8, C=16, K=32)
    ref = conv_nhwc(x, w, (2, 2), (0, 0), out_hw=(4, 4)) * scale + bias
    out = run(x, w, precise=True, tactic=T.PRECISE_TACTICS[0], stride=2, padding=(0, 0), out_hw=(4, 4),
              scale=scale, bias=bias)
    assert rel_l2(out.get(), ref) <= TOL[True]


def test_scale_of_wrong_length_is_rejected():
    x, w, _, _ = _epi_data()
    with pytest.raises(T.UnsupportedError, match=r"expected \(96,\)"):
        run(x, w, precise=True, tactic=T.PRECISE_TACTICS[0], padding=1, scale=np.ones(5, np.float32))


def test_misaligned_buffers_are_rejected():
    x, w, _, _ = _epi_data(C=16, K=16)
    flat = cp.zeros(x.size + 1, cp.float32)
    x_odd = flat[1:].reshape(x.shape)                 # contiguous, 4 bytes off 16
    assert x_odd.flags.c_contiguous and x_odd.data.ptr % 16
    with pytest.raises(T.UnsupportedError, match="x not 16-byte aligned"):
        T.conv2d_tf32(x_odd, cp.asarray(w), padding=1)


def test_pack_weight_krsc_f32_pads_channels_with_zeros():
    w = np.random.default_rng(3).standard_normal((16, 3, 7, 7)).astype(np.float32)
    packed = T.pack_weight_krsc_f32(w).get()
    assert packed.shape == (16, 7, 7, 4) and packed.dtype == np.float32
    np.testing.assert_array_equal(packed[..., :3], w.transpose(0, 2, 3, 1))
    assert not packed[..., 3:].any()


@pytest.mark.parametrize("precise", PRECISE, ids=pid)
def test_cuda_graph_capture_equals_eager(precise):
    x, w, scale, bias = _epi_data(N=3, C=64, K=72)
    xd, wd, sd, bd = cp.asarray(x), cp.asarray(w), cp.asarray(scale), cp.asarray(bias)
    eager = T.conv2d_tf32(xd, wd, precise=precise, padding=1, scale=sd, bias=bd, act="RELU").get()
    pool = cp.cuda.MemoryPool()
    cp.cuda.Device().synchronize()   # inputs made on the legacy stream are ready: a
    stream = cp.cuda.Stream(non_blocking=True)   # non-blocking stream would not wait for them
    with cp.cuda.using_allocator(pool.malloc), stream:
        T.conv2d_tf32(xd, wd, precise=precise, padding=1, scale=sd, bias=bd, act="RELU")
        stream.synchronize()
        stream.begin_capture()
        out = T.conv2d_tf32(xd, wd, precise=precise, padding=1, scale=sd, bias=bd, act="RELU")
        graph = stream.end_capture()
        out.fill(np.nan)
        graph.launch(stream)
        stream.synchronize()
    np.testing.assert_array_equal(out.get(), eager)


# ---- 4. engine tactics ----------------------------------------------------------
@pytest.fixture
def fp32_tactics_registered():
    """The FP32 tensor-core tactics, registered (engine.gpu.tactics registers every
    family; the table is restored after, for the other test modules)."""
    from engine.gpu import conv_tf32_tactics
    from engine.gpu.tactics import candidates  # noqa: F401  (registers the built-in tactics)
    saved = {k: list(v) for k, v in kernel_table.TACTICS.items()}
    yield conv_tf32_tactics
    kernel_table.TACTICS.clear()
    kernel_table.TACTICS.update(saved)


def randn(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def small_net(c=12, k=16, hw=10, n=3, stem=False, fc_rank4=True):
    """[stem 7x7/2 on RGB ->] conv 3x3 + residual + ReLU -> conv 1x1/2 -> FC (+ ReLU)."""
    rng = np.random.default_rng(21)
    net = rt.Network()
    cin = 3 if stem else c
    x = net.add_input("x", rt.float32, (n, cin, hw, hw))
    y = x
    if stem:
        s = net.add_convolution_nd(y, c, (7, 7), kernel=randn(rng, c, 3, 7, 7, scale=0.2),
                                   bias=randn(rng, c))
        s.stride_nd, s.padding_nd = (2, 2), (3, 3)
        y = net.add_activation(s.get_output(0), rt.ActivationType.RELU).get_output(0)
    c1 = net.add_convolution_nd(y, c, (3, 3), kernel=randn(rng, c, c, 3, 3, scale=0.2),
                                bias=randn(rng, c))
    c1.padding_nd = (1, 1)
    z = net.add_elementwise(c1.get_output(0), y, rt.ElementWiseOperation.SUM).get_output(0)
    z = net.add_activation(z, rt.ActivationType.RELU).get_output(0)
    c2 = net.add_convolution_nd(z, k, (1, 1), kernel=randn(rng, k, c, 1, 1, scale=0.3),
                                bias=randn(rng, k))
    c2.stride_nd = (2, 2)
    z = c2.get_output(0)
    if not fc_rank4:
        sh = net.add_shuffle(z)
        sh.reshape_dims = (n, -1)
        z = sh.get_output(0)
    h1 = (hw + 6 - 7) // 2 + 1 if stem else hw
    h2 = (h1 - 1) // 2 + 1
    flat = k * h2 * h2
    fc = net.add_fully_connected(z, 10, randn(rng, 10, flat, scale=0.1), randn(rng, 10))
    net.mark_output(net.add_activation(fc.get_output(0), rt.ActivationType.RELU).get_output(0))
    return net, {"x": randn(np.random.default_rng(22), n, cin, hw, hw)}


def build(net, backend, tf32=False):
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = backend
    if tf32:
        cfg.set_flag(rt.BuilderFlag.TF32)
    return rt.Runtime(backend=backend).deserialize_cuda_engine(b.build_serialized_network(net, cfg))


@pytest.mark.parametrize("precise", PRECISE, ids=pid)
@pytest.mark.parametrize("variant,tile", [("plain", {True: "3xtf32_128x64x32_w4x2_s4_p2",
                                                     False: "tf32_128x64x32_w2x2_s4"}),
                                          ("stem", SMALL), ("fc_rank2", SMALL)],
                         ids=["plain", "stem", "fc_rank2"])
def test_engine_tactics_match_the_numpy_backend_and_replay_in_a_graph(
        fp32_tactics_registered, precise, variant, tile):
    net, feeds = small_net(stem=variant == "stem", fc_rank4=variant != "fc_rank2")
    ref = build(net, "numpy").create_execution_context().execute(feeds)
    engine = build(net, "cupy", tf32=not precise)
    tile = tile[precise]
    fc_names = [t.name for t in T.FC_TACTICS if t.precise == precise]
    fc_tile = tile if tile in fc_names else fc_names[0]
    forced = {}
    for i in range(engine.network.num_layers):
        layer = engine.network.get_layer(i)
        if layer.layer_type == rt.LayerType.CONVOLUTION:
            forced[layer.name] = f"conv.{tile}"
        elif layer.layer_type == rt.LayerType.FULLY_CONNECTED:
            forced[layer.name] = f"fc.{fc_tile}"
    assert len(forced) >= 3, forced
    engine.backend.forced.update(forced)
    engine.backend._build_shapes = {"x": tuple(feeds["x"].shape)}
    ctx = engine.create_execution_context()
    first = ctx.execute(feeds)
    for name, tactic in forced.items():
        assert engine.backend.selected[name] == tactic, (name, engine.backend.selected)
    tol = 1e-5 if precise else 1e-3
    for name, value in ref.items():
        assert first[name].shape == value.shape
        assert rel_l2(first[name], value) <= tol, (name, rel_l2(first[name], value))
    # the engine's own CUDA-graph path: the FP32 engine is now capturable
    for _ in range(2):
        ctx.execute(feeds)
    graphs = ctx.__dict__.get("_cuda_graphs", {})
    assert any(not isinstance(v, str) for v in graphs.values()), (graphs, engine.backend.graph_notes)
    replayed = ctx.execute(feeds)
    for name in first:
        np.testing.assert_array_equal(replayed[name], first[name])


def test_engine_tactics_refuse_half_and_int8_layers(fp32_tactics_registered):
    net, _ = small_net()
    layer = net.get_layer(0)
    for t in fp32_tactics_registered.TACTICS:
        assert t.supports(layer, [(3, 12, 10, 10)], ["float32"], rt.float32) is None
        assert "FLOAT layers only" in t.supports(layer, [(3, 12, 10, 10)], ["float32"], rt.float16)
        assert "FLOAT layers only" in t.supports(layer, [(3, 12, 10, 10)], ["float32"], rt.int8)
