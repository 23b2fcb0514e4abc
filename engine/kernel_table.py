"""The table from layer type to the kernels that can run it.

The engine owns this table (kernels/ is a leaf and knows nothing of layers).
Each layer family module registers its NumPy implementation next to the layer
class; GPU tactics register into ``TACTICS`` the same way.

A NumPy implementation is ``fn(layer, inputs) -> list of arrays``: ``inputs``
are NumPy arrays in the layer's compute dtype (float32 for FP16 layers: the
runtime rounds to float16 around the call), attributes are read off ``layer``.
"""
from .errors import BuildError

NUMPY = {}
TACTICS = {}


def numpy_impl(*layer_types):
    def register(fn):
        for lt in layer_types:
            if lt in NUMPY:
                raise BuildError(f"a NumPy implementation for {lt.name} is registered twice "
                                 f"({NUMPY[lt].__module__} and {fn.__module__})")
            NUMPY[lt] = fn
        return fn
    return register


def numpy_kernel(layer):
    try:
        return NUMPY[layer.layer_type]
    except KeyError:
        raise BuildError(f"{layer.describe()}: no NumPy implementation is registered for "
                         f"{layer.layer_type.name}") from None
