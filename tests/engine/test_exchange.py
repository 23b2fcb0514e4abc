"""engine/exchange.py on the host: DLPack views without copies, clear errors.
(The CUDA half runs in tests/gpu/test_dlpack_exchange_gpu.py.)"""
import numpy as np
import pytest

import engine as rt
from engine import exchange


class Foreign:
    """A tensor of another framework, on a device we do not know."""

    def __init__(self, kind):
        self.kind = kind

    def __dlpack_device__(self):
        return (self.kind, 0)


def test_host_arrays_pass_without_a_copy():
    a = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    assert exchange.to_engine(a, "numpy") is a
    assert exchange.from_engine(a) is a
    # any DLPack producer on the host is viewed, not copied
    view = exchange.to_engine(a[1:], "numpy")
    assert view.ctypes.data == a[1:].ctypes.data
    assert exchange.device_of(a) == "cpu" and exchange.device_of([1.0]) is None
    np.testing.assert_array_equal(exchange.to_engine([[1.0, 2.0]], "numpy"), [[1.0, 2.0]])


def test_unknown_devices_and_backends_are_refused():
    with pytest.raises(rt.ExecutionError, match="DLPack device type 4"):
        exchange.device_of(Foreign(4))
    with pytest.raises(rt.ExecutionError, match="backend 'torch'"):
        exchange.to_engine(np.zeros(2), "torch")
    with pytest.raises(rt.ExecutionError, match="neither a NumPy array"):
        exchange.from_engine([1.0])


def test_execute_on_the_numpy_backend_returns_host_arrays():
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (-1, 5))
    y = net.add_activation(x, rt.ActivationType.TANH).get_output(0)
    y.name = "y"
    net.mark_output(y)
    ctx = rt.Runtime(backend="numpy").deserialize_cuda_engine(
        b.build_serialized_network(net, b.create_builder_config())).create_execution_context()
    a = np.random.default_rng(1).standard_normal((2, 5)).astype(np.float32)
    out = exchange.execute(ctx, {"x": a})["y"]
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, np.tanh(a), rtol=1e-6)
