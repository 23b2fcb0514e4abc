"""The cuDNN plans an FP16 build chose travel in its plan file (engine/gpu/cudnn_tactics.py
``EnginePlans``): deserialized as a fresh process would (no built graphs, no cache file),
the engine runs them without compiling a plan and gives the first engine's outputs.
Skipped without CUDA or without the cuDNN frontend."""
import numpy as np
import pytest

cp = pytest.importorskip("cupy")

import engine as rt  # noqa: E402
from engine.backends import cupy_backend  # noqa: E402
from engine.gpu import cudnn_tactics as CT  # noqa: E402
from kernels.gpu import cudnn_graphs as G  # noqa: E402

pytestmark = pytest.mark.skipif(not G.available(), reason=f"{G.unavailable_reason()}")


def test_a_deserialized_engine_runs_its_cudnn_plans_without_compiling(monkeypatch):
    monkeypatch.delenv("CUPYRT_TIMING_CACHE", raising=False)
    monkeypatch.delenv("CUPYRT_CUDNN_PLAN_CACHE", raising=False)
    rng = np.random.default_rng(12)
    net = rt.Network()
    x = net.add_input("x", rt.float32, (8, 64, 14, 14))
    conv = net.add_convolution_nd(x, 64, (3, 3), kernel=(rng.standard_normal((64, 64, 3, 3)) / 24).astype(
        np.float32), bias=rng.standard_normal(64).astype(np.float32))
    conv.padding_nd = (1, 1)
    y = net.add_elementwise(conv.get_output(0), x, rt.ElementWiseOperation.SUM).get_output(0)
    net.mark_output(net.add_activation(y, rt.ActivationType.RELU).get_output(0))
    from engine import kernel_table
    from engine.types import LayerType
    # the cuDNN tactic alone for the convolution, so the build must choose it
    monkeypatch.setitem(kernel_table.TACTICS, LayerType.CONVOLUTION, [CT.ConvCudnn()])
    cfg = rt.Builder().create_builder_config()
    cfg.backend = "cupy"
    cfg.set_flag(rt.BuilderFlag.FP16)
    G.clear()
    plan = rt.Builder().build_serialized_network(net, cfg)
    first = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
    assert set(first.meta["kernels"].values()) >= {"conv.cudnn"}
    if not first.meta.get("cudnn_plans"):
        # cuDNN serializes runtime-compiled plans only (kernels/gpu/cudnn_graphs.py); the wiring
        # itself is tests/engine/test_cudnn_engine_plans.py's
        pytest.skip("the chosen plan is not runtime-compiled: nothing to carry")
    feeds = {"x": rng.standard_normal((8, 64, 14, 14)).astype(np.float32)}
    want = first.create_execution_context().execute(feeds)
    G.clear()                                        # as a new process: nothing built
    monkeypatch.setattr(cupy_backend, "_caches", {})
    monkeypatch.setattr(CT, "_stores", {})
    again = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
    got = again.create_execution_context().execute(feeds)
    stats = G.stats()
    assert stats["built"] >= 1 and stats["build_s"] == 0.0 and stats["deserialized"] >= 1, stats
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)
