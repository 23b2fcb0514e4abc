"""Every CUDA source has one launcher module named like it, exporting its descriptor
(kernels/gpu/family.py), and no kernel module reads a CUPYRT_* switch (the engine
passes the values as arguments)."""
import importlib
import re
from pathlib import Path

import pytest

from kernels.gpu.family import KernelFamily

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p.stem for p in (ROOT / "kernels" / "cuda").glob("*.cu"))


@pytest.mark.parametrize("stem", SOURCES)
def test_each_source_has_its_launcher_module_and_descriptor(stem):
    module = importlib.import_module(f"kernels.gpu.{stem}")
    family = module.FAMILY
    assert isinstance(family, KernelFamily)
    assert family.source == f"{stem}.cu" and family.name == stem
    assert family.launch and all(callable(f) and f.__module__ == module.__name__ for f in family.launch)
    if family.tiles or family.int8_tiles:
        assert callable(family.compile)


def test_no_launcher_module_loads_another_source():
    """A module names only its own .cu (the name_expressions of its kernels)."""
    for stem in SOURCES:
        text = (ROOT / "kernels" / "gpu" / f"{stem}.py").read_text()
        named = set(re.findall(r'"([a-z0-9_]+)\.cu"', text))
        assert named <= {stem}, (stem, named)


def test_kernels_read_no_switch():
    reads = re.compile(r"os\.environ\.get\(|os\.getenv\(|os\.environ\[")
    bad = [str(p.relative_to(ROOT)) for p in (ROOT / "kernels").rglob("*.py")
           if reads.search(p.read_text())]
    assert not bad, f"kernel modules reading the environment: {bad}"
