"""IBuilder and IBuilderConfig: network -> optimised network -> plan bytes.

The build is a few small stages, each a function (Polygraphy's lazy loaders are
the model): copy the network (through the plan codec, which keeps
serialisation symmetric and leaves the user's network untouched), run the
passes, assign precisions, pick kernels, serialise.
"""
import logging
import time

from . import passes, plan as planfile
from .errors import BuildError
from .kernel_table import numpy_kernel
from .layers import classes  # noqa: F401  (registers the layer classes and kernels)
from .logger import Logger
from .network import Network
from .types import BuilderFlag, DataType, LayerType, MemoryPoolType, ProfilingVerbosity

log = logging.getLogger(__name__)

# Layers that only move or select data: they run in whatever type reaches them.
DATA_MOVEMENT = {LayerType.SHUFFLE, LayerType.FLATTEN, LayerType.SQUEEZE, LayerType.UNSQUEEZE,
                 LayerType.CONCATENATION, LayerType.SLICE, LayerType.GATHER, LayerType.PADDING,
                 LayerType.IDENTITY, LayerType.CONSTANT, LayerType.CAST, LayerType.SELECT}


class BuilderConfig:
    def __init__(self):
        self._flags = set()
        self._pools = {MemoryPoolType.WORKSPACE: 1 << 30}
        self.int8_calibrator = None
        self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY
        self.disabled_passes = set()
        self.timing_cache_path = None
        self.backend = None          # "numpy" | "cupy" | None (the runtime's default)

    def set_flag(self, flag):
        self._flags.add(self._check(flag))

    def clear_flag(self, flag):
        self._flags.discard(self._check(flag))

    def get_flag(self, flag):
        return self._check(flag) in self._flags

    @staticmethod
    def _check(flag):
        if not isinstance(flag, BuilderFlag):
            raise BuildError(f"builder flag {flag!r} is not a BuilderFlag; valid: "
                             + ", ".join(BuilderFlag.__members__))
        return flag

    def set_memory_pool_limit(self, pool, size):
        if not isinstance(pool, MemoryPoolType):
            raise BuildError(f"memory pool {pool!r}; valid: {', '.join(MemoryPoolType.__members__)}")
        if int(size) < 0:
            raise BuildError(f"memory pool limit {size}; expected a size in bytes >= 0")
        self._pools[pool] = int(size)

    def get_memory_pool_limit(self, pool):
        return self._pools[pool]

    @property
    def max_workspace_size(self):
        return self._pools[MemoryPoolType.WORKSPACE]

    @max_workspace_size.setter
    def max_workspace_size(self, size):
        self.set_memory_pool_limit(MemoryPoolType.WORKSPACE, size)

    def disable_pass(self, name):
        if name not in passes.PASS_NAMES:
            raise BuildError(f"unknown builder pass {name!r}; valid: {', '.join(passes.PASS_NAMES)}")
        self.disabled_passes.add(name)


class Builder:
    def __init__(self, logger=None):
        self.logger = logger or Logger()
        self.max_batch_size = 1    # TensorRT's implicit-batch knob, kept for TF-TRT users

    def create_network(self, flags=0):
        return Network(flags)

    def create_builder_config(self):
        return BuilderConfig()

    @property
    def platform_has_fast_fp16(self):
        return True

    @property
    def platform_has_fast_int8(self):
        return True

    def build_serialized_network(self, network, config):
        """Optimise ``network`` under ``config`` and return the plan as bytes."""
        if not isinstance(network, Network):
            raise BuildError(f"build_serialized_network takes a Network; got {type(network).__name__}")
        if not isinstance(config, BuilderConfig):
            raise BuildError(f"build_serialized_network takes a BuilderConfig; got {type(config).__name__}")
        if not network._outputs:
            raise BuildError("the network has no outputs: call network.mark_output(tensor) "
                             "on at least one tensor")
        if config.get_flag(BuilderFlag.INT8):
            raise BuildError("INT8 builds are not available in this version (calibration lands "
                             "with the INT8 work); build with FP16 or FP32")
        t0 = time.perf_counter()
        network._ensure_inferred()
        for layer in network._layers:
            layer.check_complete()
        arrays = planfile.ArrayTable()
        doc = planfile.encode_network(network, arrays)
        work = planfile.decode_network(doc, planfile.ArrayTable(arrays.getbytes()))
        _unique_layer_names(work)
        t1 = time.perf_counter()
        stats = passes.optimize(work, config.disabled_passes)
        t2 = time.perf_counter()
        precisions = assign_precisions(work, config)
        kernels = {}
        for layer in work._layers:
            numpy_kernel(layer)       # a layer with no implementation fails the build now
            kernels[layer.name] = "numpy.reference"
        t3 = time.perf_counter()
        out = planfile.ArrayTable()
        meta = {
            "precisions": {name: p.name for name, p in precisions.items()},
            "kernels": kernels,
            "flags": sorted(f.name for f in config._flags),
            "pass_stats": stats,
            "source_layers": network.num_layers,
            "build_seconds": {"copy": t1 - t0, "passes": t2 - t1, "select": t3 - t2},
        }
        data = planfile.dumps({"network": planfile.encode_network(work, out), "engine": meta}, out)
        self.logger.log(Logger.INFO, f"built engine: {network.num_layers} layers -> "
                        f"{work.num_layers}, {len(data)} bytes, {time.perf_counter() - t0:.3f} s")
        return data

    def build_engine(self, network, config):
        from .runtime import Runtime
        return Runtime(self.logger).deserialize_cuda_engine(
            self.build_serialized_network(network, config))


def _unique_layer_names(network):
    """Per-layer decisions are keyed by name: make names unique (a suffix on repeats)."""
    seen = set()
    for layer in network._layers:
        name, i = layer.name, 1
        while name in seen:
            name, i = f"{layer.name}_{i}", i + 1
        layer.name = name
        seen.add(name)


def assign_precisions(network, config):
    """Per layer, the type it computes in.

    FP16 flag: floating compute layers run in HALF; data-movement layers run in
    whatever reaches them. A layer's own ``precision`` wins when
    OBEY_PRECISION_CONSTRAINTS/STRICT_TYPES is set (PREFER: also wins here, as
    the NumPy backend can always honour it).
    """
    obey = any(config.get_flag(f) for f in (BuilderFlag.OBEY_PRECISION_CONSTRAINTS,
                                            BuilderFlag.STRICT_TYPES,
                                            BuilderFlag.PREFER_PRECISION_CONSTRAINTS))
    fp16 = config.get_flag(BuilderFlag.FP16)
    out = {}
    for layer in network._layers:
        floating = any(t is not None and t.dtype in (DataType.FLOAT, DataType.HALF)
                       for t in list(layer._inputs) + list(layer._outputs))
        if obey and layer.precision_is_set:
            p = layer.precision
        elif fp16 and floating and layer.layer_type not in DATA_MOVEMENT:
            p = DataType.HALF
        else:
            p = DataType.FLOAT
        out[layer.name] = p
    return out
