"""CI check without a GPU: every CUDA source of kernels/cuda compiles for sm_90.

Uses nvcc when it is on PATH (``nvcc -arch=sm_90 -c``), else NVRTC when a
library is importable (CuPy's binding, loaded from the nvidia-cuda-nvrtc
wheel), else skips. Either way the sources' explicit instantiations
(``-DCUPYRT_NVCC_INSTANTIATE``) are compiled, so template bodies are checked
too, and nothing may spill registers.

A source whose first line is ``// cupyrt-arch: sm_90a`` (wgmma kernels, which
exist only on the arch-specific target) is compiled for that arch instead.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kernels.gpu.compile import nvrtc_library

CUDA_DIR = Path(__file__).resolve().parents[2] / "kernels" / "cuda"
SOURCES = sorted(p.name for p in CUDA_DIR.glob("*.cu"))
DEFINE = "-DCUPYRT_NVCC_INSTANTIATE"
DEFAULT_ARCH = "sm_90"
_ARCH_MARKER = re.compile(r"^//\s*cupyrt-arch:\s*(sm_\d+a?)\s*$")


def source_arch(name: str) -> str:
    """The arch a source asks for on its first line (``// cupyrt-arch: sm_90a``), else sm_90."""
    with open(CUDA_DIR / name) as f:
        m = _ARCH_MARKER.match(f.readline().strip())
    return m.group(1) if m else DEFAULT_ARCH


def _nvrtc():
    return nvrtc_library()


def test_sources_exist():
    for name in ("conv_igemm.cu", "conv_int8.cu", "conv_dw.cu", "rnn.cu", "conv_wgmma.cu",
                 "attention.cu"):
        assert name in SOURCES


def test_arch_marker_selects_sm90a_only_where_present():
    assert source_arch("conv_wgmma.cu") == "sm_90a"
    assert source_arch("conv_igemm.cu") == "sm_90"
    assert source_arch("conv_int8.cu") == "sm_90"


@pytest.mark.parametrize("name", SOURCES)
def test_compiles_for_sm90(name, tmp_path):
    arch = source_arch(name)
    if shutil.which("nvcc"):
        proc = subprocess.run(
            ["nvcc", f"-arch={arch}", "-std=c++17", "-c", "-Xptxas", "-v", DEFINE,
             str(CUDA_DIR / name), "-o", str(tmp_path / "out.o")],
            capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        spills = [ln for ln in proc.stderr.splitlines()
                  if re.search(r"[1-9]\d* bytes spill (stores|loads)", ln)]
        assert not spills, "register spills:\n" + "\n".join(spills)
        return
    nvrtc = _nvrtc()
    if nvrtc is None:
        pytest.skip("neither nvcc nor NVRTC is available")
    import sys
    sys.path.insert(0, str(CUDA_DIR.parents[1]))
    from kernels.gpu.compile import read_source
    prog = nvrtc.createProgram(read_source(name), name, (), ())
    try:
        nvrtc.compileProgram(prog, ["-std=c++17", f"-arch={arch}", DEFINE])
    except Exception as exc:
        pytest.fail(f"NVRTC failed on {name}: {exc}\n{nvrtc.getProgramLog(prog)}")
    finally:
        nvrtc.destroyProgram(prog)


@pytest.mark.parametrize("name", SOURCES)
def test_local_includes_are_inlined_for_nvrtc(name):
    """NVRTC compiles the text read_source returns, with no include path to
    kernels/cuda: no local #include may survive (a trailing comment included)."""
    import sys
    sys.path.insert(0, str(CUDA_DIR.parents[1]))
    from kernels.gpu.compile import read_source
    text = read_source(name)
    local = {p.name for p in CUDA_DIR.glob("*.cuh")}
    left = [ln for ln in text.splitlines()
            if re.match(r'\s*#\s*include\s+"', ln) and re.search(r'"([^"]+)"', ln).group(1) in local]
    assert not left, left


def test_include_with_a_trailing_comment_is_inlined(tmp_path, monkeypatch):
    import sys
    sys.path.insert(0, str(CUDA_DIR.parents[1]))
    from kernels.gpu import compile as C
    (tmp_path / "a.cuh").write_text("int a_value = 1;\n")
    (tmp_path / "m.cu").write_text('#include "a.cuh"   // a_value\n  # include "a.cuh"\nint m;\n')
    monkeypatch.setattr(C, "CUDA_DIR", tmp_path)
    text = C.read_source("m.cu")
    assert text.count("int a_value = 1;") == 1 and '#include "a.cuh"' not in text


# ---- get_function's shared-memory opt-in (device free: a cached stand-in kernel) -----------
class _FakeKernel:
    def __init__(self):
        self.sets = []

    @property
    def max_dynamic_shared_size_bytes(self):
        return self.sets[-1] if self.sets else 0

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, value):
        self.sets.append(value)


def test_get_function_opts_in_once_and_raises_only(monkeypatch):
    import sys
    sys.path.insert(0, str(CUDA_DIR.parents[1]))
    import cupy
    from kernels.gpu import compile as C
    monkeypatch.setattr(cupy.cuda, "Device", lambda device=None: type("D", (), {"id": 0})())
    fn = _FakeKernel()
    key = ("src.cu", "k<1>", (), ("k<1>",), 0)
    monkeypatch.setitem(C._functions, key, fn)
    monkeypatch.setattr(C, "_smem_opt_in", {})
    get = lambda n: C.get_function("src.cu", "k<1>", smem_bytes=n)  # noqa: E731
    assert get(0) is fn and get(48 * 1024) is fn and fn.sets == []       # default cap: no opt-in
    get(97 * 1024)
    get(97 * 1024)
    get(64 * 1024)                                                       # less: kept
    assert fn.sets == [97 * 1024]
    get(227 * 1024)                                                      # more: raised
    assert fn.sets == [97 * 1024, 227 * 1024]
