"""Every layer class, by family. Importing this registers the NumPy kernels too."""
from .pointwise import (ActivationLayer, CastLayer, ElementWiseLayer, IdentityLayer,  # noqa: F401
                        ScaleLayer, SelectLayer, UnaryLayer)
from .conv import ConvolutionLayer, DeconvolutionLayer  # noqa: F401
from .spatial import LRNLayer, PaddingLayer, PoolingLayer, ResizeLayer  # noqa: F401
from .shape import (ConcatenationLayer, ConstantLayer, FlattenLayer, GatherLayer,  # noqa: F401
                    ShuffleLayer, SliceLayer, SqueezeLayer, UnsqueezeLayer)
from .linear import FullyConnectedLayer, MatrixMultiplyLayer  # noqa: F401
from .reduce import ReduceLayer  # noqa: F401
from .softmax import SoftMaxLayer  # noqa: F401
from .normalization import NormalizationLayer  # noqa: F401
from .rnn import RNNv2Layer  # noqa: F401
from .plugin import PluginV2Layer  # noqa: F401
from .pointwise_chain import PointwiseLayer  # noqa: F401
from .topk import TopKLayer  # noqa: F401
from .detection import CombinedNMSLayer  # noqa: F401
from .attention import AttentionLayer  # noqa: F401
