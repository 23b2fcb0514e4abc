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


def test_resolve_tactic_by_name_instance_class_and_kind():
    from kernels.gpu import UnsupportedError
    from kernels.gpu import conv_igemm, conv_pw
    from kernels.gpu.family import resolve_tactic
    by_name = conv_pw.TACTICS_BY_NAME
    t = conv_pw.PW_TACTICS[1]
    assert resolve_tactic(t.name, by_name, conv_pw.PwTactic, "pointwise") is t
    assert resolve_tactic(t, by_name, conv_pw.PwTactic, "pointwise", "pw_int8") is t
    with pytest.raises(UnsupportedError, match=r"pointwise tactic 'pwi8_nope'; valid: pwi8_64x128_s3, "):
        resolve_tactic("pwi8_nope", by_name, conv_pw.PwTactic, "pointwise")
    with pytest.raises(UnsupportedError, match="expected a PwTactic or one of pwi8_"):
        resolve_tactic(conv_igemm.IGEMM_TACTICS[0], by_name, conv_pw.PwTactic, "pointwise")
    with pytest.raises(UnsupportedError, match="'pw_int8' tactic; this function takes 'pw_f16' tactics: "
                                               "pw16_64x128_s3, pw16_128x64_s2, pw16_64x64_s2$"):
        resolve_tactic(t, by_name, conv_pw.PwTactic, "pointwise", "pw_f16")
