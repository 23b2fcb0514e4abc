"""Shape tensors on the CuPy backend: read on the host where input dims are dynamic
(the engine then runs eagerly), folded away by a build at concrete shapes (nothing
left to read, so the engine can be captured)."""
import numpy as np
import pytest

import engine as rt
from engine.testing import rel_l2

cp = pytest.importorskip("cupy")


def _network(shape):
    """x (b, s, 32) -> split into 4 heads from Shape(x), plus a fill of x's shape."""
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, shape)
    dims = net.add_shape(x).get_output(0)
    bs = net.add_gather(dims, net.add_constant((2,), np.array([0, 1], np.int32)).get_output(0),
                        0).get_output(0)
    heads = net.add_constant((2,), np.array([4, 8], np.int32)).get_output(0)
    target = net.add_concatenation([bs, heads], axis=0).get_output(0)
    value = net.add_constant((1, 1, 1), np.full((1, 1, 1), 0.5, np.float32)).get_output(0)
    fill = net.add_slice(value, (0, 0, 0), (1, 1, 1), (0, 0, 0))
    fill.set_input(2, dims)
    y = net.add_elementwise(x, fill.get_output(0), rt.ElementWiseOperation.SUM).get_output(0)
    split = net.add_shuffle(y)
    split.set_input(1, target)
    split.zero_is_placeholder = False
    net.mark_output(split.get_output(0))
    return b, net, split.get_output(0).name


@pytest.mark.parametrize("declared", [(-1, -1, 32), (3, 7, 32)], ids=["dynamic", "concrete"])
def test_shape_tensor_network_runs_on_cupy(declared):
    b, net, out = _network(declared)
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    engine = b.build_engine(net, cfg)
    kinds = [i.type for i in engine.layers]
    assert (rt.LayerType.SHAPE in kinds) == (declared[0] == -1)
    ctx = engine.create_execution_context()
    rng = np.random.default_rng(3)
    for shape in ([(3, 7, 32)] if declared[0] != -1 else [(3, 7, 32), (1, 12, 32)]):
        xv = rng.standard_normal(shape).astype(np.float32)
        for _ in range(3):                      # eager, then graph capture or eager again
            got = ctx.execute({"x": xv})[out]
            assert got.shape == shape[:2] + (4, 8)
            assert rel_l2(got, (xv + 0.5).reshape(got.shape)) < 1e-6
