"""Helpers for the GPU tests: float64 NumPy references (NHWC, KRSC weights), rel L2, poison."""
import math

import numpy as np


def rel_l2(out, ref):
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert np.all(np.isfinite(out)), "non-finite output (unwritten poison or overflow)"
    return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))


TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float16): 1e-2}


def poison(cp, shape, dtype):
    """Output buffer filled with NaN so that any element left unwritten fails the check."""
    return cp.full(shape, np.nan, dtype=dtype)



def act_ref(v, name, alpha=0.0, beta=0.0):
    if name in (None, "NONE"):
        return v
    if name == "RELU":
        return np.maximum(v, 0)
    if name == "RELU6":
        return np.clip(v, 0, 6)
    if name == "CLIP":
        return np.clip(v, alpha, beta)
    if name == "LEAKY_RELU":
        return np.where(v >= 0, v, alpha * v)
    if name == "SIGMOID":
        return 1 / (1 + np.exp(-v))
    if name == "TANH":
        return np.tanh(v)
    if name == "ELU":
        return np.where(v >= 0, v, alpha * np.expm1(np.minimum(v, 0)))
    if name == "GELU_ERF":
        return 0.5 * v * (1 + np.vectorize(math.erf)(v / math.sqrt(2)))
    if name == "SILU":
        return v / (1 + np.exp(-v))
    if name == "HARD_SWISH":
        return v * np.clip(v + 3, 0, 6) / 6
    raise KeyError(name)


def conv_nhwc(x, w, stride=(1, 1), pad=(0, 0), dil=(1, 1), out_hw=None, groups=1):
    """x [N,H,W,C], w [K,R,S,C/groups] -> [N,P,Q,K] in float64."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    N, H, W, C = x.shape
    K, R, S, Cg = w.shape
    sh, sw = stride
    ph, pw = pad
    dh, dw = dil
    if out_hw is None:
        out_hw = ((H + 2 * ph - dh * (R - 1) - 1) // sh + 1, (W + 2 * pw - dw * (S - 1) - 1) // sw + 1)
    P, Q = out_hw
    Hp = max(H + ph, (P - 1) * sh + dh * (R - 1) + 1)
    Wp = max(W + pw, (Q - 1) * sw + dw * (S - 1) + 1)
    xp = np.zeros((N, Hp, Wp, C))
    xp[:, ph:ph + H, pw:pw + W, :] = x
    out = np.zeros((N, P, Q, K))
    Kg = K // groups
    for g in range(groups):
        for r in range(R):
            for s in range(S):
                patch = xp[:, r * dh: r * dh + (P - 1) * sh + 1: sh,
                           s * dw: s * dw + (Q - 1) * sw + 1: sw, g * Cg:(g + 1) * Cg]
                out[..., g * Kg:(g + 1) * Kg] += patch @ w[g * Kg:(g + 1) * Kg, r, s, :].T
    return out


def depthwise_nhwc(x, w_rsc, stride, pad, dil=(1, 1)):
    R, S, C = w_rsc.shape
    w = np.zeros((C, R, S, 1))
    w[:, :, :, 0] = np.transpose(w_rsc, (2, 0, 1))
    return conv_nhwc(x, w, stride, pad, dil, groups=C)


def pool_nhwc(x, mode, win, stride, pad, exclude_pad=True):
    x = np.asarray(x, np.float64)
    N, H, W, C = x.shape
    R, S = win
    sh, sw = stride
    ph, pw = pad
    P = (H + 2 * ph - R) // sh + 1
    Q = (W + 2 * pw - S) // sw + 1
    out = np.zeros((N, P, Q, C))
    for p in range(P):
        for q in range(Q):
            h0, w0 = p * sh - ph, q * sw - pw
            hs = slice(max(h0, 0), min(h0 + R, H))
            ws = slice(max(w0, 0), min(w0 + S, W))
            win_ = x[:, hs, ws, :]
            if mode == "MAX":
                out[:, p, q, :] = win_.max(axis=(1, 2))
            else:
                cnt = win_.shape[1] * win_.shape[2] if exclude_pad else R * S
                out[:, p, q, :] = win_.sum(axis=(1, 2)) / cnt
    return out


def softmax(x, axis):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def captured_runs(cp, engine, feeds, output, label=""):
    """Three executions of one context (select, capture, replay) of ``output`` as NumPy
    arrays; asserts the context captured a CUDA graph."""
    ctx = engine.create_execution_context()
    runs = [cp.asnumpy(cp.asarray(ctx.execute(feeds)[output])) for _ in range(3)]
    graphs = list(ctx.__dict__.get("_cuda_graphs", {}).values())
    assert any(not isinstance(g, str) for g in graphs), (label, graphs, engine.backend.graph_notes)
    return runs


def stem_net(n, h, w, seed=4, tail_k=None):
    """ResNet's stem on an (n, 3, h, w) input: a 7x7/2 convolution to 64 channels (pad 3,
    bias) and ReLU, then, with ``tail_k``, a 3x3 convolution to ``tail_k`` channels. Returns
    (network, randn): ``randn(*shape)`` draws more float32 data from the same generator."""
    import engine as rt
    rng = np.random.default_rng(seed)

    def randn(*s):
        return rng.standard_normal(s).astype(np.float32)
    net = rt.Network()
    x = net.add_input("x", rt.float32, (n, 3, h, w))
    c1 = net.add_convolution_nd(x, 64, (7, 7), kernel=randn(64, 3, 7, 7) * 0.1, bias=randn(64),
                                stride_nd=(2, 2), padding_nd=(3, 3))
    out = net.add_activation(c1.get_output(0), rt.ActivationType.RELU).get_output(0)
    if tail_k is not None:
        out = net.add_convolution_nd(out, tail_k, (3, 3), kernel=randn(tail_k, 64, 3, 3) * 0.05,
                                     bias=randn(tail_k), padding_nd=(1, 1)).get_output(0)
    net.mark_output(out)
    return net, randn


def fixed_precision_plan(net, flag, calibration=None):
    """A CuPy-backend plan of ``net`` under one builder flag (FP16 / INT8), every layer kept
    in the precision the flag gives it (no precision by timing); INT8 calibrated by
    MinMaxCalibrator on the batches ``calibration``."""
    import engine as rt
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    cfg.precision_by_timing = False
    cfg.set_flag(flag)
    if calibration is not None:
        cfg.int8_calibrator = rt.MinMaxCalibrator(calibration)
    return b.build_serialized_network(net, cfg)


def forced_outputs(plan, names, feeds, check_layer=None, index=0):
    """{tactic name: outputs} of the engine ``plan`` (CuPy backend, a fresh engine each) with
    layer ``index`` forced onto each of ``names`` at the shapes of ``feeds``; asserts the
    forced tactic is what ran, and ``check_layer(layer)`` first when given. Runs under
    ``every_tile``: a forced tile is a candidate whatever the switches hold back."""
    import engine as rt
    outs = {}
    for name in names:
        engine = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
        layer = engine.network.get_layer(index)
        if check_layer is not None:
            check_layer(layer)
        engine.backend.forced[layer.name] = name
        engine.backend._build_shapes = {k: tuple(v.shape) for k, v in feeds.items()}
        with every_tile():
            outs[name] = engine.create_execution_context().execute(feeds)
        assert engine.backend.selected[layer.name] == name
    return outs


def every_tile():
    """A block in which the switches that hold tiles back where a faster kernel takes the
    layer (tiles_where_specialised, mma_sync_where_wgmma; both off by default) are on:
    a test that forces one tile by name must find it among the candidates."""
    from engine.settings import overridden
    return overridden(tiles_where_specialised=True, mma_sync_where_wgmma=True)


def check_is_stem(layer):
    """For ``forced_outputs``: the forced layer is the 7x7 stem convolution."""
    from engine.types import LayerType
    assert layer.layer_type == LayerType.CONVOLUTION and layer.kernel_size_nd == (7, 7)


# -- INT8 convolutions: inputs, residuals, and two launches side by side --------------------

def int8_conv_inputs(cp, N, H, W, C, K, seed, rs=1):
    """(rng, x codes NHWC padded to 16 channels, w codes KRSC, s_w, bias, s_in) for an
    ``rs`` x ``rs`` INT8 convolution on random data whose top input values saturate."""
    from kernels import quantize as Q
    from kernels.gpu import conv_int8, quantize_int8
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H, W, C)).astype(np.float32)
    w = (rng.standard_normal((K, C, rs, rs)) / np.sqrt(rs * rs * C)).astype(np.float32)
    bias = (0.5 * rng.standard_normal(K)).astype(np.float32)
    s_in = Q.scale_from_amax(0.8 * float(np.abs(x).max()))
    xq = quantize_int8.quantize_nhwc(cp.asarray(x), s_in, c_pad_to=16)
    wq, s_w = conv_int8.pack_weight_int8_krsc(w)
    return rng, xq, wq, s_w, cp.asarray(bias), s_in


def int8_residual(cp, rng, shape, kind):
    """Keyword arguments of a residual of ``shape``: none (kind None), int8 codes with their
    scale ("int8"), or a float16 / float32 array (kind: that dtype)."""
    from kernels import quantize as Q
    r = rng.standard_normal(shape).astype(np.float32)
    if kind is None:
        return {}
    if kind == "int8":
        s_r = Q.scale_from_amax(float(np.abs(r).max()))
        return {"residual": cp.asarray(Q.quantize(r, s_r)), "residual_scale": s_r}
    return {"residual": cp.asarray(r.astype(kind))}


def both_outputs(cp, launches, xq, wq, s_w, s_in, shape, dtype, fill, **kw):
    """Host copies of what each (launch, tactic) of ``launches`` writes into a buffer of
    ``shape`` filled with ``fill`` first (so an unwritten element shows)."""
    outs = []
    for launch, tactic in launches:
        out = cp.full(shape, fill, dtype=dtype)
        launch(xq, wq, s_in, s_w, out=out, tactic=tactic, **kw)
        outs.append(out.get())
    return outs


def replayed_in_graph(cp, run, out, fill):
    """Host copy of ``out`` after ``run()`` (which writes it) was captured into a CUDA graph on
    a non-blocking stream and the graph replayed over ``out`` refilled with ``fill``: a kernel
    that cannot be captured, or whose capture does not write ``out``, fails the caller's
    comparison. ``run`` is called once before, so compiles happen outside the capture."""
    run()
    cp.cuda.Device().synchronize()
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        run()
        graph = stream.end_capture()
        out.fill(fill)
        graph.launch(stream)
        stream.synchronize()
    return out.get()
