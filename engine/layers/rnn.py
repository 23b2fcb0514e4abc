"""TensorRT's IRNNv2Layer: stacked, optionally bidirectional RNN / LSTM / GRU.

Inputs:  0 x (N, T, E) with T <= max_seq_length; optional 1 hidden_state and
         2 cell_state (LSTM only), both (N, L*dirs, H); 3 seq_lengths INT32 (N,).
Outputs: 0 y (N, T, H*dirs); 1 final hidden (N, L*dirs, H); 2 final cell (LSTM).
(N may be several leading dims, as in TensorRT.)

Gate weights are set per sub-layer index (2*layer + dir when bidirectional, as
in TensorRT), gate and kind (W: input weights (H, E) for layer 0 and
(H, H*dirs) above it; R: recurrent weights (H, H)), and kept in two ArrayDict
attributes keyed "L{index}.{GATE}.{W|R}" so plans carry them generically.
Unset biases are zero; unset weights are an error when the layer runs.
The gate equations are in kernels/rnn.py.

Extension (not in TensorRT): ``reverse_input`` and ``reverse_output`` flip the
time axis of x before the layer and of y after it, each sequence within its
own length when seq_lengths is set (tf.reverse_sequence). Keras' go_backwards
is ``reverse_input``: y then comes in processing order, y[0] computed from the
last input. A Keras Bidirectional flips its backward half back, which is both
flags. TensorRT has no layer that reverses a dynamic dim, so the flips live here.
"""
import re

import numpy as np

from kernels import rnn as K
from kernels.xp import array_module

from ..errors import BuildError, ExecutionError
from ..kernel_table import numpy_impl
from ..types import (DataType, LayerType, RNNDirection, RNNGateType, RNNInputMode,
                     RNNOperation)
from .base import ArrayDict, Bool, EnumAttr, Int, Layer, Weights

_FLOATS = (DataType.FLOAT, DataType.HALF)
_KEY = re.compile(r"^L(\d+)\.([A-Z]+)\.([WR])$")


def _same_dims(a, b):
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b))


class _GateTable(ArrayDict):
    """str -> float array; keys and shapes are checked by the layer's infer,
    which knows the operation and the input size."""

    def normalise(self, layer, value):
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            self.fail(layer, type(value).__name__, 'a dict "L{index}.{GATE}.{W|R}" -> array')
        out = {}
        for key, a in value.items():
            a = a.array if isinstance(a, Weights) else a
            a = np.asarray(a)
            if a.dtype == np.float64:
                a = a.astype(np.float32)
            if a.dtype not in (np.float32, np.float16):
                self.fail(layer, f"{key}: an array of {a.dtype}", "float32 or float16 arrays")
            out[key] = np.ascontiguousarray(a)
        return out


class RNNv2Layer(Layer):
    layer_type = LayerType.RNN_V2
    min_inputs, max_inputs, optional_inputs = 1, 4, (1, 2, 3)
    num_layers = Int(1, minimum=1)
    hidden_size = Int(1, minimum=1)
    max_seq_length = Int(1, minimum=1)
    op = EnumAttr(RNNOperation, RNNOperation.LSTM)
    direction = EnumAttr(RNNDirection, RNNDirection.UNIDIRECTION)
    input_mode = EnumAttr(RNNInputMode, RNNInputMode.LINEAR)
    reverse_input = Bool(False)
    reverse_output = Bool(False)
    weights = _GateTable({})
    biases = _GateTable({})

    # -- TensorRT surface --------------------------------------------------------
    @property
    def num_directions(self):
        return 2 if self.direction == RNNDirection.BIDIRECTION else 1

    @property
    def gates(self):
        """The gates of the current operation, in the order the kernel stacks them."""
        return tuple(RNNGateType[g] for g in K.GATES[self.op.name])

    @property
    def data_length(self):
        """The input size E (TensorRT's ``data_length``); -1 while dynamic."""
        return self._inputs[0].shape[-1]

    # the optional inputs, as TensorRT's properties
    hidden_state = property(lambda self: self._optional(1), lambda self, t: self.set_input(1, t))
    cell_state = property(lambda self: self._optional(2), lambda self, t: self.set_input(2, t))
    seq_lengths = property(lambda self: self._optional(3), lambda self, t: self.set_input(3, t))

    def _optional(self, i):
        return self._inputs[i] if i < len(self._inputs) else None

    def _key(self, layer_index, gate, is_w):
        count = self.num_layers * self.num_directions
        if isinstance(layer_index, bool) or not isinstance(layer_index, (int, np.integer)) \
                or not 0 <= layer_index < count:
            self.fail("layer_index", repr(layer_index),
                      f"an int in [0, {count}) (num_layers x directions; 2*layer + dir when "
                      "bidirectional)")
        if not isinstance(gate, RNNGateType) or gate not in self.gates:
            self.fail("gate", repr(gate), f"a gate of {self.op.name}: "
                      + ", ".join(g.name for g in self.gates))
        if not isinstance(is_w, (bool, np.bool_)):
            self.fail("is_w", repr(is_w), "True (input weights W) or False (recurrent R)")
        return f"L{int(layer_index)}.{gate.name}.{'W' if is_w else 'R'}"

    def set_weights_for_gate(self, layer_index, gate, is_w, weights):
        """W is (H, E) on layer 0 and (H, H*dirs) above; R is (H, H). A flat
        array (TensorRT's Weights) is taken as row-major with H rows."""
        key = self._key(layer_index, gate, is_w)
        a = weights.array if isinstance(weights, Weights) else np.asarray(weights)
        if a.ndim == 1 and a.size % self.hidden_size == 0:
            a = a.reshape(self.hidden_size, -1)
        self.weights = {**self.weights, key: a}

    def get_weights_for_gate(self, layer_index, gate, is_w):
        return self.weights.get(self._key(layer_index, gate, is_w))

    def set_bias_for_gate(self, layer_index, gate, is_w, bias):
        """The bias (H,) added with W (is_w) or with R; unset biases are zero."""
        key = self._key(layer_index, gate, is_w)
        self.biases = {**self.biases, key: np.asarray(bias.array if isinstance(bias, Weights)
                                                      else bias)}

    def get_bias_for_gate(self, layer_index, gate, is_w):
        return self.biases.get(self._key(layer_index, gate, is_w))

    # -- shape rule ---------------------------------------------------------------
    def _check_tables(self, in_size):
        """Every stored key names a valid sub-layer/gate; every array has its shape."""
        h, dirs = self.hidden_size, self.num_directions
        count = self.num_layers * dirs
        names = {g.name for g in self.gates}
        for attr, table in (("weights", self.weights), ("biases", self.biases)):
            for key, a in table.items():
                m = _KEY.match(key)
                if not m or int(m.group(1)) >= count or m.group(2) not in names:
                    self.fail(attr, repr(key), f'keys "L{{index}}.{{GATE}}.{{W|R}}" with index < '
                              f"{count} and a gate of {self.op.name}: {', '.join(sorted(names))}")
                index, is_w = int(m.group(1)), m.group(3) == "W"
                if attr == "biases":
                    expected = (h,)
                elif not is_w:
                    expected = (h, h)
                elif index < dirs and self.input_mode == RNNInputMode.SKIP:
                    self.fail(attr, f"W weights for {key}", "no layer-0 W weights in SKIP input "
                              "mode (the input enters every gate unchanged)")
                else:
                    expected = (h, in_size if index < dirs else h * dirs)
                if not _same_dims(a.shape, expected):
                    self.fail(attr, f"{key} of shape {a.shape}", f"shape {expected}")

    def infer(self, in_shapes, in_dtypes):
        x, dtype = in_shapes[0], in_dtypes[0]
        if dtype not in _FLOATS:
            self.fail("input", f"a {dtype.name} tensor", "a FLOAT or HALF tensor")
        if len(x) < 3:
            self.fail("input", f"shape {x}", "rank >= 3: (N, seq, input_size)")
        batch, steps, in_size = tuple(x[:-2]), x[-2], x[-1]
        if steps > self.max_seq_length:
            self.fail("input", f"{steps} time steps (shape {x})",
                      f"at most max_seq_length = {self.max_seq_length}")
        h, dirs = self.hidden_size, self.num_directions
        if self.input_mode == RNNInputMode.SKIP and in_size not in (-1, h):
            self.fail("input_mode", f"SKIP with input size {in_size}",
                      f"input size == hidden_size ({h}) in SKIP mode, or LINEAR")
        self._check_tables(in_size)
        state = batch + (self.num_layers * dirs, h)
        lstm = self.op == RNNOperation.LSTM
        for i, name in ((1, "hidden_state"), (2, "cell_state")):
            if i < len(in_shapes) and in_shapes[i] is not None:
                if i == 2 and not lstm:
                    self.fail(name, "a tensor", f"none: only LSTM has a cell state (op is {self.op.name})")
                if in_dtypes[i] not in _FLOATS:
                    self.fail(name, f"a {in_dtypes[i].name} tensor", "a FLOAT or HALF tensor")
                if not _same_dims(in_shapes[i], state):
                    self.fail(name, f"shape {in_shapes[i]}", f"shape {state} (N, layers*dirs, hidden)")
        if len(in_shapes) > 3 and in_shapes[3] is not None:
            if in_dtypes[3] != DataType.INT32:
                self.fail("seq_lengths", f"a {in_dtypes[3].name} tensor", "an INT32 tensor")
            if not _same_dims(in_shapes[3], batch):
                self.fail("seq_lengths", f"shape {in_shapes[3]}", f"shape {batch} (one per sequence)")
        results = [(batch + (steps, h * dirs), dtype), (state, dtype)]
        if lstm:
            results.append((state, dtype))
        if self._outputs and len(self._outputs) != len(results):
            self.fail("op", f"{self.op.name} ({len(results)} outputs)",
                      f"an operation with this layer's {len(self._outputs)} outputs "
                      "(LSTM has 3, the others 2); add a new layer instead")
        return results

    # -- execution ----------------------------------------------------------------
    def missing_weights(self):
        """The weight keys the layer still needs, e.g. ["L0.INPUT.W"]."""
        dirs = self.num_directions
        need = []
        for index in range(self.num_layers * dirs):
            for gate in self.gates:
                for kind in ("W", "R"):
                    if kind == "W" and index < dirs and self.input_mode == RNNInputMode.SKIP:
                        continue
                    key = f"L{index}.{gate.name}.{kind}"
                    if key not in self.weights:
                        need.append(key)
        return need

    def check_complete(self):
        """Raise BuildError naming the first unset weights (builder and runtime call this)."""
        need = self.missing_weights()
        if need:
            index, gate, kind = need[0].split(".")
            raise BuildError(
                f"{self.describe()}: no {kind} weights for sub-layer {index[1:]} gate {gate} "
                f"({len(need)} missing: {', '.join(need[:6])}{' ...' if len(need) > 6 else ''}); "
                f"set them with set_weights_for_gate({index[1:]}, RNNGateType.{gate}, "
                f"{kind == 'W'}, weights)")

    def kernel_params(self):
        """Per sub-layer dicts of gate-stacked W, R, Wb, Rb for kernels.rnn.rnn."""
        self.check_complete()
        h = self.hidden_size
        xp = array_module(*self.weights.values())      # device arrays on a device clone
        zero = xp.zeros(h, np.float32)
        params = []
        for index in range(self.num_layers * self.num_directions):
            p = {}
            for kind in ("W", "R"):
                keys = [f"L{index}.{g.name}.{kind}" for g in self.gates]
                p[kind] = (xp.concatenate([self.weights[k] for k in keys]).astype(np.float32)
                           if keys[0] in self.weights else None)
                p[kind + "b"] = xp.concatenate([xp.asarray(self.biases.get(k, zero)) for k in keys]
                                               ).astype(np.float32)
            params.append(p)
        return params


@numpy_impl(LayerType.RNN_V2)
def _rnn_v2(layer, inputs):
    inputs = list(inputs) + [None] * (4 - len(inputs))
    x, h0, c0, lengths = inputs
    batch, steps = x.shape[:-2], x.shape[-2]
    n = int(np.prod(batch))
    if lengths is not None:
        lengths = lengths.reshape(n)
        if lengths.size and (lengths.min() < 0 or lengths.max() > steps):
            raise ExecutionError(f"{layer.describe()}: seq_lengths range over "
                                 f"[{lengths.min()}, {lengths.max()}]; expected values in "
                                 f"[0, {steps}] (the input's time steps)")
    states = (n, layer.num_layers * layer.num_directions, layer.hidden_size)
    x = x.reshape(n, steps, -1)
    if layer.reverse_input:
        x = K.reverse_sequences(x, lengths)
    y, h_t, c_t = K.rnn(x, layer.kernel_params(), layer.op.name,
                        layer.num_layers, layer.hidden_size,
                        layer.direction == RNNDirection.BIDIRECTION,
                        None if h0 is None else h0.reshape(states),
                        None if c0 is None else c0.reshape(states), lengths)
    if layer.reverse_output:
        y = K.reverse_sequences(y, lengths)
    outs = [y.reshape(batch + y.shape[1:]), h_t.reshape(batch + states[1:])]
    if c_t is not None:
        outs.append(c_t.reshape(batch + states[1:]))
    return outs

