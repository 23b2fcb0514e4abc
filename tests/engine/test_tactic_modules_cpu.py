"""The GPU tactic modules import in any order (conv_tactics registers the FP32 and
INT8 families at the end of its import) and register each tactic once."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize("first", ["engine.gpu.int8_tactics", "engine.gpu.fp32_tactics",
                                   "engine.gpu.conv_tactics", "engine.gpu.matmul_tactics"])
def test_import_order_and_single_registration(first):
    code = (f"import {first}\n"
            "from engine import kernel_table\n"
            "from engine.gpu.tactics import candidates\n"
            "from engine.types import LayerType\n"
            "import engine.gpu.int8_tactics as I\n"
            "names = [t.name for t in kernel_table.TACTICS[LayerType.CONVOLUTION]]\n"
            "assert len(names) == len(set(names)), 'registered twice'\n"
            "assert any(isinstance(t, I.ConvInt8) for t in kernel_table.TACTICS[LayerType.CONVOLUTION])\n"
            "assert any(isinstance(t, I.PoolInt8) for t in kernel_table.TACTICS[LayerType.POOLING])\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
