"""The fused attention kernel (kernels/gpu/attention.py) against the NumPy
reference in float64 (rel L2 <= 2e-3), over head dims, sequence lengths (a
full tile, 1, 77: partial query and key tiles), batch x heads 1 and 384 (BERT
b32), every tile, strided views in and out and FP32 output, with SoftMax's NaN semantics;
then an encoder engine with the attention pass against the same engine without
it, the fused tactic chosen, and the whole engine captured into a CUDA graph."""
import collections

import numpy as np
import pytest
from gpu_helpers import captured_runs, rel_l2

import engine as rt
from engine.testing import interpret

cp = pytest.importorskip("cupy")

from kernels.attention import attention as reference  # noqa: E402
from kernels.gpu.attention import TILES, attention  # noqa: E402

TOL = 2e-3


def qkv(rng, bh, sq, sk, d, dtype=np.float16):
    q = rng.standard_normal((bh, sq, d)).astype(dtype)
    k = rng.standard_normal((bh, sk, d)).astype(dtype)
    v = rng.standard_normal((bh, sk, d)).astype(dtype)
    return q, k, v


def ref64(q, k, v, scale):
    """The reference in float64 on the half inputs."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = scale * q @ np.swapaxes(k, -1, -2)
    e = np.exp(s - s.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


@pytest.mark.parametrize("d", [64, 32, 128])
@pytest.mark.parametrize("sq, sk", [(128, 128), (1, 1), (77, 77), (1, 128), (77, 200)])
@pytest.mark.parametrize("bh", [1, 384])
def test_kernel_matches_reference(d, sq, sk, bh):
    rng = np.random.default_rng(d + sq + sk + bh)
    q, k, v = qkv(rng, bh, sq, sk, d)
    scale = 1 / np.sqrt(d)
    ref = ref64(q, k, v, scale)
    for tile in TILES:
        got = attention(cp.asarray(q), cp.asarray(k), cp.asarray(v), scale, tile=tile)
        assert got.dtype == np.float16 and got.shape == (bh, sq, d)
        assert rel_l2(cp.asnumpy(got), ref) <= TOL, tile.name


def test_strided_heads_view_and_fp32_output():
    """Q, K, V as the heads transpose of (N, S, H*D) buffers: read in place."""
    rng = np.random.default_rng(1)
    n, s, h, d = 2, 77, 12, 64
    buf = [cp.asarray(rng.standard_normal((n, s, h, d)).astype(np.float16)) for _ in range(3)]
    views = [b.transpose(0, 2, 1, 3) for b in buf]                # (N, H, S, D), not contiguous
    assert not views[0].flags.c_contiguous
    ref = ref64(*(cp.asnumpy(x) for x in views), 0.125)
    got = attention(*views, 0.125, out_dtype=np.float32)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert rel_l2(cp.asnumpy(got), ref) <= TOL
    same = attention(*(cp.ascontiguousarray(x) for x in views), 0.125, out_dtype=np.float32)
    assert cp.array_equal(got, same)
    merged = cp.full((n, s, h, d), cp.nan, cp.float16)            # written in place through strides
    attention(*views, 0.125, out=merged.transpose(0, 2, 1, 3))
    assert rel_l2(cp.asnumpy(merged).transpose(0, 2, 1, 3), ref) <= TOL


def test_nan_rows_and_minus_inf_keys_as_softmax():
    rng = np.random.default_rng(2)
    q, k, v = qkv(rng, 2, 6, 100, 64)
    q = np.abs(q)
    k[:, :64] = -np.inf                   # the whole first key tile scores -Inf: weighs 0
    q[0, 1, 3] = np.nan                   # a NaN score row
    q[1, 2, :] = np.inf                   # +Inf against mixed signs: NaN scores
    with np.errstate(invalid="ignore"):
        ref = reference(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32), 0.125)
    got = cp.asnumpy(attention(cp.asarray(q), cp.asarray(k), cp.asarray(v), 0.125, out_dtype=np.float32))
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    assert np.isnan(got[0, 1]).all() and np.isnan(got[1, 2]).all()
    fin = ~np.isnan(ref)
    assert rel_l2(got[fin], ref[fin]) <= TOL
    k[:] = -np.inf                        # every key -Inf: 0 / 0, NaN as the reference
    got = cp.asnumpy(attention(cp.asarray(q), cp.asarray(k), cp.asarray(v), 0.125))
    assert np.isnan(got).all()


# -- the engine -------------------------------------------------------------------

SEQ, HIDDEN, HEADS, FF, LAYERS = 77, 128, 2, 256, 2         # head dim 64, partial tiles


def build(net_builder, fp16, tmp_path, disabled=()):
    b, net = net_builder
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    cfg.timing_cache_path = str(tmp_path / f"attn_{fp16}_{len(disabled)}.cache")
    for name in disabled:
        cfg.disable_pass(name)
    if fp16:
        cfg.set_flag(rt.BuilderFlag.FP16)
    return rt.Runtime(backend="cupy").deserialize_cuda_engine(b.build_serialized_network(net, cfg))


@pytest.fixture(scope="module")
def encoder_net():
    from workflows.random_encoder import random_encoder
    from workflows.transformer import import_encoder
    return import_encoder(random_encoder(HIDDEN, HEADS, FF, LAYERS, seed=4), SEQ, HIDDEN)


@pytest.mark.parametrize("fp16", [True, False], ids=["fp16", "fp32"])
def test_engine_with_the_pass_equals_without_and_is_captured(encoder_net, fp16, tmp_path):
    x = np.random.default_rng(3).standard_normal((3, SEQ, HIDDEN)).astype(np.float32)
    ref = interpret(encoder_net[1], {"tokens": x})["encoded"]
    fused = build(encoder_net, fp16, tmp_path)
    unfused = build(encoder_net, fp16, tmp_path, disabled=["attention_fusion"])
    counts = collections.Counter(i.type for i in fused.layers)
    assert counts[rt.LayerType.ATTENTION] == LAYERS and counts[rt.LayerType.SOFTMAX] == 0
    assert counts[rt.LayerType.SHUFFLE] == 0                    # the heads shuffles went in too
    outs = {name: captured_runs(cp, engine, {"tokens": x}, "encoded", name)
            for name, engine in (("fused", fused), ("unfused", unfused))}
    tol = 2e-2 if fp16 else 1e-4
    for r in outs["fused"]:
        assert rel_l2(r, ref) <= tol
        assert rel_l2(r, outs["unfused"][0]) <= tol
    chosen = {fused.backend.selected.get(i.name) for i in fused.layers if i.type == rt.LayerType.ATTENTION}
    want = "attention.flash." if fp16 else "attention.unfused"
    assert all(c and c.startswith(want) for c in chosen), chosen
