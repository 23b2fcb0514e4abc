"""Small launch helpers shared by the GPU launchers."""
import numpy as np

from .compile import ctype, get_function
from .errors import UnsupportedError

BLOCK = 256
MAX_BLOCKS = 1 << 20   # grid-stride loops cover the rest


def grid_1d(total, block=BLOCK):
    return (max(1, min(-(-int(total) // block), MAX_BLOCKS)),)


def templated(source, base, dtypes, what):
    """RawKernel ``base<ctype(d0), ctype(d1), ...>`` from ``source``; one module per source.

    Every instantiation listed by the source's explicit list is *not* needed:
    NVRTC instantiates exactly the name expression asked for.
    """
    args = ",".join(ctype(d, what) for d in dtypes)
    return get_function(source, f"{base}<{args}>")


def check_nhwc(x, what, dtypes=(np.float16, np.float32)):
    if x.ndim != 4:
        raise UnsupportedError(f"{what}: input of rank {x.ndim}; expected NHWC rank 4")
    if not x.flags.c_contiguous:
        raise UnsupportedError(f"{what}: input not contiguous; expected a contiguous NHWC array")
    if x.dtype not in [np.dtype(d) for d in dtypes]:
        raise UnsupportedError(f"{what}: dtype {x.dtype}; valid: {', '.join(str(np.dtype(d)) for d in dtypes)}")
