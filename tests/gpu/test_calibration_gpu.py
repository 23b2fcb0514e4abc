"""INT8 calibration on the GPU (engine/calibration.py ``device_runner``): the FP32 passes
run on the CuPy backend's tactics, maxima and histograms are taken on the device, and the
scales agree with the host run's; an INT8 build on the CuPy backend calibrates there."""
import logging
import os
import sys

import numpy as np
import pytest

import engine as rt
from engine import calibration as C
from kernels import quantize as Q

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "engine"))
from test_calibration_on_gpu_cpu import conv_net, feeds  # noqa: E402  (the CPU tests' network)

ALGOS = [rt.CalibrationAlgoType.ENTROPY_CALIBRATION_2, rt.CalibrationAlgoType.MINMAX_CALIBRATION,
         rt.CalibrationAlgoType.PERCENTILE_CALIBRATION]


@pytest.mark.parametrize("drop_zeros", [False, True])
def test_device_histogram_equals_the_host_one(drop_zeros):
    import cupy as cp
    rng = np.random.default_rng(7)
    x = np.maximum(rng.standard_normal((64, 33, 5)).astype(np.float32), 0)   # ReLU'd: zeros
    amax = float(np.abs(x).max())
    host = Q.abs_histogram(x, amax, drop_zeros=drop_zeros)
    dev = Q.abs_histogram(cp.asarray(x).transpose(2, 0, 1), amax, drop_zeros=drop_zeros)
    assert isinstance(dev, np.ndarray) and dev.dtype == np.int64
    np.testing.assert_array_equal(dev, host)
    assert Q.abs_max(cp.asarray(x)) == amax


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("layout", ["contiguous", "nhwc_view", "strided"])
@pytest.mark.parametrize("drop_zeros", [False, True])
def test_histogram_kernel_counts_as_the_numpy_definition(dtype, layout, drop_zeros):
    """The one-kernel histogram (kernels/gpu/quantize_int8.py) against NumPy's bincount on
    the same values: signed values, exact zeros, values exactly at and past amax (amax
    below the true maximum: the last bin takes them), float16, and the three layouts the
    calibration hands it (contiguous, an NCHW view of NHWC storage, a strided slice)."""
    import cupy as cp
    from kernels.gpu import quantize_int8 as QG
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((6, 40, 9, 16)) * 3).astype(dtype)
    x[x > 2.5] = 0                                     # zeros beside negative values
    amax = float(np.abs(x.astype(np.float32)).max()) * 0.8
    x.flat[5] = dtype(amax)                            # exactly at amax: the last bin
    dev = cp.asarray(x)
    if layout == "nhwc_view":
        dev = cp.ascontiguousarray(dev.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    elif layout == "strided":
        dev, x = dev[:, ::2], x[:, ::2]
    want = Q.abs_histogram(x, amax, bins=2048, drop_zeros=drop_zeros)
    got = QG.abs_histogram(dev, amax, 2048, drop_zeros)
    assert got.dtype == np.int64 and got[-1] > 0 and want.sum() == x.size - drop_zeros * int((x == 0).sum())
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(Q.abs_histogram(dev, amax, 2048, drop_zeros), want)   # the dispatch
    assert QG.abs_histogram(cp.zeros((0, 3), dtype), 1.0, 16).tolist() == [0] * 16


@pytest.mark.parametrize("algo", ALGOS)
def test_thresholds_on_the_gpu_match_the_host(algo):
    net = conv_net()
    host = C.collect_thresholds(net, feeds(), algo)
    dev = C.collect_thresholds(net, feeds(), algo, runner=C.device_runner(net))
    assert dev.keys() == host.keys()
    for name in host:
        # FP32 kernels on the GPU sum in another order: maxima agree to ~1e-6; an entropy
        # or percentile threshold may move by a bin of 2048 when a value crosses an edge
        assert dev[name] == pytest.approx(host[name], rel=2e-3, abs=1e-6), name


def test_int8_build_on_the_cupy_backend_calibrates_on_the_gpu(caplog):
    net = conv_net()
    cfg = rt.Builder().create_builder_config()
    cfg.backend = "cupy"
    cfg.set_flag(rt.BuilderFlag.INT8)
    cfg.int8_calibrator = rt.EntropyCalibrator2([f["x"] for f in feeds()])
    with caplog.at_level(logging.INFO, logger="engine.calibration"):
        plan = rt.Builder().build_serialized_network(net, cfg)
    assert "on the GPU" in caplog.text and "failed" not in caplog.text
    eng = rt.Runtime(backend="cupy").deserialize_cuda_engine(plan)
    x = feeds(1, seed=9)[0]["x"]
    got = eng.create_execution_context().execute({"x": x})
    out = eng.network.get_output(0).name
    ref = rt.Runtime(backend="numpy").deserialize_cuda_engine(plan).create_execution_context().execute({"x": x})
    np.testing.assert_allclose(np.asarray(got[out]), np.asarray(ref[out]), rtol=0.05, atol=0.05)
