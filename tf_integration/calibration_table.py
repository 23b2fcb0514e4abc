"""A stored INT8 calibration table replayed as a calibrator, and the calibration
algorithms a converter accepts (calibration.py runs the calibration itself).

Engines that build per input shape (dynamic engine nodes, SavedModel engines)
build INT8 from the table their node carries instead of calibrating again; the
table's header (TensorRT's cache format) names the algorithm that made it.
"""
import engine as rt

from .errors import TFIntegrationError

# converter argument -> (engine calibrator class, the algorithm's name in a cache header)
ALGORITHMS = {
    "entropy": (rt.EntropyCalibrator2, "EntropyCalibration2"),
    "minmax": (rt.MinMaxCalibrator, "MinMaxCalibration"),
    "percentile": (rt.PercentileCalibrator, "PercentileCalibration"),
}


class TableCalibrator(rt.Calibrator):
    """Replays a stored calibration table: no batches, the cache is the answer."""

    def __init__(self, table):
        self.table = bytes(table)
        head = self.table.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
        for name, (cls, cache_name) in ALGORITHMS.items():
            if head.endswith("-" + cache_name):
                self.algorithm = cls.algorithm
                break
        else:
            raise TFIntegrationError(
                f"calibration table header {head!r}; expected a TensorRT cache header "
                "ending in one of: " + ", ".join(c for _, c in ALGORITHMS.values()))

    def get_batch(self, names):
        return None

    def read_calibration_cache(self):
        return self.table
