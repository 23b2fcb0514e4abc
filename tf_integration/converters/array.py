"""Array rearrangements TF-TRT converts: DepthToSpace, SpaceToDepth,
DataFormatVecPermute, Range, and TF's host-to-GPU copy (an identity here)."""
import numpy as np
import tensorflow as tf

from ..context import Value
from ..graph_utils import get_attr
from ..registry import ENGINE_TYPES, Reason, converter

INT32 = (tf.int32,)


def _data(node):
    return [i for i in node.input if not i.startswith("^")]


# ---------------------------------------------------------------------------- depth <-> space

def _validate_depth_space(node, graph):
    """NHWC; H, W, C static"""
    fmt = get_attr(node, "data_format", "NHWC")
    if fmt != "NHWC":
        # TF's CPU kernels run NHWC only, so no other layout can be checked against TF
        return Reason(Reason.ATTRIBUTE, f"data_format {fmt}; supported: NHWC")
    shape = graph.shape(node.input[0])       # rank 4: TF's shape function checks it
    if None in shape.as_list()[1:]:
        # (TF's shape function checks divisibility by the block once dims are static)
        return Reason(Reason.ATTRIBUTE, f"input shape {shape}: H, W and C must be static")
    return None


def _shuffle(ctx, x, dims, perm):
    """reshape(dims) then transpose(perm) of a TF-order value; dim 0 (the batch)
    is copied from the input (0 in reshape dims), so it may stay dynamic."""
    if x.is_const:
        arr = x.const.reshape(dims)
        return Value(const=np.transpose(arr, perm) if perm else arr)
    layer = ctx.network.add_shuffle(ctx.tensor(x))
    layer.reshape_dims = (0,) + tuple(dims[1:])
    if perm:
        layer.second_transpose = tuple(perm)
    ctx.name(layer, "shuffle" if perm else "reshape")
    return Value(layer.get_output(0))


@converter("DepthToSpace", "SpaceToDepth", validator=_validate_depth_space,
           dtypes=ENGINE_TYPES)
def convert_depth_space(ctx, node):
    # DepthToSpace, block b:  out[n, i*b + u, j*b + v, c] = in[n, i, j, (u*b + v)*C' + c]
    #   (N, H, W, b*b*C') -> (N, H, W, b, b, C') -> (N, H, b, W, b, C') -> (N, H*b, W*b, C')
    # SpaceToDepth is its inverse:
    #   (N, H, W, C) -> (N, H/b, b, W/b, b, C) -> (N, H/b, W/b, b, b, C) -> (N, H/b, W/b, b*b*C)
    x = ctx.input(node, 0)
    b = get_attr(node, "block_size")
    n, h, w, c = x.tf_shape()
    swap = (0, 1, 3, 2, 4, 5)
    if node.op == "DepthToSpace":
        y = _shuffle(ctx, x, (n, h, w, b, b, c // (b * b)), swap)
        return [_shuffle(ctx, y, (n, h * b, w * b, c // (b * b)), None)]
    y = _shuffle(ctx, x, (n, h // b, b, w // b, b, c), swap)
    return [_shuffle(ctx, y, (n, h // b, w // b, b * b * c), None)]


# ---------------------------------------------------------------------------- data format

def _format_indices(node, size):
    """Indices j -> i with dst[j] == src[i], over the letters a vector of ``size`` holds
    (all of them, or only the spatial ones when two fewer)."""
    src, dst = get_attr(node, "src_format", "NHWC"), get_attr(node, "dst_format", "NCHW")
    if size == len(src) - 2:
        src, dst = (s.replace("N", "").replace("C", "") for s in (src, dst))
    return np.array([src.index(ch) for ch in dst], np.int32)


def _validate_vec_permute(node, graph):
    """1-D of len(format) (or len - 2: spatial only) or 2-D (that, 2); static size"""
    src, dst = get_attr(node, "src_format", "NHWC"), get_attr(node, "dst_format", "NCHW")
    if sorted(src) != sorted(dst) or len(set(src)) != len(src):
        return Reason(Reason.ATTRIBUTE, f"formats {src!r} -> {dst!r} are not one set of "
                                        "distinct letters")
    shape = graph.shape(node.input[0])
    dims = shape.as_list()
    if shape.rank not in (1, 2) or dims[0] not in (len(src), len(src) - 2) \
            or (shape.rank == 2 and dims[1] != 2):
        return Reason(Reason.ATTRIBUTE, f"input shape {shape}; expected ({len(src)},), "
                      f"({len(src) - 2},) or either with a trailing 2")
    return None


@converter("DataFormatVecPermute", validator=_validate_vec_permute, dtypes=INT32)
def convert_data_format_vec_permute(ctx, node):
    x = ctx.input(node, 0)
    idx = _format_indices(node, x.tf_shape()[0])
    if x.is_const:
        return [Value(const=np.take(x.const, idx, axis=0))]
    layer = ctx.network.add_gather(ctx.tensor(x), ctx.constant(idx), 0)
    ctx.name(layer)
    return [Value(layer.get_output(0))]


# ---------------------------------------------------------------------------- range

_RANGE_TYPES = (tf.float32, tf.int32)


def _validate_range(node, graph):
    """start, limit and delta constant (it folds to a constant); float32 or int32"""
    dt = get_attr(node, "Tidx", tf.int32)
    if dt not in _RANGE_TYPES:
        return Reason(Reason.ATTRIBUTE, f"Tidx={dt.name}; supported: "
                      + ", ".join(d.name for d in _RANGE_TYPES))
    for i, what in enumerate(("start", "limit", "delta")):
        if not graph.is_const(_data(node)[i]):
            # TensorRT 8.2's fill layer takes computed bounds; the engine has no such
            # layer yet, so computed bounds stay in TensorFlow
            return Reason(Reason.ATTRIBUTE, f"{what} (input {i}) is not a constant")
    return None


@converter("Range", validator=_validate_range, dtypes=_RANGE_TYPES)
def convert_range(ctx, node):
    start, limit, delta = (ctx.const(node, i, w) for i, w in
                           enumerate(("start", "limit", "delta")))
    # TensorFlow's own kernel computes the constant: its float accumulation and
    # its size rule are then exactly TF's (a NumPy arange can differ in the last ulp)
    out = tf.range(start, limit, delta, dtype=get_attr(node, "Tidx", tf.int32))
    return [Value(const=out.numpy())]


# ---------------------------------------------------------------------------- device copies

@converter("_CopyFromHostToGpu", dtypes=ENGINE_TYPES)
def convert_copy_from_host(ctx, node):
    # TF inserts it to move a host-memory tensor to the GPU; inside an engine every
    # tensor already lives where the engine runs, so it is an identity
    return [ctx.input(node, 0)]
