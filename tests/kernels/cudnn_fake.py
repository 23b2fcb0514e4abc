"""A stand-in for the cuDNN frontend module (``import cudnn``) with the calls
kernels/gpu/cudnn_graphs.py makes, so the plan logic (which plans are built where,
the budget, what arrives serialized) runs without a GPU. Each plan ``i`` of a graph
builds in ``build_s[i]`` seconds (default ``cost``), fails when ``i`` is in ``fail``,
serializes unless ``i`` is in ``unserializable``, and is runtime-compiled unless ``i`` is
in ``precompiled``."""
import json
import time
import types


class FakeTensor:
    def __init__(self, name, dim=None, stride=None, data_type=None):
        self.name, self.uid, self.dim, self.stride = name, None, dim, stride
        self.data_type = data_type

    def set_uid(self, uid):
        self.uid = uid
        return self

    def set_output(self, flag):
        return self

    def set_data_type(self, t):
        self.data_type = t
        return self

    def set_dim(self, dim):
        self.dim = dim
        return self

    def set_stride(self, stride):
        self.stride = stride
        return self


class FakeGraph:
    def __init__(self, frontend, **kw):
        self.f, self.kw = frontend, kw
        self.built, self.selected, self.loaded = [], None, None
        self.executed = []
        self.ops = []             # (operation, its keyword arguments) in the order defined
        self.outputs = []         # the tensor each of ``ops`` returned

    def _op(self, op, **kw):
        self.ops.append((op, kw))
        self.outputs.append(FakeTensor(op))
        return self.outputs[-1]

    def tensor(self, name, dim=None, stride=None, data_type=None, **kw):
        return FakeTensor(name, dim, stride, data_type)

    def conv_fprop(self, **kw):
        return self._op("conv", **kw)

    def matmul(self, **kw):
        return self._op("matmul", **kw)

    def bias(self, **kw):
        return self._op("bias", **kw)

    def add(self, **kw):
        return self._op("add", **kw)

    def mul(self, **kw):
        return self._op("mul", **kw)

    def relu(self, **kw):
        return self._op("relu", **kw)

    def sigmoid(self, **kw):
        return self._op("sigmoid", **kw)

    def tanh(self, **kw):
        return self._op("tanh", **kw)

    def gelu(self, **kw):
        return self._op("gelu", **kw)

    def validate(self):
        pass

    def build_operation_graph(self):
        pass

    def create_execution_plans(self, modes):
        self.f.heuristics += 1

    def check_support(self):
        pass

    def get_execution_plan_count(self):
        return self.f.plan_count

    def build_plan_at_index(self, index):
        self.f.builds.append(index)
        time.sleep(self.f.build_s.get(index, self.f.cost))
        if index in self.f.fail:
            raise RuntimeError(f"plan {index} does not build")
        self.built.append(index)
        self.selected = index

    def get_behavior_notes_for_plan_at_index(self, index):
        return [] if index in self.f.precompiled else [self.f.behavior_note.RUNTIME_COMPILATION]

    def get_plan_name_at_index(self, index):
        return f"eng{index}"

    def serialize(self, as_bytes=False):
        if self.selected in self.f.unserializable:
            raise RuntimeError("only runtime-compiled plans serialize")
        data = json.dumps({"plan": self.selected}).encode()
        return data if as_bytes else list(data)

    def deserialize(self, handle, data):
        self.f.deserialized.append(data)
        self.loaded = json.loads(bytes(data))["plan"]
        self.selected = self.loaded

    def get_workspace_size(self):
        return 0

    def get_workspace_size_plan_at_index(self, index):
        return 0


def frontend(plan_count=6, cost=0.0, build_s=None, fail=(), unserializable=(), precompiled=()):
    f = types.SimpleNamespace(plan_count=plan_count, cost=cost, build_s=dict(build_s or {}),
                              fail=set(fail), unserializable=set(unserializable),
                              precompiled=set(precompiled), builds=[],
                              deserialized=[], __version__="fake", handles=0, heuristics=0)
    f.data_type = types.SimpleNamespace(HALF="half", FLOAT="float", INT8="int8", INT32="int32")
    f.heur_mode = types.SimpleNamespace(A="a", FALLBACK="fallback")
    f.behavior_note = types.SimpleNamespace(RUNTIME_COMPILATION="runtime")
    f.pygraph = lambda **kw: FakeGraph(f, **kw)
    f.backend_version = lambda: 90000
    f.create_handle = lambda: object()
    f.set_stream = lambda handle, ptr: None
    return f
