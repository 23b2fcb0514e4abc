"""GPU tactics for MatrixMultiply: our own batched GEMM (kernels/gpu/matmul.py),
CUDA-graph safe, so an engine of matmuls (a transformer encoder) can be
captured whole; cuBLAS (MatMulCublas) cannot be.

    matmul.<tile>      matmul.matmul                FP16 layers: tensor cores (mma.sync), per tile
    matmul.simt_fp32   matmul.matmul                FP32 layers: the FP32 SIMT kernel (true FP32)
    matmul.conv.<tile> conv_wgmma.conv2d_wgmma,     a constant 2-D right operand (a linear
                       conv_igemm.conv2d_igemm,     layer's weight): the GEMM as a 1x1
                       conv_tf32.conv2d_tf32        convolution of the (M, K) rows, with the
                                                    fused epilogue (scale = alpha, bias, ...)
    matmul.cublas      cupy.matmul (cuBLAS)         no fused epilogue; not capturable

An operand produced by a Constant layer (the weight of a linear layer) is
uploaded once and shared by every tactic of the layer, in the layout the
kernel reads fastest: a constant right operand in FP16 is stored transposed
(N x K, "K-major"), so the tensor cores read both operands with ldmatrix
without .trans. The Constant layer itself still runs (the engine feeds its
output); its value is simply not read here.
"""
import numpy as np

from kernels.gpu import conv_igemm, conv_tf32, conv_wgmma, matmul
from kernels.gpu.errors import UnsupportedError

from ..settings import settings
from ..types import DataType, LayerType, MatrixOperation as MO
from .base import Tactic, cupy
from .conv_common import wgmma_reason

_FLOAT_NAMES = ("float32", "float16")


def constant_operand(layer, i):
    """The value of input ``i`` when a Constant layer produces it (NumPy), else None."""
    t = layer._inputs[i]
    p = None if t is None else t.producer
    if p is None or p.layer_type != LayerType.CONSTANT or p.weights is None:
        return None
    return np.asarray(p.weights).reshape(tuple(p.shape))


def linear_reason(layer, in_shapes):
    """Why ``layer`` is not a linear layer the weight-GEMM tactics take (a plain left
    operand, a constant 2-D right operand, a residual of the output's shape); None when it is."""
    if layer.op0 != MO.NONE or MO.VECTOR == layer.op1:
        return "a plain left operand and a matrix right operand only"
    w = constant_operand(layer, 1)
    if w is None or constant_operand(layer, 0) is not None:
        return "the right operand alone must be a Constant"
    if any(d != 1 for d in w.shape[:-2]):
        return f"a 2-D constant (leading dims 1), not {w.shape}"
    if len(in_shapes) > 2 and in_shapes[2] is not None:
        out = tuple(in_shapes[0][:-1]) + (w.shape[-1] if layer.op1 == MO.NONE else w.shape[-2],)
        if tuple(in_shapes[2]) != out:
            return f"a residual of the output's shape {out} only, not {in_shapes[2]}"
    return None


def linear_weight(layer):
    """A linear layer's weight as (N, K) NumPy (the transposed right operand: the KRSC
    filter of a 1x1 convolution) and its bias as float32 (N,) (zeros when it has none)."""
    w = constant_operand(layer, 1)
    w = w.reshape(w.shape[-2:])
    wt = w.T if layer.op1 == MO.NONE else w
    n = wt.shape[0]
    bias = (np.zeros(n, np.float32) if layer.bias is None
            else np.ascontiguousarray(layer.bias, np.float32).reshape(-1))
    return wt, bias


def device_constants(layer, dtype, k_major_b):
    """{input index: (device array, op name)} for the constant operands, made once
    per layer and dtype and memoised on the layer (engine layers are not
    modified after the build); tiles of one layer share them."""
    memo = layer.__dict__.setdefault("_matmul_consts", {})
    key = (np.dtype(dtype).name, k_major_b)
    hit = memo.get(key)
    if hit is None:
        cp = cupy()
        hit = {}
        for i, op in ((0, layer.op0), (1, layer.op1)):
            w = constant_operand(layer, i)
            if w is None:
                continue
            name = op.name
            if i == 1 and k_major_b and op == MO.NONE:
                w, name = np.swapaxes(w, -1, -2), "TRANSPOSE"
            hit[i] = (cp.asarray(np.ascontiguousarray(w), dtype), name)
        if layer.bias is not None:      # the kernel adds the bias in FP32 either way
            hit["bias"] = cp.asarray(np.ascontiguousarray(layer.bias, np.float32).reshape(-1))
        memo[key] = hit
    return hit


def _shape_reason(layer, in_shapes, in_dtypes):
    if MO.VECTOR in (layer.op0, layer.op1):
        return "VECTOR operands (the GEMM kernel takes matrices)"
    if any(d not in _FLOAT_NAMES for d in in_dtypes):
        return f"floating inputs only, not {in_dtypes}"
    try:
        batch, m, _, _ = matmul.plan(in_shapes[0], in_shapes[1], layer.op0.name, layer.op1.name)
    except UnsupportedError as e:
        return str(e)
    nb = int(np.prod(batch))
    folds = layer.op0 == MO.NONE and int(np.prod(in_shapes[1][:-2])) == 1
    if nb > matmul.MAX_BATCH and not folds:
        return f"{nb} batched matrices (at most {matmul.MAX_BATCH})"
    return None


class MatMulTensorCore(Tactic):
    """FP16 batched GEMM on the tensor cores, one tile shape."""

    def __init__(self, tile):
        self.tile = tile
        self.name = f"matmul.{tile.name}"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision != DataType.HALF:
            return "the tensor-core matmul runs HALF layers"
        return _shape_reason(layer, in_shapes, in_dtypes)

    def prepare(self, layer):
        return device_constants(layer, np.float16, k_major_b=True)

    def run(self, state, layer, inputs, precision, out_dtypes):
        (a, op_a), (b, op_b) = _operands(state, layer, inputs, np.float16)
        return [matmul.matmul(a, b, op_a=op_a, op_b=op_b, out_dtype=out_dtypes[0].to_numpy(),
                       tactic=self.tile, **_epilogue(state, layer, inputs, np.float16))]


class MatMulSimt(Tactic):
    """FP32 batched GEMM, SIMT FFMA (true FP32: TensorRT's FP32 without TF32)."""
    name = "matmul.simt_fp32"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if precision != DataType.FLOAT:
            return "the FP32 matmul runs FLOAT layers"
        return _shape_reason(layer, in_shapes, in_dtypes)

    def prepare(self, layer):
        return device_constants(layer, np.float32, k_major_b=False)

    def run(self, state, layer, inputs, precision, out_dtypes):
        (a, op_a), (b, op_b) = _operands(state, layer, inputs, np.float32)
        return [matmul.matmul(a, b, op_a=op_a, op_b=op_b, out_dtype=out_dtypes[0].to_numpy(),
                       **_epilogue(state, layer, inputs, np.float32))]


def _epilogue(consts, layer, inputs, dtype):
    """The fused epilogue as kernels.gpu.matmul.matmul's keywords. Activation
    names are the engine's ActivationType names, which the kernel's codes
    (kernels/gpu/activation.py) take as they are. A HALF layer's residual is
    rounded to FP16 first, as the reference's inputs are (the kernel then
    casts it to the output dtype)."""
    residual = inputs[2] if len(inputs) > 2 else None
    if residual is not None and residual.dtype != dtype:
        residual = residual.astype(dtype)
    act = layer.post_activation
    act_alpha, act_beta = layer.post_params()
    return {"alpha": layer.alpha, "bias": consts.get("bias"), "residual": residual,
            "act": None if act is None else act.name, "act_alpha": act_alpha,
            "act_beta": act_beta}


def _operands(consts, layer, inputs, dtype):
    """(array, op name) per side: the uploaded constant, or the run-time input
    cast to the compute dtype (a HALF layer's FP32 input is rounded, as the
    reference's inputs are)."""
    out = []
    for i, op in ((0, layer.op0), (1, layer.op1)):
        hit = consts.get(i)
        out.append(hit if hit is not None else (inputs[i].astype(dtype, copy=False), op.name))
    return out


class MatMulAsConv(Tactic):
    """``act(alpha * A @ W + bias + residual)`` with a constant W (K x N) as the
    1x1 convolution of A's rows: A (..., M, K) is the NHWC image [1, 1, M_all, K],
    W^T the KRSC filter [N, 1, 1, K]; the convolution's per-channel scale carries
    alpha. The conv kernels are the engine's fastest GEMMs (wgmma on sm_90a).
    ``launch``: the convolution kernel it runs (conv_wgmma.conv2d_wgmma,
    conv_igemm.conv2d_igemm or conv_tf32.conv2d_tf32)."""

    def __init__(self, launch, tile, dtype, c_align, precise=None):
        self.launch, self.tile = launch, tile
        self.dtype, self.c_align, self.precise = np.dtype(dtype), c_align, precise
        self.wgmma = launch is conv_wgmma.conv2d_wgmma
        self.switch = "wgmma" if self.wgmma else None     # CUPYRT_WGMMA=0 drops these too
        self.name = f"matmul.conv.{tile.name}"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        want = DataType.HALF if self.dtype == np.float16 else DataType.FLOAT
        if precision != want:
            return f"runs {want.name} layers"
        if self.wgmma:
            reason = wgmma_reason()
            if reason:
                return reason
        k = in_shapes[0][-1]
        if k % self.c_align:
            return f"K = {k} is not a multiple of {self.c_align}"
        return linear_reason(layer, in_shapes)

    def prepare(self, layer):
        cp = cupy()
        wt, bias = linear_weight(layer)
        n = wt.shape[0]
        act = layer.post_activation
        a_alpha, a_beta = layer.post_params()
        kw = {} if self.precise is None else {"precise": self.precise}
        if self.wgmma:       # the FP16 fast epilogue setting, fixed when the layer is prepared
            kw["fast_epilogue"] = settings().wgmma_f16_fast_epilogue
        return {"w": cp.asarray(np.ascontiguousarray(wt.reshape(n, 1, 1, -1)), self.dtype),
                "scale": cp.full(n, layer.alpha, cp.float32), "bias": cp.asarray(bias),
                "act": None if act is None else act.name, "a_alpha": a_alpha, "a_beta": a_beta,
                "options": kw}

    def run(self, state, layer, inputs, precision, out_dtypes):
        cp = cupy()
        a = inputs[0]
        lead, k = a.shape[:-1], a.shape[-1]
        m = int(np.prod(lead))
        x = cp.ascontiguousarray(a.astype(self.dtype, copy=False)).reshape(1, 1, m, k)
        n = state["w"].shape[0]
        out_dtype = out_dtypes[0].to_numpy()
        res = inputs[2] if len(inputs) > 2 else None
        if res is not None:
            res = cp.ascontiguousarray(res.astype(out_dtype, copy=False)).reshape(1, 1, m, n)
        y = self.launch(x, state["w"], scale=state["scale"], bias=state["bias"], residual=res,
                        act=state["act"], alpha=state["a_alpha"], beta=state["a_beta"],
                        out_dtype=out_dtype, tactic=self.tile, **state["options"])
        return [y.reshape(tuple(lead) + (n,))]


def conv_backed_tactics():
    """The MatMulAsConv family: wgmma, large mma.sync and split-K tiles in FP16 (split-K:
    few output tiles over a long reduction, e.g. a transformer's FFN at batch 1), 3xTF32
    in FP32."""
    return ([MatMulAsConv(conv_wgmma.conv2d_wgmma, t, np.float16, 8) for t in conv_wgmma.TACTICS]
            + [MatMulAsConv(conv_igemm.conv2d_igemm, t, np.float16, 8)
               for t in conv_igemm.IGEMM_TACTICS_LARGE]
            + [MatMulAsConv(conv_igemm.conv2d_igemm_splitk, t, np.float16, 8)
               for t in conv_igemm.SPLITK_TACTICS]
            + [MatMulAsConv(conv_tf32.conv2d_tf32, t, np.float32, 4, precise=True)
               for t in conv_tf32.tactics_for(True)])


class MatMulCublas(Tactic):
    """Batched matrix multiply through cuBLAS in the layer's precision (FP16 in,
    FP32 accumulate), transposes as strided views (no copies)."""
    name = "matmul.cublas"
    capturable = False

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if MO.VECTOR in (layer.op0, layer.op1):
            return "vector operands"
        if any(d not in ("float32", "float16") for d in in_dtypes):
            return "floating inputs only"
        if layer.has_epilogue:
            # cp.matmul has no epilogue; the matmul.* tactics fuse it (and the
            # generic tactic runs it as the reference does, for the shapes they decline)
            return "a fused epilogue (alpha/bias/residual/activation): the matmul.* tactics"
        return None

    def run(self, state, layer, inputs, precision, out_dtypes):
        cp = cupy()
        dt = np.float16 if precision == DataType.HALF else np.float32
        a, b = (x.astype(dt, copy=False) for x in inputs)
        if layer.op0 == MO.TRANSPOSE:
            a = a.swapaxes(-1, -2)
        if layer.op1 == MO.TRANSPOSE:
            b = b.swapaxes(-1, -2)
        return [cp.matmul(a, b).astype(out_dtypes[0].to_numpy(), copy=False)]


# The MATRIX_MULTIPLY tactics, in the order the builder times them.
TACTICS = (MatMulCublas(), *[MatMulTensorCore(t) for t in matmul.TILES], MatMulSimt(),
           *conv_backed_tactics())
