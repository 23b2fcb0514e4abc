"""Activation codes shared by every fused epilogue (kernels/cuda/common.cuh).

Names are TensorRT's ActivationType member names (as kernels/pointwise.py's
reference takes them) plus SILU, HARD_SWISH and RELU6; alpha/beta keep
TensorRT's meaning per type.
"""
from .errors import UnsupportedError

ACT_CODES = {
    None: 0, "NONE": 0, "RELU": 1, "SIGMOID": 2, "TANH": 3, "LEAKY_RELU": 4,
    "ELU": 5, "SELU": 6, "SOFTSIGN": 7, "SOFTPLUS": 8, "CLIP": 9,
    "HARD_SIGMOID": 10, "SCALED_TANH": 11, "THRESHOLDED_RELU": 12,
    "GELU_ERF": 13, "GELU_TANH": 14, "SILU": 15, "HARD_SWISH": 16, "RELU6": 17,
}


def act_code(act) -> int:
    """Code for an activation given by name (or enum member with ``.name``), None or int."""
    if isinstance(act, int) and not isinstance(act, bool):
        if act in ACT_CODES.values():
            return act
        raise UnsupportedError(f"activation code {act} unknown; valid codes 0..{max(ACT_CODES.values())}")
    key = getattr(act, "name", act)
    if isinstance(key, str):
        key = key.upper()
    try:
        return ACT_CODES[key]
    except KeyError:
        valid = ", ".join(k for k in ACT_CODES if k)
        raise UnsupportedError(f"activation {act!r} unknown; valid: {valid}") from None
