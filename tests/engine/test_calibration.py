"""Calibration: histogram thresholds (entropy, percentile), calibrators over
NumPy data, TensorRT-format caches, and every calibration error."""
import logging
import math
import struct

import numpy as np
import pytest

import engine as rt
from engine import calibration as C
from kernels import quantize as Q

RNG = np.random.default_rng(11)


# -- thresholds -----------------------------------------------------------------

def test_device_histogram_refuses_what_its_kernel_cannot_count():
    """kernels/gpu/quantize_int8.abs_histogram checks before touching a device: an integer
    array, amax <= 0 and more bins than a block's shared memory holds each say why."""
    from kernels.gpu import quantize_int8 as QG
    from kernels.gpu.errors import UnsupportedError
    with pytest.raises(UnsupportedError, match="expected float32 or float16"):
        QG.abs_histogram(np.zeros(4, np.int32), 1.0, 16)
    with pytest.raises(UnsupportedError, match="amax 0.0"):
        QG.abs_histogram(np.zeros(4, np.float32), 0.0, 16)
    with pytest.raises(UnsupportedError, match="bins 9000"):
        QG.abs_histogram(np.zeros(4, np.float32), 1.0, 9000)


def test_abs_histogram_matches_numpy_and_drops_zeros():
    x = RNG.standard_normal(5000).astype(np.float32)
    amax = float(np.abs(x).max())
    h = Q.abs_histogram(x, amax, bins=64)
    ref, _ = np.histogram(np.abs(x), bins=64, range=(0, amax))
    assert h.sum() == x.size and np.abs(h - ref).max() <= 1      # edges may differ by one ulp
    z = np.concatenate([x, np.zeros(100, np.float32)])
    assert Q.abs_histogram(z, amax, 64)[0] == h[0] + 100
    np.testing.assert_array_equal(Q.abs_histogram(z, amax, 64, drop_zeros=True), h)
    assert Q.abs_histogram(np.zeros(7), 0.0, 8).tolist() == [7, 0, 0, 0, 0, 0, 0, 0]


def brute_force_kl(hist, start, levels):
    """An independent, loop-by-loop reading of the GTC 2017 pseudo-code."""
    out = []
    n = len(hist)
    for i in range(start, n + 1):
        p = [float(v) for v in hist[:i]]
        p[i - 1] += float(sum(hist[i:]))
        m = i // levels
        q = [0.0] * i
        for j in range(levels):
            lo = j * m
            hi = i if j == levels - 1 else lo + m
            total = sum(float(v) for v in hist[lo:hi])
            nonzero = [b for b in range(lo, hi) if hist[b] != 0]
            for b in nonzero:
                q[b] = total / len(nonzero)
        sp, sq = sum(p), sum(q)
        kl = 0.0
        for a, b in zip(p, q):
            if a > 0:
                pa, qb = a / sp, b / sq
                kl += pa * math.log(pa / (qb if qb > 0 else Q.KL_EPS))
        out.append(kl)
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_divergences_match_a_brute_force_loop(seed):
    rng = np.random.default_rng(seed)
    hist = rng.integers(0, 50, size=37)
    hist[rng.integers(0, 37, size=5)] = 0                      # empty bins matter
    np.testing.assert_allclose(Q.kl_divergences(hist, start=8, levels=4),
                               brute_force_kl(hist, 8, 4), rtol=1e-10, atol=1e-12)
    i = 8 + int(np.argmin(brute_force_kl(hist, 8, 4)))
    assert Q.kl_threshold(hist, 0.5, start=8, levels=4) == (i + 0.5) * 0.5


per_candidate_kl = Q.kl_divergences_by_definition     # each candidate's two distributions, one at a time


def _histograms():
    rng = np.random.default_rng(5)
    relu = np.maximum(rng.standard_normal(300_000) * 1.7, 0)
    relu[rng.integers(0, relu.size, 4)] = 30.0                     # outliers: a long empty tail
    coarse = np.round(rng.uniform(0, 1, 50_000) * 16) / 16          # 17 values: mostly empty bins
    for x in (np.abs(rng.standard_normal(200_000)), relu, coarse, rng.exponential(1.0, 100_000)):
        yield Q.abs_histogram(x, float(np.abs(x).max()), drop_zeros=True)


@pytest.mark.parametrize("k", range(4))
def test_kl_divergences_equal_the_per_candidate_distributions_on_2048_bins(k):
    hist = list(_histograms())[k]
    got, ref = Q.kl_divergences(hist), per_candidate_kl(hist, Q.START_BIN, Q.NUM_LEVELS)
    assert got.shape == ref.shape == (Q.NUM_BINS - Q.START_BIN + 1,)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    # the chosen candidate is a minimum of the reference too (ties within rounding aside)
    assert ref[int(np.argmin(got))] <= ref.min() + 1e-12


def test_kl_divergences_edge_cases_against_the_per_candidate_form():
    empty_head = np.zeros(300)
    empty_head[250:] = np.arange(1, 51)                             # the first candidates see no counts
    last_empty = np.arange(1, 301, dtype=float)
    last_empty[140:160] = 0                                         # candidates ending on empty bins
    for hist in (empty_head, last_empty):
        np.testing.assert_allclose(Q.kl_divergences(hist, 128, 128), per_candidate_kl(hist, 128, 128),
                                   rtol=1e-10, atol=1e-12)
    assert Q.kl_divergences(np.zeros(200), 128, 128).tolist() == [0.0] * 73   # nothing counted
    assert Q.kl_divergences(np.ones(100), 128, 128).shape == (0,)            # no candidate


def test_entropy_clips_an_outlier_and_minmax_does_not():
    x = RNG.standard_normal(100_000).astype(np.float32)
    x[0] = 100.0
    amax = float(np.abs(x).max())
    h = Q.abs_histogram(x, amax)
    t = Q.kl_threshold(h, amax / Q.NUM_BINS)
    assert 2.0 < t < 10.0            # the bulk (|x| < ~4.5) kept, the outlier clipped
    assert amax == 100.0             # what MinMax takes
    assert Q.kl_threshold(np.ones(10), 1.0) == 10.0     # shorter than 128 bins: no clipping


def test_percentile_threshold_against_numpy_percentile():
    x = RNG.standard_normal(200_000).astype(np.float32)
    amax = float(np.abs(x).max())
    width = amax / Q.NUM_BINS
    h = Q.abs_histogram(x, amax)
    for pct in (50.0, 99.0, 99.99):
        t = Q.percentile_threshold(h, width, pct)
        assert abs(t - np.percentile(np.abs(x), pct)) <= width
    assert Q.percentile_threshold(np.zeros(4), 1.0, 99) == 4.0


# -- caches ---------------------------------------------------------------------

def test_cache_line_as_tensorrt_writes_it():
    # 0x3c010a14: sign 0, exponent 0x78 = 120 -> 2^-7, mantissa 0x010a14 = 68116
    by_hand = 2.0 ** -7 * (1 + 68116 / 2 ** 23)
    scales = C.read_cache(b"TRT-7000-EntropyCalibration2\nprob: 3c010a14\n(Unnamed Layer* 3) "
                          b"[Constant]_output: 3c92aa10\n",
                          rt.CalibrationAlgoType.ENTROPY_CALIBRATION_2)
    assert scales["prob"] == pytest.approx(by_hand, rel=1e-7)
    assert scales["(Unnamed Layer* 3) [Constant]_output"] == pytest.approx(0.0179033577, rel=1e-7)


def test_cache_round_trip_is_bit_exact():
    scales = {"data": np.float32(0.0123), "conv1:0": np.float32(3.5e-3)}
    text = C.write_cache(scales, rt.CalibrationAlgoType.MINMAX_CALIBRATION)
    assert text.decode().splitlines()[0] == "TRT-8601-MinMaxCalibration"
    assert text.decode().splitlines()[1] == "data: " + struct.pack(">f", 0.0123).hex()
    back = C.read_cache(text)
    assert {k: np.float32(v) for k, v in back.items()} == scales


@pytest.mark.parametrize("data, match", [
    (b"TRT-8601-EntropyCalibration2\nx: 3c010a14\n", "written by EntropyCalibration2"),
    (b"", "cache is empty"),
    (b"\xff\xfe", "not UTF-8"),
    (b"hello\nx: 3c010a14\n", "header 'hello'"),
    (b"TRT-8601-MinMaxCalibration\nx 3c010a14\n", "line 2"),
    (b"TRT-8601-MinMaxCalibration\nx: bf800000\n", "finite scale > 0"),
])
def test_bad_caches_raise(data, match):
    with pytest.raises(rt.CalibrationError, match=match):
        C.read_cache(data, rt.CalibrationAlgoType.MINMAX_CALIBRATION)


# -- calibrators in the builder -------------------------------------------------

def small_net(two_inputs=False):
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (-1, 4))
    h = x
    if two_inputs:
        y = net.add_input("y", rt.float32, (-1, 4))
        h = net.add_elementwise(x, y, rt.ElementWiseOperation.SUM).get_output(0)
    fc = net.add_fully_connected(h, 3, RNG.standard_normal((3, 4)).astype(np.float32),
                                 RNG.standard_normal(3).astype(np.float32))
    net.mark_output(fc.get_output(0))
    return b, net


def build(b, net, calibrator):
    cfg = b.create_builder_config()
    cfg.backend = "numpy"
    cfg.set_flag(rt.BuilderFlag.INT8)
    cfg.int8_calibrator = calibrator
    return rt.Runtime(backend="numpy").deserialize_cuda_engine(b.build_serialized_network(net, cfg))


def batches(n=3, shape=(8, 4)):
    return [RNG.standard_normal(shape).astype(np.float32) for _ in range(n)]


def test_cache_file_round_trip_skips_calibration(tmp_path):
    b, net = small_net()
    path = tmp_path / "calib.cache"
    e1 = build(b, net, rt.MinMaxCalibrator(batches(), cache_file=path))
    assert path.read_text().startswith("TRT-8601-MinMaxCalibration\nx: ")

    class NoBatches(rt.MinMaxCalibrator):
        def get_batch(self, names):
            raise AssertionError("get_batch called although the cache holds every scale")
    e2 = build(b, net, NoBatches([], cache_file=path))
    r1 = {t.name: t.dynamic_range for t in e1.network._inputs}
    assert r1 == {t.name: t.dynamic_range for t in e2.network._inputs}


def test_bad_cache_raises_or_is_ignored_on_request(tmp_path, caplog):
    b, net = small_net()
    path = tmp_path / "c.cache"
    path.write_bytes(b"TRT-8601-EntropyCalibration2\nx: 3c010a14\n")
    with pytest.raises(rt.CalibrationError, match="written by EntropyCalibration2"):
        build(b, net, rt.MinMaxCalibrator(batches(), cache_file=path))
    with caplog.at_level(logging.WARNING):
        build(b, net, rt.MinMaxCalibrator(batches(), cache_file=path, ignore_bad_cache=True))
    assert "cache ignored" in caplog.text
    assert path.read_text().startswith("TRT-8601-MinMaxCalibration")


def test_unknown_cache_names_are_logged_and_user_ranges_win(caplog):
    b, net = small_net()
    net.get_input(0).set_dynamic_range(-2.0, 2.0)
    cal = rt.MinMaxCalibrator([])
    cal.write_calibration_cache(C.write_cache({"x": 0.5, "ghost": 0.1},
                                              rt.CalibrationAlgoType.MINMAX_CALIBRATION))
    out_name = net.get_output(0).name
    with caplog.at_level(logging.INFO):
        e = build(b, net, cal)
    assert "ghost" in caplog.text
    assert e.network.get_tensor("x").dynamic_range == (-2.0, 2.0)
    assert e.network.get_tensor(out_name).dynamic_range is None


def test_minmax_and_percentile_ranges():
    b, net = small_net()
    data = batches(shape=(4000, 4))
    e = build(b, net, rt.MinMaxCalibrator(data))
    amax = max(float(np.abs(d).max()) for d in data)
    assert e.network.get_tensor("x").dynamic_range[1] == pytest.approx(amax, rel=1e-6)
    e = build(b, net, rt.PercentileCalibrator(data, percentile=50.0))
    median = float(np.percentile(np.abs(np.concatenate(data)), 50))
    assert e.network.get_tensor("x").dynamic_range[1] == pytest.approx(median, abs=2 * amax / 2048)


def test_dict_batches_for_two_inputs():
    b, net = small_net(two_inputs=True)
    data = [{"x": a, "y": 2 * a} for a in batches()]
    e = build(b, net, rt.EntropyCalibrator2(data))
    assert e.network.get_tensor("y").dynamic_range is not None


def empty_gen():
    yield from ()


@pytest.mark.parametrize("make, match", [
    (lambda: rt.MinMaxCalibrator([]), r"no batches(.|\n)*1\. the iterable was already exhausted"),
    (lambda: rt.MinMaxCalibrator(empty_gen()), "no batches"),
    (lambda: rt.MinMaxCalibrator([np.full((2, 4), np.nan, np.float32)]),
     r"NaN or inf(.|\n)*1\. preprocessing"),
    (lambda: rt.MinMaxCalibrator([{"data": np.ones((2, 4), np.float32)}]),
     r"no array for input\(s\) \['x'\](.|\n)*1\. wrong input names"),
    (lambda: rt.MinMaxCalibrator([np.ones((2, 5), np.float32)]), r"shape \(2, 5\)"),
    (lambda: rt.MinMaxCalibrator([np.float32(1e30) * np.ones((2, 4), np.float32)]),
     "a tensor computed from finite inputs"),
    (lambda: "calibrator", "expected an engine.Calibrator"),
])
@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_calibration_errors(make, match):
    b, net = small_net()
    net.get_layer(0).kernel = np.full((3, 4), 1e30, np.float32)   # 1e30 inputs overflow to inf
    with pytest.raises(rt.CalibrationError, match=match):
        build(b, net, make())


def test_generator_reused_for_a_second_build_raises():
    b, net = small_net()
    cal = rt.MinMaxCalibrator(iter(batches()))
    build(b, net, cal)
    cal._cache = None                     # forget the in-memory cache: calibrate again
    with pytest.raises(rt.CalibrationError, match="exhausted"):
        build(b, net, cal)


def test_calibrator_protocol_errors():
    b, net = small_net(two_inputs=True)
    with pytest.raises(rt.CalibrationError, match="bare array"):
        build(b, net, rt.MinMaxCalibrator(batches()))

    class Short(rt.Calibrator):
        algorithm = rt.CalibrationAlgoType.MINMAX_CALIBRATION

        def get_batch(self, names):
            return [np.ones((2, 4), np.float32)]
    with pytest.raises(rt.CalibrationError, match="returned 1 arrays"):
        build(b, net, Short())

    class Legacy(Short):
        algorithm = rt.CalibrationAlgoType.LEGACY_CALIBRATION

        def get_batch(self, names, n=[0]):
            n[0] += 1
            return None if n[0] > 1 else {"x": np.ones((2, 4), np.float32),
                                           "y": np.ones((2, 4), np.float32)}
    with pytest.raises(rt.CalibrationError, match="LEGACY_CALIBRATION is not implemented"):
        build(b, net, Legacy())
    with pytest.raises(NotImplementedError):
        rt.Calibrator().get_batch(["x"])
    assert rt.Calibrator().read_calibration_cache() is None
    assert rt.Calibrator().get_batch_size() == 1 and rt.IInt8Calibrator is rt.Calibrator
    with pytest.raises(rt.CalibrationError, match=r"percentile 0; expected a number in \(0, 100\]"):
        rt.PercentileCalibrator([], percentile=0)


def test_entropy_keeps_the_full_range_of_a_coarsely_discrete_tensor():
    from kernels import quantize as Q
    rng = np.random.default_rng(4)
    x = rng.integers(0, 17, 100000).astype(np.float32) / 16.0        # 17 values, like 8x8 digits
    amax = float(np.abs(x).max())
    hist = Q.abs_histogram(x, amax, drop_zeros=True)
    width = amax / len(hist)
    assert Q.kl_threshold(hist, width) == pytest.approx(amax, rel=1e-3)      # within a bin of max
    smooth = np.abs(rng.standard_normal(100000)).astype(np.float32)    # continuous: clipped
    hs = Q.abs_histogram(smooth, float(smooth.max()))
    assert Q.kl_threshold(hs, float(smooth.max()) / len(hs)) < float(smooth.max())
