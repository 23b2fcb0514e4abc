"""Fused matrix multiplies as cuDNN graphs (the optional frontend, as kernels/gpu/cudnn_graphs.py):

    A (m, k) fp16 --matmul W--> . --+bias (fp32, n)--> . --+R (m, n, optional)--> act --> Y (m, n)

a transformer's projections and feed-forward GEMMs with their epilogue (bias, the
residual add, GELU) in one launch on the handle's stream, so it can be captured into the
engine's CUDA graph, which cuBLAS through CuPy cannot. The weight is kept as (n, k)
row-major, the layout of a 1x1 convolution's KRSC filter the engine's own GEMM tactics
use too; the graph reads it transposed through strides.

Plans are had, timed and chosen exactly as for the convolutions (cudnn_graphs.ConvGraph,
run_graph: the heuristics' list, up to ``max_plans`` built, the fastest on the real
buffers kept, optionally a store across processes). A leaf module: no engine imports.
"""
import dataclasses
import hashlib
import json

import numpy as np

from . import cudnn_graphs as G


@dataclasses.dataclass(frozen=True)
class MatmulSpec:
    """Everything a fused matmul graph depends on (weights' values excluded): ``m`` rows of
    A (every leading dim folded in), ``k`` the reduction, ``n`` the output width."""
    m: int
    n: int
    k: int
    out_dtype: str = "float16"
    act: str = None
    alpha: float = 0.0
    beta: float = 0.0
    residual: bool = False

    kind = "matmul"

    def reason(self):
        """None when a cuDNN graph can express this matmul, else why not."""
        if min(self.m, self.n, self.k) < 1:
            return f"empty matmul (m, n, k) = {(self.m, self.n, self.k)}"
        if self.act is not None and self.act not in G.ACTIVATIONS:
            return f"activation {self.act} not fused by the cuDNN graphs (they fuse {sorted(G.ACTIVATIONS)})"
        if self.out_dtype not in G._DTYPES:
            return f"output dtype {self.out_dtype} (expected one of {G._DTYPES})"
        if self.k % 8 or self.n % 8:
            return f"k = {self.k}, n = {self.n}: both must be multiples of 8 (16-byte rows)"
        return None

    def key(self, device_name):
        text = json.dumps(["matmul", dataclasses.astuple(self), device_name, G.frontend_version()], default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def to_json(self):
        return dict(dataclasses.asdict(self), kind=self.kind)

    @classmethod
    def from_json(cls, doc):
        return cls(**{k: v for k, v in doc.items() if k != "kind"})

    def define(self, cudnn, handle):
        """The operation graph (cudnn_graphs.define_graph's contract): 3-D tensors with a
        batch of one, as the frontend's matmul takes them."""
        half, fp32 = cudnn.data_type.HALF, cudnn.data_type.FLOAT
        out_t = half if self.out_dtype == "float16" else fp32
        m, n, k = self.m, self.n, self.k
        g = cudnn.pygraph(io_data_type=half, intermediate_data_type=fp32, compute_data_type=fp32,
                          handle=handle)
        t = {"X": g.tensor(name="X", dim=[1, m, k], stride=[m * k, k, 1], data_type=half),
             # (n, k) row-major memory read as the (k, n) operand
             "W": g.tensor(name="W", dim=[1, k, n], stride=[n * k, 1, k], data_type=half),
             "B": g.tensor(name="B", dim=[1, 1, n], stride=[n, n, 1], data_type=fp32)}
        y = g.matmul(A=t["X"], B=t["W"], compute_data_type=fp32, name="matmul")
        y = g.add(a=y, b=t["B"], name="bias")
        if self.residual:
            t["R"] = g.tensor(name="R", dim=[1, m, n], stride=[m * n, n, 1], data_type=out_t)
            y = g.add(a=y, b=t["R"], name="residual")
        if self.act is not None:
            op, params = G.ACTIVATIONS[self.act]
            y = getattr(g, op)(input=y, name="act", **params(self.alpha, self.beta))
        y.set_output(True).set_data_type(out_t)
        y.set_dim([1, m, n]).set_stride([m * n, n, 1])
        t["Y"] = y
        return G.finish_graph(cudnn, g, t)


G.SPEC_KINDS[MatmulSpec.kind] = MatmulSpec


def matmul_fused(a, w_nk, bias, spec, residual=None, max_plans=4, build_budget_s=6.0, store=None):
    """y (m, n) = act(a @ w_nk.T + bias + residual) through a cuDNN graph.

    ``a`` (m, k) float16, ``w_nk`` (n, k) float16, ``bias`` (n,) float32, ``residual``
    (m, n) of ``spec.out_dtype``, all C-contiguous device arrays; returns a new (m, n)
    array of ``spec.out_dtype``. The first call for a spec (per device and process)
    builds and times its plans; never make that first call inside a CUDA-graph capture."""
    import cupy as cp     # optional: only where a GPU runs the graph
    reason = spec.reason()
    if reason:
        raise ValueError(f"cuDNN matmul graph for {spec}: {reason}")
    want = {"a": ((spec.m, spec.k), np.float16, a), "w": ((spec.n, spec.k), np.float16, w_nk),
            "bias": ((spec.n,), np.float32, bias)}
    if spec.residual:
        want["residual"] = ((spec.m, spec.n), np.dtype(spec.out_dtype), residual)
    elif residual is not None:
        raise ValueError("a residual was given to a graph built without one (spec.residual False)")
    G.check_operands("matmul", want)
    y = cp.empty((spec.m, spec.n), spec.out_dtype)
    return G.run_graph(spec, a, w_nk, bias, residual, y, max_plans, build_budget_s, store)
