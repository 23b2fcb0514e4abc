"""Error measures between an array and its reference, shared by the tests
(engine/testing.py), the INT8 precision debugger (engine/precision_debug.py) and
layerwise comparisons of two engines (ExecutionContext.layer_outputs)."""
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


def compare_tensors(values, reference):
    """Rows {"tensor", "rel_l2", "max_abs"} for the tensors of ``values`` ({name: array}, in
    layer order, as ExecutionContext.layer_outputs gives them) that ``reference`` holds with
    the same shape, in that order: where two engines' tensors part shows as the first row
    whose error jumps. A NaN or infinity on either side counts as an infinite error; an empty
    tensor as none. Names only one side has, or of other shapes, are left out."""
    rows = []
    for name, got in values.items():
        ref = reference.get(name)
        if ref is None or np.shape(ref) != np.shape(got):
            continue
        if np.size(got) == 0:
            rows.append({"tensor": name, "rel_l2": 0.0, "max_abs": 0.0})
            continue
        finite = bool(np.isfinite(got).all() and np.isfinite(ref).all())
        # a NaN or an infinity on either side is never a small difference
        rows.append({"tensor": name, "rel_l2": rel_l2(got, ref) if finite else float("inf"),
                     "max_abs": max_abs(got, ref) if finite else float("inf")})
    return rows
