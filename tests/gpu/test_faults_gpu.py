"""Real faults while tactics are timed on the device (tests/engine/test_tactic_faults.py
injects the same on a stand-in): CUDA source that does not compile, a launch the driver
refuses (too many threads per block: an error that leaves the context usable), and an
allocation far beyond the card. Each candidate scores infinity, is logged, its memory
goes back, and the build takes a real tactic whose engine matches the NumPy backend."""
import logging

import numpy as np
import pytest

import engine as rt
from engine import kernel_table
from engine.gpu import tactics as T
from engine.types import LayerType
from gpu_helpers import rel_l2

cp = pytest.importorskip("cupy")


class Faulty(T.Tactic):
    """Put first in the convolution's candidates; fails as ``fault`` says."""

    def __init__(self, fault):
        self.fault = fault
        self.name = f"inject.{fault}"

    def prepare(self, layer):
        if self.fault == "compile":
            cp.RawModule(code='extern "C" __global__ void k(float* y) { y[0] = undeclared; }'
                         ).get_function("k")
        return None

    def run(self, state, layer, inputs, precision, out_dtypes):
        if self.fault == "launch":
            kern = cp.RawKernel('extern "C" __global__ void k(float* y) { y[threadIdx.x] = 1.f; }',
                                "k")
            y = cp.empty(4096, cp.float32)
            kern((1,), (4096,), (y,))                  # 4096 threads per block: refused
        elif self.fault == "oom":
            cp.empty(1 << 50, cp.uint8)                # a petabyte
        raise AssertionError(f"{self.name} ran")


def conv_net(seed=4):
    rng = np.random.default_rng(seed)
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (4, 16, 14, 14))
    conv = net.add_convolution_nd(x, 32, (3, 3), rng.standard_normal((32, 16, 3, 3)).astype(
        np.float32) * 0.2, rng.standard_normal(32).astype(np.float32), padding_nd=(1, 1))
    act = net.add_activation(conv.get_output(0), rt.ActivationType.RELU)
    net.mark_output(act.get_output(0))
    return b, net


@pytest.mark.parametrize("precision", [None, rt.BuilderFlag.FP16], ids=["fp32", "fp16"])
def test_device_faults_while_timing_are_skipped_and_the_build_succeeds(monkeypatch, caplog,
                                                                       precision):
    from engine.gpu import conv_tactics  # noqa: F401  (the real tactics registered first)
    real = list(kernel_table.TACTICS[LayerType.CONVOLUTION])
    faults = [Faulty("compile"), Faulty("launch"), Faulty("oom")]
    monkeypatch.setitem(kernel_table.TACTICS, LayerType.CONVOLUTION, faults + real)
    caplog.set_level(logging.INFO, logger="engine.backends.cupy_backend")
    b, net = conv_net()
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    if precision is not None:
        cfg.set_flag(precision)
    pool = cp.get_default_memory_pool()
    plan = b.build_serialized_network(net, cfg)
    engine = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
    (conv,) = [n for n in engine.meta["kernels"] if "conv" in n.lower()]
    assert not engine.meta["kernels"][conv].startswith("inject.")
    for f in faults:
        assert engine.meta["tactic_ms"][conv][f.name] is None
    said = " ".join(r.getMessage() for r in caplog.records)
    for f, kind in zip(faults, ("CompileException", "CUDADriverError", "OutOfMemoryError")):
        assert f"tactic {f.name} skipped ({kind}" in said
    assert pool.total_bytes() < 1 << 40                # nothing of the failed petabyte held
    x = np.random.default_rng(5).standard_normal((4, 16, 14, 14)).astype(np.float32)
    got = engine.create_execution_context().execute({"x": x})
    ref = rt.Runtime(backend="numpy").deserialize_cuda_engine(plan).create_execution_context() \
        .execute({"x": x})
    tol = 1e-2 if precision is not None else 1e-4
    for name in ref:
        assert rel_l2(got[name], ref[name]) <= tol
