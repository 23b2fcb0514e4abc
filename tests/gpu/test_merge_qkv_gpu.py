"""The packed Attention layer (packed_qkv: one (N, S, 3 * heads * D) input, made
by engine/passes/merge_qkv.py) on the device: each attention tactic, forced,
against the NumPy reference (flash: rel L2 <= 2e-3 against float64 as the kernel
tests; unfused HALF 2e-2 as the encoder tests, FLOAT 1e-4), the packed blocks read in place equal the
three-input layer on copies, a CUDA-graph replay of each tactic equals its eager
run on new data, and an encoder engine with the merge equals the one without,
captured whole."""
import collections

import numpy as np
import pytest
from gpu_helpers import captured_runs, rel_l2

import engine as rt
from engine.layers.attention import AttentionLayer
from engine.testing import interpret

cp = pytest.importorskip("cupy")

from engine.gpu.attention_tactics import FlashAttention, UnfusedAttention  # noqa: E402
from kernels.gpu.attention import TILES  # noqa: E402

HALF, FLOAT = rt.DataType.HALF, rt.DataType.FLOAT
CASES = [(2, 77, 2, 64), (1, 128, 12, 64), (3, 33, 4, 32)]     # (N, S, heads, D): partial tiles, BERT b1


def packed_layer(n, s, heads, d, packed=True):
    net = rt.Network()
    if packed:
        ins = [net.add_input("qkv", rt.float32, (n, s, 3 * heads * d))]
    else:
        ins = [net.add_input(name, rt.float32, (n, s, heads * d)) for name in "qkv"]
    return net._add(AttentionLayer(net, ins, scale=1 / np.sqrt(d), heads=heads, packed_qkv=packed))


def ref64(qkv, heads, scale):
    """The packed reference in float64 on the (already rounded) inputs."""
    x = np.asarray(qkv, np.float64)
    e = x.shape[-1] // 3
    q, k, v = (x[..., i * e:(i + 1) * e].reshape(x.shape[:-1] + (heads, -1)).swapaxes(-2, -3)
               for i in range(3))
    sc = scale * q @ np.swapaxes(k, -1, -2)
    p = np.exp(sc - sc.max(-1, keepdims=True))
    y = (p / p.sum(-1, keepdims=True)) @ v
    return y.swapaxes(-2, -3).reshape(x.shape[:-1] + (e,))


def tactics():
    return ([(FlashAttention(t), HALF, 2e-3) for t in TILES]
            + [(UnfusedAttention(), HALF, 2e-2), (UnfusedAttention(), FLOAT, 1e-4)])


def run(tactic, layer, x, precision):
    out = [rt.DataType.HALF if precision == HALF else rt.DataType.FLOAT]
    return tactic.run(tactic.prepare(layer), layer, [x], precision, out)[0]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("index", range(len(TILES) + 2))
def test_forced_tactic_on_packed_input_equals_reference(case, index):
    tactic, precision, tol = tactics()[index]
    n, s, heads, d = case
    layer = packed_layer(*case)
    shape = (n, s, 3 * heads * d)
    dt = np.float16 if precision == HALF else np.float32
    assert tactic.supports(layer, [shape], [np.dtype(dt).name], precision) is None
    x = np.random.default_rng(sum(case) + index).standard_normal(shape).astype(dt)
    got = run(tactic, layer, cp.asarray(x), precision)
    assert got.shape == (n, s, heads * d) and got.flags.c_contiguous
    assert rel_l2(cp.asnumpy(got), ref64(x, heads, layer.scale)) <= tol, tactic.name


@pytest.mark.parametrize("index", range(len(TILES) + 2))
def test_packed_views_equal_three_input_layer_on_copies(index):
    tactic, precision, _ = tactics()[index]
    n, s, heads, d = CASES[0]
    dt = np.float16 if precision == HALF else np.float32
    x = cp.asarray(np.random.default_rng(7).standard_normal((n, s, 3 * heads * d)).astype(dt))
    e = heads * d
    packed = run(tactic, packed_layer(n, s, heads, d), x, precision)
    three = packed_layer(n, s, heads, d, packed=False)
    blocks = [cp.ascontiguousarray(x[..., i * e:(i + 1) * e]) for i in range(3)]
    out = [rt.DataType.HALF if precision == HALF else rt.DataType.FLOAT]
    want = tactic.run(tactic.prepare(three), three, blocks, precision, out)[0]
    if isinstance(tactic, FlashAttention):      # same kernel, same values read: the same bits
        assert cp.array_equal(packed, want), tactic.name
    else:                                       # the GEMM may read strided rows another way
        tol = 2e-3 if precision == HALF else 1e-5
        assert rel_l2(cp.asnumpy(packed), cp.asnumpy(want)) <= tol, tactic.name


@pytest.mark.parametrize("index", range(len(TILES) + 2))
def test_cuda_graph_replay_equals_eager(index):
    tactic, precision, _ = tactics()[index]
    assert tactic.capturable_for(packed_layer(*CASES[0]))
    n, s, heads, d = CASES[0]
    layer = packed_layer(n, s, heads, d)
    dt = np.float16 if precision == HALF else np.float32
    rng = np.random.default_rng(9)
    pool = cp.cuda.MemoryPool()
    stream = cp.cuda.Stream(non_blocking=True)
    with cp.cuda.using_allocator(pool.malloc), stream:
        static = cp.asarray(rng.standard_normal((n, s, 3 * heads * d)).astype(dt))
        run(tactic, layer, static, precision)       # compile and warm the pool before capture
        stream.synchronize()
        stream.begin_capture()
        try:
            captured = run(tactic, layer, static, precision)
        finally:
            graph = stream.end_capture()
        # new data in the captured input: the replay must read it
        static[...] = cp.asarray(rng.standard_normal(static.shape).astype(dt))
        graph.launch(stream)
        stream.synchronize()
        eager = run(tactic, layer, static, precision)
        stream.synchronize()
    assert cp.array_equal(captured, eager), tactic.name


# -- the engine -------------------------------------------------------------------

# the attention GPU tests' encoder shapes (head dim 64, partial tiles) and engine build
from test_attention_gpu import FF, HEADS, HIDDEN, LAYERS, SEQ, build  # noqa: E402


@pytest.fixture(scope="module")
def encoder_net():
    from workflows.random_encoder import random_encoder
    from workflows.transformer import import_encoder
    return import_encoder(random_encoder(HIDDEN, HEADS, FF, LAYERS, seed=5), SEQ, HIDDEN)


@pytest.mark.parametrize("fp16", [True, False], ids=["fp16", "fp32"])
def test_encoder_with_the_merge_equals_without_and_is_captured(encoder_net, fp16, tmp_path):
    x = np.random.default_rng(4).standard_normal((3, SEQ, HIDDEN)).astype(np.float32)
    ref = interpret(encoder_net[1], {"tokens": x})["encoded"]
    merged = build(encoder_net, fp16, tmp_path)
    unmerged = build(encoder_net, fp16, tmp_path, disabled=["qkv_merge"])
    assert merged.meta["pass_stats"]["qkv_merge"] == LAYERS
    c_on = collections.Counter(i.type for i in merged.layers)
    c_off = collections.Counter(i.type for i in unmerged.layers)
    assert c_off[rt.LayerType.MATRIX_MULTIPLY] - c_on[rt.LayerType.MATRIX_MULTIPLY] == 2 * LAYERS
    outs = {name: captured_runs(cp, engine, {"tokens": x}, "encoded", name)
            for name, engine in (("merged", merged), ("unmerged", unmerged))}
    tol = 2e-2 if fp16 else 1e-4
    for r in outs["merged"]:
        assert rel_l2(r, ref) <= tol
        assert rel_l2(r, outs["unmerged"][0]) <= tol
    chosen = {merged.backend.selected.get(i.name) for i in merged.layers if i.type == rt.LayerType.ATTENTION}
    want = "attention.flash." if fp16 else "attention.unfused"
    assert all(c and c.startswith(want) for c in chosen), chosen
