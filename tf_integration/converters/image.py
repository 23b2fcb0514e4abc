"""CombinedNonMaxSuppression: the engine's CombinedNMS layer (TF-TRT used a plugin)."""
import numpy as np
import tensorflow as tf

from ..context import Value
from ..graph_utils import get_attr
from ..registry import Reason, converter

_SCALARS = ("max_output_size_per_class", "max_total_size", "iou_threshold", "score_threshold")


def _validate_nms(node, graph):
    """sizes (>= 1) and thresholds constant, iou_threshold in [0, 1]; q and classes static"""
    data = [i for i in node.input if not i.startswith("^")]
    for i, what in enumerate(_SCALARS, start=2):
        if not graph.is_const(data[i]):
            # the output shape depends on the sizes: they must be known when building
            return Reason(Reason.ATTRIBUTE, f"{what} (input {i}) is not a constant")
    per_class, total, iou, _ = (float(np.ravel(graph.const_value(data[i]))[0])
                                for i in range(2, 6))
    if per_class < 1 or total < 1:
        return Reason(Reason.ATTRIBUTE, f"max_output_size_per_class {per_class:g} and "
                      f"max_total_size {total:g}; expected both >= 1")
    if not 0.0 <= iou <= 1.0:
        return Reason(Reason.ATTRIBUTE, f"iou_threshold {iou:g}; expected a value in [0, 1]")
    # ranks, and q in (1, C) once both are known, are checked by TF's shape function
    boxes, scores = graph.shape(data[0]), graph.shape(data[1])
    if boxes.as_list()[2] is None or scores.as_list()[2] is None:
        return Reason(Reason.ATTRIBUTE, f"boxes {boxes} and scores {scores}: q and the number "
                                        "of classes must be static")
    return None


@converter("CombinedNonMaxSuppression", validator=_validate_nms, dtypes=(tf.float32,))
def convert_combined_nms(ctx, node):
    boxes, scores = ctx.input(node, 0), ctx.input(node, 1)
    per_class, total, iou, score = (np.ravel(ctx.const(node, i, w))[0]
                                    for i, w in enumerate(_SCALARS, start=2))
    layer = ctx.network.add_combined_nms(
        ctx.tensor(boxes), ctx.tensor(scores), int(per_class), int(total), float(iou),
        float(score), pad_per_class=bool(get_attr(node, "pad_per_class", False)),
        clip_boxes=bool(get_attr(node, "clip_boxes", True)))
    ctx.name(layer)
    return [Value(layer.get_output(i)) for i in range(4)]
