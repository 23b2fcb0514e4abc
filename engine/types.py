"""Data types and the enums of the network definition API.

Names and members follow TensorRT's Python API so that a TensorRT user can read
cupyrt code unchanged (``trt.ActivationType.RELU`` <-> ``rt.ActivationType.RELU``).
"""
import enum

import numpy as np


class DataType(enum.Enum):
    FLOAT = "float32"
    HALF = "float16"
    INT8 = "int8"
    INT32 = "int32"
    BOOL = "bool"

    @property
    def itemsize(self):
        return np.dtype(self.value).itemsize

    def to_numpy(self):
        return np.dtype(self.value)

    @classmethod
    def from_numpy(cls, dtype):
        name = np.dtype(dtype).name
        for member in cls:
            if member.value == name:
                return member
        raise TypeError(f"NumPy dtype {name} has no engine data type; "
                        f"valid: {', '.join(m.value for m in cls)}")


float32, float16, int8, int32 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32
bool_ = DataType.BOOL  # ``engine.bool`` is bound in __init__ (not here, to keep builtins usable)

FLOATING = (DataType.FLOAT, DataType.HALF)


def nptype(dtype):
    """The NumPy dtype of an engine data type (TensorRT's ``trt.nptype``)."""
    return dtype.to_numpy()


class LayerType(enum.Enum):
    ACTIVATION = "activation"
    CONCATENATION = "concatenation"
    CONVOLUTION = "convolution"
    DECONVOLUTION = "deconvolution"
    ELEMENTWISE = "elementwise"
    FLATTEN = "flatten"
    FULLY_CONNECTED = "fully_connected"
    LRN = "lrn"
    PADDING = "padding"
    PLUGIN_V2 = "plugin_v2"
    POOLING = "pooling"
    RNN_V2 = "rnn_v2"
    SCALE = "scale"
    SHUFFLE = "shuffle"
    SOFTMAX = "softmax"
    SQUEEZE = "squeeze"
    UNSQUEEZE = "unsqueeze"
    UNARY = "unary"
    CONSTANT = "constant"
    MATRIX_MULTIPLY = "matrix_multiply"
    REDUCE = "reduce"
    SLICE = "slice"
    GATHER = "gather"
    RESIZE = "resize"
    IDENTITY = "identity"
    CAST = "cast"
    SELECT = "select"
    NORMALIZATION = "normalization"
    SHAPE = "shape"              # TensorRT's IShapeLayer: a shape tensor of its input
    POINTWISE = "pointwise"      # built by the builder: a fused chain of pointwise layers
    TOPK = "topk"                # TensorRT's ITopKLayer: k largest/smallest and their indices
    COMBINED_NMS = "combined_nms"  # TF's CombinedNonMaxSuppression (TF-TRT: a plugin)
    ATTENTION = "attention"      # built by the builder: softmax(scale * q k^T) v, fused


# Layers that only move or select data: they run in whatever type reaches them (the
# builder gives them no FP16 precision of their own; the runtime stores their output
# half when only half reached them).
DATA_MOVEMENT = frozenset({
    LayerType.SHUFFLE, LayerType.FLATTEN, LayerType.SQUEEZE, LayerType.UNSQUEEZE,
    LayerType.CONCATENATION, LayerType.SLICE, LayerType.GATHER, LayerType.PADDING,
    LayerType.IDENTITY, LayerType.CONSTANT, LayerType.CAST, LayerType.SELECT})


class ActivationType(enum.Enum):
    RELU = 0
    SIGMOID = 1
    TANH = 2
    LEAKY_RELU = 3
    ELU = 4
    SELU = 5
    SOFTSIGN = 6
    SOFTPLUS = 7
    CLIP = 8
    HARD_SIGMOID = 9
    SCALED_TANH = 10
    THRESHOLDED_RELU = 11
    GELU_ERF = 12
    GELU_TANH = 13


class ElementWiseOperation(enum.Enum):
    SUM = 0
    PROD = 1
    MAX = 2
    MIN = 3
    SUB = 4
    DIV = 5
    POW = 6
    FLOOR_DIV = 7
    AND = 8
    OR = 9
    XOR = 10
    EQUAL = 11
    GREATER = 12
    LESS = 13


class UnaryOperation(enum.Enum):
    EXP = 0
    LOG = 1
    SQRT = 2
    RECIP = 3
    ABS = 4
    NEG = 5
    SIN = 6
    COS = 7
    TAN = 8
    SINH = 9
    COSH = 10
    ASIN = 11
    ACOS = 12
    ATAN = 13
    ASINH = 14
    ACOSH = 15
    ATANH = 16
    CEIL = 17
    FLOOR = 18
    ERF = 19
    NOT = 20
    SIGN = 21
    ROUND = 22


class PoolingType(enum.Enum):
    MAX = 0
    AVERAGE = 1
    MAX_AVERAGE_BLEND = 2


class ScaleMode(enum.Enum):
    UNIFORM = 0
    CHANNEL = 1
    ELEMENTWISE = 2


class ReduceOperation(enum.Enum):
    SUM = 0
    PROD = 1
    MAX = 2
    MIN = 3
    AVG = 4


class TopKOperation(enum.Enum):
    MAX = 0
    MIN = 1


class MatrixOperation(enum.Enum):
    NONE = 0
    TRANSPOSE = 1
    VECTOR = 2


class RNNOperation(enum.Enum):
    RELU = 0
    TANH = 1
    LSTM = 2
    GRU = 3


class RNNGateType(enum.Enum):
    INPUT = 0
    OUTPUT = 1
    FORGET = 2
    CELL = 3
    UPDATE = 4
    RESET = 5
    HIDDEN = 6


class RNNDirection(enum.Enum):
    UNIDIRECTION = 0
    BIDIRECTION = 1


class RNNInputMode(enum.Enum):
    LINEAR = 0
    SKIP = 1


class PaddingMode(enum.Enum):
    EXPLICIT_ROUND_DOWN = 0
    EXPLICIT_ROUND_UP = 1
    SAME_UPPER = 2
    SAME_LOWER = 3


class ResizeMode(enum.Enum):
    NEAREST = 0
    LINEAR = 1


class ResizeCoordinateTransformation(enum.Enum):
    ALIGN_CORNERS = 0
    ASYMMETRIC = 1
    HALF_PIXEL = 2


class ResizeRoundMode(enum.Enum):
    HALF_UP = 0
    HALF_DOWN = 1
    FLOOR = 2
    CEIL = 3


class BuilderFlag(enum.Enum):
    FP16 = 0
    INT8 = 1
    DEBUG = 2
    STRICT_TYPES = 3
    TF32 = 4
    OBEY_PRECISION_CONSTRAINTS = 5
    PREFER_PRECISION_CONSTRAINTS = 6
    DISABLE_TIMING_CACHE = 7


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0


class ProfilingVerbosity(enum.Enum):
    LAYER_NAMES_ONLY = 0
    NONE = 1
    DETAILED = 2
