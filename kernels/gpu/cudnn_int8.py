"""INT8 convolutions as cuDNN graphs (the optional frontend, as kernels/gpu/cudnn_graphs.py),
with the requantising epilogue of kernels/quantize.py (``epilogue_int8``) as pointwise ops::

    X (NHWC int8) --conv_fprop (int32 acc, out float)--> . --*M[k]--> . --+B[k]--> .
        --+(R * RS[k])  or  +R (float16 / float32, optional)--> act --> [*IO[k]] --> Y

    M = float32(s_in) * s_w[k]     (the per-channel dequantisation)
    B = bias[k]                    RS = s_res (an INT8 residual's scale)
    IO = float32(1) / s_out        (INT8 output only; cuDNN's float -> int8 conversion
                                    rounds half to even and saturates, like cvt.rni.sat)

Each step is its own pointwise op, rounded on its own (cuDNN's runtime fusion may still
contract a multiply and an add). Our kernels (kernels/cuda/int8_epilogue.cuh) compute the
same sum with two fused multiply-adds and, into int8 codes with ReLU or no activation,
the output scale folded in: the float32 values agree but for the last place, so an int8
code differs by one now and then (tests/gpu/test_cudnn_int8_gpu.py allows 1e-4 of them)
and the bits of float outputs may differ.

Why: at batch 256 on an H200 cuDNN's best INT8 plan ran ResNet-50's 3x3 256@14 conv at
~757 TOPS against ~410 for our wgmma INT8 kernels. INT8 convolutions want 16-byte channel
vectors: C and K multiples of 16 (an RGB stem padded to C=4 took 10.8 ms through cuDNN:
the stem stays on our small-C kernel).

The per-channel vectors travel as one (4, K) float32 array, rows M, B, RS, IO
(``epilogue_vectors``); the graph's tensors point into it. Plans are had, timed and
chosen exactly as for the FP16 convolutions (cudnn_graphs.ConvGraph, run_graph, the
worker processes, the plan store). A leaf module: no engine imports.
"""
import dataclasses
import hashlib
import json

import numpy as np

from . import cudnn_graphs as G

# fixed tensor uids (a plan serialized in a worker runs here with a variant pack by uid):
# the FP16 graphs' roles, then the INT8 epilogue's vectors
UIDS = {**G.UIDS, "M": 6, "RS": 7, "IO": 8}
VECTOR_ROWS = ("M", "B", "RS", "IO")          # the rows of ``epilogue_vectors``
OUT_DTYPES = ("int8", "float16", "float32")
RESIDUAL_DTYPES = (None, "int8", "float16", "float32")
CHANNEL_ALIGN = 16


@dataclasses.dataclass(frozen=True)
class Int8ConvSpec(G.ConvWindow):
    """Everything an INT8 conv graph depends on (weights' and scales' values excluded);
    memory is NHWC / KRSC int8. ``residual``: None or the residual's dtype name (int8
    codes are dequantised in the graph, float ones added as they are)."""
    out_dtype: str = "int8"
    act: str = None
    alpha: float = 0.0
    beta: float = 0.0
    residual: str = None

    kind = "conv_int8"

    @property
    def first_plan(self):
        """The first heuristic plan timed (``cudnn_graphs.plan_window``). An int8 output skips
        plan 0: it won none of 78 such graphs in three ResNet-50 INT8 builds (H200 session 16,
        H100 sessions 17 and 18: plans 1 to 3 won) and its compiles took 16 of the 85 CPU
        seconds of the INT8 graphs' plans (H100, session 18, ``build_s_by_plan``)."""
        return 1 if self.out_dtype == "int8" else 0

    def reason(self):
        """None when a cuDNN INT8 graph can express this convolution, else why not."""
        if self.act is not None and self.act not in G.ACTIVATIONS:
            return f"activation {self.act} not fused by the cuDNN graphs (they fuse {sorted(G.ACTIVATIONS)})"
        if self.out_dtype not in OUT_DTYPES:
            return f"output dtype {self.out_dtype} (expected one of {OUT_DTYPES})"
        if self.residual not in RESIDUAL_DTYPES:
            return f"residual dtype {self.residual} (expected one of {RESIDUAL_DTYPES})"
        if self.c % CHANNEL_ALIGN or self.k % CHANNEL_ALIGN:
            return (f"C = {self.c}, K = {self.k}: both must be multiples of {CHANNEL_ALIGN} "
                    "(cuDNN's INT8 convolutions read 16-byte channel vectors)")
        if min(self.out_hw()) < 1:
            return f"empty output {self.out_hw()}"
        return None

    def key(self, device_name):
        text = json.dumps([self.kind, dataclasses.astuple(self), device_name, G.frontend_version()], default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def to_json(self):
        return dict(dataclasses.asdict(self), kind=self.kind)

    @classmethod
    def from_json(cls, doc):
        """The spec ``to_json`` gave (JSON turned its tuples into lists)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc.items() if k != "kind"})

    def define(self, cudnn, handle):
        """The operation graph (cudnn_graphs.define_graph's contract)."""
        dt = cudnn.data_type
        i8, f32 = dt.INT8, dt.FLOAT
        kinds = {"int8": i8, "float16": dt.HALF, "float32": f32}
        p, q = self.out_hw()
        k = self.k
        g = cudnn.pygraph(io_data_type=i8, intermediate_data_type=f32, compute_data_type=f32, handle=handle)
        nhwc = G._nhwc_stride
        t = {"X": g.tensor(name="X", dim=[self.n, self.c, self.h, self.w], stride=nhwc(self.c, self.h, self.w),
                           data_type=i8),
             "W": g.tensor(name="W", dim=[k, self.c, self.r, self.s], stride=nhwc(self.c, self.r, self.s),
                           data_type=i8)}

        def vector(name):
            t[name] = g.tensor(name=name, dim=[1, k, 1, 1], stride=[k, 1, k, k], data_type=f32)
            return t[name]
        # exact int32 accumulation, handed on as float32 (= float(acc), as our epilogue does)
        y = g.conv_fprop(image=t["X"], weight=t["W"], pre_padding=list(self.pre_padding),
                         post_padding=list(self.post_padding), stride=list(self.stride),
                         dilation=list(self.dilation), compute_data_type=dt.INT32, name="conv")
        y.set_data_type(f32)
        y = g.mul(a=y, b=vector("M"), name="scale")
        y = g.add(a=y, b=vector("B"), name="bias")
        if self.residual is not None:
            t["R"] = g.tensor(name="R", dim=[self.n, k, p, q], stride=nhwc(k, p, q),
                              data_type=kinds[self.residual])
            r = g.mul(a=t["R"], b=vector("RS"), name="dequantize") if self.residual == "int8" else t["R"]
            y = g.add(a=y, b=r, name="residual")
        if self.act is not None:
            op, params = G.ACTIVATIONS[self.act]
            y = getattr(g, op)(input=y, name="act", **params(self.alpha, self.beta))
        if self.out_dtype == "int8":
            y = g.mul(a=y, b=vector("IO"), name="requantize")
        y.set_output(True).set_data_type(kinds[self.out_dtype])
        y.set_dim([self.n, k, p, q]).set_stride(nhwc(k, p, q))
        t["Y"] = y
        for name, tensor in t.items():
            tensor.set_uid(UIDS[name])
        g, _ = G.finish_graph(cudnn, g, {})      # uids set above (finish_graph knows the FP16 ones)
        return g, t

    def variant_pack(self, x, w, vectors, residual, y):
        """{uid: device pointer} of one execution: ``vectors`` the (4, K) float32 rows
        M, B, RS, IO (``epilogue_vectors``); only the rows the graph reads are bound."""
        row = vectors.strides[0]
        pack = {UIDS["X"]: x.data.ptr, UIDS["W"]: w.data.ptr, UIDS["Y"]: y.data.ptr,
                UIDS["M"]: vectors.data.ptr, UIDS["B"]: vectors.data.ptr + row}
        if self.residual is not None:
            pack[UIDS["R"]] = residual.data.ptr
        if self.residual == "int8":
            pack[UIDS["RS"]] = vectors.data.ptr + 2 * row
        if self.out_dtype == "int8":
            pack[UIDS["IO"]] = vectors.data.ptr + 3 * row
        return pack


G.SPEC_KINDS[Int8ConvSpec.kind] = Int8ConvSpec


def epilogue_vectors(s_in, s_w, bias=None, s_res=None, s_out=None, xp=np):
    """The (4, K) float32 rows M, B, RS, IO of the graph's epilogue, in float32 arithmetic
    as kernels.quantize does it: M = float32(s_in) * s_w, B = bias (0 without one),
    RS = s_res (1 without an INT8 residual), IO = float32(1) / float32(s_out) (1 for a
    float output). ``xp``: the array module of the result (numpy, or cupy for the device)."""
    s_w = np.asarray(s_w.get() if hasattr(s_w, "get") else s_w, np.float32)
    k = s_w.shape[0]
    v = np.ones((4, k), np.float32)
    v[0] = np.float32(s_in) * s_w
    if bias is not None:
        b = np.asarray(bias.get() if hasattr(bias, "get") else bias, np.float32)
        if b.shape != (k,):
            raise ValueError(f"INT8 epilogue bias: found shape {b.shape}, expected ({k},)")
        v[1] = b
    else:
        v[1] = 0.0
    if s_res is not None:
        v[2] = np.float32(s_res)
    if s_out is not None:
        v[3] = np.float32(1.0) / np.float32(s_out)
    return xp.asarray(v)


def conv2d_int8_graph(x_q, w_q, vectors, spec, residual=None, out=None, max_plans=4,
                      build_budget_s=6.0, store=None):
    """The INT8 convolution with its epilogue through a cuDNN graph; returns ``out``.

    ``x_q`` (N, H, W, C) int8 codes, ``w_q`` (K, R, S, C) int8 codes (conv_int8.
    pack_weight_int8_krsc), ``vectors`` (4, K) float32 (``epilogue_vectors``),
    ``residual`` (N, P, Q, K) of ``spec.residual``'s dtype, ``out`` (N, P, Q, K) of
    ``spec.out_dtype``, all C-contiguous device arrays. The first call for a spec (per
    device and process) has its plans built (or ``prefetch``ed ones from the workers),
    times them on these buffers and keeps the fastest; never make that first call inside
    a CUDA-graph capture. ``store``: get/put of chosen plans across processes."""
    import cupy as cp     # optional: only where a GPU runs the graph
    reason = spec.reason()
    if reason:
        raise ValueError(f"cuDNN INT8 conv graph for {spec}: {reason}")
    p, q = spec.out_hw()
    want = {"x": ((spec.n, spec.h, spec.w, spec.c), np.int8, x_q),
            "w": ((spec.k, spec.r, spec.s, spec.c), np.int8, w_q),
            "vectors": ((4, spec.k), np.float32, vectors)}
    if spec.residual is not None:
        want["residual"] = ((spec.n, p, q, spec.k), np.dtype(spec.residual), residual)
    elif residual is not None:
        raise ValueError("a residual was given to a graph built without one (spec.residual None)")
    if out is not None:
        want["out"] = ((spec.n, p, q, spec.k), np.dtype(spec.out_dtype), out)
    G.check_operands("INT8 conv", want)
    y = out if out is not None else cp.empty((spec.n, p, q, spec.k), spec.out_dtype)
    return G.run_graph(spec, x_q, w_q, vectors, residual, y, max_plans, build_budget_s, store)
