"""The whole suite: engines run on the NumPy backend where there is no CUDA device.

Without a CUDA device (and without CUPYRT_BACKEND), engine nodes run their
TensorFlow segments (tf_integration/engine_node.py: converting never slows a
CPU host down); the tests are about the engines, so they ask for the NumPy
backend. On a GPU machine nothing is set: the GPU tests run on CuPy.
A test that needs the default behaviour unsets the variable with monkeypatch.
"""
import os


def _cuda_available():
    try:
        import cupy
        return bool(cupy.cuda.is_available())
    except Exception:          # noqa: BLE001  (no CuPy, no driver: no device)
        return False


if "CUPYRT_BACKEND" not in os.environ and not _cuda_available():
    os.environ["CUPYRT_BACKEND"] = "numpy"
