"""Op converters, one module per family; importing this package registers them all."""
from . import math, nn, quantization, tensor  # noqa: F401
from . import array, comparison, conv3d, image, selection  # noqa: F401
from . import rnn  # noqa: F401
