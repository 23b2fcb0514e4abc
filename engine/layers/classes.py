"""Every layer class, by family. Importing this registers the NumPy kernels too."""
from .pointwise import (ActivationLayer, CastLayer, ElementWiseLayer, IdentityLayer,  # noqa: F401
                        ScaleLayer, SelectLayer, UnaryLayer)
from .spatial import (ConvolutionLayer, DeconvolutionLayer, LRNLayer, PaddingLayer,  # noqa: F401
                      PoolingLayer, ResizeLayer)
from .shape import (ConcatenationLayer, ConstantLayer, FlattenLayer, GatherLayer,  # noqa: F401
                    ShuffleLayer, SliceLayer, SqueezeLayer, UnsqueezeLayer)
from .linear import (FullyConnectedLayer, MatrixMultiplyLayer, NormalizationLayer,  # noqa: F401
                     ReduceLayer, SoftMaxLayer)
from .rnn import RNNv2Layer  # noqa: F401
from .plugin import PluginV2Layer  # noqa: F401
from .fused import PointwiseLayer  # noqa: F401
from .selection import TopKLayer  # noqa: F401
from .detection import CombinedNMSLayer  # noqa: F401
