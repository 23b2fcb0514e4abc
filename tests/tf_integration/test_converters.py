"""Every converter: a graph with that op, converted, run on the engine, compared with TF.

FP32 relative L2 error <= 1e-5 (1e-4 for long reductions) on random non-zero data.
"""
import numpy as np
import pytest
import tensorflow as tf

from tf_integration import supported_ops
from tfi_helpers import cross_validate, random_input

RNG = np.random.default_rng(1234)


def const(shape, positive=False, seed=None):
    rng = np.random.default_rng(seed if seed is not None else abs(hash(shape)) % 2**31)
    v = rng.standard_normal(shape).astype(np.float32)
    return tf.constant(np.abs(v) + 0.5 if positive else v)


NHWC = (2, 6, 7, 4)
MAT = (3, 5)

# (id, body, input shapes, tolerance, positive inputs)
CASES = [
    # ---- nn
    ("Conv2D_same", lambda x: tf.nn.conv2d(x, const((3, 3, 4, 5)), 1, "SAME"), [NHWC]),
    ("Conv2D_valid_stride", lambda x: tf.nn.conv2d(x, const((3, 2, 4, 6)), [1, 2, 2, 1],
                                                   "VALID"), [NHWC]),
    ("Conv2D_dilated", lambda x: tf.nn.conv2d(x, const((2, 2, 4, 3)), 1, "SAME",
                                              dilations=[1, 2, 2, 1]), [NHWC]),
    ("Conv2D_explicit", lambda x: tf.nn.conv2d(x, const((3, 3, 4, 2)), 1,
                                               [[0, 0], [1, 2], [2, 0], [0, 0]]), [NHWC]),
    ("DepthwiseConv2dNative", lambda x: tf.nn.depthwise_conv2d(x, const((3, 3, 4, 2)),
                                                               [1, 1, 1, 1], "SAME"), [NHWC]),
    ("Conv2DBackpropInput_same", lambda x: tf.nn.conv2d_transpose(
        x, const((3, 3, 5, 4)), [2, 12, 14, 5], [1, 2, 2, 1], "SAME"), [NHWC]),
    ("Conv2DBackpropInput_valid", lambda x: tf.nn.conv2d_transpose(
        x, const((2, 2, 3, 4)), [2, 12, 14, 3], [1, 2, 2, 1], "VALID"), [NHWC]),
    ("BiasAdd", lambda x: tf.nn.bias_add(x, const((4,))), [NHWC]),
    ("FusedBatchNormV3", lambda x: tf.compat.v1.nn.fused_batch_norm(
        x, const((4,)), const((4,)), const((4,)), const((4,), True), is_training=False)[0],
     [NHWC]),
    ("MaxPool_same", lambda x: tf.nn.max_pool2d(x, 3, 2, "SAME"), [NHWC]),
    ("MaxPool_valid", lambda x: tf.nn.max_pool2d(x, 2, 1, "VALID"), [NHWC]),
    ("AvgPool_same", lambda x: tf.nn.avg_pool2d(x, 3, 2, "SAME"), [NHWC]),
    ("LRN", lambda x: tf.nn.local_response_normalization(x, 2, 1.5, 0.3, 0.7), [NHWC]),
    ("Softmax", lambda x: tf.nn.softmax(x), [MAT]),
    ("Softmax_nhwc_after_conv", lambda x: tf.nn.softmax(
        tf.nn.conv2d(x, const((1, 1, 4, 4)), 1, "SAME")), [NHWC]),
    ("LogSoftmax", lambda x: tf.nn.log_softmax(x), [MAT]),
    # ---- activations
    ("Relu", tf.nn.relu, [NHWC]), ("Relu6", tf.nn.relu6, [NHWC]),
    ("LeakyRelu", lambda x: tf.nn.leaky_relu(x, 0.15), [NHWC]), ("Elu", tf.nn.elu, [NHWC]),
    ("Selu", tf.nn.selu, [NHWC]), ("Sigmoid", tf.sigmoid, [NHWC]), ("Tanh", tf.tanh, [NHWC]),
    ("Softplus", tf.nn.softplus, [NHWC]), ("Softsign", tf.nn.softsign, [NHWC]),
    ("ClipByValue", lambda x: tf.clip_by_value(x, -0.5, 0.7), [NHWC]),
    # ---- binary
    ("Add", lambda x: tf.raw_ops.Add(x=x, y=const((4,))), [NHWC]),
    ("AddV2_two_inputs", lambda a, b: a + b, [NHWC, NHWC]),
    ("AddN", lambda a, b: tf.add_n([a, b, a]), [NHWC, NHWC]),
    ("Sub", lambda x: x - const((7, 1)), [NHWC]),
    ("Mul", lambda x: x * const((1, 7, 4)), [NHWC]),
    ("RealDiv", lambda x: x / const((4,), True), [NHWC]),
    ("Div", lambda x: tf.raw_ops.Div(x=x, y=const((4,), True)), [NHWC]),
    ("Maximum", lambda a, b: tf.maximum(a, b), [MAT, MAT]),
    ("Minimum", lambda x: tf.minimum(x, const((5,))), [MAT]),
    ("Pow", lambda x: tf.pow(tf.abs(x) + 0.5, const((5,))), [MAT]),
    ("SquaredDifference", lambda a, b: tf.math.squared_difference(a, b), [MAT, MAT]),
    ("FloorDiv", lambda x: tf.math.floordiv(x * 3.0, const((5,), True)), [MAT]),
    ("Select", lambda a, b: tf.where(a > b, a, b), [MAT, MAT]),
    # ---- unary
    ("Exp", tf.exp, [MAT]), ("Log", lambda x: tf.math.log(tf.abs(x) + 0.1), [MAT]),
    ("Sqrt", lambda x: tf.sqrt(tf.abs(x) + 0.1), [MAT]),
    ("Rsqrt", lambda x: tf.math.rsqrt(tf.abs(x) + 0.1), [MAT]),
    ("Reciprocal", lambda x: tf.math.reciprocal(tf.abs(x) + 0.5), [MAT]),
    ("Abs", tf.abs, [MAT]), ("Neg", tf.negative, [MAT]), ("Square", tf.square, [MAT]),
    ("Erf", tf.math.erf, [MAT]), ("Sin", tf.sin, [MAT]), ("Cos", tf.cos, [MAT]),
    ("Floor", lambda x: tf.floor(x * 3.0), [MAT]), ("Ceil", lambda x: tf.math.ceil(x * 3.0), [MAT]),
    ("Round", lambda x: tf.round(x * 3.0), [MAT]), ("Sign", tf.sign, [MAT]),
    # ---- reductions
    ("Mean_spatial", lambda x: tf.reduce_mean(x, [1, 2]), [NHWC]),
    ("Mean_keepdims", lambda x: tf.reduce_mean(x, [1, 2], keepdims=True), [NHWC]),
    ("Sum", lambda x: tf.reduce_sum(x, [3]), [NHWC]),
    ("Max", lambda x: tf.reduce_max(x, [1]), [NHWC]),
    ("Min", lambda x: tf.reduce_min(x, [2], keepdims=True), [NHWC]),
    ("Prod", lambda x: tf.reduce_prod(x, [1]), [MAT]),
    ("Mean_after_conv", lambda x: tf.reduce_mean(
        tf.nn.conv2d(x, const((1, 1, 4, 3)), 1, "SAME"), [1, 2]), [NHWC]),
    # ---- matmul
    ("MatMul", lambda x: tf.matmul(x, const((5, 4))), [MAT]),
    ("MatMul_transposed", lambda a, b: tf.matmul(a, b, transpose_b=True), [MAT, MAT]),
    ("BatchMatMulV2", lambda a: tf.matmul(a, const((7, 4, 3))), [(2, 7, 6, 4)]),
    # ---- tensor
    ("Reshape", lambda x: tf.reshape(x, [-1, 7 * 6 * 4]), [NHWC]),
    ("Reshape_after_conv", lambda x: tf.reshape(
        tf.nn.conv2d(x, const((1, 1, 4, 2)), 1, "SAME"), [-1, 6 * 7 * 2]), [NHWC]),
    ("Squeeze", lambda x: tf.squeeze(tf.reduce_mean(x, [1, 2], keepdims=True), [1, 2]), [NHWC]),
    ("ExpandDims", lambda x: tf.expand_dims(x, 1), [MAT]),
    ("Transpose", lambda x: tf.transpose(x, [0, 3, 1, 2]), [NHWC]),
    ("Transpose_then_conv", lambda x: tf.nn.conv2d(
        tf.transpose(x, [0, 2, 1, 3]), const((3, 3, 4, 2)), 1, "SAME"), [NHWC]),
    ("ConcatV2_channels", lambda a, b: tf.concat([tf.nn.relu(a), b], -1), [NHWC, NHWC]),
    ("ConcatV2_after_conv", lambda a: tf.concat(
        [tf.nn.conv2d(a, const((1, 1, 4, 2)), 1, "SAME"), a], 3), [NHWC]),
    ("Pack", lambda a, b: tf.stack([a, b], 1), [MAT, MAT]),
    ("Unpack", lambda x: tf.unstack(x, axis=1)[1], [MAT]),
    ("Split", lambda x: tf.split(x, 2, axis=3)[1], [NHWC]),
    ("SplitV", lambda x: tf.split(x, [1, 3], axis=3)[1], [NHWC]),
    ("Slice", lambda x: tf.slice(x, [0, 1, 2, 0], [-1, 3, 4, 2]), [NHWC]),
    ("StridedSlice", lambda x: x[:, 1:5:2, ::-1, 1], [NHWC]),
    ("StridedSlice_ellipsis_newaxis", lambda x: x[..., tf.newaxis, 1:3], [NHWC]),
    ("Pad", lambda x: tf.pad(x, [[0, 0], [1, 2], [2, 1], [0, 0]]), [NHWC]),
    ("Pad_channels", lambda x: tf.pad(x, [[0, 0], [0, 0], [0, 0], [1, 2]]), [NHWC]),
    ("PadV2", lambda x: tf.pad(x, [[0, 0], [1, 1], [0, 2], [0, 0]], constant_values=0.5),
     [NHWC]),
    ("MirrorPad_reflect", lambda x: tf.pad(x, [[0, 0], [2, 1], [1, 2], [0, 0]], "REFLECT"),
     [NHWC]),
    ("MirrorPad_symmetric", lambda x: tf.pad(x, [[0, 0], [1, 1], [2, 0], [0, 0]], "SYMMETRIC"),
     [NHWC]),
    ("Identity", lambda x: tf.identity(tf.nn.relu(x)), [MAT]),
    ("IdentityN", lambda x: tf.identity_n([tf.nn.relu(x), x])[0], [MAT]),
    ("Snapshot", lambda x: tf.raw_ops.Snapshot(input=tf.nn.relu(x)), [MAT]),
    ("StopGradient", lambda x: tf.stop_gradient(tf.nn.relu(x)), [MAT]),
    ("Cast", lambda x: tf.cast(tf.cast(x * 4.0, tf.int32), tf.float32), [MAT]),
    ("Tile", lambda x: tf.tile(x, [1, 3]), [MAT]),
    ("GatherV2", lambda x: tf.gather(x, [4, 0, 2, 2], axis=1), [MAT]),
    ("ResizeBilinear", lambda x: tf.compat.v1.image.resize_bilinear(x, [12, 14]), [NHWC]),
    ("ResizeBilinear_half_pixel", lambda x: tf.compat.v1.image.resize_bilinear(
        x, [9, 10], half_pixel_centers=True), [NHWC]),
    ("ResizeBilinear_align", lambda x: tf.compat.v1.image.resize_bilinear(
        x, [11, 13], align_corners=True), [NHWC]),
    ("ResizeNearestNeighbor", lambda x: tf.compat.v1.image.resize_nearest_neighbor(
        x, [12, 14]), [NHWC]),
    ("ResizeNearestNeighbor_half_pixel", lambda x: tf.compat.v1.image.resize_nearest_neighbor(
        x, [12, 21], half_pixel_centers=True), [NHWC]),
    ("Shape_derived_reshape", lambda x: (lambda y: tf.reshape(
        y, tf.stack([tf.shape(y)[0], -1])))(tf.nn.relu(x)), [NHWC]),
    ("Shape_derived_reshape_3d", lambda x: (lambda y: tf.reshape(
        y, tf.stack([tf.shape(y)[0], 6, -1])))(tf.nn.relu(x)), [NHWC]),
    # ---- the rest of the registry
    ("Tan", lambda x: tf.tan(x * 0.3), [MAT]), ("Asin", lambda x: tf.asin(tf.tanh(x)), [MAT]),
    ("Acos", lambda x: tf.acos(tf.tanh(x)), [MAT]), ("Atan", tf.atan, [MAT]),
    ("Sinh", tf.sinh, [MAT]), ("Cosh", tf.cosh, [MAT]), ("Asinh", tf.asinh, [MAT]),
    ("Acosh", lambda x: tf.acosh(tf.abs(x) + 1.5), [MAT]),
    ("Atanh", lambda x: tf.atanh(tf.tanh(x) * 0.9), [MAT]),
    ("Inv", lambda x: tf.raw_ops.Inv(x=tf.abs(x) + 0.5), [MAT]),
    ("BiasAddV1", lambda x: tf.raw_ops.BiasAddV1(value=x, bias=const((4,))), [NHWC]),
    ("FusedBatchNorm", lambda x: tf.raw_ops.FusedBatchNorm(
        x=x, scale=const((4,)), offset=const((4,)), mean=const((4,)),
        variance=const((4,), True), is_training=False)[0], [NHWC]),
    ("FusedBatchNormV2", lambda x: tf.raw_ops.FusedBatchNormV2(
        x=x, scale=const((4,)), offset=const((4,)), mean=const((4,)),
        variance=const((4,), True), epsilon=0.01, is_training=False)[0], [NHWC]),
    ("BatchMatMul", lambda a, b: tf.raw_ops.BatchMatMul(x=a, y=b, adj_y=True),
     [(2, 3, 4), (2, 5, 4)]),
    ("BatchMatMulV3", lambda a: tf.raw_ops.BatchMatMulV3(
        x=a, y=const((4, 3)), Tout=tf.float32, adj_x=False), [(2, 5, 4)]),
    ("Select_v1", lambda a, b: tf.raw_ops.Select(condition=a > b, x=a, y=b), [MAT, MAT]),
    ("PreventGradient", lambda x: tf.raw_ops.PreventGradient(input=tf.nn.relu(x)), [MAT]),
    ("AvgPool_valid", lambda x: tf.nn.avg_pool2d(x, 2, 2, "VALID"), [NHWC]),
    ("Mul_broadcast_two_tensors", lambda a, b: a * tf.reduce_mean(b, [1, 2], keepdims=True),
     [NHWC, NHWC]),
]

LONG_REDUCTIONS = {"Prod", "Sum", "BatchMatMulV2", "LRN"}


@pytest.mark.parametrize("name,body,shapes", CASES, ids=[c[0] for c in CASES])
def test_converter_matches_tensorflow(name, body, shapes):
    inputs = [random_input(s, seed=i + 7) for i, s in enumerate(shapes)]
    tol = 1e-4 if name in LONG_REDUCTIONS else 1e-5
    cross_validate(body, inputs, tol=tol)


def test_every_issue_op_is_registered():
    required = """Conv2D DepthwiseConv2dNative Conv2DBackpropInput BiasAdd FusedBatchNorm
    FusedBatchNormV2 FusedBatchNormV3 MatMul BatchMatMul BatchMatMulV2 Relu Relu6 LeakyRelu Elu
    Selu Sigmoid Tanh Softplus Softsign Softmax LogSoftmax Add AddV2 AddN Sub Mul RealDiv Div
    Maximum Minimum Pow SquaredDifference FloorDiv Exp Log Sqrt Rsqrt Reciprocal Abs Neg Square
    Erf Sin Cos Floor Ceil Round Sign Mean Sum Max Min Prod Reshape Squeeze ExpandDims Transpose
    ConcatV2 Pack Unpack Split Slice StridedSlice Pad PadV2 MirrorPad MaxPool AvgPool LRN
    Identity IdentityN Snapshot StopGradient Const Cast ClipByValue Tile GatherV2 ResizeBilinear
    ResizeNearestNeighbor Shape Select SelectV2""".split()
    missing = sorted(set(required) - set(supported_ops()))
    assert missing == []
