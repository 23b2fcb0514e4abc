"""Constants on the device: uploaded once, served without a copy, right in both types."""
import numpy as np
import pytest

import engine as rt
from engine.testing import rel_l2

cp = pytest.importorskip("cupy")


@pytest.mark.parametrize("fp16", [False, True])
def test_constant_is_resident_and_correct(fp16):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((1, 6, 5)).astype(np.float32)
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (2, 6, 5))
    c = net.add_constant((1, 6, 5), w)
    add = net.add_elementwise(x, c.get_output(0), rt.ElementWiseOperation.PROD)
    net.mark_output(add.get_output(0))
    cfg = b.create_builder_config()
    cfg.backend = "cupy"
    cfg.disable_pass("constant_folding")
    if fp16:
        cfg.set_flag(rt.BuilderFlag.FP16)
    e = b.build_engine(net, cfg)
    ctx = e.create_execution_context()
    xv = rng.standard_normal((2, 6, 5)).astype(np.float32)
    for _ in range(3):                                  # eager, then graph replays
        got = ctx.execute({"x": xv})[add.get_output(0).name]
        assert rel_l2(got, xv * w) < (1e-2 if fp16 else 1e-6)
    const = [layer.name for layer in e.network._layers if layer.layer_type == rt.LayerType.CONSTANT]
    assert const and all(e.backend.selected[n] == "constant.resident" for n in const)
    state = [v for (name, t), v in e.backend._state.items() if name in const and t == "constant.resident"]
    assert state and all(len(s) == 1 for s in state)   # one upload, one dtype
