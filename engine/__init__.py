"""cupyrt's engine: TensorRT's Python API (snake_case) over NumPy and CuPy backends."""
from .errors import (BuildError, CalibrationError, CupyrtError, ExecutionError,  # noqa: F401
                     NetworkDefinitionError, PlanFormatError, PluginError)
from .types import *  # noqa: F401,F403
from .types import DataType
from .layers.base import Layer, Tensor, Weights  # noqa: F401
from .network import Network  # noqa: F401

bool = DataType.BOOL  # noqa: A001  (TensorRT spells it trt.bool)
from .logger import Logger  # noqa: E402,F401
from .builder import Builder, BuilderConfig  # noqa: E402,F401
from .runtime import (CudaEngine, EngineInspector, ExecutionContext, LayerInfo,  # noqa: E402,F401
                      Profiler, Runtime, TensorIOMode)
from .plan import PLAN_VERSION, deserialize_network, serialize_network  # noqa: E402,F401
from .layers.plugin import (Plugin, PluginRegistry, get_plugin_registry,  # noqa: E402,F401
                            register_plugin)
from .layers.shape import SampleMode  # noqa: E402,F401
from .calibration import (CalibrationAlgoType, Calibrator, EntropyCalibrator2,  # noqa: E402,F401
                          IInt8Calibrator, IInt8EntropyCalibrator2, IInt8MinMaxCalibrator,
                          MinMaxCalibrator, PercentileCalibrator)
from .precision_debug import debug_precision, keep_worst_in_fp16, precision_table  # noqa: E402,F401
