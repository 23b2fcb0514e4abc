"""Op converters, one module per family; importing this package registers them all."""
from . import math, nn, tensor  # noqa: F401
