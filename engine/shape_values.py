"""What the network statically knows of its shape tensors' values.

A shape tensor (TensorRT's term) is a small INT32 tensor holding dims: a Shape
layer's output and the integer math after it (Gather, Concatenation, Slice,
Reduce, ElementWise...). Shape rules that read one (a Shuffle's reshape dims,
a Slice's size) need its values, so every layer's outputs get them here, as
far as they are known, each time shapes are inferred:

    Shape of (-1, -1, 32)       ->  (None, None, 32)
    Gather [2]                  ->  (32,)
    Concatenation with (-1,)    ->  (None, None, 32, -1)     (-1 here is a value)

``None`` marks a value known only at run time; a layer with an input the
network tracks no values for (a data tensor) has none tracked either. Once a build fixes the input
shapes every value is known and engine/passes/shape_tensors.py turns the
shape tensors into constants and the dynamic reshapes into static ones.

Rules: a Shape layer reads its input's dims; a Constant its weights; any
other layer runs its NumPy kernel on the known values (shape tensors are a
handful of ints, so this is as cheap as a rule per layer would be). Layers
that only move values (concatenation, slices, gathers, reshapes) also move
the "known" marks through the same kernel; elementwise layers combine them;
anything else needs every input value known.
"""
import numpy as np

from .kernel_table import numpy_kernel
from .types import DataType, LayerType

MAX_VALUES = 64         # a shape tensor is a few dims; larger INT32 tensors are data
_MOVE = {LayerType.CONCATENATION, LayerType.SLICE, LayerType.GATHER, LayerType.SHUFFLE,
         LayerType.SQUEEZE, LayerType.UNSQUEEZE, LayerType.IDENTITY, LayerType.FLATTEN}
# the inputs of a moving layer that carry the values moved (others are indices, dims)
_DATA_INPUTS = {LayerType.CONCATENATION: None, LayerType.GATHER: (0,)}


def get(tensor):
    """The known values of ``tensor`` as a flat tuple (ints, None where unknown),
    or None when the network tracks no values for it."""
    entry = getattr(tensor, "_value", None)
    if entry is None:
        return None
    vals, known = entry
    return tuple(int(v) if k else None for v, k in zip(vals.reshape(-1), known.reshape(-1)))


def is_known(tensor):
    """True when every value of ``tensor`` is known."""
    entry = getattr(tensor, "_value", None)
    return entry is not None and bool(entry[1].all())


def array(tensor):
    """The values of a fully known shape tensor, as an int32 array of its shape."""
    vals, _ = tensor._value
    return vals.astype(np.int32)


def _tracked(t):
    shape = t._shape
    return (t._dtype == DataType.INT32 and shape is not None and len(shape) <= 1
            and -1 not in shape and int(np.prod(shape)) <= MAX_VALUES)


def propagate(layer):
    """Set ``_value`` on each output of ``layer`` (shapes must be inferred)."""
    for t in layer._outputs:
        t._value = None
    if len(layer._outputs) != 1 or not _tracked(layer._outputs[0]):
        return
    out = layer._outputs[0]
    try:
        entry = _evaluate(layer, out)
    except Exception:        # noqa: BLE001 - a value we cannot compute is simply unknown
        entry = None
    if entry is None:        # tracked, known only at run time
        entry = (np.zeros(out._shape, np.int64), np.zeros(out._shape, bool))
    vals, known = (np.asarray(a).reshape(out._shape) for a in entry)
    out._value = (vals.astype(np.int64), known.astype(bool))


def _evaluate(layer, out):
    lt = layer.layer_type
    if lt == LayerType.SHAPE:
        dims = np.asarray(layer._inputs[0]._shape, dtype=np.int64)
        return np.maximum(dims, 0), dims >= 0
    if lt == LayerType.CONSTANT:
        w = np.asarray(layer.weights).reshape(out._shape)
        return w, np.ones(w.shape, bool)
    entries = [None if t is None else getattr(t, "_value", None) for t in layer._inputs]
    if any(t is not None and e is None for t, e in zip(layer._inputs, entries)):
        return None          # an input the network tracks no values for (data)
    if all(e is None or not e[1].any() for e in entries):
        return None          # nothing known in: nothing known out (and no kernel run)
    kernel = numpy_kernel(layer)
    values = [None if e is None else e[0].astype(np.int32) for e in entries]
    with np.errstate(all="ignore"):
        vals = np.asarray(kernel(layer, values)[0])
    if all(e is None or e[1].all() for e in entries):
        return vals, np.ones(vals.shape, bool)
    if lt in _MOVE:
        data = _DATA_INPUTS.get(lt, (0,))
        marks = [None if e is None else
                 (e[1] if data is None or i in data else
                  (e[0].astype(np.int32) if e[1].all() else None))
                 for i, e in enumerate(entries)]
        if any(m is None and e is not None for m, e in zip(marks, entries)):
            return None      # an index or dims input not known: nothing is
        return vals, np.asarray(kernel(layer, marks)[0]).astype(bool)
    if lt == LayerType.ELEMENTWISE:
        a, b = (e[1] for e in entries)
        return vals, np.broadcast_to(a & b, vals.shape)
    return None
