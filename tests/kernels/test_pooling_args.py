"""int8 pooling's argument checks, before any device work (NumPy arrays stand in)."""
import numpy as np
import pytest

from kernels.gpu import UnsupportedError, pooling


@pytest.mark.parametrize("mode, variant", [("AVERAGE", "auto"), ("MAX", "scalar")])
def test_int8_codes_pool_only_by_max_through_the_vector_kernel(mode, variant):
    x = np.zeros((1, 4, 4, 32), np.int8)
    with pytest.raises(UnsupportedError, match="int8 pooling: MAX through the vector kernel only"):
        pooling.pool2d(x, mode, 2, variant=variant)


def test_other_integer_types_are_refused():
    with pytest.raises(UnsupportedError, match="dtype int32; valid: float16, float32, int8"):
        pooling.pool2d(np.zeros((1, 4, 4, 32), np.int32), "MAX", 2)


def test_an_unknown_variant_lists_the_valid_ones():
    with pytest.raises(UnsupportedError, match="valid: auto, vec, window, scalar"):
        pooling.pool2d(np.zeros((1, 4, 4, 32), np.int8), "MAX", 2, variant="strip")
