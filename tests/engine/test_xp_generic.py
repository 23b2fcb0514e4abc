"""The NumPy implementations of the pointwise, shape, conv and spatial layers are
array-module generic: run with a strict fake device module, they create every
array through it and never touch the data with host-only calls.

There is no GPU here, so a fake stands in for CuPy:

- ``DeviceArray`` (an ndarray subclass) plays a CuPy array. Operators and
  ufuncs work on it (as on CuPy, and a host ndarray operand is refused, as
  CuPy refuses one); any other ``numpy.*`` function called on it, ``float()``,
  ``int()``, ``bool()``, ``.item()``, ``.tolist()`` and host arrays used as
  indices or assigned into it raise ``HostCall``.
- ``FakeXP`` plays the ``cupy`` module: numpy's functions on unwrapped arrays,
  results wrapped as ``DeviceArray``; only names that CuPy also has exist.
- ``kernels.xp.array_module`` is patched (in every module that imported it) to
  return ``FakeXP`` for device arrays.

A host creation function anywhere on a layer's path (``np.zeros``...) yields a
plain ndarray: every layer's outputs must be ``DeviceArray``s, and must equal the
NumPy reference (``engine.testing.interpret``).
"""
import os
import sys

import numpy as np
import pytest

import kernels.xp
from engine.errors import ExecutionError
from engine.testing import device_clone, interpret, rel_l2

sys.path.insert(0, os.path.dirname(__file__))
import layer_cases  # noqa: E402

try:
    import cupy as _cupy
except ImportError:                      # pragma: no cover - depends on the install
    _cupy = None


class HostCall(AssertionError):
    """A host-only operation reached a device array."""


def _host(a):
    return a.view(np.ndarray) if isinstance(a, DeviceArray) else a


def _unwrap(obj):
    if isinstance(obj, DeviceArray):
        return obj.view(np.ndarray)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


def _wrap(obj):
    if isinstance(obj, np.generic):      # CuPy gives 0-d arrays where NumPy gives scalars
        obj = np.asarray(obj)
    if isinstance(obj, np.ndarray) and not isinstance(obj, DeviceArray):
        return obj.view(DeviceArray)
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


def _refuse_host_arrays(where, objs):
    for o in objs:
        if isinstance(o, (list, tuple)):
            _refuse_host_arrays(where, o)
        elif isinstance(o, np.ndarray) and not isinstance(o, DeviceArray):
            raise HostCall(f"{where}: a host ndarray {o.shape} {o.dtype} mixed with device arrays "
                           f"(move it with xp.asarray)")


class DeviceArray(np.ndarray):
    """Stands for a CuPy array (see the module docstring)."""

    def __array_function__(self, func, types, args, kwargs):
        raise HostCall(f"host function numpy.{func.__name__} called on a device array "
                       f"(use the xp module)")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method == "at":
            raise HostCall(f"numpy.{ufunc.__name__}.at on a device array (CuPy: cupyx.scatter_add)")
        out = kwargs.get("out", ())
        _refuse_host_arrays(f"numpy.{ufunc.__name__}", inputs + tuple(out))
        kwargs = _unwrap(kwargs)
        with np.errstate(all="ignore"):          # the device never warns
            result = getattr(ufunc, method)(*_unwrap(inputs), **kwargs)
        if out:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __getitem__(self, index):
        _refuse_host_arrays("indexing", index if isinstance(index, tuple) else (index,))
        return _wrap(super().__getitem__(index))

    def __setitem__(self, index, value):
        _refuse_host_arrays("index assignment", (index if isinstance(index, tuple) else (index,))
                            + (value,))
        super().__setitem__(index, value)

    def _sync(self, *args, **kwargs):
        raise HostCall("device -> host conversion of data (float/int/bool/item/tolist)")

    __float__ = __int__ = __index__ = __bool__ = item = tolist = _sync

    def get(self):
        """CuPy's explicit device -> host copy (what ``kernels.xp.to_host`` calls)."""
        return np.array(self.view(np.ndarray))


# the only functions that take host arrays (they move them to the device)
_TRANSFERS = ("asarray", "array", "ascontiguousarray", "asanyarray")


class _FakeXP:
    """Stands for the ``cupy`` module: like CuPy, its functions refuse host arrays
    except to move them (``asarray``...)."""

    __name__ = "fake_cupy"

    def __getattr__(self, name):
        if _cupy is not None and not hasattr(_cupy, name):
            raise AttributeError(f"CuPy has no {name!r}: not usable on the device path")
        attr = getattr(np, name)
        if isinstance(attr, type) or not callable(attr):
            return attr                  # dtypes, constants

        def call(*args, **kwargs):
            if name not in _TRANSFERS:
                _refuse_host_arrays(f"xp.{name}", args + tuple(kwargs.values()))
            with np.errstate(all="ignore"):
                return _wrap(attr(*_unwrap(args), **_unwrap(kwargs)))
        call.__name__ = name
        return call


FakeXP = _FakeXP()


def _fake_array_module(*arrays):
    def device(a):
        return isinstance(a, DeviceArray) or (isinstance(a, (list, tuple)) and any(map(device, a)))
    return FakeXP if any(device(a) for a in arrays) else np


@pytest.fixture
def fake_device(monkeypatch):
    real = kernels.xp.array_module
    for mod in list(sys.modules.values()):
        name = getattr(mod, "__name__", "")
        if name.split(".")[0] in ("kernels", "engine") and getattr(mod, "array_module", None) is real:
            monkeypatch.setattr(mod, "array_module", _fake_array_module)
    return FakeXP


# -- the harness catches what it should -----------------------------------------

def test_harness_refuses_host_creation_and_conversion(fake_device):
    x = FakeXP.asarray(np.arange(6.0))
    assert isinstance(x + 1, DeviceArray) and isinstance(FakeXP.zeros(3), DeviceArray)
    with pytest.raises(HostCall, match="numpy.where"):
        np.where(x > 0, x, 0)
    with pytest.raises(HostCall, match="host ndarray"):
        x + np.ones(6)
    with pytest.raises(HostCall, match="conversion"):
        float(x[0])
    with pytest.raises(HostCall, match="add.at"):
        np.add.at(x, FakeXP.asarray([0, 1]), 1.0)
    with pytest.raises(HostCall, match="indexing"):
        x[np.array([0, 1])]
    with pytest.raises(HostCall, match="xp.maximum"):
        FakeXP.maximum(np.ones(2), 1.0)
    if _cupy is not None:
        with pytest.raises(AttributeError, match="errstate"):
            FakeXP.errstate      # noqa: B018
    assert kernels.xp.array_module(x) is FakeXP and kernels.xp.array_module(np.ones(2)) is np


# -- every layer path ---------------------------------------------------------------

@pytest.mark.parametrize("case", layer_cases.IDS)
def test_layer_runs_on_the_device_module(fake_device, case):
    net, feeds = layer_cases.build(case)
    ref = interpret(net, feeds)
    trace, got = layer_cases.run_on_device(net, feeds, FakeXP)
    for layer, outs in trace:
        for i, o in enumerate(outs):
            assert isinstance(o, DeviceArray), (
                f"{layer.describe()} ({layer.layer_type.name}): output {i} is a host "
                f"{type(o).__name__}: a host array creation on its path")
    for name, r in ref.items():
        g = _host(got[name])
        assert g.dtype == r.dtype and g.shape == r.shape, (name, g.dtype, r.dtype, g.shape, r.shape)
        if r.dtype.kind == "f":
            assert rel_l2(np.nan_to_num(g), np.nan_to_num(r)) <= 1e-6, case
            np.testing.assert_array_equal(np.isnan(g), np.isnan(r))
        else:
            np.testing.assert_array_equal(g, r)


def test_gather_out_of_range_is_a_typed_error_on_the_device(fake_device):
    net, feeds = layer_cases.build("gather-axis0")
    feeds["i"] = np.array([0, 3, -4, 1], np.int32)
    with pytest.raises(ExecutionError, match="index 3 is out of range"):
        layer_cases.run_on_device(net, feeds, FakeXP)


def test_device_clone_moves_arrays_and_leaves_the_layer_alone(fake_device):
    net, _ = layer_cases.build("conv-2d")
    conv = net._layers[0]
    conv._attrs["extra"] = {"w": np.ones(2, np.float32), "n": 3}   # a dict-of-arrays attribute
    clone = device_clone(conv, FakeXP)
    assert isinstance(clone.kernel, DeviceArray) and isinstance(clone.bias, DeviceArray)
    assert isinstance(clone._attrs["extra"]["w"], DeviceArray) and clone._attrs["extra"]["n"] == 3
    assert type(conv.kernel) is np.ndarray and type(conv._attrs["extra"]["w"]) is np.ndarray
    assert clone.stride_nd == conv.stride_nd and clone.layer_type == conv.layer_type
