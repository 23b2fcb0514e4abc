"""Calibration through a backend's layer loop (engine/calibration.py ``device_runner``,
``forward(..., runner=)``) and the way back to the host when the GPU run fails, without a
GPU: a LayerRunner over the NumPy backend stands in for the device runner (same loop,
host arrays), and the CuPy backend's untimed tactic choice is driven with stand-in
tactics. The GPU run itself: tests/gpu/test_calibration_gpu.py."""
import logging
import math
import threading

import numpy as np
import pytest

import engine as rt
from engine import calibration as C
from engine import quantization
from engine.backends.cupy_backend import CupyBackend
from engine.backends.numpy_backend import NumpyBackend
from engine.execution import EngineSchedule, LayerRunner
from engine.gpu import tactics as T
from engine.settings import overridden
from kernels import quantize as Q

ALGOS = [rt.CalibrationAlgoType.ENTROPY_CALIBRATION_2, rt.CalibrationAlgoType.MINMAX_CALIBRATION,
         rt.CalibrationAlgoType.PERCENTILE_CALIBRATION]


def conv_net(seed=3):
    """conv + bias -> ReLU -> max pool -> conv (+ residual) -> FC: float tensors of several
    kinds (signed, ReLU'd with a spike of zeros, pooled)."""
    rng = np.random.default_rng(seed)
    net = rt.Builder().create_network()
    x = net.add_input("x", rt.float32, (-1, 3, 10, 10))
    c1 = net.add_convolution_nd(x, 8, (3, 3), kernel=rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
                                bias=rng.standard_normal(8).astype(np.float32))
    c1.padding_nd = (1, 1)
    r1 = net.add_activation(c1.get_output(0), rt.ActivationType.RELU)
    p1 = net.add_pooling_nd(r1.get_output(0), rt.PoolingType.MAX, (2, 2))
    p1.stride_nd = (2, 2)
    c2 = net.add_convolution_nd(p1.get_output(0), 8, (3, 3),
                                kernel=(0.3 * rng.standard_normal((8, 8, 3, 3))).astype(np.float32),
                                bias=rng.standard_normal(8).astype(np.float32))
    c2.padding_nd = (1, 1)
    s = net.add_elementwise(c2.get_output(0), p1.get_output(0), rt.ElementWiseOperation.SUM)
    flat = net.add_shuffle(s.get_output(0))
    flat.reshape_dims = (-1, 8 * 5 * 5)
    fc = net.add_fully_connected(flat.get_output(0), 4,
                                 rng.standard_normal((4, 200)).astype(np.float32) / 14,
                                 rng.standard_normal(4).astype(np.float32))
    net.mark_output(fc.get_output(0))
    net._ensure_inferred()
    return net


def feeds(n=3, batch=4, seed=5):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((batch, 3, 10, 10)).astype(np.float32)} for _ in range(n)]


def numpy_runner(net):
    """What device_runner returns, over the NumPy backend: the engine's layer loop, FP32."""
    meta = {"precisions": {layer.name: "FLOAT" for layer in net._layers}}
    return LayerRunner(EngineSchedule(net, meta, NumpyBackend()))


def test_forward_through_a_runner_visits_what_the_host_forward_visits():
    net = conv_net()
    host, loop = {}, {}
    batch = feeds(1)[0]
    C.forward(net, batch, lambda t, v: host.__setitem__(t.name, np.array(v)))
    C.forward(net, batch, lambda t, v: loop.__setitem__(t.name, np.array(v)), runner=numpy_runner(net))
    assert host.keys() == loop.keys() and len(host) == 1 + net.num_layers
    for name in host:
        assert np.abs(host[name]).max() > 0
        np.testing.assert_allclose(loop[name], host[name], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("algo", ALGOS)
def test_thresholds_through_a_runner_equal_the_host_ones(algo):
    net = conv_net()
    host = C.collect_thresholds(net, feeds(), algo)
    loop = C.collect_thresholds(net, feeds(), algo, runner=numpy_runner(net))
    assert host.keys() == loop.keys() and all(v > 0 for v in host.values())
    for name in host:
        assert loop[name] == pytest.approx(host[name], rel=1e-5), name


class _Batches(rt.EntropyCalibrator2):
    pass


def _calibrate(net, on_gpu):
    scales = C.calibrate(net, _Batches([f["x"] for f in feeds()]), on_gpu=on_gpu)
    for t in C._float_tensors(net):   # the next calibrate sets them again
        t.dynamic_range = None
    return scales


def test_calibrate_on_the_gpu_path_uses_the_runner_and_says_so(monkeypatch, caplog):
    net = conv_net()
    host = _calibrate(net, on_gpu=False)
    used = []
    monkeypatch.setattr(C, "device_runner", lambda n: used.append(n) or numpy_runner(n))
    with caplog.at_level(logging.INFO, logger="engine.calibration"):
        got = _calibrate(net, on_gpu=True)
    assert used == [net]
    assert "on the GPU" in caplog.text and "failed" not in caplog.text
    assert got.keys() == host.keys()
    for name in host:
        assert got[name] == pytest.approx(host[name], rel=1e-5)


def test_without_a_device_calibration_falls_back_to_the_host(caplog):
    net = conv_net()
    host = _calibrate(net, on_gpu=False)
    with caplog.at_level(logging.INFO, logger="engine.calibration"):
        got = _calibrate(net, on_gpu=True)          # no CUDA here: CupyBackend refuses
    assert "calibration on the GPU failed (BuildError" in caplog.text
    assert "on the host" in caplog.text
    assert got == host


def test_non_finite_values_from_the_device_run_are_rechecked_on_the_host(monkeypatch, caplog):
    net = conv_net()
    host = _calibrate(net, on_gpu=False)

    class Broken(NumpyBackend):
        @staticmethod
        def run_layer(layer, inputs, precision, out_dtypes):
            outs = NumpyBackend.run_layer(layer, inputs, precision, out_dtypes)
            return [np.full_like(v, np.nan) if v.dtype.kind == "f" else v for v in outs]

    def broken_runner(n):
        runner = numpy_runner(n)
        runner.engine.backend = Broken()
        return runner
    monkeypatch.setattr(C, "device_runner", broken_runner)
    with caplog.at_level(logging.WARNING, logger="engine.calibration"):
        got = _calibrate(net, on_gpu=True)
    assert "calibration on the GPU failed (CalibrationError" in caplog.text
    assert got == host


def test_bad_data_still_fails_after_the_host_rerun():
    net = conv_net()
    bad = [np.full((4, 3, 10, 10), 0.5, np.float32) for _ in range(2)]
    with pytest.raises(rt.CalibrationError, match="constant"):
        C.calibrate(net, rt.EntropyCalibrator2(bad), on_gpu=True)


@pytest.mark.parametrize("backend, switch, expected", [
    ("cupy", "1", True), ("cupy", "0", False), ("numpy", "1", False)])
def test_the_build_calibrates_on_the_gpu_only_with_the_cupy_backend(monkeypatch, backend, switch, expected):
    monkeypatch.setattr(quantization, "resolve", lambda name: name)
    cfg = rt.Builder().create_builder_config()
    cfg.backend = backend
    with overridden(calibrate_on_gpu=switch):
        assert quantization.calibrate_on_gpu(cfg) is expected


def test_abs_max_of_empty_nan_and_signed_arrays():
    assert Q.abs_max(np.zeros(0, np.float32)) == 0.0
    assert math.isnan(Q.abs_max(np.array([1.0, np.nan], np.float32)))
    assert Q.abs_max(np.array([0.5, -3.25, 2.0], np.float32)) == 3.25


# -- the CuPy backend's untimed choice (autotune off) ------------------------------------

class _Stand:
    def __init__(self, name, fallback=False, fails=False):
        self.name, self.fallback, self.fails, self.runs = name, fallback, fails, 0

    def prepare(self, layer):
        return {}

    def run(self, state, layer, inputs, precision, out_dtypes):
        self.runs += 1
        if self.fails:
            raise RuntimeError(f"{self.name} cannot run this")
        return [inputs[0]]


class _Layer:
    name = "conv"

    def describe(self):
        return "conv (stand-in)"


def _untimed_backend():
    b = CupyBackend.__new__(CupyBackend)        # no CUDA here: only what _first_that_runs reads
    b._state, b._lock, b.tactic_failures = {}, threading.Lock(), {}
    return b


def test_untimed_choice_takes_the_first_specialised_tactic_that_runs():
    b = _untimed_backend()
    generic = _Stand("generic", fallback=True)
    broken = _Stand("tile_a", fails=True)
    tile = _Stand("tile_b")
    later = _Stand("tile_c")
    got = b._first_that_runs(_Layer(), [generic, broken, tile, later], [np.ones(3)], None, [])
    assert got is tile
    assert (generic.runs, broken.runs, tile.runs, later.runs) == (0, 1, 1, 0)
    assert "cannot run this" in b.tactic_failures["conv"]["tile_a"]


def test_untimed_choice_falls_back_then_to_the_host(caplog):
    b = _untimed_backend()
    generic = _Stand("generic", fallback=True)
    assert b._first_that_runs(_Layer(), [_Stand("t", fails=True), generic], [np.ones(2)], None, []) is generic
    with caplog.at_level(logging.WARNING):
        got = b._first_that_runs(_Layer(), [_Stand("t", fails=True), _Stand("g", True, True)], [np.ones(2)],
                                 None, [])
    assert got is T.HOST and "every GPU tactic failed" in caplog.text
