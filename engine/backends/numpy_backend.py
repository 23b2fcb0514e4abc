"""The NumPy backend: every layer through its NumPy kernel on the host
(engine/layer_exec.py: FP16 emulated by rounding around FP32 compute, INT8 in
exact integer arithmetic). The reference the GPU backend is tested against, and
the CPU runtime."""
import time

import numpy as np

from ..layer_exec import run_layer


class NumpyBackend:
    name = "numpy"

    @staticmethod
    def asarray(x):
        return np.asarray(x)

    @staticmethod
    def synchronize():
        pass

    @staticmethod
    def join_batch(parts):
        """Batch chunks back into one array, in order."""
        return np.concatenate(parts, axis=0)

    @staticmethod
    def mark():
        """A point in time for the profiler (``elapsed_ms`` between two)."""
        return time.perf_counter()

    @staticmethod
    def hold():
        """Nothing to hold: the host clock times the work itself."""
        return None

    @staticmethod
    def aux_stream():
        """No auxiliary stream: the host runs the layers one after another."""
        return None

    @staticmethod
    def elapsed_ms(start, end):
        return 1e3 * (end - start)

    run_layer = staticmethod(run_layer)

    @staticmethod
    def execute(context, feeds, sched, stream=None):
        return context.run_layers(feeds, sched)

    @staticmethod
    def run_visiting(context, feeds, sched, visit):
        """The layers one by one, ``visit(tensor, value)`` after each (ExecutionContext.layer_outputs)."""
        return context.run_layers(feeds, sched, visit)

    @staticmethod
    def copy_into(dst, src, stream=None):
        np.copyto(dst, src)

    @staticmethod
    def to_output(x, dtype):
        return np.asarray(x).astype(dtype.to_numpy(), copy=False)
