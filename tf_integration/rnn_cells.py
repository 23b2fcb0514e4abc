"""What a while-loop body computes, read from its structure: a Keras LSTM or GRU cell?

The body is a FunctionDef (a functional While's, or one raised from a lowered
frame by rnn_loops.py). Its loop variables are told apart by what the body does
with them, never by their names:

    time t        the index of the one TensorListGetItem (and of the write, when
                  every step is kept)
    input list    the list that TensorListGetItem reads: x_t, one (N, E) step
    output list   the list TensorListSetItem writes y into (at t, or at 0 when
                  Keras keeps only the last step)
    h (and c)     float variables the body changes; h's new value is y
    invariants    returned unchanged; those that are constants carry the weights

The weights are the constant operands of the two MatMuls (x_t @ kernel,
h @ recurrent_kernel); the biases are the constants added on each MatMul's way
to the gates; gates = recurrent columns / units (4: LSTM i, f, c, o; 3: GRU
z, r, h with the reset gate applied after the matmul, Keras' reset_after=True),
the stacking order of both Keras and the engine (kernels/rnn.py GATES).
Anything the structure does not say is checked later: rnn_loops.py runs the
whole region in TensorFlow and compares it with ``reference`` on random data.
"""
import logging

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.function_def_to_graph import function_def_to_graph

from kernels import rnn as K

from .errors import TFIntegrationError

logger = logging.getLogger(__name__)

_FORWARD = ("Identity", "Snapshot")
_ADD_OPS = ("Add", "AddV2", "BiasAdd")
# What a Keras LSTM/GRU body may hold (plumbing, the two matmuls, the gate math).
# Another activation (relu, hard_sigmoid ...) has no engine equivalent.
_BODY_OPS = frozenset({"Identity", "Snapshot", "Const", "NoOp", "MatMul", "Add", "AddV2",
                       "BiasAdd", "Split", "SplitV", "Sigmoid", "Tanh", "Mul", "Sub",
                       "StridedSlice", "Squeeze", "Reshape", "TensorListGetItem",
                       "TensorListSetItem", "Less", "LogicalAnd", "Cast"})
_CELLS = {(4, 2): "LSTM", (3, 1): "GRU"}      # (gates, float states) -> kind


class RNNLoopRefused(TFIntegrationError):
    """A loop is not a Keras LSTM/GRU the engine can run; the message says why.

    rewrite_rnn_loops catches it: the loop stays in TensorFlow with this reason.
    """


class Cell:
    """A recognised cell: kind, sizes, engine weights and the loop-variable roles."""

    def __init__(self, kind, units, input_size, params, roles, last_only):
        self.kind, self.units, self.input_size = kind, units, input_size
        self.params = params            # {"W": (G*H, E), "R": (G*H, H), "Wb", "Rb": (G*H,)}
        self.roles = roles              # role -> loop variable index
        self.last_only = last_only      # the output list keeps only the last step

    def __repr__(self):
        return f"Cell({self.kind}, units={self.units}, input_size={self.input_size})"


class _Body:
    """A body FunctionDef as a plain tf.Graph: args, results, evaluation of invariants."""

    def __init__(self, fdef, const_args):
        fg = function_def_to_graph(fdef)
        # Control edges dropped: they change no value, and a body raised from a
        # lowered frame makes every node wait on its pivot (an Identity of the
        # loop counter), which would make the weights look loop-variant. The
        # graph is only read and evaluated here, never run as the loop; the
        # body's ops are all stateless (_BODY_OPS), so order does not matter.
        gd = fg.as_graph_def()
        for node in gd.node:
            data = [i for i in node.input if not i.startswith("^")]
            del node.input[:]
            node.input.extend(data)
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.graph_util.import_graph_def(gd, name="")
        get = self.graph.get_tensor_by_name
        self.args = [get(t.name) for t in fg.inputs]
        self.results = [get(t.name) for t in fg.outputs]
        # arg index -> numpy value, for the loop variables the body passes on
        # unchanged (the weights). A state that starts from a constant (Keras'
        # zero h/c once a fixed batch size folds their Fill) changes every step:
        # it is no invariant, whatever its first value.
        self.const_args = {k: v for k, v in const_args.items()
                           if source(self.results[k]) is self.args[k]}
        known = {self.args[k].ref() for k in self.const_args}
        self._invariant = {}
        for op in self.graph.get_operations():      # import order is topological
            if op.type == "Placeholder":
                inv = all(t.ref() in known for t in op.outputs)
            else:
                inv = all(self._invariant.get(t.op.name, False) for t in op.inputs)
            self._invariant[op.name] = inv

    def invariant(self, tensor):
        return self._invariant.get(tensor.op.name, False)

    def value(self, tensor):
        """The value of an invariant tensor (weights through Split/Squeeze/...)."""
        feeds = {self.args[k]: v for k, v in self.const_args.items()}
        with tf.compat.v1.Session(graph=self.graph) as sess:
            return np.asarray(sess.run(tensor, feeds), np.float32)

    def arg_index(self, tensor):
        tensor = source(tensor)
        for k, a in enumerate(self.args):
            if a is tensor:
                return k
        return None


def source(tensor):
    """The tensor behind Identity-like forwarding."""
    while tensor.op.type in _FORWARD and tensor.op.inputs:
        tensor = tensor.op.inputs[0]
    return tensor


def analyse_body(fdef, const_args, arg_dtypes):
    """Read a Keras LSTM/GRU cell out of a While body, or raise RNNLoopRefused.

    ``const_args``: loop-variable index -> the constant value it starts with
    (weights enter the loop as invariant variables); ``arg_dtypes``: tf dtypes.
    """
    body = _Body(fdef, const_args)
    ops = body.graph.get_operations()
    foreign = sorted({op.type for op in ops if op.type not in _BODY_OPS and op.type != "Placeholder"})
    if foreign:
        raise RNNLoopRefused(f"body computes with {', '.join(foreign)}; a Keras LSTM/GRU body "
                             "has only matmuls, adds, muls, sigmoid and tanh")
    gets = [op for op in ops if op.type == "TensorListGetItem"]
    sets = [op for op in ops if op.type == "TensorListSetItem"]
    if len(gets) != 1 or len(sets) != 1:
        raise RNNLoopRefused(f"body reads {len(gets)} and writes {len(sets)} list elements per "
                             "step; a Keras RNN reads one input step and writes one output")
    get, put = gets[0], sets[0]
    roles = {"inputs": body.arg_index(get.inputs[0]), "time": body.arg_index(get.inputs[1]),
             "outputs": body.arg_index(put.inputs[0])}
    if None in roles.values() or source(body.results[roles["outputs"]]) is not put.outputs[0]:
        raise RNNLoopRefused("the lists read and written are not loop variables carried "
                             "from step to step")
    index = source(put.inputs[1])
    if index is source(get.inputs[1]):
        last_only = False
    elif index.op.type == "Const" and int(body.value(index)) == 0:
        last_only = True
    else:
        raise RNNLoopRefused("the output is written at neither the time index nor 0")
    y = source(put.inputs[2])
    x_t = get.outputs[0]
    states = [k for k, r in enumerate(body.results)
              if arg_dtypes[k].is_floating and source(r) is not body.args[k]]
    h = [k for k in states if source(body.results[k]) is y]
    if len(h) != 1:
        raise RNNLoopRefused("no state variable carries the step's output (Keras' h)")
    roles["h"] = h[0]
    others = [k for k in states if k != h[0]]
    if others:
        roles["c"] = others[0]

    w, r, x_mm, h_mm = _matmuls(body, ops, x_t, body.args[roles["h"]])
    units = r.shape[0]
    gates = r.shape[1] // units
    kind = _CELLS.get((gates, len(states)))
    if kind is None or r.shape[1] != gates * units or w.shape[1] != r.shape[1]:
        raise RNNLoopRefused(f"kernel {w.shape} and recurrent kernel {r.shape} with "
                             f"{len(states)} state(s) are neither an LSTM (4 gates, h and c) "
                             "nor a GRU (3 gates, h)")
    wb, x_end = _bias_chain(body, x_mm.outputs[0], gates * units)
    rb, h_end = _bias_chain(body, h_mm.outputs[0], gates * units)
    # Keras 3 with batch_size=1 adds the two as BiasAdd(x W, Squeeze(h R)): a
    # (1, G*H) operand squeezed to a "bias" of the other, the same sum at batch 1
    h_side = _squeezed(h_end)
    merged = [op for t in _squeezed(x_end) for op in t.consumers()
              if op.type in _ADD_OPS and any(u is v for u in op.inputs for v in h_side)]
    if merged:      # LSTM: x W + h R, then the bias
        extra, _ = _bias_chain(body, merged[0].outputs[0], gates * units)
        wb = wb + extra
    params = {"W": np.ascontiguousarray(w.T), "R": np.ascontiguousarray(r.T),
              "Wb": wb.astype(np.float32), "Rb": rb.astype(np.float32)}
    return Cell(kind, int(units), int(w.shape[0]), params, roles, last_only)


def _matmuls(body, ops, x_t, h):
    """(kernel (E, G*H), recurrent kernel (H, G*H), x matmul op, h matmul op)."""
    found = {"x": [], "h": []}
    for op in (o for o in ops if o.type == "MatMul"):
        a, b = op.inputs[0], op.inputs[1]
        which = {x_t.ref(): "x", h.ref(): "h"}.get(source(a).ref())
        if which is None or op.get_attr("transpose_a") or not body.invariant(b):
            raise RNNLoopRefused(f"matmul {op.name} does not multiply the input step or h by "
                                 "a constant kernel (a reset_after=False GRU, or another cell)")
        k = body.value(b)
        found[which].append((k.T if op.get_attr("transpose_b") else k, op))
    if len(found["x"]) != 1 or len(found["h"]) != 1:
        raise RNNLoopRefused(f"{len(found['x'])} input and {len(found['h'])} recurrent matmuls; "
                             "a Keras cell has one of each (all gates fused)")
    (w, x_mm), (r, h_mm) = found["x"][0], found["h"][0]
    return w, r, x_mm, h_mm


def _squeezed(tensor):
    """``tensor`` and what Squeeze/Reshape make of it when each is its one reader."""
    out = [tensor]
    while len(tensor.consumers()) == 1 and tensor.consumers()[0].type in ("Squeeze", "Reshape") \
            and tensor.consumers()[0].inputs[0] is tensor:
        tensor = tensor.consumers()[0].outputs[0]
        out.append(tensor)
    return out


def _bias_chain(body, tensor, width):
    """Sum of the constants added to ``tensor`` on its way on (Add/BiasAdd with an
    invariant operand), and the tensor where the chain ends."""
    total = np.zeros(width, np.float32)
    while True:
        cons = tensor.consumers()
        if len(cons) != 1 or cons[0].type not in _ADD_OPS:
            return total, tensor
        op = cons[0]
        other = op.inputs[1] if op.inputs[0] is tensor else op.inputs[0]
        if not body.invariant(other):
            return total, tensor
        total = total + np.broadcast_to(body.value(other), (width,))
        tensor = op.outputs[0]


def reference(cell, x, input_perm, reverse_input):
    """The cell's outputs on ``x`` (laid out as the region's input), NumPy:
    y (N, T, H) in processing order, h_T (N, H), c_T (N, H) or None."""
    t_ax, n_ax, e_ax = input_perm
    x = np.transpose(x, (n_ax, t_ax, e_ax))
    if reverse_input:
        x = K.reverse_sequences(x)
    y, h_t, c_t = K.rnn(x, [cell.params], cell.kind, 1, cell.units)
    return y, h_t[:, 0], None if c_t is None else c_t[:, 0]
