"""GEMM-shaped layers: FullyConnected and MatrixMultiply."""
import numpy as np

from kernels import gemm as G
from kernels import pointwise as P
from kernels.xp import array_module

from ..kernel_table import numpy_impl
from ..types import FLOATING as _FLOATS, ActivationType, LayerType, MatrixOperation
from .base import Array, EnumAttr, Float, Int, Layer, broadcast_shapes, check_float, dim_known
from .pointwise import _ACT_DEFAULTS

# ----------------------------------------------------------------------------
# FullyConnected

class FullyConnectedLayer(Layer):
    """TensorRT's IFullyConnectedLayer.

    The last three dims are flattened and multiplied by the kernel:

        input (..., C, H, W)  --  kernel (K, C*H*W)  -->  output (..., K, 1, 1)

    A rank-2 input (N, C) gives (N, K), for graphs that already flattened.

    Builder hooks (set by the epilogue fusion pass, see engine/passes):
    ``post_activation``/``post_alpha``/``post_beta`` and an optional second
    input, the residual, give y = act(x W^T + b + residual).
    """

    layer_type = LayerType.FULLY_CONNECTED
    min_inputs, max_inputs, optional_inputs = 1, 2, (1,)
    num_output_channels = Int(1, minimum=1)
    kernel = Array(None, dtypes=_FLOATS)
    bias = Array(None, dtypes=_FLOATS)
    post_activation = EnumAttr(ActivationType, None)
    post_alpha = Float(None)
    post_beta = Float(None)

    def post_params(self):
        """(alpha, beta) of the fused activation with TensorRT's defaults filled in."""
        da, db = _ACT_DEFAULTS.get(self.post_activation, (0.0, 0.0))
        return (da if self.post_alpha is None else self.post_alpha,
                db if self.post_beta is None else self.post_beta)

    def infer(self, in_shapes, in_dtypes):
        shape, dtype = in_shapes[0], in_dtypes[0]
        check_float(self, "input", dtype)
        if len(shape) < 2:
            self.fail("input", f"shape {shape}", "a rank-2 (N, C) or rank >= 3 (..., C, H, W) tensor")
        k = self.num_output_channels
        w = self.kernel
        if w is None:
            self.fail("kernel", "None", f"a ({k}, C*H*W) array")
        if w.ndim < 2 or w.shape[0] != k:
            self.fail("kernel", f"an array of shape {w.shape}",
                      f"shape ({k}, C*H*W): num_output_channels rows")
        if len(shape) == 2:
            flat, out = shape[1:], (shape[0], k)
        else:
            flat, out = shape[-3:], tuple(shape[:-3]) + (k, 1, 1)
        cols = int(np.prod(w.shape[1:]))
        if all(dim_known(d) for d in flat) and int(np.prod(flat)) != cols:
            self.fail("kernel", f"{cols} columns (shape {w.shape})",
                      f"{int(np.prod(flat))} columns, the product of input dims {tuple(flat)}")
        if self.bias is not None and self.bias.size != k:
            self.fail("bias", f"{self.bias.size} values", f"{k} values (one per output channel)")
        if len(in_shapes) > 1 and in_shapes[1] is not None:
            check_float(self, "residual", in_dtypes[1])
            if broadcast_shapes(self, out, in_shapes[1], "residual") != out:
                self.fail("residual", f"shape {in_shapes[1]}",
                          f"a shape that broadcasts to the output shape {out}")
        return [(out, dtype)]


@numpy_impl(LayerType.FULLY_CONNECTED)
def _fully_connected(layer, inputs):
    x = inputs[0]
    lead = x.shape[:1] if x.ndim == 2 else x.shape[:-3]
    k = layer.num_output_channels
    residual = inputs[1] if len(inputs) > 1 else None
    if residual is not None:
        residual = array_module(residual).broadcast_to(residual, (*lead, k) if x.ndim == 2
                                                       else (*lead, k, 1, 1))
        residual = residual.reshape(-1, k)
    act = layer.post_activation
    alpha, beta = layer.post_params()
    y = G.fully_connected(x.reshape(int(np.prod(lead)), -1), layer.kernel.reshape(k, -1),
                          layer.bias, residual, None if act is None else act.name, alpha, beta)
    return [y.reshape((*lead, k) if x.ndim == 2 else (*lead, k, 1, 1))]


# ----------------------------------------------------------------------------
# MatrixMultiply

class MatrixMultiplyLayer(Layer):
    """TensorRT's IMatrixMultiplyLayer: op0(input0) x op1(input1).

    NONE/TRANSPOSE operands are stacks of matrices over their last two dims,
    VECTOR operands stacks of vectors over their last dim. The remaining
    (batch) dims must be equally many and broadcast where one side is 1.

    Builder hooks (set by engine/passes/fuse_matmul_epilogue.py; TensorRT fuses
    the same way but keeps it internal): ``alpha``, ``bias`` (one value per
    element of the last output axis), an optional third input, the residual (of
    the output's shape), and ``post_activation``/``post_alpha``/``post_beta``:

        y = act(alpha * op0(a) @ op1(b) + bias + residual)

    the order of the convolution/FC epilogue (bias, residual, activation).
    """

    layer_type = LayerType.MATRIX_MULTIPLY
    min_inputs, max_inputs, optional_inputs = 2, 3, (2,)
    op0 = EnumAttr(MatrixOperation, MatrixOperation.NONE)
    op1 = EnumAttr(MatrixOperation, MatrixOperation.NONE)
    alpha = Float(1.0)
    bias = Array(None, dtypes=_FLOATS)
    post_activation = EnumAttr(ActivationType, None)
    post_alpha = Float(None)
    post_beta = Float(None)

    def get_operation(self, index):
        return (self.op0, self.op1)[index]

    def set_operation(self, index, op):
        setattr(self, ("op0", "op1")[index], op)

    def post_params(self):
        """(alpha, beta) of the fused activation with TensorRT's defaults filled in."""
        da, db = _ACT_DEFAULTS.get(self.post_activation, (0.0, 0.0))
        return (da if self.post_alpha is None else self.post_alpha,
                db if self.post_beta is None else self.post_beta)

    @property
    def residual(self):
        """The fused residual tensor (input 2), or None."""
        return self._inputs[2] if len(self._inputs) > 2 else None

    @property
    def has_epilogue(self):
        """True when anything beyond op0(a) @ op1(b) is fused in."""
        return (self.alpha != 1.0 or self.bias is not None or self.residual is not None
                or self.post_activation is not None)

    def _operand(self, i, shape, op):
        """(batch dims, outer dim, inner dim) of op(input i); outer is None for a
        vector. The inner dim is the one contracted: A's columns, B's rows."""
        arg = f"input{i}"
        if op == MatrixOperation.VECTOR:
            if len(shape) < 1:
                self.fail(arg, f"shape {shape}", "rank >= 1 for a VECTOR operand")
            return tuple(shape[:-1]), None, shape[-1]
        if len(shape) < 2:
            self.fail(arg, f"shape {shape}", f"rank >= 2 for a {op.name} operand (or op VECTOR)")
        rows, cols = shape[-2], shape[-1]
        if op == MatrixOperation.TRANSPOSE:
            rows, cols = cols, rows
        return (tuple(shape[:-2]),) + ((rows, cols) if i == 0 else (cols, rows))

    def infer(self, in_shapes, in_dtypes):
        for i in (0, 1):
            check_float(self, f"input{i}", in_dtypes[i])
        ba, m, ka = self._operand(0, in_shapes[0], self.op0)
        bb, n, kb = self._operand(1, in_shapes[1], self.op1)
        if len(ba) != len(bb):
            self.fail("inputs", f"{len(ba)} and {len(bb)} batch dims ({in_shapes[0]} and "
                      f"{in_shapes[1]})", "equally many batch dims (outside the matrix/vector dims)")
        batch = broadcast_shapes(self, ba, bb, "inputs")
        if dim_known(ka) and dim_known(kb) and ka != kb:
            self.fail("inputs", f"inner dims {ka} and {kb} (op0 {self.op0.name}, op1 "
                      f"{self.op1.name})", "equal inner dims")
        out = batch + tuple(d for d in (m, n) if d is not None)
        self._check_epilogue(out, in_shapes, in_dtypes)
        return [(out, in_dtypes[0])]

    def _check_epilogue(self, out, in_shapes, in_dtypes):
        if self.bias is not None:
            if not out:
                self.fail("bias", f"{self.bias.size} values", "no bias: the output is a scalar")
            if dim_known(out[-1]) and self.bias.size != out[-1]:
                self.fail("bias", f"{self.bias.size} values",
                          f"{out[-1]} values (one per element of the output's last axis)")
        if len(in_shapes) > 2 and in_shapes[2] is not None:
            check_float(self, "residual", in_dtypes[2])
            res = in_shapes[2]
            # the pass fuses equal declared shapes; a dynamic dim is re-checked with
            # the run's shapes, where a 1 broadcasts as the ElementWise SUM it replaced did
            if len(res) != len(out) or any(r != o and r != 1 and dim_known(r) and dim_known(o)
                                           for r, o in zip(res, out)):
                self.fail("residual", f"shape {res}",
                          f"the output's shape {out} (or 1 where it broadcasts)")


@numpy_impl(LayerType.MATRIX_MULTIPLY)
def _matrix_multiply(layer, inputs):
    y = G.matrix_multiply(inputs[0], inputs[1], layer.op0.name, layer.op1.name)
    if not layer.has_epilogue:
        return [y]
    act = layer.post_activation
    alpha, beta = layer.post_params()
    residual = inputs[2] if len(inputs) > 2 else None
    # FP32 arithmetic in the epilogue order of the GEMM kernel (kernels/gpu/matmul.py)
    xp = array_module(y)
    if layer.alpha != 1.0:
        y = y * np.float32(layer.alpha)
    if layer.bias is not None:
        y = y + xp.asarray(layer.bias).astype(np.float32, copy=False).reshape(-1)
    if residual is not None:
        y = y + residual.astype(np.float32, copy=False)
    if act is not None:
        y = P.activation(y, act.name, alpha, beta)
    return [y]
