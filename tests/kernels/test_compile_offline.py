"""kernels/gpu/compile.py ``offline``: compiling without a device (NVRTC directly, the
arch given), what it records, what the availability checks answer inside it, and its errors."""
import pytest

from kernels.gpu import compile as C
from kernels.gpu import conv_wgmma, cudnn_graphs
from kernels.gpu.errors import KernelError


def _nvrtc():
    return C.nvrtc_library() is not None


needs_nvrtc = pytest.mark.skipif(not _nvrtc(), reason="no NVRTC library to compile with")


def test_availability_answers_for_the_offline_device():
    assert C.offline_arch() is None and C.offline_cudnn() is None
    with C.offline("sm_90a", cudnn=True):
        assert C.offline_arch() == "sm_90a" and conv_wgmma.available() and cudnn_graphs.available()
    with C.offline("sm_80", cudnn=False):
        assert not conv_wgmma.available() and not cudnn_graphs.available()
    assert C.offline_arch() is None


def test_offline_does_not_nest():
    with C.offline():
        with pytest.raises(KernelError, match="do not nest"):
            with C.offline():
                pass
    assert C.offline_arch() is None


@needs_nvrtc
def test_offline_compiles_record_each_run_and_return_no_module():
    src = "template <int N> __global__ void k(float* y) { y[threadIdx.x] *= N; }\n"
    with C.offline("sm_90") as off:
        assert C.get_module(src, name_expressions=("k<2>", "k<3>")) is None
        assert C.get_function(src, "k<4>") is None
    assert [r[2] for r in off.runs] == [("k<2>", "k<3>"), ("k<4>",)]
    assert all(r[0] > 0 and r[1] == "<generated>" and r[3] > 0 for r in off.runs)
    assert off.seconds == pytest.approx(sum(r[0] for r in off.runs))


@needs_nvrtc
def test_offline_compile_errors_carry_the_compiler_log():
    with C.offline("sm_90"):
        with pytest.raises(KernelError, match="undefined_thing"):
            C.get_module("__global__ void k() { undefined_thing(); }\n")


def test_offline_compiles_without_an_nvrtc_library_say_what_is_missing(monkeypatch):
    monkeypatch.setattr(C, "nvrtc_library", lambda: None)
    with C.offline("sm_90") as off:
        with pytest.raises(KernelError, match="need the NVRTC library"):
            C.get_module("__global__ void k() {}\n")
    assert off.runs == []


def test_nvrtc_library_is_none_where_the_binding_cannot_load(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_binding(name, *a, **k):
        if name.startswith("cupy_backends"):
            raise ImportError("no CuPy here")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_binding)
    assert C.nvrtc_library() is None
