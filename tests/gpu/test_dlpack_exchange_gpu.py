"""engine/exchange.py on the device. TensorFlow is not installed here, so CuPy
arrays stand in for TensorFlow GPU tensors (TFLike exports them the way an
EagerTensor does); zero-copy is asserted by data pointers. Also: a plan timed on
the GPU, stored without weights, completed by a NumPy rebuild keeps its tactics."""
import numpy as np
import pytest

import engine as rt
from engine import exchange
from engine import plan as planfile
from engine.testing import rel_l2

cp = pytest.importorskip("cupy")


class TFLike:
    """A GPU tensor exported as TensorFlow's EagerTensor does: ``__dlpack__`` refuses
    any consumer stream (TF 2.21: "does not support DLPack export with a non-None
    stream"), so the consumer must take the bare capsule."""

    def __init__(self, array):
        self.array = array
        self.refused = 0

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        if stream is not None:
            self.refused += 1
            raise RuntimeError("tf.Tensor does not support DLPack export with a non-None stream")
        return self.array.__dlpack__()


def randn(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def conv_network(seed=0):
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (2, 8, 10, 10))
    conv = net.add_convolution_nd(x, 16, (3, 3), kernel=randn((16, 8, 3, 3), seed) * 0.2,
                                  bias=randn((16,), seed + 1))
    conv.padding_nd = (1, 1)
    act = net.add_activation(conv.get_output(0), rt.ActivationType.RELU)
    act.get_output(0).name = "y"
    net.mark_output(act.get_output(0))
    return b, net


def build(backend, fp16=False):
    b, net = conv_network()
    config = b.create_builder_config()
    config.backend = backend
    if fp16:
        config.set_flag(rt.BuilderFlag.FP16)
    return b.build_serialized_network(net, config)


def test_device_tensors_reach_the_engine_without_a_copy():
    a = cp.asarray(randn((4, 6), 1))
    assert exchange.device_of(a) == "cuda"
    assert exchange.to_engine(a, "cupy").data.ptr == a.data.ptr
    tf_like = TFLike(a[1:])
    view = exchange.to_engine(tf_like, "cupy")
    assert tf_like.refused == 1                      # the capsule path, as with TensorFlow
    assert view.data.ptr == a[1:].data.ptr
    cp.testing.assert_array_equal(view, a[1:])


def test_tensors_cross_to_the_other_backend_by_one_copy():
    a = cp.asarray(randn((3, 5), 2))
    host = exchange.to_engine(TFLike(a), "numpy")
    assert isinstance(host, np.ndarray)
    np.testing.assert_array_equal(host, cp.asnumpy(a))
    dev = exchange.to_engine(host, "cupy")
    assert isinstance(dev, cp.ndarray) and dev.data.ptr != a.data.ptr
    cp.testing.assert_array_equal(dev, a)


def test_engine_outputs_stay_on_the_device_and_leave_through_dlpack():
    plan = build("cupy")
    ctx = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan).create_execution_context()
    ref_ctx = rt.Runtime(backend="numpy").deserialize_cuda_engine(
        build("numpy")).create_execution_context()
    outs, refs = [], []
    for seed in range(4):       # select, capture a CUDA graph, replay (same static buffers)
        x = randn((2, 8, 10, 10), 10 + seed)
        out = exchange.execute(ctx, {"x": exchange.to_engine(TFLike(cp.asarray(x)), "cupy")})["y"]
        assert isinstance(out, cp.ndarray) and out.dtype == np.float32
        outs.append(out)
        refs.append(ref_ctx.execute({"x": x})["y"])
    for out, ref in zip(outs, refs):      # earlier outputs were not overwritten by later runs
        assert rel_l2(cp.asnumpy(out), ref) <= 1e-4
    capsule = exchange.from_engine(outs[-1])
    assert cp.from_dlpack(capsule).data.ptr == outs[-1].data.ptr


@pytest.mark.parametrize("fp16", [False, True])
def test_plan_timed_on_the_gpu_loads_with_weights_rebuilt_on_numpy(fp16):
    plan = build("cupy", fp16)
    doc = planfile.loads(plan)[0]
    assert doc["engine"]["kernels"] and "numpy.reference" not in doc["engine"]["kernels"].values()
    full = planfile.attach_weights(planfile.strip_weights(plan), build("numpy", fp16))
    assert planfile.loads(full)[0]["engine"]["kernels"] == doc["engine"]["kernels"]
    engine = rt.Runtime(backend="cupy").deserialize_cuda_engine(full)
    x = randn((2, 8, 10, 10), 20)
    got = engine.create_execution_context().execute({"x": x})["y"]
    ref = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan).create_execution_context(
        ).execute({"x": x})["y"]
    assert rel_l2(got, ref) <= (1e-2 if fp16 else 1e-5)
    assert engine.backend.forced == doc["engine"]["kernels"]
