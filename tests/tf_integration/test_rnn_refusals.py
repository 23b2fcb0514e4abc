"""Loops that look like a Keras LSTM but are not one the engine can run stay in
TensorFlow, each with the reason that names what was found (issue 10, point 3).

Every refusal of rnn_loops.py / rnn_cells.py is reached by a small hand-written
loop: ``hand_lstm`` traces a Keras-shaped LSTM (transpose, TensorList in and
out, zero states, one fused matmul per operand) that IS recognised, and each
variant changes one thing about it, or edits one node of its frozen GraphDef.
"""
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

import engine as rt
from tf_integration import TrtGraphConverter
from tf_integration.context import ConversionContext
from tf_integration.converters.rnn import convert_rnn_region
from tf_integration.errors import ConversionError
from tf_integration.graph_utils import GraphIndex
from tf_integration.rnn_loops import RNN_ATTR, region_params, rewrite_rnn_loops
from tfi_helpers import rel_l2, run_graph

E, H = 3, 2


def hand_lstm(variant="", lower=False, steps=None):
    """A traced LSTM loop (frozen, lowered or functional) changed by ``variant``,
    on sequences of any length or of ``steps`` only:
    ``(graph_def, input name, output name)``."""
    rng = np.random.default_rng(0)
    gates = 3 if variant == "three_gates" else 4
    w = rng.standard_normal((E, gates * H)).astype(np.float32)
    r = rng.standard_normal((H, gates * H)).astype(np.float32)
    b = rng.standard_normal(gates * H).astype(np.float32)
    dtype = tf.float64 if variant == "float64_sequence" else tf.float32
    feature = None if variant == "unknown_feature" else E

    def body(inp, t, h, c, out):
        x_t = inp.read(t)
        z = tf.matmul(x_t, w) + tf.matmul(h, r) + b
        if variant == "two_input_matmuls":
            z = z + tf.matmul(x_t, w)
        if gates == 3:                  # two states but three gates: no engine cell
            i, g, o = tf.split(z, 3, axis=1)
            c = c + tf.sigmoid(i) * tf.tanh(g)
        else:
            i, fg, g, o = tf.split(z, 4, axis=1)
            c = tf.sigmoid(fg) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
        if variant == "inner_loop":
            h = tf.while_loop(lambda k, v: k < 2, lambda k, v: (k + 1, v * 0.5), [0, h])[1]
        if variant == "write_discarded":
            out.write(t, h)             # the written list is dropped: out goes round unchanged
            return t + 1, h, c, out
        y = h * 2.0 if variant == "writes_not_h" else h
        return t + 1, h, c, out.write(1 if variant == "write_at_one" else t, y)

    @tf.function
    def model(x):
        x = tf.cast(x, tf.float32)
        xt = tf.transpose(x, [1, 0, 2])
        if variant == "feature_reverse":
            xt = tf.reverse(xt, [2])
        if variant == "squeezed_input":
            xt = tf.squeeze(tf.expand_dims(xt, 0), [0])
        n = tf.shape(xt)[0]
        if variant == "short_trip":     # a constant trip count below the fixed length
            n = tf.constant(steps - 2)
        inp = tf.TensorArray(tf.float32, size=n, element_shape=[None, feature])
        if variant != "reserved_input_list":
            inp = inp.unstack(xt)
        out = tf.TensorArray(tf.float32, size=n)
        # the failing variant sizes the states by the feature dim, not the batch
        h0 = tf.zeros(tf.stack([tf.shape(x)[2 if variant == "fails_in_tf" else 0], H]))
        t, h, c, out = tf.while_loop(lambda t, *_: t < n,
                                     lambda *a: body(inp, *a), [0, h0, h0, out])
        if variant == "output_list_read":
            return out.read(n - 1)
        y = tf.transpose(out.stack(), [1, 0, 2])
        if variant == "two_time_orders":
            y = y + tf.reverse(tf.transpose(out.stack(), [1, 0, 2]), [1])
        if variant == "time_read_after":
            y = y * tf.cast(t, tf.float32)
        return y * 2.0

    concrete = model.get_concrete_function(tf.TensorSpec([None, steps, feature], dtype))
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=lower)
    return frozen.graph.as_graph_def(), frozen.inputs[0].name, frozen.outputs[0].name


def refusals(gd, y_name):
    out, refused = rewrite_rnn_loops(gd, [y_name])
    assert not any(RNN_ATTR in n.attr for n in out.node)
    return set(refused.values())


@pytest.mark.parametrize("steps", [None, 5], ids=["any_T", "fixed_T"])
@pytest.mark.parametrize("lower", [False, True], ids=["functional", "lowered"])
def test_the_unchanged_hand_written_lstm_converts_and_matches_tf(lower, steps):
    """The base of every variant below is recognised: each refusal is the variant's."""
    gd, x_name, y_name = hand_lstm(lower=lower, steps=steps)
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=[y_name.split(":")[0]],
                             is_dynamic_op=True, minimum_segment_size=1)
    converted = conv.convert()
    assert conv.report["converted_share"] == 1.0, conv.summary()
    x = np.random.default_rng(1).standard_normal((2, 5, E)).astype(np.float32)
    got = run_graph(converted, y_name, {x_name: x}, converted=True)
    assert rel_l2(got, run_graph(gd, y_name, {x_name: x})) <= 1e-4


VARIANTS = {
    # the sequence
    "float64_sequence": "is float64 (None, None, 3); expected float32 of rank 3",
    "reserved_input_list": "the input list comes from a TensorListReserve, not a "
                           "TensorListFromTensor",
    "squeezed_input": "the input reaches the loop through a Squeeze",
    "feature_reverse": "the sequence is reversed along a non-time axis",
    "unknown_feature": "is unknown; the engine needs it",
    # what reads the loop
    "two_time_orders": "the output sequence leaves the region in two time orders",
    "time_read_after": "reads loop variable 2 after the loop",
    "output_list_read": "the output list goes to a TensorListGetItem, not a TensorListStack",
    "fails_in_tf": "its region fails in TensorFlow on random data",
    # the body
    "write_discarded": "the lists read and written are not loop variables",
    "write_at_one": "the output is written at neither the time index nor 0",
    "writes_not_h": "no state variable carries the step's output",
    "three_gates": "with 2 state(s) are neither an LSTM",
    "two_input_matmuls": "2 input and 1 recurrent matmuls",
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_stays_native_with_its_reason(variant):
    gd, _, y_name = hand_lstm(variant)
    reasons = refusals(gd, y_name)
    assert reasons and all(VARIANTS[variant] in r for r in reasons), reasons


@pytest.mark.parametrize("lower", [False, True], ids=["functional", "lowered"])
def test_fixed_length_loop_is_verified_at_that_length(lower):
    """A loop over a constant 3 of the 5 steps its input fixes computes a 3-step
    sequence: verified at T=5, the only length the input admits, it is refused
    (at T=2 or 7, where dynamic loops are verified, it could not even run)."""
    gd, _, y_name = hand_lstm("short_trip", lower=lower, steps=5)
    reasons = refusals(gd, y_name)
    assert reasons and all("differs from a LSTM" in r and "(T=5)" in r and "rel. L2 inf" in r
                           for r in reasons), reasons


def test_loop_whose_results_nothing_reads_is_refused():
    """The While's users cut away (tracing would prune an unread loop itself)."""
    gd, x_name, y_name = hand_lstm()
    loop = next(n.name for n in gd.node if n.op in ("While", "StatelessWhile"))
    users, todo = set(), [loop]
    while todo:
        cur = todo.pop()
        for n in gd.node:
            if n.name not in users and any(i.lstrip("^").split(":")[0] == cur for i in n.input):
                users.add(n.name)
                todo.append(n.name)
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(gd)
    del out.node[:]
    out.node.extend(n for n in gd.node if n.name not in users - {y_name.split(":")[0]})
    fetched = next(n for n in out.node if n.name == y_name.split(":")[0])
    del fetched.input[:]
    fetched.input.append(x_name)
    reasons = refusals(out, y_name)
    assert reasons == {f"While {loop} is not a Keras LSTM/GRU: nothing reads the loop's results"}


# ---------------------------------------------------------------------------- lowered frames

def _edited(gd, op, pick=0):
    """Copy of a lowered graph with a second ``op`` node beside the ``pick``-th one
    (same inputs): the frame no longer has the one-per-variable plumbing."""
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(gd)
    node = [n for n in out.node if n.op == op][pick]
    twin = out.node.add()
    twin.CopyFrom(node)
    twin.name = node.name + "_twin"
    return out


@pytest.mark.parametrize("op, words", [
    ("LoopCond", "frame has 2 LoopCond nodes; expected one"),
    ("Merge", "feeds 2 Merge nodes; a lowered While has one"),
    ("Switch", "feeds 2 Switch nodes; a lowered While has one"),
])
def test_lowered_frame_with_doubled_plumbing_is_refused(op, words):
    gd, _, y_name = hand_lstm(lower=True)
    reasons = refusals(_edited(gd, op), y_name)
    assert reasons and all(words in r for r in reasons), reasons


def test_lowered_loop_holding_a_nested_loop_is_refused():
    gd, x_name, y_name = hand_lstm("inner_loop", lower=True)
    assert sum(n.op == "LoopCond" for n in gd.node) == 2       # really two lowered frames
    reasons = refusals(gd, y_name)
    assert any("holds the nested loop" in r for r in reasons), reasons


@pytest.mark.parametrize("lower", [False, True], ids=["functional", "lowered"])
def test_a_loop_node_in_nodes_denylist_keeps_the_loop(lower):
    gd, _, y_name = hand_lstm(lower=lower)
    kept = next(n.name for n in gd.node if n.op in ("StatelessWhile", "While", "Exit"))
    _, refused = rewrite_rnn_loops(gd, [y_name, kept])
    assert refused and all(f"{kept} is in nodes_denylist" in r for r in refused.values())


# ---------------------------------------------------------------------------- the converter

def _tagged_call(f_name=None):
    """(GraphIndex of a rewritten hand LSTM, its tagged call; ``f`` renamed if asked)."""
    gd, _, y_name = hand_lstm()
    out, _ = rewrite_rnn_loops(gd, [y_name])
    call = tf.compat.v1.NodeDef()
    call.CopyFrom(next(n for n in out.node if RNN_ATTR in n.attr))
    if f_name is not None:
        call.attr["f"].func.name = f_name(out)
    return GraphIndex(out), call


@pytest.mark.parametrize("f_name, words", [
    (lambda gd: "no_such_function", "'no_such_function' is not in the graph's function library"),
    (lambda gd: next(f.signature.name for f in gd.library.function     # the loop's cond
                     if not any(n.op.endswith("While") for n in f.node_def)),
     "holds 0 While nodes"),
])
def test_rnn_converter_needs_the_region_function(f_name, words):
    graph, call = _tagged_call(f_name)
    ctx = ConversionContext(rt.Builder().create_network(), graph)
    with pytest.raises(ConversionError, match=words):
        convert_rnn_region(ctx, call)


def test_weights_are_read_back_from_the_region_function():
    """What the converter reads is what the body multiplies by, in the engine's layout."""
    graph, call = _tagged_call()
    params = region_params(graph.graph_def.library, call.attr["f"].func.name)
    rng = np.random.default_rng(0)
    w, r, b = (rng.standard_normal(s).astype(np.float32) for s in ((E, 4 * H), (H, 4 * H), 4 * H))
    np.testing.assert_array_equal(params["W"], w.T)
    np.testing.assert_array_equal(params["R"], r.T)
    np.testing.assert_array_equal(params["Wb"] + params["Rb"], b)
    assert not any("_cupyrt_rnn_weights" in n.attr for n in graph.graph_def.node)
