"""The experimental INT8 stem tactic (ConvInt8SmallC) is registered only under
CUPYRT_EXPERIMENTAL_INT8_STEM=1, once, whichever tactic module is imported first."""
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
    env = {k: v for k, v in os.environ.items() if k != "CUPYRT_EXPERIMENTAL_INT8_STEM"}
    if flag is not None:
        env["CUPYRT_EXPERIMENTAL_INT8_STEM"] = flag
    proc = subprocess.run([sys.executable, "-c", CODE.format(first=first)], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.strip())


@pytest.mark.parametrize("first", ["engine.gpu.int8_tactics", "engine.gpu.conv_tactics"])
def test_registered_once_only_under_the_flag(first):
    from kernels.gpu.conv_int8 import SMALLC_TACTICS
    assert _count(first, None) == 0
    assert _count(first, "0") == 0
    assert _count(first, "1") == len(SMALLC_TACTICS)


def test_register_experimental_without_the_flag_registers_nothing(monkeypatch):
    from engine.gpu import int8_tactics
    monkeypatch.delenv("CUPYRT_EXPERIMENTAL_INT8_STEM", raising=False)
    assert int8_tactics.register_experimental() == []
