"""The conversion bugs of issue 10 (point 6): conversion never needs a feed,
control inputs to absorbed nodes are rewired, no dead constants are left behind.
"""
import numpy as np
import pytest
import tensorflow as tf

from tf_integration import TrtGraphConverter, freeze_keras_model
from tf_integration.engine_node import ENGINE_OP, import_with_runners
from tf_integration.graph_utils import FORWARDING_OPS, GraphIndex, node_of
from tf_integration.rewrites import fold_constants, prune_dead_nodes
from test_control_flow import control_flow_v1
from tfi_helpers import rel_l2, run_graph

RNG = np.random.default_rng(0)
W = RNG.standard_normal((8, 8)).astype(np.float32)
GAMMA = (RNG.random(8) + 0.5).astype(np.float32)
BETA = RNG.standard_normal(8).astype(np.float32)
MOVING_MEAN = RNG.standard_normal(8).astype(np.float32)
MOVING_VAR = (RNG.random(8) + 0.5).astype(np.float32)


def convert(gd, outs, deny=(), **kw):
    kw.setdefault("is_dynamic_op", True)
    kw.setdefault("minimum_segment_size", 1)
    conv = TrtGraphConverter(input_graph_def=gd,
                             nodes_denylist=[node_of(o) for o in outs] + list(deny), **kw)
    return conv, conv.convert()


def engines(graph_def):
    return {n.name: n for n in graph_def.node if n.op == ENGINE_OP}


# ---------------------------------------------------------------- no feeds needed
def batch_norm_cond_graph(with_dropout=False, default=False):
    """A TF1 checkpoint-style graph: ``is_training`` picks batch statistics or the
    moving averages (a lowered cond: Switch/Merge), constants inside both branches."""
    g = tf.Graph()
    with control_flow_v1(), g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 8], name="x")
        if default:
            training = tf.compat.v1.placeholder_with_default(False, [], name="is_training")
        else:
            training = tf.compat.v1.placeholder(tf.bool, [], name="is_training")
        h = tf.nn.relu(tf.matmul(x, W) + 0.5)

        def train():
            mean, var = tf.nn.moments(h, [0])
            y = tf.nn.batch_normalization(h, mean, var, BETA, GAMMA, 1e-3)
            return tf.nn.dropout(y, rate=0.5) if with_dropout else y

        def infer():
            # constants under the branch's pivot: folding must keep them there
            scale = tf.constant(GAMMA) * tf.math.rsqrt(tf.constant(MOVING_VAR) + 1e-3)
            return h * scale + (tf.constant(BETA) - tf.constant(MOVING_MEAN) * scale)

        h = tf.compat.v1.cond(training, train, infer)
        y = tf.nn.tanh(tf.matmul(h, W) * 0.25, name="y")
        out = tf.identity(y, name="out")
    return g.as_graph_def(), [out.name]


def test_is_training_cond_converts_without_a_feed_and_matches_both_branches():
    gd, outs = batch_norm_cond_graph()
    conv, converted = convert(gd, outs)
    assert engines(converted), conv.summary()
    x = RNG.standard_normal((4, 8)).astype(np.float32)
    for training in (False, True):
        feeds = {"x:0": x, "is_training:0": training}
        ref = run_graph(gd, outs, feeds)
        got = run_graph(converted, outs, feeds, converted=True)
        assert rel_l2(got[0], ref[0]) <= 1e-4, training


def test_dropout_cond_converts_and_inference_matches():
    gd, outs = batch_norm_cond_graph(with_dropout=True, default=True)
    conv, converted = convert(gd, outs)
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    ref = run_graph(gd, outs, {"x:0": x})          # the default: is_training False
    got = run_graph(converted, outs, {"x:0": x}, converted=True)
    assert rel_l2(got[0], ref[0]) <= 1e-4
    assert "is_training" in {n.name for n in converted.node}
    assert conv.report["left_to_tensorflow"]["is_training"]["detail"] == "graph input"


def test_engine_of_a_constant_only_branch_runs_only_when_its_branch_is_taken():
    c1 = RNG.standard_normal(8).astype(np.float32)
    g = tf.Graph()
    with control_flow_v1(), g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 8], name="x")
        pred = tf.compat.v1.placeholder(tf.bool, [], name="pred")
        h = tf.nn.relu(x * 2.0)
        b = tf.compat.v1.cond(pred, lambda: tf.reduce_mean(h, 0),
                              lambda: tf.exp(tf.constant(c1) * 0.5) + 1.0)
        tf.identity(tf.tanh(h + b), name="out")
    gd = g.as_graph_def()
    conv, converted = convert(gd, ["out:0"])
    (const_branch,) = [e for e in engines(converted).values()
                       if not any(not i.startswith("^") for i in e.input)]
    # its only input: the false branch's pivot, which its constants waited on
    assert list(const_branch.input) == ["^cond/switch_f"]
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    for p in (True, False):
        ref = run_graph(gd, ["out:0"], {"x:0": x, "pred:0": p})
        got = run_graph(converted, ["out:0"], {"x:0": x, "pred:0": p}, converted=True)
        assert rel_l2(got[0], ref[0]) <= 1e-5, p


def test_constants_under_a_cond_pivot_are_not_folded():
    gd, outs = batch_norm_cond_graph()
    folded, count = fold_constants(gd, [node_of(o) for o in outs])
    ops = {n.name: n.op for n in folded.node}
    # the branch's arithmetic on constants is live only in its branch: it stays
    branch = [n.name for n in gd.node if n.name.startswith("cond/") and n.op in ("Rsqrt", "Mul")]
    assert branch and all(ops[n] != "Const" for n in branch)
    assert all(ops[n.name] == n.op for n in gd.node if n.op in ("Switch", "Merge"))
    assert count == 0


def test_folding_never_runs_placeholders_or_stateful_ops():
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        d = tf.compat.v1.placeholder_with_default(tf.constant(2.0), [], name="scale")
        s = tf.random.shuffle(tf.constant([1.0, 2.0, 3.0, 4.0]), seed=1, name="shuffled")
        k = tf.add(tf.constant(1.0), tf.constant(3.0), name="k")      # truly constant
        y = tf.nn.relu(x * (d * 3.0) + tf.reduce_sum(s) * k, name="y")
        tf.identity(y, name="out")
    gd = g.as_graph_def()
    folded, count = fold_constants(gd, ["out"])
    ops = {n.name: n.op for n in folded.node}
    assert ops["k"] == "Const" and count == 1
    assert ops["scale"] == "PlaceholderWithDefault" and ops["shuffled"] == "RandomShuffle"
    assert ops["mul"] == "Mul"                  # d * 3.0 reads the placeholder: not folded
    conv, converted = convert(gd, ["out:0"])
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    for feeds in ({"x:0": x}, {"x:0": x, "scale:0": -1.5}):
        ref = run_graph(gd, ["out:0"], feeds)
        got = run_graph(converted, ["out:0"], feeds, converted=True)
        assert rel_l2(got[0], ref[0]) <= 1e-5, feeds


# ---------------------------------------------------------------- control inputs
def control_graph(log):
    """Two engines with TF between them; ``mul`` (absorbed into the first) is the
    control input of ``c`` (absorbed into the second) and of a TF PyFunc."""
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 8], name="x")
        a = tf.nn.relu(x + 0.5, name="a")
        mul = tf.multiply(a, 3.0, name="mul")
        t = tf.nn.tanh(mul, name="t")
        sp = tf.split(t, 2, axis=1, name="sp")
        s = tf.math.sin(sp[0], name="s")                   # denylisted: stays in TF
        with tf.control_dependencies([mul]):
            c = tf.nn.sigmoid(s, name="c")
            p = tf.numpy_function(lambda v: log.append("p") or v, [x], tf.float32, name="p")
        d = tf.concat([tf.exp(c, name="e"), sp[1]], 1, name="d")     # sp:1 from engine 1
        tf.identity(d, name="out0")
        tf.identity(p, name="out1")
    return g, g.as_graph_def()      # the PyFunc's callback lives as long as g does


def test_control_inputs_to_absorbed_nodes_are_rewired():
    log = []
    keep_alive, gd = control_graph(log)
    outs = ["out0:0", "out1:0"]
    conv, converted = convert(gd, outs, deny=["s"])
    eng = engines(converted)
    assert len(eng) == 2, conv.summary()
    (first,) = [e for e in conv.report["engines"] if "mul" in e["members"]]
    (second,) = [e for e in conv.report["engines"] if "c" in e["members"]]
    names = {n.name: n for n in converted.node}
    assert "mul" not in names
    # the second engine waits on the first (not on '^mul'), and reads 'sp:1' from it
    assert "^" + first["name"] in eng[second["name"]].input
    assert any(i.startswith(first["name"] + ":") for i in eng[second["name"]].input)
    assert "^" + first["name"] in names["p"].input
    for node in converted.node:
        for inp in node.input:
            assert node_of(inp) in names, (node.name, inp)

    x = RNG.standard_normal((2, 8)).astype(np.float32)
    ref = run_graph(gd, outs, {"x:0": x})
    g = tf.Graph()
    with g.as_default():
        _, runners = import_with_runners(converted, name="")
        meta = tf.compat.v1.RunMetadata()
        with tf.compat.v1.Session(graph=g) as sess:
            got = sess.run(outs, {"x:0": x}, options=tf.compat.v1.RunOptions(
                trace_level=tf.compat.v1.RunOptions.FULL_TRACE), run_metadata=meta)
    for r, o in zip(ref, got):
        assert rel_l2(o, r) <= 1e-5
    assert log == ["p", "p"]               # once for the reference, once converted
    assert all(r.stats["engine_runs"] == 1 for r in runners.values())
    # the control edges still order execution: the first engine ends before the
    # second engine and the PyFunc start
    times = {}
    for dev in meta.step_stats.dev_stats:
        for ns in dev.node_stats:
            times[ns.node_name] = (ns.all_start_micros,
                                   ns.all_start_micros + ns.all_end_rel_micros)
    assert times[first["name"]][1] <= times[second["name"]][0]
    assert times[first["name"]][1] <= times["p"][0]
    del keep_alive


# ---------------------------------------------------------------- dead constants
def dead_nodes(graph_def, outputs):
    """Const / forwarding nodes nothing reads (graph outputs aside)."""
    used = {node_of(i) for n in graph_def.node for i in n.input}
    return [n.name for n in graph_def.node
            if (n.op == "Const" or n.op in FORWARDING_OPS) and n.name not in used
            and n.name not in outputs]


def small_keras_model():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(8, 3, use_bias=False)(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(5, activation="softmax")(h)
    return freeze_keras_model(keras.Model(inp, out))


@pytest.mark.parametrize("precision", ["FP32", "FP16"])
def test_converted_graph_has_no_unread_constant_or_forwarding_node(precision):
    gd, ins, outs = small_keras_model()
    outputs = {node_of(o) for o in outs}
    conv, converted = convert(gd, outs, precision_mode=precision, minimum_segment_size=3)
    assert len(engines(converted)) == 1, conv.summary()
    assert dead_nodes(converted, outputs) == []
    # the frozen variable reads (Const -> Identity) the engine absorbed are gone
    assert sum(1 for n in converted.node if n.op == "Const") == 0
    x = RNG.standard_normal((2, 12, 12, 3)).astype(np.float32)
    ref = run_graph(gd, outs, {ins[0]: x})
    got = run_graph(converted, outs, {ins[0]: x}, converted=True)
    assert rel_l2(got[0], ref[0]) <= (1e-4 if precision == "FP32" else 2e-2)


def test_prune_keeps_nodes_the_reference_never_read():
    g = tf.Graph()
    with g.as_default():
        w = tf.identity(tf.constant(np.ones(3, np.float32), name="w"), name="w_read")
        tf.identity(tf.constant(2.0, name="c"), name="fetched")      # a constant output
        tf.identity(w, name="user")
    ref = g.as_graph_def()
    spliced = tf.compat.v1.GraphDef()
    spliced.node.extend(n for n in ref.node if n.name != "user")    # 'user' absorbed
    pruned = prune_dead_nodes(spliced, keep=(), reference=ref)
    assert sorted(n.name for n in pruned.node) == ["c", "fetched"]
    assert GraphIndex(pruned, infer_shapes=False).is_const("fetched")
