"""Error measures between an array and its reference, shared by the tests
(engine/testing.py) and the INT8 precision debugger (engine/precision_debug.py)."""
import numpy as np


def rel_l2(got, ref):
    """||got - ref|| / ||ref|| in float64 (0 when both are all zeros)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        raise AssertionError(f"shape {got.shape} != reference shape {ref.shape}")
    den = np.linalg.norm(ref)
    num = np.linalg.norm(got - ref)
    return float(num / den) if den else float(num)


def max_abs(got, ref):
    """The largest absolute difference, in float64."""
    return float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64))))
