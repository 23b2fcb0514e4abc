"""cupyrt's engine: TensorRT's Python API (snake_case) over NumPy and CuPy backends."""
from .errors import (BuildError, CalibrationError, CupyrtError, ExecutionError,  # noqa: F401
                     NetworkDefinitionError, PlanFormatError, PluginError)
from .types import *  # noqa: F401,F403
from .types import DataType
from .layers.base import Layer, Tensor, Weights  # noqa: F401
from .network import Network  # noqa: F401

bool = DataType.BOOL  # noqa: A001  (TensorRT spells it trt.bool)
