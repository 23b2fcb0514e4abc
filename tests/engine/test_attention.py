"""The Attention layer and the pass that makes it (engine/passes/fuse_attention.py):
the pass fires on the encoder of workflows/transformer.py (weights from
workflows/random_encoder.py, no torch needed) and on hand-built chains in each of
their forms, the engine equals the unfused network (FP32 1e-5, FP16 2e-2), the pass
leaves alone what it must, the layer's shape rule refuses bad inputs, plans
round-trip, and the reference keeps SoftMax's NaN semantics. The GPU tactics'
shape rules (no device needed) close the file."""
import collections
import math

import numpy as np
import pytest

import engine as rt
from engine import passes
from engine.errors import NetworkDefinitionError
from engine.layers.attention import AttentionLayer
from engine.testing import interpret, rel_l2
from kernels.attention import attention

PASS = "attention_fusion"
EW = rt.ElementWiseOperation
MO = rt.MatrixOperation


def randn(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def build(builder, net, disabled=(), fp16=False):
    cfg = builder.create_builder_config()
    for name in disabled:
        cfg.disable_pass(name)
    if fp16:
        cfg.set_flag(rt.BuilderFlag.FP16)
    return builder.build_engine(net, cfg)


def run(engine, feeds):
    return engine.create_execution_context().execute(feeds)


def counts(engine):
    return collections.Counter(i.type for i in engine.layers)


# -- the encoder -------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoder_net():
    from workflows.random_encoder import random_encoder
    from workflows.transformer import import_encoder
    rng = np.random.default_rng(11)
    enc = random_encoder(hidden=32, heads=4, ff=64, n_layers=2, seed=11)
    b, net = import_encoder(enc, seq=8, hidden=32)
    x = randn(rng, 3, 8, 32)
    return b, net, {"tokens": x}


def test_encoder_attention_fused_once_per_layer_and_equal_to_unfused(encoder_net):
    b, net, feeds = encoder_net
    before = passes.COUNTERS[PASS]
    on = build(b, net)
    off = build(b, net, [PASS])
    # per encoder layer: the chain into one Attention layer, then its four heads shuffles into it
    assert passes.COUNTERS[PASS] - before == 2 * 2
    assert on.meta["pass_stats"][PASS] == 2 * 2 and off.meta["pass_stats"][PASS] == 0
    c_on, c_off = counts(on), counts(off)
    assert c_on[rt.LayerType.ATTENTION] == 2 and c_off[rt.LayerType.ATTENTION] == 0
    # per encoder layer the score and context matmuls and the softmax go into one layer,
    # then qkv_merge makes the q, k, v projections one matmul (tests/engine/test_merge_qkv.py)
    assert c_on[rt.LayerType.MATRIX_MULTIPLY] == 2 * 4 and c_off[rt.LayerType.MATRIX_MULTIPLY] == 2 * 8
    assert c_on[rt.LayerType.SOFTMAX] == 0 and c_off[rt.LayerType.SOFTMAX] == 2
    assert c_on[rt.LayerType.SHUFFLE] == 0 and c_off[rt.LayerType.SHUFFLE] == 2 * 4
    ref = interpret(net, feeds)["encoded"]
    got_on, got_off = run(on, feeds)["encoded"], run(off, feeds)["encoded"]
    assert rel_l2(got_on, got_off) <= 1e-5
    assert rel_l2(got_on, ref) <= 1e-5
    att = [on.network.get_layer(i) for i in range(on.network.num_layers)]
    att = [a for a in att if a.type == rt.LayerType.ATTENTION]
    assert all(a.scale == pytest.approx(1 / math.sqrt(8)) and a.heads == 4 for a in att)


def test_encoder_fp16_within_2e2_of_fp32(encoder_net):
    b, net, feeds = encoder_net
    ref = interpret(net, feeds)["encoded"]
    fused = build(b, net, fp16=True)
    unfused = build(b, net, [PASS], fp16=True)
    assert counts(fused)[rt.LayerType.ATTENTION] == 2
    got, got_unfused = run(fused, feeds)["encoded"], run(unfused, feeds)["encoded"]
    assert rel_l2(got, ref) <= 2e-2
    assert rel_l2(got, got_unfused) <= 2e-2


def test_plan_round_trip_keeps_the_attention_layer(encoder_net):
    b, net, feeds = encoder_net
    cfg = b.create_builder_config()
    plan = b.build_serialized_network(net, cfg)
    engine = rt.Runtime().deserialize_cuda_engine(plan)
    assert counts(engine)[rt.LayerType.ATTENTION] == 2
    assert rel_l2(run(engine, feeds)["encoded"], interpret(net, feeds)["encoded"]) <= 1e-5


# -- hand-built chains ---------------------------------------------------------------

def chain(scale_form="prod", axis_last=True, extra=None, shapes=((2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 6))):
    """q k^T -> scale -> softmax -> @ v on network inputs. ``scale_form``: "prod"
    (ElementWise with a scalar Constant), "prod_left" (the constant first),
    "scale" (a UNIFORM Scale layer), "none". ``extra``: "scores_output",
    "probs_reader", "mask" (a tensor added to the scores)."""
    net = rt.Network()
    q = net.add_input("q", rt.float32, shapes[0])
    k = net.add_input("k", rt.float32, shapes[1])
    v = net.add_input("v", rt.float32, shapes[2])
    s = net.add_matrix_multiply(q, MO.NONE, k, MO.TRANSPOSE).get_output(0)
    rank = len(shapes[0])
    if extra == "mask":
        m = net.add_input("mask", rt.float32, (1,) * (rank - 2) + (shapes[0][-2], shapes[1][-2]))
        s = net.add_elementwise(s, m, EW.SUM).get_output(0)
    if extra == "scores_output":
        net.mark_output(s)
    c = np.full((1,) * rank, 0.35, np.float32)
    if scale_form == "prod":
        s = net.add_elementwise(s, net.add_constant(c.shape, c).get_output(0), EW.PROD).get_output(0)
    elif scale_form == "prod_left":
        s = net.add_elementwise(net.add_constant(c.shape, c).get_output(0), s, EW.PROD).get_output(0)
    elif scale_form == "scale":
        s = net.add_scale(s, rt.ScaleMode.UNIFORM, scale=np.array([0.35], np.float32)).get_output(0)
    sm = net.add_softmax(s)
    sm.axes = 1 << (rank - 1 if axis_last else rank - 2)
    p = sm.get_output(0)
    if extra == "probs_reader":
        net.mark_output(net.add_unary(p, rt.UnaryOperation.EXP).get_output(0))
    out = net.add_matrix_multiply(p, MO.NONE, v, MO.NONE).get_output(0)
    out.name = "out"
    net.mark_output(out)
    return net


def feeds_for(net, rng):
    return {net.get_input(i).name: randn(rng, *net.get_input(i).shape) for i in range(net.num_inputs)}


@pytest.mark.parametrize("form", ["prod", "prod_left", "scale", "none"])
@pytest.mark.parametrize("matmul_pass", [True, False], ids=["alpha_folded", "scale_layer_kept"])
def test_each_form_fuses_and_matches(form, matmul_pass):
    rng = np.random.default_rng(5)
    net = chain(form)
    feeds = feeds_for(net, rng)
    disabled = [] if matmul_pass else ["matmul_epilogue_fusion"]
    engine = build(rt.Builder(), net, disabled)
    assert engine.meta["pass_stats"][PASS] == 1
    c = counts(engine)
    assert c[rt.LayerType.ATTENTION] == 1
    assert c[rt.LayerType.MATRIX_MULTIPLY] == c[rt.LayerType.SOFTMAX] == 0
    assert c[rt.LayerType.ELEMENTWISE] == c[rt.LayerType.SCALE] == 0
    ref = interpret(net, feeds)["out"]
    assert rel_l2(run(engine, feeds)["out"], ref) <= 1e-5
    att = next(engine.network.get_layer(i) for i in range(engine.network.num_layers)
               if engine.network.get_layer(i).type == rt.LayerType.ATTENTION)
    assert att.scale == pytest.approx(1.0 if form == "none" else 0.35)


def test_rank3_chain_fuses():
    rng = np.random.default_rng(6)
    net = chain("prod", shapes=((4, 9, 16), (4, 9, 16), (4, 9, 16)))
    feeds = feeds_for(net, rng)
    engine = build(rt.Builder(), net)
    assert engine.meta["pass_stats"][PASS] == 1
    assert rel_l2(run(engine, feeds)["out"], interpret(net, feeds)["out"]) <= 1e-5


@pytest.mark.parametrize("why, kwargs", [
    ("scores are a network output", {"extra": "scores_output"}),
    ("the probabilities have a second reader", {"extra": "probs_reader"}),
    ("a mask is added to the scores", {"extra": "mask"}),
    ("softmax over the query axis", {"axis_last": False}),
    ("k broadcast over the batch", {"shapes": ((2, 3, 5, 8), (1, 3, 7, 8), (2, 3, 7, 6))}),
])
def test_pass_leaves_alone(why, kwargs):
    rng = np.random.default_rng(8)
    net = chain("prod", **kwargs)
    feeds = feeds_for(net, rng)
    engine = build(rt.Builder(), net)
    assert engine.meta["pass_stats"][PASS] == 0, why
    assert counts(engine)[rt.LayerType.ATTENTION] == 0, why
    ref = interpret(net, feeds)
    got = run(engine, feeds)
    for name, value in ref.items():
        assert rel_l2(got[name], value) <= 1e-5, (why, name)


def test_pass_leaves_alone_a_constrained_layer():
    net = chain("prod")
    sm = next(l for l in net if l.type == rt.LayerType.SOFTMAX)
    sm.precision = rt.DataType.FLOAT
    engine = build(rt.Builder(), net)
    assert engine.meta["pass_stats"][PASS] == 0


def test_pass_leaves_alone_a_non_scalar_scale():
    net = rt.Network()
    q = net.add_input("q", rt.float32, (2, 5, 8))
    k = net.add_input("k", rt.float32, (2, 7, 8))
    v = net.add_input("v", rt.float32, (2, 7, 4))
    s = net.add_matrix_multiply(q, MO.NONE, k, MO.TRANSPOSE).get_output(0)
    w = np.linspace(0.5, 1.5, 7, dtype=np.float32).reshape(1, 1, 7)     # one factor per key
    s = net.add_elementwise(s, net.add_constant(w.shape, w).get_output(0), EW.PROD).get_output(0)
    p = net.add_softmax(s)
    p.axes = 1 << 2
    net.mark_output(net.add_matrix_multiply(p.get_output(0), MO.NONE, v, MO.NONE).get_output(0))
    engine = build(rt.Builder(), net, ["matmul_epilogue_fusion"])
    assert engine.meta["pass_stats"][PASS] == 0


# -- the heads shuffles -------------------------------------------------------------

def heads_block(n=2, s=9, heads=3, d=8, merge_reader=False, split_reader=False, dynamic=False):
    """Packed q, k, v (N, S, H*D) -> split heads -> attention chain -> merge heads."""
    net = rt.Network()
    e = heads * d
    n_dim = -1 if dynamic else n
    ins = [net.add_input(name, rt.float32, (n_dim, s, e)) for name in "qkv"]
    split = []
    for i, x in enumerate(ins):
        sh = net.add_shuffle(x)
        sh.reshape_dims = (0, s, heads, -1)
        sh.second_transpose = (0, 2, 1, 3)
        split.append(sh.get_output(0))
    q, k, v = split
    if split_reader:
        net.mark_output(v)
    sc = net.add_matrix_multiply(q, MO.NONE, k, MO.TRANSPOSE).get_output(0)
    c = np.full((1, 1, 1, 1), 1 / math.sqrt(d), np.float32)
    sc = net.add_elementwise(sc, net.add_constant(c.shape, c).get_output(0), EW.PROD).get_output(0)
    sm = net.add_softmax(sc)
    sm.axes = 1 << 3
    ctx = net.add_matrix_multiply(sm.get_output(0), MO.NONE, v, MO.NONE).get_output(0)
    if merge_reader:
        net.mark_output(ctx)
    merge = net.add_shuffle(ctx)
    merge.first_transpose = (0, 2, 1, 3)
    merge.reshape_dims = (0, s, e)
    out = merge.get_output(0)
    out.name = "out"
    net.mark_output(out)
    return net


def test_heads_shuffles_go_into_the_layer():
    rng = np.random.default_rng(12)
    net = heads_block()
    feeds = feeds_for(net, rng)
    engine = build(rt.Builder(), net)
    assert engine.meta["pass_stats"][PASS] == 2
    c = counts(engine)
    assert c[rt.LayerType.SHUFFLE] == 0 and c[rt.LayerType.ATTENTION] == 1
    att = next(engine.network.get_layer(i) for i in range(engine.network.num_layers)
               if engine.network.get_layer(i).type == rt.LayerType.ATTENTION)
    assert att.heads == 3 and att.get_output(0).shape == (2, 9, 24)
    assert rel_l2(run(engine, feeds)["out"], interpret(net, feeds)["out"]) <= 1e-5


def test_heads_shuffles_go_in_with_a_dynamic_batch():
    rng = np.random.default_rng(13)
    net = heads_block(dynamic=True)
    engine = build(rt.Builder(), net)
    assert counts(engine)[rt.LayerType.SHUFFLE] == 0
    feeds = {name: randn(rng, 4, 9, 24) for name in "qkv"}
    assert rel_l2(run(engine, feeds)["out"], interpret(net, feeds)["out"]) <= 1e-5


@pytest.mark.parametrize("why, kwargs", [
    ("the per-head result is also a network output", {"merge_reader": True}),
    ("the per-head values are also a network output", {"split_reader": True}),
])
def test_heads_shuffles_stay_when_not_all_four_fit(why, kwargs):
    rng = np.random.default_rng(14)
    net = heads_block(**kwargs)
    feeds = feeds_for(net, rng)
    engine = build(rt.Builder(), net)
    c = counts(engine)
    assert engine.meta["pass_stats"][PASS] == 1 and c[rt.LayerType.ATTENTION] == 1, why
    assert c[rt.LayerType.SHUFFLE] == 4, why
    ref = interpret(net, feeds)
    got = run(engine, feeds)
    for name, value in ref.items():
        assert rel_l2(got[name], value) <= 1e-5, (why, name)


def test_packed_reference_equals_per_head():
    rng = np.random.default_rng(15)
    q, k, v = randn(rng, 2, 5, 12), randn(rng, 2, 7, 12), randn(rng, 2, 7, 6)
    packed = attention(q, k, v, 0.5, heads=3)
    qk_cols = [slice(h * 4, (h + 1) * 4) for h in range(3)]
    v_cols = [slice(h * 2, (h + 1) * 2) for h in range(3)]
    per_head = [attention(q[..., a], k[..., a], v[..., b], 0.5) for a, b in zip(qk_cols, v_cols)]
    assert packed.shape == (2, 5, 6)
    np.testing.assert_allclose(packed, np.concatenate(per_head, -1), rtol=1e-6, atol=1e-7)


# -- the layer and its reference ------------------------------------------------------

def _add_attention(shapes, dtypes=None, heads=0):
    net = rt.Network()
    dtypes = dtypes or (rt.float32,) * 3
    ins = [net.add_input(n, d, s) for n, d, s in zip("qkv", dtypes, shapes)]
    return net._add(AttentionLayer(net, ins, scale=0.5, heads=heads))


def test_layer_shape_rule():
    layer = _add_attention(((2, 3, 5, 8), (2, 1, 7, 8), (1, 3, 7, 6)))
    assert layer.get_output(0).shape == (2, 3, 5, 6)
    packed = _add_attention(((-1, 5, 24), (-1, 7, 24), (-1, 7, 12)), heads=3)
    assert packed.get_output(0).shape == (-1, 5, 12)


@pytest.mark.parametrize("shapes, message", [
    (((2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 8)), "rank 3"),
    (((2, 5, 24), (2, 7, 25), (2, 7, 24)), "a multiple of heads = 3"),
])
def test_packed_layer_refuses(shapes, message):
    with pytest.raises(NetworkDefinitionError, match=message):
        _add_attention(shapes, heads=3)


@pytest.mark.parametrize("shapes, dtypes, message", [
    (((5,), (7, 8), (7, 6)), None, "rank >= 2"),
    (((2, 5, 8), (7, 8), (7, 6)), None, "equal ranks"),
    (((5, 8), (7, 4), (7, 6)), None, "head dim 8"),
    (((5, 8), (7, 8), (6, 6)), None, "one row per key: 7"),
    (((2, 5, 8), (3, 7, 8), (3, 7, 6)), None, "dims equal or 1"),
    (((5, 8), (7, 8), (7, 6)), (rt.float32, rt.int32, rt.float32), "FLOAT or HALF"),
])
def test_layer_refuses(shapes, dtypes, message):
    with pytest.raises(NetworkDefinitionError, match=message):
        _add_attention(shapes, dtypes)


def test_reference_equals_the_unfused_chain_with_nan_and_inf_rows():
    rng = np.random.default_rng(9)
    q, k, v = randn(rng, 2, 6, 8), randn(rng, 2, 5, 8), randn(rng, 2, 5, 3)
    q[0, 1, 2] = np.nan            # a NaN score row
    q[1, 2, :] = np.inf            # +Inf scores: that row is NaN (TF's)
    net = chain("prod", shapes=((2, 6, 8), (2, 5, 8), (2, 5, 3)))     # its scale: 0.35
    with np.errstate(invalid="ignore"):
        ref = interpret(net, {"q": q, "k": k, "v": v})["out"]
        got = attention(q, k, v, np.float32(0.35))
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    assert np.isnan(got[0, 1]).all() and np.isnan(got[1, 2]).all()
    fin = ~np.isnan(ref)
    assert rel_l2(got[fin], ref[fin]) <= 1e-6


def test_minus_inf_scores_weigh_nothing():
    q = np.ones((1, 2, 4), np.float32)
    k = np.ones((1, 3, 4), np.float32)
    k[0, 1] = -np.inf              # key 1 scores -Inf for every query
    v = np.arange(6, dtype=np.float32).reshape(1, 3, 2)
    with np.errstate(invalid="ignore"):
        got = attention(q, k, v, 1.0)
    np.testing.assert_allclose(got[0], np.tile((v[0, 0] + v[0, 2]) / 2, (2, 1)), rtol=1e-6)


# -- the GPU tactics' shape rules (no device needed) -----------------------------------

def _attention_layer(q=(2, 12, 128, 64), k=None, v=None):
    return _add_attention((q, k or q, v or q))


def test_flash_tactic_takes_bert_shapes_in_half_only():
    from engine.gpu.attention_tactics import FlashAttention, UnfusedAttention
    from kernels.gpu.attention import TILES
    layer = _attention_layer()
    shapes = [(2, 12, 128, 64)] * 3
    flash, unfused = FlashAttention(TILES[1]), UnfusedAttention()
    assert flash.supports(layer, shapes, ["float16"] * 3, rt.DataType.HALF) is None
    assert "HALF" in flash.supports(layer, shapes, ["float32"] * 3, rt.DataType.FLOAT)
    assert unfused.supports(layer, shapes, ["float32"] * 3, rt.DataType.FLOAT) is None
    assert unfused.supports(layer, shapes, ["float16"] * 3, rt.DataType.HALF) is None
    assert "INT8" in unfused.supports(layer, shapes, ["float32"] * 3, rt.DataType.INT8)
    assert "floating" in flash.supports(layer, shapes, ["int32"] * 3, rt.DataType.HALF)
    assert flash.capturable_for(layer) and unfused.capturable_for(layer)


@pytest.mark.parametrize("q, k, v, message", [
    ((2, 12, 128, 48), None, None, "head dim 48"),
    ((2, 12, 128, 64), None, (2, 12, 128, 32), "key/value head dims"),
    ((2, 12, 128, 64), (1, 12, 128, 64), (1, 12, 128, 64), "no broadcast"),
    ((2, 12, 128, 64), (2, 12, 100, 64), (2, 12, 99, 64), "100 keys but 99 values"),
    ((64,), (64,), (64,), "equal ranks >= 2"),
])
def test_flash_tactic_refuses_with_the_reason(q, k, v, message):
    from engine.gpu.attention_tactics import FlashAttention
    from kernels.gpu.attention import TILES
    layer = _attention_layer()
    reason = FlashAttention(TILES[0]).supports(layer, [q, k or q, v or q], ["float16"] * 3,
                                               rt.DataType.HALF)
    assert reason is not None and message in reason


def test_unfused_tactic_refuses_too_many_matrices():
    from engine.gpu.attention_tactics import UnfusedAttention
    layer = _attention_layer()
    shapes = [(70000, 4, 8)] * 3
    assert "batched matrices" in UnfusedAttention().supports(layer, shapes, ["float32"] * 3,
                                                             rt.DataType.FLOAT)
    bad = [(2, 4, 8), (2, 4, 9), (2, 4, 8)]
    assert "inner dims" in UnfusedAttention().supports(layer, bad, ["float32"] * 3,
                                                       rt.DataType.FLOAT)


def test_generic_tactic_is_not_capturable_for_attention():
    from engine.gpu.tactics import GENERIC
    assert not GENERIC.capturable_for(_attention_layer())     # cupy.matmul is cuBLAS


@pytest.mark.parametrize("kwargs, message", [
    ({"dtype": np.float32}, "query dtype float32"),
    ({"shape": (1, 2, 16, 48)}, "head dim 48"),
    ({"out_dtype": np.int8}, "out dtype int8"),
])
def test_launcher_refuses_before_any_launch(kwargs, message):
    from kernels.gpu.attention import attention as launch
    from kernels.gpu.errors import UnsupportedError
    x = np.zeros(kwargs.get("shape", (1, 2, 16, 64)), kwargs.get("dtype", np.float16))
    with pytest.raises(UnsupportedError, match=message):
        launch(x, x, x, 0.125, out_dtype=kwargs.get("out_dtype"))


@pytest.mark.parametrize("out, message", [
    (np.zeros((1, 2, 16, 32), np.float16), "out of shape"),
    (np.zeros((1, 2, 16, 64), np.int8), "out dtype int8"),
    (np.zeros((1, 2, 64, 16), np.float16).swapaxes(2, 3), "out strides"),
])
def test_launcher_refuses_an_unusable_out(out, message):
    from kernels.gpu.attention import attention as launch
    from kernels.gpu.errors import UnsupportedError
    x = np.zeros((1, 2, 16, 64), np.float16)
    with pytest.raises(UnsupportedError, match=message):
        launch(x, x, x, 0.125, out=out)


def test_tactics_split_packed_shapes_by_heads():
    from engine.gpu.attention_tactics import FlashAttention, UnfusedAttention
    from kernels.gpu.attention import TILES
    layer = _add_attention(((2, 128, 768), (2, 128, 768), (2, 128, 768)), heads=12)
    packed = [(2, 128, 768)] * 3
    flash, unfused = FlashAttention(TILES[1]), UnfusedAttention()
    assert flash.supports(layer, packed, ["float16"] * 3, rt.DataType.HALF) is None
    assert unfused.supports(layer, packed, ["float32"] * 3, rt.DataType.FLOAT) is None
    odd = [(2, 128, 770)] * 3
    for tactic in (flash, unfused):
        assert "do not split into 12 heads" in tactic.supports(layer, odd, ["float16"] * 3,
                                                               rt.DataType.HALF)
    wide = _add_attention(((2, 128, 12 * 48),) * 3, heads=12)       # head dim 48: no kernel
    assert "head dim 48" in flash.supports(wide, [(2, 128, 576)] * 3, ["float16"] * 3,
                                           rt.DataType.HALF)


def test_launcher_tiles_and_shared_memory():
    from kernels.gpu.attention import TILES, TILES_BY_NAME
    assert [t.block_m for t in TILES] == [32, 64, 128]
    assert TILES_BY_NAME["fa_m64"].smem_bytes(64) == (64 + 4 * 64) * 72 * 2     # 46,080: no opt-in
    assert TILES_BY_NAME["fa_m64"].expression(64, np.float16) == "attention_f16<64,4,64,half_t>"
