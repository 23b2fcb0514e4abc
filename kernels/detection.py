"""NumPy reference for TF's CombinedNonMaxSuppression (array-module generic).

The semantics are those of TensorFlow's kernel (core/kernels/image/
non_max_suppression_op.cc, BatchedNonMaxSuppressionOp), re-derived here:

    per image n, per class c:
        candidates: boxes whose score for c is > score_threshold, best first
        greedy: take the best remaining candidate while fewer than
                max_output_size_per_class are taken; drop every later one
                whose IoU with it is > iou_threshold
    per image: the taken (box, score, class) of all classes, best score
        first, cut to T = max_total_size (with pad_per_class:
        min(max_total_size, max_output_size_per_class * num_classes));
        zero rows after the valid ones; boxes clipped to [0, 1] if clip_boxes.

IoU reads a box's corners in either order (y1 > y2 is the same box) and is 0
when either box has no area, as TF's IOU() does.

Greedy NMS is sequential in the candidates; here it runs for every (image,
class) pair at once, one candidate rank per step, so the loop is B steps of
array operations on (N, C, B) arrays: no host synchronisation, the same code
on CuPy arrays.
"""
import numpy as np

from .xp import array_module, errstate


def output_size(max_total_size, max_per_class, num_classes, pad_per_class):
    """T, the number of rows per image of every output."""
    if pad_per_class:
        return min(max_total_size, max_per_class * num_classes)
    return max_total_size


def combined_nms(boxes, scores, max_per_class, max_total_size, iou_threshold,
                 score_threshold, pad_per_class=False, clip_boxes=True):
    """boxes (N, B, q, 4) with q 1 or C, scores (N, B, C) ->
    (boxes (N, T, 4), scores (N, T), classes (N, T) as floats, valid (N,) int32)."""
    xp = array_module(boxes, scores)
    n, b, q, _ = boxes.shape
    c = scores.shape[2]
    t = output_size(max_total_size, max_per_class, c, pad_per_class)
    sc = xp.ascontiguousarray(scores.transpose(0, 2, 1))             # (N, C, B)
    bx = boxes.transpose(0, 2, 1, 3)                                  # (N, q, B, 4)
    bx = xp.ascontiguousarray(xp.broadcast_to(bx, (n, c, b, 4)))
    # candidates best first; a stable sort keeps equal scores in box order
    order = xp.argsort(-sc, axis=2, kind="stable")
    sc = xp.take_along_axis(sc, order, axis=2)
    bx = xp.take_along_axis(bx, order[..., None], axis=2)
    y1 = xp.minimum(bx[..., 0], bx[..., 2])
    y2 = xp.maximum(bx[..., 0], bx[..., 2])
    x1 = xp.minimum(bx[..., 1], bx[..., 3])
    x2 = xp.maximum(bx[..., 1], bx[..., 3])
    area = (y2 - y1) * (x2 - x1)
    alive = sc > score_threshold
    taken = xp.zeros_like(alive)
    count = xp.zeros((n, c), np.int64)
    zero = np.float32(0)
    for i in range(b):
        take = alive[..., i] & (count < max_per_class)
        taken[..., i] = take
        count += take
        if i + 1 == b:
            break
        # IoU of candidate i with every later candidate of its (image, class)
        ih = xp.maximum(xp.minimum(y2[..., i:i + 1], y2[..., i + 1:])
                        - xp.maximum(y1[..., i:i + 1], y1[..., i + 1:]), zero)
        iw = xp.maximum(xp.minimum(x2[..., i:i + 1], x2[..., i + 1:])
                        - xp.maximum(x1[..., i:i + 1], x1[..., i + 1:]), zero)
        inter = ih * iw
        a_i, a_rest = area[..., i:i + 1], area[..., i + 1:]
        with errstate(xp, divide="ignore", invalid="ignore"):
            iou = inter / (a_i + a_rest - inter)
        iou = xp.where((a_i > 0) & (a_rest > 0), iou, zero)
        alive[..., i + 1:] &= ~(take[..., None] & (iou > iou_threshold))
    # merge the classes: every taken candidate of an image, best score first
    flat_sc = xp.where(taken, sc, -np.inf).reshape(n, c * b)
    flat_bx = bx.reshape(n, c * b, 4)
    flat_cls = xp.broadcast_to(xp.arange(c, dtype=np.float32)[None, :, None],
                               (n, c, b)).reshape(n, c * b)
    if t > c * b:                      # fewer candidates than output rows: pad
        extra = t - c * b
        flat_sc = xp.concatenate([flat_sc, xp.full((n, extra), -np.inf, flat_sc.dtype)], 1)
        flat_bx = xp.concatenate([flat_bx, xp.zeros((n, extra, 4), flat_bx.dtype)], 1)
        flat_cls = xp.concatenate([flat_cls, xp.zeros((n, extra), np.float32)], 1)
    best = xp.argsort(-flat_sc, axis=1, kind="stable")[:, :t]
    valid = xp.minimum(taken.reshape(n, -1).sum(axis=1), t).astype(np.int32)
    keep = xp.arange(t)[None, :] < valid[:, None]
    out_sc = xp.where(keep, xp.take_along_axis(flat_sc, best, axis=1), zero)
    out_bx = xp.where(keep[..., None], xp.take_along_axis(flat_bx, best[..., None], axis=1), zero)
    if clip_boxes:
        out_bx = xp.clip(out_bx, 0.0, 1.0)
    out_cls = xp.where(keep, xp.take_along_axis(flat_cls, best, axis=1), zero)
    return (out_bx.astype(boxes.dtype), out_sc.astype(scores.dtype),
            out_cls.astype(scores.dtype), valid)
