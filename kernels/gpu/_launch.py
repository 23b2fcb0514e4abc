"""Small launch helpers shared by the GPU launchers."""
import numpy as np

from .compile import ctype, get_function
from .errors import UnsupportedError

BLOCK = 256
MAX_BLOCKS = 1 << 20   # grid-stride loops cover the rest
# filter layouts the weight packers take -> the transpose to KRSC (the NHWC filter)
WEIGHT_LAYOUTS = {"KCRS": (0, 2, 3, 1), "RSCK": (3, 0, 1, 2), "KRSC": (0, 1, 2, 3)}


def to_krsc(w, layout):
    """A rank-4 filter in ``layout`` (KCRS, TensorFlow's RSCK, or KRSC) as a KRSC view
    (NumPy or CuPy, no copy); UnsupportedError for another rank or layout."""
    if w.ndim != 4 or layout not in WEIGHT_LAYOUTS:
        raise UnsupportedError(f"weights of rank {w.ndim} in layout {layout!r}; expected rank 4 in "
                               f"one of {', '.join(WEIGHT_LAYOUTS)}")
    return w.transpose(WEIGHT_LAYOUTS[layout])


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
