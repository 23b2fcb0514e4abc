"""device_hold's argument checks (no GPU needed: they come before any launch)."""
import math

import pytest

from kernels.gpu.device_hold import DeviceHold, hold_stream
from kernels.gpu.errors import UnsupportedError


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "5", None])
def test_hold_stream_rejects_a_max_that_is_not_a_positive_finite_number(bad):
    pytest.importorskip("cupy")
    with pytest.raises(UnsupportedError, match="max_ms"):
        hold_stream(bad)


def test_release_writes_the_word_the_kernel_polls_and_expired_reads_the_other():
    import numpy as np
    words = np.zeros(2, np.uint32)
    hold = DeviceHold(words, memory=None)
    assert hold.expired is False
    hold.release()
    assert words.tolist() == [1, 0] and hold.expired is False
    words[1] = 1
    assert hold.expired is True
