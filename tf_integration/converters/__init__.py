"""Op converters, one module per family; importing this package registers them all
(registry.py imports it on first use: the one import circle of tf_integration, since
every converter module imports the registry's ``@converter`` decorator)."""
from . import math, nn, quantization, tensor  # noqa: F401
from . import einsum  # noqa: F401  (Einsum: matrix-multiply lowering on tensor.py's helpers)
from . import array, comparison, conv3d, image, selection  # noqa: F401
from . import rnn  # noqa: F401
