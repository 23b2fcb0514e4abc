"""Diagnose an INT8 mismatch between the CuPy and NumPy backends: the small
conv-relu-conv-pool-FC network of tests/gpu, with tactics forced per variant."""
import sys

import numpy as np

sys.path.insert(0, ".")
import engine as rt  # noqa: E402
from engine.testing import rel_l2  # noqa: E402

rng = np.random.default_rng(123)


def randn(*s):
    return rng.standard_normal(s).astype(np.float32)


net = rt.Network()
x = net.add_input("x", rt.float32, (4, 8, 10, 10))
c1 = net.add_convolution_nd(x, 16, (3, 3), kernel=randn(16, 8, 3, 3) * 0.2, bias=randn(16), padding_nd=(1, 1))
r1 = net.add_activation(c1.get_output(0), rt.ActivationType.RELU).get_output(0)
c2 = net.add_convolution_nd(r1, 16, (3, 3), kernel=randn(16, 16, 3, 3) * 0.2, bias=randn(16), padding_nd=(1, 1))
p = net.add_pooling_nd(c2.get_output(0), rt.PoolingType.MAX, (2, 2), stride_nd=(2, 2))
fc = net.add_fully_connected(p.get_output(0), 10, randn(10, 400) * 0.05, randn(10))
net.mark_output(fc.get_output(0))
data = [randn(4, 8, 10, 10) for _ in range(4)]
feeds = {"x": randn(4, 8, 10, 10)}


def build(backend):
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = backend
    cfg.set_flag(rt.BuilderFlag.INT8)
    cfg.int8_calibrator = rt.MinMaxCalibrator(data)
    return rt.Runtime(backend=backend).deserialize_cuda_engine(b.build_serialized_network(net, cfg))


ref = build("numpy").create_execution_context().execute(feeds)
name = list(ref)[0]
print("numpy precisions", [(i.name, i.precision.name) for i in build("numpy").layers])
variants = {
    "default": {},
    "pool_host": {"pooling_3": "numpy.host"},
    "fc_host": {"fully_connected_4": "numpy.host"},
    "conv_small_tiles": {"convolution_0": "conv.i8_64x64x64_w2x2_s4", "convolution_2": "conv.i8_64x64x64_w2x2_s4"},
    "conv_emulation": {"convolution_0": "int8.emulation", "convolution_2": "int8.emulation"},
    "all_emulation": {"convolution_0": "int8.emulation", "convolution_2": "int8.emulation",
                      "pooling_3": "int8.emulation", "fully_connected_4": "int8.emulation"},
    "all_host": {"convolution_0": "numpy.host", "convolution_2": "numpy.host",
                 "pooling_3": "numpy.host", "fully_connected_4": "numpy.host"},
}
for v, forced in variants.items():
    eng = build("cupy")
    eng.backend.forced.update(forced)
    eng.backend.use_graphs = False
    try:
        got = eng.create_execution_context().execute(feeds)
        print(f"{v:18s} rel_l2 {rel_l2(got[name], ref[name]):.3e}  {eng.backend.selected}")
    except Exception as e:  # noqa: BLE001
        print(f"{v:18s} FAILED {type(e).__name__}: {e}")
