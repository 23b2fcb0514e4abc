"""CombinedNMS: TF's CombinedNonMaxSuppression as one layer.

TensorRT has no such layer; TF-TRT maps the op to NVIDIA's batched/efficient
NMS plugin. Here it is a built-in layer whose NumPy reference
(kernels/detection.py) follows TensorFlow's kernel exactly, so engines stay
comparable with TensorFlow on every output.

Inputs: boxes (N, B, q, 4) with q = 1 (boxes shared by every class) or q = C,
scores (N, B, C). Outputs, T rows per image (see ``output_rows``):
boxes (N, T, 4), scores (N, T), classes (N, T) as floats, valid (N,) INT32.
"""
from kernels import detection as K

from ..kernel_table import numpy_impl
from ..types import FLOATING, DataType, LayerType
from .base import Bool, Float, Int, Layer
from .conv import BoundedFloat


class CombinedNMSLayer(Layer):
    layer_type = LayerType.COMBINED_NMS
    min_inputs = max_inputs = 2
    max_output_size_per_class = Int(1, minimum=1)
    max_total_size = Int(1, minimum=1)
    iou_threshold = BoundedFloat(0.5, 0.0, 1.0)
    score_threshold = Float(float("-inf"))
    pad_per_class = Bool(False)
    clip_boxes = Bool(True)

    def output_rows(self, num_classes):
        return K.output_size(self.max_total_size, self.max_output_size_per_class, num_classes,
                             self.pad_per_class)

    def infer(self, in_shapes, in_dtypes):
        boxes, scores = (tuple(s) for s in in_shapes)
        for arg, dtype in zip(("boxes", "scores"), in_dtypes):
            if dtype not in FLOATING:
                self.fail(arg, f"a {dtype.name} tensor", "a FLOAT or HALF tensor")
        if len(boxes) != 4 or boxes[3] not in (4, -1):
            self.fail("boxes", f"shape {boxes}", "(batch, num_boxes, q, 4)")
        if len(scores) != 3:
            self.fail("scores", f"shape {scores}", "(batch, num_boxes, num_classes)")
        n, b, q, _ = boxes
        c = scores[2]
        for name, x, y in (("batch", n, scores[0]), ("num_boxes", b, scores[1])):
            if x >= 0 and y >= 0 and x != y:
                self.fail("scores", f"shape {scores} against boxes {boxes}",
                          f"the same {name} dim in boxes and scores")
        if q >= 0 and c >= 0 and q not in (1, c):
            self.fail("boxes", f"q = {q} boxes per anchor with {c} classes",
                      "q = 1 (shared boxes) or q = num_classes")
        if c < 0 and self.pad_per_class:
            self.fail("scores", f"shape {scores}", "a static number of classes with pad_per_class")
        n = n if n >= 0 else scores[0]
        t = self.output_rows(max(c, 1)) if c >= 0 else self.max_total_size
        return [((n, t, 4), in_dtypes[0]), ((n, t), in_dtypes[1]), ((n, t), in_dtypes[1]),
                ((n,), DataType.INT32)]


@numpy_impl(LayerType.COMBINED_NMS)
def _combined_nms(layer, inputs):
    boxes, scores = inputs
    return list(K.combined_nms(boxes, scores, layer.max_output_size_per_class,
                               layer.max_total_size, layer.iou_threshold, layer.score_threshold,
                               layer.pad_per_class, layer.clip_boxes))
