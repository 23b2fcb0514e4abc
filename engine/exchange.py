"""Tensors in and out of an engine through DLPack, without TensorFlow.

An engine node receives the framework's tensors (TensorFlow eager tensors, in
practice) and must hand them to an engine whose backend lives on one device:

    framework tensor --to_engine--> backend array --execute--> backend arrays --from_engine--> DLPack
      (GPU)             zero-copy     (CuPy)                      (CuPy)          capsule (no copy)
      (CPU)             zero-copy     (NumPy)                     (NumPy)         the NumPy array

Only when the tensor is not where the backend runs is it copied (a CPU tensor
for the CuPy backend, a GPU tensor for the NumPy backend). Everything here
speaks the DLPack protocol (``__dlpack__`` / ``__dlpack_device__``), so the GPU
tests exercise it with CuPy arrays standing in for TensorFlow GPU tensors.

Streams. The DLPack protocol lets the consumer name its stream so the producer
can order its pending work before it (``__dlpack__(stream=...)``). TensorFlow's
``__dlpack__`` refuses any stream, so for such producers we take the bare
capsule and wait for the whole device instead (the only ordering left to us).
Going back, TensorFlow imports a capsule without a stream either, so the
engine's stream is finished before its outputs are handed over.
"""
import logging

import numpy as np

from .errors import ExecutionError

log = logging.getLogger(__name__)

# DLPack's DLDeviceType values (dlpack.h)
DL_CPU, DL_CUDA, DL_CUDA_HOST, DL_CUDA_MANAGED = 1, 2, 3, 13
_HOST = {DL_CPU, DL_CUDA_HOST}
_DEVICE = {DL_CUDA, DL_CUDA_MANAGED}
BACKENDS = ("numpy", "cupy")


def _cupy():
    import cupy           # optional dependency: absent on CPU-only installs
    return cupy


def device_of(x):
    """Where ``x`` lives: "cpu", "cuda", or None for an object without DLPack
    (a list, a scalar, an old array type: it is read on the host)."""
    probe = getattr(x, "__dlpack_device__", None)
    if probe is None:
        return None
    kind = int(probe()[0])
    if kind in _HOST:
        return "cpu"
    if kind in _DEVICE:
        return "cuda"
    raise ExecutionError(f"tensor on DLPack device type {kind}; expected a CPU ({DL_CPU}, "
                         f"{DL_CUDA_HOST}) or CUDA ({DL_CUDA}, {DL_CUDA_MANAGED}) tensor")


def _cupy_view(x):
    """A CuPy array over the device memory of ``x`` (no copy)."""
    cp = _cupy()
    if isinstance(x, cp.ndarray):
        return x
    try:
        return cp.from_dlpack(x)            # the protocol, with the stream handshake
    except (RuntimeError, TypeError, BufferError) as exc:
        # TensorFlow: "tf.Tensor does not support DLPack export with a non-None stream".
        log.debug("DLPack stream handshake refused (%s): importing the bare capsule", exc)
    view = cp.from_dlpack(x.__dlpack__())
    cp.cuda.Device(view.device.id).synchronize()    # the producer's kernels are done
    return view


def _host_view(x):
    """A NumPy array over the host memory of ``x`` (no copy where DLPack allows)."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.from_dlpack(x)
    except (RuntimeError, TypeError, BufferError) as exc:
        log.debug("np.from_dlpack refused %s (%s): reading it through __array__",
                  type(x).__name__, exc)
        return np.asarray(x)


def to_engine(x, backend):
    """``x`` as an array of ``backend`` ("numpy" or "cupy"); zero-copy when ``x``
    already lives on that backend's device, one copy across otherwise."""
    if backend not in BACKENDS:
        raise ExecutionError(f"to_engine: backend {backend!r}; expected one of {BACKENDS}")
    where = device_of(x)
    if backend == "cupy":
        if where == "cuda":
            return _cupy_view(x)
        return _cupy().asarray(_host_view(x) if where == "cpu" else np.asarray(x))
    if where == "cuda":
        return _cupy().asnumpy(_cupy_view(x))
    return _host_view(x) if where == "cpu" else np.asarray(x)


def execute(context, inputs):
    """Run an execution context on backend arrays; {output name: backend array}
    (CuPy arrays stay on the device, unlike ``ExecutionContext.execute``).

    Each output is a fresh array of its declared dtype: a replayed CUDA graph
    writes into the same static buffers on every run, and a consumer holding
    last run's output through DLPack must not see it change.
    """
    engine = context.engine
    backend = engine.backend
    if backend.name == "numpy":
        return context.execute(inputs)
    cp = backend.cp
    feeds = context._check_inputs(inputs)         # noqa: SLF001 - the engine's own helper
    outs = context.run(feeds)
    result = {t.name: cp.array(outs[t.name], dtype=t.dtype.to_numpy(), copy=True)
              for t in engine.network._outputs}
    cp.cuda.get_current_stream().synchronize()    # the consumer imports without a stream
    return result


def from_engine(array):
    """What a framework imports an engine output from: a DLPack capsule for a
    device array (no copy; the capsule keeps the array alive), the array itself
    for a host array (frameworks copy host arrays in cheaply and safely)."""
    if isinstance(array, np.ndarray):
        return array
    if device_of(array) == "cuda":
        return array.__dlpack__()
    raise ExecutionError(f"from_engine: a {type(array).__name__} is neither a NumPy array nor a "
                         "CUDA array with __dlpack__; engines return one of those")
