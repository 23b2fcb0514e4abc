"""The Q/K/V merge (engine/passes/merge_qkv.py) and the packed Attention layer it
makes: the pass fires on the encoder of workflows/transformer.py (random weights,
no torch needed) and on hand-built self-attention blocks in each of their forms
(bias or not, equal or different alphas, transposed weights, an activation), the
merged engine equals the unmerged one (FP32 1e-5, FP16 2e-2), every refusal
leaves the graph as it was, plans round-trip, and the packed layer's shape rule
refuses bad inputs. The GPU tactics' rules for the packed form close the file."""
import math
import os
import sys

import numpy as np
import pytest

import engine as rt
from engine.errors import NetworkDefinitionError
from engine.layers.attention import AttentionLayer
from engine.testing import interpret, rel_l2
from kernels.attention import attention, attention_packed
sys.path.insert(0, os.path.dirname(__file__))
from test_attention import build as build_with, counts, run  # noqa: E402  (this folder's helpers)

PASS = "qkv_merge"
EW = rt.ElementWiseOperation
MO = rt.MatrixOperation
N, S, HEADS, D = 2, 8, 2, 8
E = HEADS * D
K = 16


def randn(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def build(net, disabled=(), fp16=False):
    return build_with(rt.Builder(), net, disabled, fp16)


def layers_of(engine, kind):
    net = engine.network
    return [net.get_layer(i) for i in range(net.num_layers) if net.get_layer(i).type == kind]


def const(net, a):
    return net.add_constant(a.shape, a).get_output(0)


# -- a hand-built self-attention block ------------------------------------------------

def projection(net, x, rng, width=E, op0=MO.NONE, op1=MO.NONE, bias=True, alpha=None, act=None,
               weight_input=None, lead=(1,), precision=None):
    """x @ W (+ b) (* alpha) (-> act) with W a Constant (or the network input
    ``weight_input``); the pieces matmul_epilogue_fusion folds into the matmul."""
    w = randn(rng, *lead, K, width, scale=1 / math.sqrt(K))
    if op1 == MO.TRANSPOSE:
        w = np.ascontiguousarray(np.swapaxes(w, -1, -2))
    wt = weight_input if weight_input is not None else const(net, w)
    mm = net.add_matrix_multiply(x, op0, wt, op1)
    layers = [mm]
    y = mm.get_output(0)
    if alpha is not None:
        c = np.full((1, 1, 1), alpha, np.float32)
        layers.append(net.add_elementwise(y, const(net, c), EW.PROD))
        y = layers[-1].get_output(0)
    if bias:
        layers.append(net.add_elementwise(y, const(net, randn(rng, 1, 1, width)), EW.SUM))
        y = layers[-1].get_output(0)
    if act is not None:
        layers.append(net.add_activation(y, act))
        y = layers[-1].get_output(0)
    if precision is not None:
        for layer in layers:
            layer.precision = precision
    return y


def split_heads(net, t):
    sh = net.add_shuffle(t)
    sh.reshape_dims = (0, S, HEADS, -1)
    sh.second_transpose = (0, 2, 1, 3)
    return sh.get_output(0)


def block(seed=0, specs=(None, None, None), second_input=False, op0=MO.NONE, extra=None):
    """Self-attention on input "x" (N, S, K): three projections (``specs``: keyword
    overrides for ``projection`` per q, k, v), heads split, the attention chain,
    heads merge. ``second_input``: k and v project "y" instead (cross-attention).
    ``extra``: "q_output" (the q projection is also a network output), "k_reader"
    (the k projection has a second reader), "dynamic_range" (one on v's projection),
    "weight_range" (one on k's weights)."""
    rng = np.random.default_rng(seed)
    net = rt.Network()
    x = net.add_input("x", rt.float32, (N, K, S) if op0 == MO.TRANSPOSE else (N, S, K))
    y = net.add_input("y", rt.float32, (N, S, K)) if second_input else x
    proj = []
    for i, spec in enumerate(specs):
        kw = dict(spec or {})
        if kw.pop("weight_input", False):
            kw["weight_input"] = net.add_input("w", rt.float32, (1, K, E))
        proj.append(projection(net, x if i == 0 else y, rng, op0=op0, **kw))
    if extra == "q_output":
        net.mark_output(proj[0])
    if extra == "k_reader":
        net.mark_output(net.add_unary(proj[1], rt.UnaryOperation.EXP).get_output(0))
    if extra == "dynamic_range":
        proj[2].set_dynamic_range(-4.0, 4.0)
    if extra == "weight_range":
        mm = [la for la in net if la.type == rt.LayerType.MATRIX_MULTIPLY][1]
        mm.get_input(1).set_dynamic_range(-1.0, 1.0)
    widths = [(spec or {}).get("width", E) for spec in specs]
    q, k, v = (split_heads(net, t) for t in proj)
    s = net.add_matrix_multiply(q, MO.NONE, k, MO.TRANSPOSE).get_output(0)
    s = net.add_elementwise(s, const(net, np.full((1, 1, 1, 1), 1 / math.sqrt(D), np.float32)),
                            EW.PROD).get_output(0)
    sm = net.add_softmax(s)
    sm.axes = 1 << 3
    ctx = net.add_matrix_multiply(sm.get_output(0), MO.NONE, v, MO.NONE).get_output(0)
    merge = net.add_shuffle(ctx)
    merge.first_transpose = (0, 2, 1, 3)
    merge.reshape_dims = (0, S, HEADS * (widths[2] // HEADS))
    out = merge.get_output(0)
    out.name = "out"
    net.mark_output(out)
    return net


def feeds_for(net, seed=1):
    rng = np.random.default_rng(seed)
    return {net.get_input(i).name: randn(rng, *net.get_input(i).shape) for i in range(net.num_inputs)}


@pytest.mark.parametrize("specs", [
    (None, None, None),
    ({"bias": False}, {"bias": False}, {"bias": False}),
    ({"alpha": 0.5}, {"alpha": 0.5}, {"alpha": 0.5}),
    ({"alpha": 0.5}, None, {"alpha": -1.5}),
    ({"op1": MO.TRANSPOSE},) * 3,
    ({"op1": MO.TRANSPOSE}, None, {"op1": MO.TRANSPOSE}),
    ({"act": rt.ActivationType.TANH},) * 3,
], ids=["bias", "no_bias", "equal_alpha", "different_alpha", "transposed", "mixed_ops", "activation"])
def test_block_merges_and_matches(specs):
    net = block(specs=specs)
    feeds = feeds_for(net)
    on, off = build(net), build(net, [PASS])
    assert on.meta["pass_stats"][PASS] == 1 and off.meta["pass_stats"][PASS] == 0
    c_on, c_off = counts(on), counts(off)
    assert c_on[rt.LayerType.ATTENTION] == c_off[rt.LayerType.ATTENTION] == 1
    # three matmuls and their three weight constants become one of each
    assert c_off[rt.LayerType.MATRIX_MULTIPLY] - c_on[rt.LayerType.MATRIX_MULTIPLY] == 2
    assert c_off[rt.LayerType.CONSTANT] - c_on[rt.LayerType.CONSTANT] == 2
    att, = layers_of(on, rt.LayerType.ATTENTION)
    assert att.packed_qkv and att.heads == HEADS and att.num_inputs == 1
    assert att.get_input(0).shape == (N, S, 3 * E)
    ref = interpret(net, feeds)["out"]
    got_on, got_off = run(on, feeds)["out"], run(off, feeds)["out"]
    assert rel_l2(got_on, ref) <= 1e-5 and rel_l2(got_on, got_off) <= 1e-5


def test_merged_matmul_holds_the_concatenated_weights_and_biases():
    net = block(seed=3)
    off, on = build(net, [PASS]), build(net)
    # the three projections in q, k, v order: the attention reads them in that order
    att, = layers_of(off, rt.LayerType.ATTENTION)
    mms = [att.get_input(i).producer for i in range(3)]
    merged = layers_of(on, rt.LayerType.ATTENTION)[0].get_input(0).producer
    assert merged.type == rt.LayerType.MATRIX_MULTIPLY and merged.alpha == 1.0
    np.testing.assert_array_equal(merged.bias, np.concatenate([m.bias for m in mms]))
    w = merged.get_input(1).producer.weights.reshape(1, K, 3 * E)
    np.testing.assert_array_equal(
        w, np.concatenate([m.get_input(1).producer.weights.reshape(1, K, E) for m in mms], -1))
    assert merged.get_input(0).name == "x"


def test_different_alphas_fold_into_the_weights():
    net = block(seed=4, specs=({"alpha": 0.5}, None, {"alpha": -1.5}))
    on = build(net)
    merged = layers_of(on, rt.LayerType.ATTENTION)[0].get_input(0).producer
    assert merged.alpha == 1.0
    off = build(net, [PASS])
    att, = layers_of(off, rt.LayerType.ATTENTION)
    mms = [att.get_input(i).producer for i in range(3)]
    assert [m.alpha for m in mms] == [0.5, 1.0, -1.5]
    w = merged.get_input(1).producer.weights.reshape(K, 3 * E)
    want = np.concatenate([m.alpha * m.get_input(1).producer.weights.reshape(K, E).astype(np.float64)
                           for m in mms], -1)
    np.testing.assert_array_equal(w, want.astype(np.float32))
    # the epilogue adds the bias after alpha: the biases are not scaled
    np.testing.assert_array_equal(merged.bias, np.concatenate([m.bias for m in mms]))


def test_fp16_merged_within_2e2():
    net = block(seed=5)
    feeds = feeds_for(net)
    ref = interpret(net, feeds)["out"]
    on, off = build(net, fp16=True), build(net, [PASS], fp16=True)
    assert on.meta["pass_stats"][PASS] == 1
    got_on, got_off = run(on, feeds)["out"], run(off, feeds)["out"]
    assert rel_l2(got_on, ref) <= 2e-2 and rel_l2(got_on, got_off) <= 2e-2


@pytest.mark.parametrize("why, kwargs", [
    ("k and v project another input", {"second_input": True}),
    ("the left operands are transposed", {"op0": MO.TRANSPOSE}),
    ("a bias on two projections only", {"specs": (None, None, {"bias": False})}),
    ("an activation on one projection only", {"specs": ({"act": rt.ActivationType.RELU}, None, None)}),
    ("different activations", {"specs": ({"act": rt.ActivationType.RELU}, {"act": rt.ActivationType.TANH},
                                         {"act": rt.ActivationType.TANH})}),
    ("v narrower than q and k", {"specs": (None, None, {"width": HEADS * 4})}),
    ("k's weights are a network input", {"specs": (None, {"weight_input": True}, None)}),
    ("per-batch weights", {"specs": (None, None, {"lead": (N,)})}),
    ("a precision constraint on one projection", {"specs": ({"precision": rt.DataType.FLOAT}, None, None)}),
    ("the q projection is a network output", {"extra": "q_output"}),
    ("the k projection has a second reader", {"extra": "k_reader"}),
    ("an INT8 dynamic range on the v projection", {"extra": "dynamic_range"}),
    ("an INT8 dynamic range on the k weights", {"extra": "weight_range"}),
])
def test_pass_leaves_alone(why, kwargs):
    net = block(seed=6, **kwargs)
    feeds = feeds_for(net)
    on, off = build(net), build(net, [PASS])
    assert on.meta["pass_stats"][PASS] == 0, why
    # the attention was made (the refusal is the merge's own), and the graph is as without the pass
    assert counts(on)[rt.LayerType.ATTENTION] == 1, why
    assert [i.name for i in on.layers] == [i.name for i in off.layers], why
    assert not layers_of(on, rt.LayerType.ATTENTION)[0].packed_qkv
    ref = interpret(net, feeds)
    got = run(on, feeds)
    for name, value in ref.items():
        assert rel_l2(got[name], value) <= 1e-5, (why, name)


def test_residual_on_one_projection_is_left_alone():
    # K == E: the input itself can be added to a projection as a residual
    net = rt.Network()
    rng = np.random.default_rng(7)
    x = net.add_input("x", rt.float32, (N, S, K))
    proj = [projection(net, x, rng) for _ in range(3)]
    proj[1] = net.add_elementwise(proj[1], x, EW.SUM).get_output(0)
    q, k, v = (split_heads(net, t) for t in proj)
    s = net.add_matrix_multiply(q, MO.NONE, k, MO.TRANSPOSE).get_output(0)
    sm = net.add_softmax(s)
    sm.axes = 1 << 3
    ctx = net.add_matrix_multiply(sm.get_output(0), MO.NONE, v, MO.NONE).get_output(0)
    merge = net.add_shuffle(ctx)
    merge.first_transpose = (0, 2, 1, 3)
    merge.reshape_dims = (0, S, E)
    net.mark_output(merge.get_output(0))
    on = build(net)
    assert on.meta["pass_stats"][PASS] == 0 and counts(on)[rt.LayerType.ATTENTION] == 1
    att, = layers_of(on, rt.LayerType.ATTENTION)
    assert att.get_input(1).producer.residual is not None


# -- the encoder ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoder_net():
    from workflows.random_encoder import random_encoder
    from workflows.transformer import import_encoder
    enc = random_encoder(hidden=E, heads=HEADS, ff=32, n_layers=2, seed=11)
    b, net = import_encoder(enc, seq=S, hidden=E)
    x = randn(np.random.default_rng(12), N, S, E)
    return b, net, {"tokens": x}


def test_encoder_merges_once_per_layer(encoder_net):
    b, net, feeds = encoder_net
    on, off = build(net), build(net, [PASS])
    assert on.meta["pass_stats"][PASS] == 2
    c_on, c_off = counts(on), counts(off)
    assert c_off[rt.LayerType.MATRIX_MULTIPLY] - c_on[rt.LayerType.MATRIX_MULTIPLY] == 2 * 2
    assert len(off.layers) - len(on.layers) == 2 * 4         # per layer: 2 matmuls, 2 weight constants
    assert all(a.packed_qkv for a in layers_of(on, rt.LayerType.ATTENTION))
    ref = interpret(net, feeds)["encoded"]
    got_on, got_off = run(on, feeds)["encoded"], run(off, feeds)["encoded"]
    assert rel_l2(got_on, ref) <= 1e-5 and rel_l2(got_on, got_off) <= 1e-5
    fp16 = build(net, fp16=True)
    assert fp16.meta["pass_stats"][PASS] == 2
    assert rel_l2(run(fp16, feeds)["encoded"], ref) <= 2e-2


def test_plan_round_trip_keeps_the_packed_attention(encoder_net):
    b, net, feeds = encoder_net
    plan = b.build_serialized_network(net, b.create_builder_config())
    engine = rt.Runtime().deserialize_cuda_engine(plan)
    atts = layers_of(engine, rt.LayerType.ATTENTION)
    assert len(atts) == 2 and all(a.packed_qkv and a.num_inputs == 1 for a in atts)
    assert rel_l2(run(engine, feeds)["encoded"], interpret(net, feeds)["encoded"]) <= 1e-5


# -- the packed layer and its reference ------------------------------------------------

def test_packed_reference_equals_three_inputs():
    rng = np.random.default_rng(15)
    qkv = randn(rng, 2, 5, 3 * 12)
    got = attention_packed(qkv, 0.5, heads=3)
    want = attention(qkv[..., :12], qkv[..., 12:24], qkv[..., 24:], 0.5, heads=3)
    assert got.shape == (2, 5, 12)
    np.testing.assert_array_equal(got, want)


def test_packed_blocks_and_heads_are_views():
    """What the GPU tactics do to the packed input: slices, then the heads split, no copy."""
    from kernels.attention import split_heads, unpack_qkv
    qkv = randn(np.random.default_rng(16), 2, 5, 3 * 12)
    for i, block in enumerate(unpack_qkv(qkv)):
        heads = split_heads(block, 3)
        assert heads.shape == (2, 3, 5, 4) and np.shares_memory(heads, qkv)
        np.testing.assert_array_equal(heads[:, 1], qkv[..., 12 * i + 4:12 * i + 8])


def _add_packed(shape, heads=2, n_inputs=1, packed=True, dtype=rt.float32):
    net = rt.Network()
    ins = [net.add_input(f"in{i}", dtype, shape) for i in range(n_inputs)]
    return net._add(AttentionLayer(net, ins, scale=0.5, heads=heads, packed_qkv=packed))


def test_packed_layer_shape_rule():
    assert _add_packed((2, 5, 3 * 16)).get_output(0).shape == (2, 5, 16)
    assert _add_packed((-1, -1, 3 * 16)).get_output(0).shape == (-1, -1, 16)
    assert _add_packed((2, 5, -1)).get_output(0).shape == (2, 5, -1)


@pytest.mark.parametrize("kwargs, message", [
    ({"shape": (2, 5, 4, 48)}, "rank 3"),
    ({"shape": (2, 5, 50)}, "a multiple of 3 \\* heads = 6"),
    ({"shape": (2, 5, 3 * 9), "heads": 2}, "a multiple of 3 \\* heads = 6"),
    ({"shape": (2, 5, 48), "heads": 0}, "heads > 0"),
    ({"shape": (2, 5, 48), "n_inputs": 3}, "1 \\(q | k | v packed\\)"),
    ({"shape": (2, 5, 48), "n_inputs": 1, "packed": False}, "3 \\(query, key, value\\)"),
    ({"shape": (2, 5, 48), "dtype": rt.int32}, "FLOAT or HALF"),
])
def test_packed_layer_refuses(kwargs, message):
    with pytest.raises(NetworkDefinitionError, match=message):
        _add_packed(**kwargs)


def test_packed_qkv_takes_a_bool_only():
    with pytest.raises(NetworkDefinitionError, match="True or False"):
        _add_packed((2, 5, 48), packed=1)


# -- the GPU tactics' rules for the packed form (no device needed) ----------------------

def test_tactics_take_the_packed_bert_shape():
    from engine.gpu.attention_tactics import FlashAttention, UnfusedAttention
    from kernels.gpu.attention import TILES
    layer = _add_packed((1, 128, 3 * 768), heads=12)
    flash, unfused = FlashAttention(TILES[1]), UnfusedAttention()
    packed = [(1, 128, 2304)]
    assert flash.supports(layer, packed, ["float16"], rt.DataType.HALF) is None
    assert unfused.supports(layer, packed, ["float32"], rt.DataType.FLOAT) is None
    assert unfused.supports(layer, packed, ["float16"], rt.DataType.HALF) is None
    odd = [(1, 128, 2300)]
    for tactic in (flash, unfused):
        assert "do not split into 3 x 12 heads" in tactic.supports(layer, odd, ["float16"],
                                                                   rt.DataType.HALF)
    wide = _add_packed((1, 128, 3 * 12 * 48), heads=12)      # head dim 48: no flash kernel
    assert "head dim 48" in flash.supports(wide, [(1, 128, 3 * 576)], ["float16"], rt.DataType.HALF)
