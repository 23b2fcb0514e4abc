"""The builder's INT8 stage: calibrate, then choose which layers run INT8. How
INT8 tensors are stored and computed is engine/int8_exec.py; the per-layer
precision debugger is engine/precision_debug.py. (Not named int8.py:
``engine.int8`` is the data type, as ``trt.int8`` is.)

Precision assignment (after the passes and calibration, ``assign_int8``):

* compute layers with an INT8 kernel -- CONVOLUTION and FULLY_CONNECTED (with
  their fused epilogue) and MAX pooling -- run INT8 when the ranges of their
  float inputs and outputs are known and no precision constraint (with
  OBEY/PREFER_PRECISION_CONSTRAINTS) asks for FLOAT/HALF;
* single-input data-movement layers (shuffle, flatten, squeeze, unsqueeze,
  identity) run INT8 between an INT8 producer and INT8 consumers, their
  output range set to their input's (the values are the same);
* max pooling's output range is set to its input's, so it is a pure max of
  int8 codes (TensorRT propagates scales through pooling the same way);
* everything else keeps what ``builder.assign_precisions`` gave (FP16 with the
  FP16 flag, else FP32).

Storage contract: see engine/int8_exec.py (``int8_tensors``).

Explicit quantization: a graph that carries Q/DQ nodes (TF's
QuantizeAndDequantizeV2/V3, FakeQuantWithMinMaxVars) maps each to
``tensor.set_dynamic_range(lo, hi)`` on the tensor it quantizes; with the INT8
flag and no calibrator, the builder uses exactly those ranges.
"""
import logging

from .backends import resolve
from .calibration import calibrate
from .errors import BuildError
from .int8_exec import COMPUTE, TRANSPARENT, can_run_int8, keep_movement_between_int8
from .settings import settings
from .types import BuilderFlag, DataType, LayerType

log = logging.getLogger(__name__)


def _constrained_out(layer, obey):
    return obey and layer.precision_is_set and layer.precision != DataType.INT8


def assign_int8(network, config, precisions):
    """Mark the layers that run INT8 in ``precisions`` (name -> DataType), in
    place; layers a user constrained to INT8 but that cannot run it fall back.
    Returns the names of the INT8 layers."""
    obey = any(config.get_flag(f) for f in (BuilderFlag.OBEY_PRECISION_CONSTRAINTS,
                                            BuilderFlag.STRICT_TYPES,
                                            BuilderFlag.PREFER_PRECISION_CONSTRAINTS))
    fp16 = config.get_flag(BuilderFlag.FP16)
    chosen = set()
    for layer in network._layers:
        lt = layer.layer_type
        if lt in COMPUTE and not _constrained_out(layer, obey):
            if lt == LayerType.POOLING and layer._inputs[0].dynamic_range is not None:
                layer._outputs[0].dynamic_range = layer._inputs[0].dynamic_range
            if can_run_int8(layer):
                chosen.add(layer.name)
        elif lt in TRANSPARENT and not _constrained_out(layer, obey):
            src = layer._inputs[0]
            if (src is not None and src.producer is not None and src.producer.name in chosen
                    and src.dynamic_range is not None):
                layer._outputs[0].dynamic_range = src.dynamic_range
                if can_run_int8(layer):
                    chosen.add(layer.name)
    keep_movement_between_int8(network, chosen)
    for layer in network._layers:
        if layer.name in chosen:
            precisions[layer.name] = DataType.INT8
        elif precisions.get(layer.name) == DataType.INT8:
            log.warning("%s asks for INT8 but has no INT8 kernel or no dynamic range; it runs %s",
                        layer.describe(), "FP16" if fp16 else "FP32")
            precisions[layer.name] = DataType.HALF if fp16 else DataType.FLOAT
    log.info("INT8: %d of %d layers", len(chosen), network.num_layers)
    return chosen


def prepare(network, config, precisions):
    """The builder's INT8 stage: calibrate (or take the user's ranges), then
    assign INT8 precisions. Returns the plan metadata for INT8."""
    calib = config.int8_calibrator
    if calib is not None:
        calibrate(network, calib, on_gpu=calibrate_on_gpu(config))
    elif not any(t.dynamic_range is not None for t in all_tensors(network)):
        raise BuildError("the INT8 flag is set but there is neither config.int8_calibrator nor "
                         "any tensor dynamic range: set a calibrator (EntropyCalibrator2, "
                         "MinMaxCalibrator, PercentileCalibrator) or call "
                         "tensor.set_dynamic_range(lo, hi)")
    chosen = assign_int8(network, config, precisions)
    return {"int8_layers": sorted(chosen)}


def calibrate_on_gpu(config):
    """Whether the calibration passes run on the GPU: when the build itself does (the
    CuPy backend) and CUPYRT_CALIBRATE_ON_GPU is on."""
    return settings().calibrate_on_gpu and resolve(config.backend) == "cupy"


def all_tensors(network):
    yield from network._inputs
    for layer in network._layers:
        yield from layer._outputs
