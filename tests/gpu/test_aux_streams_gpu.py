"""Auxiliary streams on the GPU (settings aux_streams, engine/aux_streams.py): an engine of
two ResNet projection blocks captured with each projection on a second stream gives, at
every replay on fresh inputs, the outputs of the same plan captured on one stream (FP32,
FP16, INT8; the blocks also in torchvision's order, the projection traced last); the capture
forked exactly the planned layers, and the switch off forks none."""
import os
import sys

import numpy as np
import pytest

cp = pytest.importorskip("cupy")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "engine"))
from gpu_helpers import rel_l2  # noqa: E402
from test_aux_streams_cpu import two_blocks  # noqa: E402

N, HW, WIDTH = 32, 32, 4
RNG = np.random.default_rng(31)


def feeds():
    return {"data": RNG.standard_normal((N, 8, HW, HW)).astype(np.float32)}


def context(plan, monkeypatch, aux):
    """A fresh engine of ``plan`` with the switch ``aux`` and its execution context."""
    import engine as rt
    monkeypatch.setenv("CUPYRT_AUX_STREAMS", "1" if aux else "0")
    engine = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
    return engine, engine.create_execution_context()


def build(net, flag, calibration):
    import engine as rt
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    cfg.precision_by_timing = False
    if flag != "FP32":
        cfg.set_flag(getattr(rt.BuilderFlag, flag))
    if calibration is not None:
        cfg.int8_calibrator = rt.MinMaxCalibrator(calibration)
    return b.build_serialized_network(net, cfg)


@pytest.mark.parametrize("flag, torch_order", [("FP32", False), ("FP16", False), ("INT8", False),
                                               ("FP16", True), ("INT8", True)])
def test_side_branches_on_a_second_stream_replay_the_one_stream_outputs(monkeypatch, flag, torch_order):
    from engine.backends import cupy_backend
    issued = []                        # every layer issued on an auxiliary stream
    real = cupy_backend.AuxStream.issue

    def counted(self, fn, name):
        issued.append(name)
        return real(self, fn, name)
    monkeypatch.setattr(cupy_backend.AuxStream, "issue", counted)
    net = two_blocks(N, hw=HW, width=WIDTH, torch_order=torch_order)   # torch's: branch_order moves them
    plan = build(net, flag, [feeds()["data"] for _ in range(2)] if flag == "INT8" else None)
    one_engine, one = context(plan, monkeypatch, aux=False)
    two_engine, two = context(plan, monkeypatch, aux=True)
    out = one_engine.network._outputs[0].name
    fixed = feeds()
    for i in range(8):                 # select, capture, then replays on fresh inputs
        f = fixed if i < 3 else feeds()
        want = cp.asnumpy(cp.asarray(one.execute(f)[out]))
        got = cp.asnumpy(cp.asarray(two.execute(f)[out]))
        assert np.isfinite(got).all()
        assert rel_l2(got, want) <= 1e-6, (flag, i)
    graphs = [g for g in two.__dict__.get("_cuda_graphs", {}).values() if not isinstance(g, str)]
    assert graphs and all(g.aux is not None for g in graphs), two_engine.backend.graph_notes
    assert any("2 layers on an auxiliary stream (b1_proj, b2_proj)" in n for n in two_engine.backend.graph_notes)
    assert all(g.aux is None for g in one.__dict__["_cuda_graphs"].values() if not isinstance(g, str))
    planned = two._schedule({"data": cp.asarray(fixed["data"])})["aux"]
    order = [layer.name for layer in two_engine.network._layers]
    assert {order[a] for a in planned.steps} == {"b1_proj", "b2_proj"}
    # the rehearsal and the capture of the aux engine; the one-stream engine issued none
    assert len(issued) == 2 * len(planned.steps)
