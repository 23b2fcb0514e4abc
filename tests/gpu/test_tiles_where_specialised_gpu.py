"""tiles_where_specialised=0 on the device: an FP16 network whose stem the stem kernel takes
and whose other convolutions cuDNN takes is built without timing a general tile (conv.igemm*,
conv.wg_*), gives the NumPy reference's answers, and precompile lists none of those tiles;
when every cuDNN plan fails, the general tiles are timed after all and the engine runs the
one chosen. Skipped without CUDA or without the cuDNN frontend."""
import numpy as np
import pytest

cp = pytest.importorskip("cupy")

import engine as rt  # noqa: E402
from engine.backends import cupy_backend  # noqa: E402
from engine.gpu import cudnn_tactics as CT  # noqa: E402
from engine.gpu import precompile  # noqa: E402
from engine.testing import rel_l2  # noqa: E402
from kernels.gpu import cudnn_graphs as G  # noqa: E402

pytestmark = pytest.mark.skipif(not G.available(), reason=f"{G.unavailable_reason()}")
GENERAL = ("conv.igemm", "conv.wg_")


def network(rng):
    """RGB stem 3x3/2 -> 3x3 32 -> 1x1 64 + a 1x1 projection of the stem, ReLUs."""
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 3, 32, 32))

    def conv(t, k, ks, stride=1):
        c = t.shape[1]
        layer = net.add_convolution_nd(t, k, (ks, ks), kernel=(rng.standard_normal((k, c, ks, ks))
                                                              / np.sqrt(c * ks * ks)).astype(np.float32),
                                       bias=(rng.standard_normal(k) * 0.1).astype(np.float32))
        layer.stride_nd, layer.padding_nd = (stride, stride), (ks // 2, ks // 2)
        return layer.get_output(0)

    relu = lambda t: net.add_activation(t, rt.ActivationType.RELU).get_output(0)  # noqa: E731
    h = relu(conv(x, 32, 3, 2))
    y = relu(conv(h, 32, 3))
    y = net.add_elementwise(conv(y, 64, 1), conv(h, 64, 1), rt.ElementWiseOperation.SUM).get_output(0)
    net.mark_output(relu(y))
    return net


def build(net, batch=16):
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    cfg.set_flag(rt.BuilderFlag.FP16)
    prof = b.create_optimization_profile()
    prof.set_shape("x", (1, 3, 32, 32), (batch, 3, 32, 32), (batch, 3, 32, 32))
    cfg.add_optimization_profile(prof)
    return b.build_serialized_network(net, cfg)


def reference(plan, feeds):
    return rt.Runtime(backend="numpy").deserialize_cuda_engine(plan).create_execution_context().execute(feeds)


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.delenv("CUPYRT_TIMING_CACHE", raising=False)
    monkeypatch.delenv("CUPYRT_CUDNN_PLAN_CACHE", raising=False)
    monkeypatch.setattr(cupy_backend, "_caches", {})
    monkeypatch.setenv("CUPYRT_TILES_WHERE_SPECIALISED", "0")
    G.clear()
    yield
    G.clear()


def test_no_general_tile_is_timed_or_listed_where_cudnn_and_the_stem_kernel_take_the_layers(fresh):
    rng = np.random.default_rng(21)
    net = network(rng)
    plan = build(net)
    engine = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
    meta = engine.meta
    convs = {n: k for n, k in meta["kernels"].items() if k.startswith("conv.")}
    assert convs and not [k for k in convs.values() if k.startswith(GENERAL)], convs
    assert any(k.startswith("conv.stem_") for k in convs.values()) and "conv.cudnn" in convs.values()
    timed = {t for n in convs for t in meta["tactic_ms"].get(n, {})}
    assert not [t for t in timed if t.startswith(GENERAL)], timed
    items = precompile.network_items(engine.network, meta, {"x": (16, 3, 32, 32)})
    assert {i[0] for i in items} <= {"conv_stem"}, items                       # no general tile to compile
    feeds = {"x": rng.standard_normal((16, 3, 32, 32)).astype(np.float32)}
    got = engine.create_execution_context().execute(feeds)
    want = reference(plan, feeds)
    for name in want:
        assert rel_l2(cp.asnumpy(got[name]), want[name]) <= 1e-2


def test_the_general_tiles_are_timed_and_run_when_every_cudnn_plan_fails(fresh, monkeypatch):
    def fail(self, *a, **k):
        raise RuntimeError("no cuDNN plan ran (injected)")
    monkeypatch.setattr(CT.ConvCudnn, "run", fail)
    rng = np.random.default_rng(22)
    net = network(rng)
    plan = build(net)
    engine = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
    meta = engine.meta
    cudnn_layers = [n for n, ms in meta["tactic_ms"].items() if "conv.cudnn" in ms]
    assert cudnn_layers
    for n in cudnn_layers:
        ms = meta["tactic_ms"][n]
        assert ms["conv.cudnn"] is None and meta["kernels"][n] != "conv.cudnn"  # failed, not chosen
        assert [t for t, v in ms.items() if t.startswith(GENERAL) and v is not None], ms   # held back, then timed
    feeds = {"x": rng.standard_normal((16, 3, 32, 32)).astype(np.float32)}
    got = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan).create_execution_context().execute(feeds)
    want = reference(plan, feeds)
    for name in want:
        assert rel_l2(cp.asnumpy(got[name]), want[name]) <= 1e-2
