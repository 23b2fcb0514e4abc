"""Errors raised by the GPU kernels (kernels/ is a leaf: no engine import).

The engine maps these onto its own hierarchy; both are ValueError/RuntimeError
subclasses so callers that catch the builtin types keep working. A tactic
that raises ``UnsupportedError`` simply does not apply to a layer: the
builder scores it infinity and moves on.
"""


class KernelError(RuntimeError):
    """A kernel failed to compile or launch."""


class UnsupportedError(ValueError):
    """A kernel was asked for a shape, dtype or parameter it does not take."""
