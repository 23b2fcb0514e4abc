"""GPU tests: skipped cleanly where CuPy or a CUDA device is missing."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


def _gpu_available():
    try:
        import cupy
        return bool(cupy.cuda.is_available())
    except Exception:
        return False


GPU = _gpu_available()


def pytest_collection_modifyitems(config, items):
    if GPU:
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device (cupy.cuda.is_available() is False)")
    for item in items:
        if "tests/gpu" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)
