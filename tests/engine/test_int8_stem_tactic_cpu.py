"""The INT8 stem tactic (ConvInt8SmallC) is registered by default and left out under
CUPYRT_INT8_SMALLC=0, once, whichever tactic module is imported first."""
import os
import subprocess
import sys

import pytest

CODE = ("import {first}\n"
        "from engine import kernel_table\n"
        "from engine.gpu.tactics import candidates\n"
        "from engine.types import LayerType\n"
        "import engine.gpu.int8_tactics as I\n"
        "ts = kernel_table.TACTICS[LayerType.CONVOLUTION]\n"
        "names = [t.name for t in ts]\n"
        "assert len(names) == len(set(names)), 'registered twice'\n"
        "assert any(type(t) is I.ConvInt8 for t in ts)\n"
        "print(sum(isinstance(t, I.ConvInt8SmallC) for t in ts))\n")


def _count(first, flag):
    env = {k: v for k, v in os.environ.items() if k != "CUPYRT_INT8_SMALLC"}
    if flag is not None:
        env["CUPYRT_INT8_SMALLC"] = flag
    proc = subprocess.run([sys.executable, "-c", CODE.format(first=first)], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.strip())


@pytest.mark.parametrize("first", ["engine.gpu.int8_tactics", "engine.gpu.conv_tactics"])
def test_registered_once_unless_switched_off(first):
    from kernels.gpu.conv_int8 import SMALLC_TACTICS
    assert _count(first, None) == len(SMALLC_TACTICS)
    assert _count(first, "1") == len(SMALLC_TACTICS)
    assert _count(first, "0") == 0


def test_register_smallc_switched_off_registers_nothing(monkeypatch):
    from engine.gpu import int8_tactics
    monkeypatch.setenv("CUPYRT_INT8_SMALLC", "0")
    assert int8_tactics.register_smallc() == []


def test_each_int8_conv_tactic_packs_weights_for_its_kernel():
    from engine.gpu import int8_tactics as I
    from kernels.gpu import conv_int8
    assert getattr(conv_int8, I.ConvInt8.weight_packer) is conv_int8.pack_weight_int8_krsc
    assert I.ConvWgmmaInt8.weight_packer == I.ConvInt8.weight_packer
    assert getattr(conv_int8, I.ConvInt8SmallC.weight_packer) is conv_int8.pack_weight_int8_smallc
