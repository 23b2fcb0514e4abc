"""GPU tactic for Constant layers: the value uploaded once and handed out as it is."""
from .base import Tactic, cupy


class ConstantResident(Tactic):
    """A constant uploaded once, in its stored type, and handed out without a copy
    (the reference copies its weights on every run: for a transformer's weight
    matrices that is hundreds of MB per inference). Consumers only read their
    inputs, so one device array serves every run and every CUDA-graph replay."""
    name = "constant.resident"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if layer.weights is None:
            return "no weights"
        return None

    def prepare(self, layer):
        return {}

    def run(self, state, layer, inputs, precision, out_dtypes):
        dt = out_dtypes[0].to_numpy()
        y = state.get(dt)
        if y is None:
            cp = cupy()
            y = state[dt] = cp.asarray(layer.weights.reshape(layer.shape).astype(dt))
        return [y]


# The CONSTANT tactics.
TACTICS = (ConstantResident(),)
