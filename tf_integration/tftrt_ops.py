"""TF-TRT's converter list, as data: the ops cupyrt must convert at least.

Read from TensorFlow's own source, tensorflow/compiler/tf2tensorrt/convert/
(TF 2.10 - 2.15, the last releases that built TF-TRT): the op names passed to
``REGISTER_DEFAULT_TRT_OP_CONVERTER`` in convert_nodes.cc and in ops/*.cc, with
the name tables those files register through ``GetOperationNames``
(BinaryOperationMap, BinaryBooleanOperationMap, UnaryOperationMap,
UnaryBooleanOperationMap, ActivationTypeMap). Registrations behind
``IS_TRT_VERSION_GE(8, 2, 0, 0)`` are included (TensorRT 8.2 is what those
releases shipped with). ``FakeOp`` (a debug converter only reachable through
TF_TRT_OP_FAKELIST) is left out: it is not a TensorFlow op.
"""

# op -> the TF-TRT source file that registers it (for the docs table)
TFTRT_OPS = {
    # convert_nodes.cc
    **dict.fromkeys((
        "AddN", "ArgMax", "ArgMin", "AvgPool", "AvgPool3D", "BatchMatMul", "BatchMatMulV2",
        "BiasAdd", "Cast", "ClipByValue", "CombinedNonMaxSuppression", "ConcatV2", "Const",
        "Conv2D", "Conv2DBackpropInput", "Conv3D", "Conv3DBackpropInputV2", "DepthToSpace",
        "DepthwiseConv2dNative", "ExpandDims", "FusedBatchNorm", "FusedBatchNormV2",
        "FusedBatchNormV3", "FusedConv2DBiasActivation", "GatherV2", "Identity", "IdentityN",
        "MatMul", "Max", "MaxPool", "MaxPool3D", "Mean", "Min", "Pack", "Pad", "Prod",
        "Reshape", "Shape", "Slice", "Snapshot", "SpaceToDepth", "Split", "Square",
        "SquaredDifference", "Squeeze", "StopGradient", "StridedSlice", "Sum", "TopKV2",
        "Transpose", "Unpack", "_CopyFromHostToGpu"), "convert_nodes.cc"),
    # ops/binary_ops.cc (BinaryOperationMap, BinaryBooleanOperationMap)
    **dict.fromkeys((
        "Add", "AddV2", "Div", "Equal", "FloorDiv", "Greater", "GreaterEqual", "Less",
        "LessEqual", "LogicalAnd", "LogicalOr", "Maximum", "Minimum", "Mul", "Pow", "RealDiv",
        "Sub"), "ops/binary_ops.cc"),
    # ops/unary_ops.cc (UnaryOperationMap, UnaryBooleanOperationMap, ActivationTypeMap)
    **dict.fromkeys((
        "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Ceil", "Cos", "Cosh", "Erf",
        "Exp", "Floor", "Log", "LogicalNot", "Neg", "Reciprocal", "Round", "Rsqrt", "Sign",
        "Sin", "Sinh", "Sqrt", "Tan", "Elu", "LeakyRelu", "Relu", "Relu6", "Selu", "Sigmoid",
        "Softplus", "Softsign", "Tanh"), "ops/unary_ops.cc"),
    "DataFormatVecPermute": "ops/data_format_vec_permute.cc",
    "Einsum": "ops/einsum.cc",
    "Fill": "ops/fill_ops.cc",
    "Range": "ops/fill_ops.cc",
    "OnesLike": "ops/like_ops.cc",
    "ZerosLike": "ops/like_ops.cc",
    "ones_like": "ops/like_ops.cc",
    "zeros_like": "ops/like_ops.cc",
    "LogSoftmax": "ops/log_softmax.cc",
    "FakeQuantWithMinMaxArgs": "ops/quantization_ops.cc",
    "FakeQuantWithMinMaxVars": "ops/quantization_ops.cc",
    "QuantizeAndDequantizeV2": "ops/quantization_ops.cc",
    "QuantizeAndDequantizeV3": "ops/quantization_ops.cc",
    "ResizeBilinear": "ops/resize.cc",
    "ResizeNearestNeighbor": "ops/resize.cc",
    "Select": "ops/selectv2.cc",
    "SelectV2": "ops/selectv2.cc",
    "Softmax": "ops/softmax.cc",
    "Tile": "ops/tile.cc",
    "ReadVariableOp": "ops/variable_ops.cc",
    "VariableV2": "ops/variable_ops.cc",
}

# TF-TRT ops cupyrt does not register, and why. Issue 10 sets string and
# resource/variable ops aside (TF-TRT registers no string op); the others are
# names TensorFlow 2 does not have as ops.
EXCLUDED = {
    "ReadVariableOp": "resource op: variables are frozen into constants before segmenting "
                      "(freeze_keras_model, TrtGraphConverterV2), so no engine reads one",
    "VariableV2": "variable op: as ReadVariableOp, frozen into constants before segmenting",
    "FusedConv2DBiasActivation": "no longer a TensorFlow op (tf.contrib.fused_conv, removed "
                                 "in TF 2.0): no graph TF 2.x builds or imports contains it",
    "zeros_like": "not a TensorFlow op type (TF-TRT registers the Python function name "
                  "too); the op is ZerosLike",
    "ones_like": "not a TensorFlow op type (TF-TRT registers the Python function name "
                 "too); the op is OnesLike",
}


def required_ops():
    """TF-TRT's ops minus the stated exclusions: every one must be registered here."""
    return sorted(op for op in TFTRT_OPS if op not in EXCLUDED)
