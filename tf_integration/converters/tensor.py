"""Shape and data-movement ops: reshape, transpose, concat, slices, pads, gathers, resizes."""
import numpy as np
import tensorflow as tf

import engine as rt
from engine import shape_values

from ..context import NCHW, Value, identity, perm_after_removing, tf_to_engine_dtype
from ..errors import ConversionError
from ..graph_utils import get_attr, tensor_name
from ..registry import ENGINE_TYPES, Reason, converter
from .math import const_input, elementwise

ANY = None     # dtypes=None: the op moves data of any engine type


# ---------------------------------------------------------------------------- pass-through

@converter("Identity", "Snapshot", "StopGradient", "PreventGradient", dtypes=ENGINE_TYPES)
def convert_identity(ctx, node):
    return [ctx.input(node, 0)]


@converter("IdentityN", dtypes=ANY)
def convert_identity_n(ctx, node):
    n = len([i for i in node.input if not i.startswith("^")])
    return [ctx.input(node, i) for i in range(n)]


def _validate_const(node, graph):
    """engine dtypes only"""
    dt = get_attr(node, "dtype")
    if dt not in ENGINE_TYPES + (tf.int64, tf.float64):
        return Reason(Reason.ATTRIBUTE, f"constant of dtype {dt.name}")
    return None


@converter("Const", validator=_validate_const, dtypes=ANY)
def convert_const(ctx, node):
    return [Value(const=tf.make_ndarray(node.attr["value"].tensor))]


def _validate_shape(node, graph):
    """int32 shapes (static ones fold to constants, others become shape tensors)"""
    if graph.shape(node.input[0]).is_fully_defined():
        return None
    out_t = get_attr(node, "out_type", tf.int32)
    if out_t != tf.int32:
        return Reason(Reason.ATTRIBUTE, f"Shape with out_type {out_t.name} of a tensor with "
                                        f"dynamic dims {graph.shape(node.input[0])}; the engine's "
                                        "shape tensors are int32")
    return None


def shape_of(ctx, x):
    """TF-order shape of ``x``: a constant where static, else an engine shape tensor
    (IShapeLayer), reordered from the engine layout by a gather (no data transpose)."""
    dims = x.tf_shape()
    if x.is_const or -1 not in dims:
        return Value(const=np.array(dims, dtype=np.int32))
    layer = ctx.network.add_shape(x.tensor)
    ctx.name(layer, "shape")
    t = layer.get_output(0)
    if x.perm != identity(x.rank):
        order = np.array([x.perm.index(d) for d in range(x.rank)], np.int32)
        layer = ctx.network.add_gather(t, ctx.constant(order), 0)
        ctx.name(layer, "shape_tf_order")
        t = layer.get_output(0)
    return Value(t)


@converter("Shape", validator=_validate_shape, dtypes=ANY)
def convert_shape(ctx, node):
    out_t = get_attr(node, "out_type", tf.int32)
    v = shape_of(ctx, ctx.input(node, 0))
    if v.is_const:
        return [Value(const=v.const.astype(out_t.as_numpy_dtype))]
    return [v]


def _validate_cast(node, graph):
    """source and destination are engine dtypes"""
    for key in ("SrcT", "DstT"):
        if get_attr(node, key) not in ENGINE_TYPES:
            return Reason(Reason.ATTRIBUTE, f"{key}={get_attr(node, key).name}; supported: "
                          + ", ".join(d.name for d in ENGINE_TYPES))
    return None


@converter("Cast", validator=_validate_cast, dtypes=ANY)
def convert_cast(ctx, node):
    x = ctx.input(node, 0)
    dst = get_attr(node, "DstT")
    if x.is_const:
        return [Value(const=x.const.astype(dst.as_numpy_dtype))]
    layer = ctx.network.add_cast(ctx.tensor(x, x.perm), tf_to_engine_dtype(dst))
    ctx.name(layer)
    return [Value(layer.get_output(0), perm=x.perm)]


# ---------------------------------------------------------------------------- reshapes

def _validate_reshape(node, graph):
    """target shape constant, or a computed int32 vector of static length (a shape tensor)"""
    if graph.is_const(node.input[1]):
        if 0 in np.ravel(graph.const_value(node.input[1])):
            return Reason(Reason.ATTRIBUTE, "target shape has a zero-sized dim")
        return None
    if graph.dtype(node.input[1]) != tf.int32:
        return Reason(Reason.ATTRIBUTE, f"computed target shape of dtype "
                                        f"{graph.dtype(node.input[1]).name}; expected int32")
    shape = graph.shape(node.input[1])
    if shape.rank != 1 or not shape.is_fully_defined():
        return Reason(Reason.ATTRIBUTE, f"computed target shape {shape}; expected a vector of "
                                        "static length")
    return None


def reshape(ctx, x, dims):
    """Row-major reshape in TF order: the only place NCHW must go back to NHWC."""
    if x.is_const:
        return Value(const=x.const.reshape(dims))
    layer = ctx.network.add_shuffle(ctx.tensor(x))
    layer.reshape_dims = tuple(int(d) for d in dims)
    ctx.name(layer, "reshape")
    return Value(layer.get_output(0))


def reshape_to(ctx, x, target, out_shape=None):
    """Reshape ``x`` to a computed target (a shape tensor Value), TensorRT's way: as
    static dims where the network knows the values (one unknown becomes -1), else
    through the shuffle's shape-tensor input, read at run time. ``out_shape``: the
    output dims TensorFlow's shape inference knows (None where unknown); they are what
    the target holds there (or what its -1 becomes)."""
    known = shape_values.get(target.tensor)
    if out_shape is not None and (known is None or len(known) == len(out_shape)):
        # a 0 is left to the target: a static reshape would read it as 'copy the dim'
        known = tuple(o if o is not None and o > 0 else k
                      for o, k in zip(out_shape, known or (None,) * len(out_shape)))
    if known is not None and None not in known:
        return reshape(ctx, x, known)
    if known is not None and known.count(None) == 1 and -1 not in known:
        return reshape(ctx, x, [-1 if d is None else d for d in known])
    layer = ctx.network.add_shuffle(ctx.tensor(x))
    layer.zero_is_placeholder = False       # TF: 0 is an empty dim, not "copy"
    layer.set_input(1, target.tensor)
    ctx.name(layer, "reshape_dynamic")
    return Value(layer.get_output(0))


@converter("Reshape", validator=_validate_reshape, dtypes=ANY)
def convert_reshape(ctx, node):
    x, target = ctx.input(node, 0), ctx.input(node, 1)
    if not target.is_const:
        # TF's static output shape: in a segment GraphDef it includes what the whole
        # graph knows of a target computed outside the segment (segment_graph_def)
        shape = ctx.graph.shape(tensor_name(node.name))
        return [reshape_to(ctx, x, target, None if shape.rank is None else shape.as_list())]
    dims = [int(d) for d in np.ravel(target.const)]
    shape = x.tf_shape()
    if -1 not in dims and shape[0] == -1 and len(dims) >= 1 and dims[0] != shape[0]:
        # a frozen batch size in the target: keep the batch dynamic, infer it
        dims[0] = -1
    return [reshape(ctx, x, dims)]


@converter("Squeeze", dtypes=ANY)
def convert_squeeze(ctx, node):
    x = ctx.input(node, 0)
    shape = x.tf_shape()
    axes = get_attr(node, "squeeze_dims", []) or [i for i, d in enumerate(shape) if d == 1]
    axes = sorted({a % x.rank for a in axes})
    if x.is_const:
        return [Value(const=np.squeeze(x.const, tuple(axes)))]
    layer = ctx.network.add_squeeze(ctx.tensor(x, x.perm),
                                    tuple(sorted(x.tf_axis_to_engine(a) for a in axes)))
    ctx.name(layer)
    return [Value(layer.get_output(0), perm=perm_after_removing(x.perm, axes))]


@converter("ExpandDims", validator=const_input(1, "axis"), dtypes=ANY)
def convert_expand_dims(ctx, node):
    x = ctx.input(node, 0)
    axis = int(np.ravel(ctx.const(node, 1, "axis"))[0])
    axis = axis % (x.rank + 1)
    if x.is_const:
        return [Value(const=np.expand_dims(x.const, axis))]
    layer = ctx.network.add_unsqueeze(ctx.tensor(x), (axis,))
    ctx.name(layer)
    return [Value(layer.get_output(0))]


@converter("Transpose", validator=const_input(1, "perm"), dtypes=ANY)
def convert_transpose(ctx, node):
    # No layer: output TF axis j is input TF axis tp[j], so the engine tensor is
    # unchanged and only its recorded layout moves.
    x = ctx.input(node, 0)
    tp = [int(p) for p in np.ravel(ctx.const(node, 1, "perm"))]
    if x.is_const:
        return [Value(const=np.transpose(x.const, tp))]
    return [Value(x.tensor, perm=tuple(tp.index(p) for p in x.perm))]


# ---------------------------------------------------------------------------- concat / stack

def concat(ctx, values, axis):
    if all(v.is_const for v in values):
        return Value(const=np.concatenate([v.const for v in values], axis))
    rank, perm = ctx.common_layout(values)
    layer = ctx.network.add_concatenation([ctx.tensor(v, perm) for v in values],
                                          axis=perm.index(axis % rank))
    ctx.name(layer, "concat")
    return Value(layer.get_output(0), perm=perm)


@converter("ConcatV2", validator=lambda n, g: const_input(get_attr(n, "N"), "axis")(n, g),
           dtypes=ANY)
def convert_concat(ctx, node):
    n = get_attr(node, "N")
    axis = int(ctx.const(node, n, "axis"))
    return [concat(ctx, [ctx.input(node, i) for i in range(n)], axis)]


@converter("Pack", dtypes=ANY)
def convert_pack(ctx, node):
    n, axis = get_attr(node, "N"), get_attr(node, "axis", 0)
    values = [ctx.input(node, i) for i in range(n)]
    axis = axis % (values[0].rank + 1)
    if all(v.is_const for v in values):
        return [Value(const=np.stack([v.const for v in values], axis))]
    parts = []
    for v in values:
        layer = ctx.network.add_unsqueeze(ctx.tensor(v), (axis,))
        ctx.name(layer, "unsqueeze")
        parts.append(Value(layer.get_output(0)))
    return [concat(ctx, parts, axis)]


# ---------------------------------------------------------------------------- slices

def slice_(ctx, x, start, size, stride):
    """A slice in TF order on ``x`` kept in its layout. size -1: the whole (dynamic) dim."""
    if x.is_const:
        idx = tuple(slice(b, None if n == -1 else b + n * st, st) if st > 0 else
                    slice(b, None if b + n * st < 0 else b + n * st, st)
                    for b, n, st in zip(start, size, stride))
        return Value(const=np.ascontiguousarray(x.const[idx]))
    p = x.perm
    layer = ctx.network.add_slice(ctx.tensor(x, p), tuple(start[d] for d in p),
                                  tuple(size[d] for d in p), tuple(stride[d] for d in p))
    ctx.name(layer, "slice")
    return Value(layer.get_output(0), perm=p)


def _validate_slice(node, graph):
    """constant begin and size; -1 sizes only on static dims or whole dims"""
    for i in (1, 2):
        if not graph.is_const(node.input[i]):
            return Reason(Reason.ATTRIBUTE, f"slice {'begin' if i == 1 else 'size'} "
                                            "is not a constant")
    return None


@converter("Slice", validator=_validate_slice, dtypes=ANY)
def convert_slice(ctx, node):
    x = ctx.input(node, 0)
    begin = [int(b) for b in np.ravel(ctx.const(node, 1, "begin"))]
    size = [int(s) for s in np.ravel(ctx.const(node, 2, "size"))]
    shape = x.tf_shape()
    for d in range(x.rank):
        if size[d] == -1 and shape[d] != -1:
            size[d] = shape[d] - begin[d]
        elif size[d] == -1 and begin[d] != 0:
            raise ConversionError(f"Slice {node.name!r}: dim {d} is dynamic and begins at "
                                  f"{begin[d]}; expected 0 or a static dim")
    return [slice_(ctx, x, begin, size, [1] * x.rank)]


def _validate_strided_slice(node, graph):
    """constant begin/end/strides; sliced dims static"""
    for i, what in ((1, "begin"), (2, "end"), (3, "strides")):
        if not graph.is_const(node.input[i]):
            return Reason(Reason.ATTRIBUTE, f"strided slice {what} is not a constant")
    return None


def strided_slice_plan(shape, begin, end, strides, masks):
    """Resolve TF's StridedSlice masks into per-dim (start, size, stride) on the
    input, plus the new axes and shrunk axes of the output (TF semantics)."""
    begin_m, end_m, ell_m, new_m, shrink_m = masks
    # expand the ellipsis into the dims it stands for
    spec = []
    n_real = sum(1 for i in range(len(begin)) if not (new_m >> i & 1) and not (ell_m >> i & 1))
    for i in range(len(begin)):
        if ell_m >> i & 1:
            spec.extend([("full",)] * (len(shape) - n_real))
        elif new_m >> i & 1:
            spec.append(("new",))
        else:
            spec.append(("dim", begin[i], end[i], strides[i], begin_m >> i & 1, end_m >> i & 1,
                         shrink_m >> i & 1))
    dims_used = sum(1 for s in spec if s[0] != "new")
    spec.extend([("full",)] * (len(shape) - dims_used))
    start, size, stride, shrink, new_axes = [], [], [], [], []
    d = out_axis = 0
    for s in spec:
        if s[0] == "new":
            new_axes.append(out_axis)
            out_axis += 1
            continue
        n = shape[d]
        if s[0] == "full":
            start.append(0), size.append(-1 if n == -1 else n), stride.append(1)
        else:
            _, b, e, st, bm, em, sh = s
            if sh:
                if n == -1 and b < 0:
                    raise ConversionError(f"negative index {b} into dynamic dim {d}")
                b = b + n if b < 0 else b
                start.append(b), size.append(1), stride.append(1)
                shrink.append(out_axis)
            elif bm and em and st == 1:
                start.append(0), size.append(-1 if n == -1 else n), stride.append(1)
            else:
                if n == -1:
                    raise ConversionError(f"strided slice of dynamic dim {d}; expected a static "
                                          "dim or a whole-dim slice")
                b, e, _ = slice(None if bm else b, None if em else e, st).indices(n)
                cnt = max(0, -(-(e - b) // st)) if st > 0 else max(0, -(-(b - e) // -st))
                start.append(b), size.append(cnt), stride.append(st)
        d += 1
        out_axis += 1
    return start, size, stride, shrink, new_axes


@converter("StridedSlice", validator=_validate_strided_slice, dtypes=ANY)
def convert_strided_slice(ctx, node):
    x = ctx.input(node, 0)
    vals = [[int(v) for v in np.ravel(ctx.const(node, i))] for i in (1, 2, 3)]
    masks = tuple(get_attr(node, k, 0) for k in ("begin_mask", "end_mask", "ellipsis_mask",
                                                  "new_axis_mask", "shrink_axis_mask"))
    start, size, stride, shrink, new_axes = strided_slice_plan(x.tf_shape(), *vals, masks)
    y = slice_(ctx, x, start, size, stride)
    # out_axis numbering counts new axes; shrink/new positions are in output numbering
    kept_axes = [a for a in range(len(start) + len(new_axes)) if a not in new_axes]
    shrink_in = [kept_axes.index(a) for a in shrink]
    if y.is_const:
        out = np.squeeze(y.const, tuple(shrink_in)) if shrink_in else y.const
        for a in new_axes:
            out = np.expand_dims(out, a - sum(1 for s in shrink if s < a))
        return [Value(const=out)]
    if shrink_in:
        layer = ctx.network.add_squeeze(y.tensor, tuple(sorted(y.tf_axis_to_engine(a)
                                                               for a in shrink_in)))
        ctx.name(layer, "shrink")
        y = Value(layer.get_output(0), perm=perm_after_removing(y.perm, shrink_in))
    if new_axes:
        pos = [a - sum(1 for s in shrink if s < a) for a in new_axes]
        layer = ctx.network.add_unsqueeze(ctx.tensor(y), tuple(pos))
        ctx.name(layer, "new_axis")
        y = Value(layer.get_output(0))
    return [y]


def _split_sizes(node, ctx):
    if node.op == "Split":
        axis, x = int(ctx.const(node, 0, "axis")), ctx.input(node, 1)
        n = get_attr(node, "num_split")
        total = x.tf_shape()[axis % x.rank]
        sizes = [total // n] * n
    else:
        x, axis = ctx.input(node, 0), int(ctx.const(node, 2, "axis"))
        sizes = [int(s) for s in np.ravel(ctx.const(node, 1, "size_splits"))]
        total = x.tf_shape()[axis % x.rank]
        if -1 in sizes:
            sizes[sizes.index(-1)] = total - (sum(sizes) + 1)
    return x, axis % x.rank, sizes


def _validate_split(node, graph):
    """constant axis and sizes; the split dim static"""
    data, axis_in = (1, 0) if node.op == "Split" else (0, 2)
    if not graph.is_const(node.input[axis_in]):
        return Reason(Reason.ATTRIBUTE, "split axis is not a constant")
    if node.op == "SplitV" and not graph.is_const(node.input[1]):
        return Reason(Reason.ATTRIBUTE, "size_splits is not a constant")
    shape = graph.shape(node.input[data])
    axis = int(graph.const_value(node.input[axis_in])) % max(shape.rank, 1)
    if shape.as_list()[axis] is None:
        return Reason(Reason.ATTRIBUTE, f"split dim {axis} is dynamic")
    return None


@converter("Split", "SplitV", validator=_validate_split, dtypes=ANY)
def convert_split(ctx, node):
    x, axis, sizes = _split_sizes(node, ctx)
    shape = x.tf_shape()
    outs, off = [], 0
    for n in sizes:
        start = [0] * x.rank
        size = list(shape)
        start[axis], size[axis] = off, n
        outs.append(slice_(ctx, x, start, size, [1] * x.rank))
        off += n
    return outs


def _validate_unpack(node, graph):
    """the unpacked dim static"""
    shape = graph.shape(node.input[0])
    axis = get_attr(node, "axis", 0) % max(shape.rank, 1)
    if shape.as_list()[axis] is None:
        return Reason(Reason.ATTRIBUTE, f"unpacked dim {axis} is dynamic")
    return None


@converter("Unpack", validator=_validate_unpack, dtypes=ANY)
def convert_unpack(ctx, node):
    x = ctx.input(node, 0)
    axis = get_attr(node, "axis", 0) % x.rank
    shape = x.tf_shape()
    outs = []
    for i in range(get_attr(node, "num")):
        start, size = [0] * x.rank, list(shape)
        start[axis], size[axis] = i, 1
        y = slice_(ctx, x, start, size, [1] * x.rank)
        if y.is_const:
            outs.append(Value(const=np.squeeze(y.const, axis)))
            continue
        layer = ctx.network.add_squeeze(y.tensor, (y.tf_axis_to_engine(axis),))
        ctx.name(layer, f"unpack_{i}")
        outs.append(Value(layer.get_output(0), perm=perm_after_removing(y.perm, [axis])))
    return outs


# ---------------------------------------------------------------------------- pads

def _validate_pad(node, graph):
    """constant paddings (and constant value); MirrorPad on static dims"""
    if not graph.is_const(node.input[1]):
        return Reason(Reason.ATTRIBUTE, "paddings are not a constant")
    if node.op == "PadV2" and not graph.is_const(node.input[2]):
        return Reason(Reason.ATTRIBUTE, "pad value is not a constant")
    pads = graph.const_value(node.input[1])
    if (pads < 0).any():
        return Reason(Reason.ATTRIBUTE, "negative paddings")
    if node.op == "MirrorPad":
        dims = graph.shape(node.input[0]).as_list()
        if any(dims[d] is None for d in range(len(dims)) if pads[d].any()):
            return Reason(Reason.ATTRIBUTE, "mirror-padded dim is dynamic")
    return None


def zero_pad(ctx, x, pads):
    """Zero padding of TF axes (pads: (rank, 2)); the engine pads its last two dims,
    so padded axes are moved there in the layout (free for NCHW spatial pads)."""
    padded = [a for a in range(x.rank) if pads[a].any()]
    if not padded:
        return x
    if len(padded) > 2:
        raise ConversionError(f"padding {len(padded)} axes; the engine pads at most 2")
    if x.rank < 2:
        raise ConversionError("padding a rank-1 tensor; expected rank >= 2")
    if set(padded) <= set(x.perm[-2:]):
        perm = x.perm                      # NCHW spatial pads: no data movement
    else:
        perm = tuple(p for p in x.perm if p not in padded) + tuple(padded)
    last2 = perm[-2:]
    layer = ctx.network.add_padding_nd(ctx.tensor(x, perm), tuple(int(pads[a][0]) for a in last2),
                                       tuple(int(pads[a][1]) for a in last2))
    ctx.name(layer, "pad")
    return Value(layer.get_output(0), perm=perm)


@converter("Pad", "PadV2", validator=_validate_pad, dtypes=ANY)
def convert_pad(ctx, node):
    x, pads = ctx.input(node, 0), ctx.const(node, 1, "paddings").astype(np.int64)
    c = ctx.const(node, 2, "constant_values") if node.op == "PadV2" else None
    if c is not None and float(c) != 0.0:
        # pad(x, c) == pad(x - c, 0) + c
        cv = Value(const=np.asarray(c, dtype=ctx.graph.dtype(node.input[0]).as_numpy_dtype))
        shifted = elementwise(ctx, x, cv, rt.ElementWiseOperation.SUB)
        return [elementwise(ctx, zero_pad(ctx, shifted, pads), cv, rt.ElementWiseOperation.SUM)]
    return [zero_pad(ctx, x, pads)]


@converter("MirrorPad", validator=_validate_pad, dtypes=ANY)
def convert_mirror_pad(ctx, node):
    # REFLECT: [c b | a b c d | c b];  SYMMETRIC: [b a | a b c d | d c]
    x, pads = ctx.input(node, 0), ctx.const(node, 1, "paddings").astype(np.int64)
    off = 1 if get_attr(node, "mode", "REFLECT") == "REFLECT" else 0
    for axis in range(x.rank):
        before, after = int(pads[axis][0]), int(pads[axis][1])
        if not (before or after):
            continue
        shape = x.tf_shape()
        n = shape[axis]
        parts = []
        if before:
            start, size, stride = [0] * x.rank, list(shape), [1] * x.rank
            start[axis], size[axis], stride[axis] = before - 1 + off, before, -1
            parts.append(slice_(ctx, x, start, size, stride))
        parts.append(x)
        if after:
            start, size, stride = [0] * x.rank, list(shape), [1] * x.rank
            start[axis], size[axis], stride[axis] = n - 1 - off, after, -1
            parts.append(slice_(ctx, x, start, size, stride))
        x = concat(ctx, parts, axis)
    return [x]


# ---------------------------------------------------------------------------- tile / gather

@converter("Tile", validator=const_input(1, "multiples"), dtypes=ANY)
def convert_tile(ctx, node):
    x = ctx.input(node, 0)
    for axis, m in enumerate(np.ravel(ctx.const(node, 1, "multiples"))):
        if m > 1:
            x = concat(ctx, [x] * int(m), axis)
    return [x]


def _validate_gather(node, graph):
    """constant indices and axis, batch_dims=0"""
    if not graph.is_const(node.input[1]):
        return Reason(Reason.ATTRIBUTE, "gather indices are not a constant")
    if not graph.is_const(node.input[2]):
        return Reason(Reason.ATTRIBUTE, "gather axis is not a constant")
    if get_attr(node, "batch_dims", 0) != 0:
        return Reason(Reason.ATTRIBUTE, f"batch_dims={get_attr(node, 'batch_dims')}; expected 0")
    return None


@converter("GatherV2", validator=_validate_gather, dtypes=ANY)
def convert_gather(ctx, node):
    x = ctx.input(node, 0)
    idx = ctx.const(node, 1, "indices").astype(np.int32)
    axis = int(ctx.const(node, 2, "axis")) % x.rank
    if x.is_const:
        return [Value(const=np.take(x.const, idx, axis))]
    n = x.tf_shape()[axis]
    if n != -1:
        idx = np.where(idx < 0, idx + n, idx)
    layer = ctx.network.add_gather(ctx.tensor(x), ctx.constant(idx), axis)
    ctx.name(layer)
    return [Value(layer.get_output(0))]


# ---------------------------------------------------------------------------- resize

def _validate_resize(node, graph):
    """constant size; static spatial input dims"""
    if not graph.is_const(node.input[1]):
        return Reason(Reason.ATTRIBUTE, "resize size is not a constant")
    dims = graph.shape(node.input[0]).as_list()
    if len(dims) != 4 or dims[1] is None or dims[2] is None:
        return Reason(Reason.ATTRIBUTE, "resize needs rank 4 with static H and W")
    return None


@converter("ResizeBilinear", "ResizeNearestNeighbor", validator=_validate_resize)
def convert_resize(ctx, node):
    x = ctx.input(node, 0)
    oh, ow = (int(v) for v in ctx.const(node, 1, "size"))
    layer = ctx.network.add_resize(ctx.tensor(x, NCHW))
    # output size known: 0 copies N and C (dynamic batch), no float scales to round
    layer.shape = (0, 0, oh, ow)
    ct = rt.ResizeCoordinateTransformation
    if get_attr(node, "align_corners", False):
        layer.coordinate_transformation = ct.ALIGN_CORNERS
    elif get_attr(node, "half_pixel_centers", False):
        layer.coordinate_transformation = ct.HALF_PIXEL
    else:
        layer.coordinate_transformation = ct.ASYMMETRIC
    if node.op == "ResizeBilinear":
        layer.resize_mode = rt.ResizeMode.LINEAR
    else:
        layer.resize_mode = rt.ResizeMode.NEAREST
        # TF: floor(x*scale) plain, round-half-up with align_corners, floor((x+.5)*scale)
        # with half-pixel centres, which is HALF_PIXEL followed by rounding half up.
        exact_floor = not (get_attr(node, "align_corners", False)
                           or get_attr(node, "half_pixel_centers", False))
        layer.nearest_rounding = (rt.ResizeRoundMode.FLOOR if exact_floor
                                  else rt.ResizeRoundMode.HALF_UP)
    ctx.name(layer)
    return [Value(layer.get_output(0), perm=NCHW)]



# ---------------------------------------------------------------------------- fills

def fill(ctx, dims, value):
    """A tensor of shape ``dims`` (a Value: constant or shape tensor) holding the scalar
    ``value`` (a Value). Constant dims and value fold; otherwise the scalar is broadcast
    by a stride-0 slice whose size is the shape tensor (TensorRT's fill idiom)."""
    if dims.is_const:
        shape = tuple(int(d) for d in np.ravel(dims.const))
        if value.is_const:
            return Value(const=np.full(shape, value.const.reshape(()), value.const.dtype))
        zeros = Value(const=np.zeros(shape, value.tensor.dtype.to_numpy()))
        return elementwise(ctx, zeros, value, rt.ElementWiseOperation.SUM)
    rank = dims.tf_shape()[0]
    if value.is_const:
        src = ctx.constant(np.reshape(value.const, (1,) * rank))
    else:
        layer = ctx.network.add_shuffle(ctx.tensor(value))
        layer.reshape_dims = (1,) * rank
        ctx.name(layer, "fill_value")
        src = layer.get_output(0)
    layer = ctx.network.add_slice(src, (0,) * rank, (1,) * rank, (0,) * rank)
    layer.set_input(2, dims.tensor)
    ctx.name(layer, "fill")
    return Value(layer.get_output(0))


def _validate_fill(node, graph):
    """dims constant or a computed int32 vector of static length"""
    if graph.dtype(node.input[0]) != tf.int32 and not graph.is_const(node.input[0]):
        return Reason(Reason.ATTRIBUTE, f"computed dims of dtype {graph.dtype(node.input[0]).name}"
                                        "; expected int32")
    dims = graph.shape(node.input[0])
    if dims.rank != 1 or not dims.is_fully_defined():
        return Reason(Reason.ATTRIBUTE, f"dims of shape {dims}; expected a vector of static "
                                        "length")
    return None     # TF itself checks that the value is a scalar


@converter("Fill", validator=_validate_fill, dtypes=ENGINE_TYPES)
def convert_fill(ctx, node):
    dims = ctx.input(node, 0)
    if dims.is_const:
        dims = Value(const=dims.const.astype(np.int32))
    return [fill(ctx, dims, ctx.input(node, 1))]


@converter("ZerosLike", "OnesLike", dtypes=(tf.float32, tf.float16, tf.int32))
def convert_zeros_like(ctx, node):
    x = ctx.input(node, 0)
    dtype = get_attr(node, "T").as_numpy_dtype
    value = Value(const=np.asarray(0 if node.op == "ZerosLike" else 1, dtype))
    if x.is_const:
        return [Value(const=np.full(x.const.shape, value.const))]
    return [fill(ctx, shape_of(ctx, x), value)]
