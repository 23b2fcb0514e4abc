"""The GPU tactic modules import in any order (no family imports another; the table in
engine/gpu/tactics.py registers them all), each tactic is registered once, and each
names the kernel it launches as a function of kernels/gpu."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize("first", ["engine.gpu.conv_int8_tactics", "engine.gpu.conv_tf32_tactics",
                                   "engine.gpu.conv_tactics", "engine.gpu.matmul_tactics",
                                   "engine.gpu.fc_tactics", "engine.gpu.pool_tactics"])
def test_import_order_and_single_registration(first):
    code = (f"import {first}\n"
            "from engine import kernel_table\n"
            "from engine.gpu.tactics import candidates\n"
            "from engine.types import LayerType\n"
            "import engine.gpu.conv_int8_tactics as I\n"
            "import engine.gpu.pool_tactics as P\n"
            "for lt, ts in kernel_table.TACTICS.items():\n"
            "    names = [t.name for t in ts]\n"
            "    assert len(names) == len(set(names)), ('registered twice', lt)\n"
            "assert any(isinstance(t, I.ConvInt8) for t in kernel_table.TACTICS[LayerType.CONVOLUTION])\n"
            "assert any(isinstance(t, P.PoolInt8) for t in kernel_table.TACTICS[LayerType.POOLING])\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_every_kernel_tactic_names_a_launch_function_of_kernels_gpu():
    from engine import kernel_table
    from engine.gpu import tactics  # noqa: F401  (fills the table)
    launched = [t for ts in kernel_table.TACTICS.values() for t in ts if hasattr(t, "launch")]
    assert len(launched) > 70
    for t in launched:
        assert callable(t.launch) and t.launch.__module__.startswith("kernels.gpu."), t.name
        family = sys.modules[t.launch.__module__].FAMILY
        assert t.launch in family.launch, (t.name, t.launch.__name__)
        assert family.source == t.launch.__module__.rsplit(".", 1)[1] + ".cu"


def test_switched_off_tactics_are_no_candidates(monkeypatch):
    import engine as rt
    import numpy as np
    from engine.gpu import conv_int8_tactics as I
    from engine.gpu import conv_tactics as C
    from engine.gpu.tactics import candidates
    net = rt.Network()
    x = net.add_input("x", rt.float32, (1, 3, 8, 8))
    layer = net.add_convolution_nd(x, 8, (3, 3), kernel=np.ones((8, 3, 3, 3), np.float32))

    def count(kind):
        return sum(isinstance(t, kind) for t in candidates(layer))
    monkeypatch.delenv("CUPYRT_WGMMA", raising=False)
    assert count(C.ConvWgmma) == 6
    assert count(I.ConvWgmmaInt8) == 7 and count(I.ConvWgmmaInt8Occupancy) == 1   # + the 3-CTA tile
    monkeypatch.setenv("CUPYRT_WGMMA", "0")
    assert count(C.ConvWgmma) == count(I.ConvWgmmaInt8) == 0
    assert count(C.ConvIgemm) > 0


def test_the_wgmma_switch_also_drops_the_wgmma_backed_matmul_tactics(monkeypatch):
    import engine as rt
    import numpy as np
    from engine.gpu.tactics import candidates
    net = rt.Network()
    a = net.add_input("a", rt.float32, (4, 64))
    w = net.add_constant((64, 32), np.ones((64, 32), np.float32)).get_output(0)
    layer = net.add_matrix_multiply(a, rt.MatrixOperation.NONE, w, rt.MatrixOperation.NONE)

    def names():
        return [t.name for t in candidates(layer) if t.name.startswith("matmul.conv.")]
    monkeypatch.delenv("CUPYRT_WGMMA", raising=False)
    on = names()
    monkeypatch.setenv("CUPYRT_WGMMA", "0")
    off = names()
    assert len(on) > len(off) > 0                       # the mma.sync and TF32 ones stay
    assert all(getattr(t, "wgmma", False) is False for t in candidates(layer)
               if t.name in off)


def test_candidates_pass_the_debug_setting_to_the_kernels(monkeypatch):
    import engine as rt
    from engine.gpu.tactics import candidates
    from kernels.gpu import compile as kernel_compile
    net = rt.Network()
    x = net.add_input("x", rt.float32, (1, 4))
    layer = net.add_softmax(x)
    monkeypatch.setenv("CUPYRT_DEBUG", "3")
    candidates(layer)
    assert kernel_compile.debug_level() == 3
    monkeypatch.delenv("CUPYRT_DEBUG")
    candidates(layer)
    assert kernel_compile.debug_level() == 0
