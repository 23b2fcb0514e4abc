"""INetworkDefinition: the graph of layers users build, and the builder rewrites.

Layers can only consume tensors that already exist, so insertion order is a
topological order; passes that rewire the graph keep it that way (a fused layer
takes the place of the first layer it absorbs).
"""
import logging

from .errors import NetworkDefinitionError
from .layers import classes as L
from .layers.base import MAX_DIMS, Tensor
from .layers.shape import ShapeLayer
from .shape_values import propagate as propagate_values
from .types import DataType

log = logging.getLogger(__name__)


class Network:
    def __init__(self, flags=0):
        self.name = ""
        self._layers = []
        self._inputs = []
        self._outputs = []
        self._tensors = {}
        self._dirty = False
        self._counter = 0
        self.flags = flags

    # -- inspection ----------------------------------------------------------
    @property
    def num_layers(self):
        return len(self._layers)

    @property
    def num_inputs(self):
        return len(self._inputs)

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_layer(self, i):
        if not -len(self._layers) <= i < len(self._layers):
            raise IndexError(f"network has {len(self._layers)} layers; asked for layer {i}")
        return self._layers[i]

    def get_input(self, i):
        return self._inputs[i]

    def get_output(self, i):
        return self._outputs[i]

    def __iter__(self):
        return iter(list(self._layers))

    def __len__(self):
        return len(self._layers)

    def get_tensor(self, name):
        return self._tensors.get(name)

    # -- inputs and outputs ------------------------------------------------------
    def add_input(self, name, dtype, shape):
        where = f"network input '{name}'"
        if not isinstance(name, str) or not name:
            raise NetworkDefinitionError("network input", "name", repr(name), "a non-empty str")
        if name in self._tensors:
            raise NetworkDefinitionError(where, "name", repr(name), "a name no other tensor has")
        if not isinstance(dtype, DataType):
            raise NetworkDefinitionError(where, "dtype", repr(dtype), "an engine DataType "
                                         "(float32, float16, int8, int32, bool)")
        shape = self._check_input_shape(where, shape)
        t = Tensor(self, name)
        t._declared_shape, t._shape, t._dtype = shape, shape, dtype
        self._tensors[name] = t
        self._inputs.append(t)
        self._dirty = True
        return t

    @staticmethod
    def _check_input_shape(where, shape):
        try:
            shape = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise NetworkDefinitionError(where, "shape", repr(shape), "a sequence of ints") from None
        if len(shape) > MAX_DIMS or any(d < -1 for d in shape):
            raise NetworkDefinitionError(where, "shape", shape,
                                         f"at most {MAX_DIMS} dims, each >= 0 or -1 (dynamic)")
        return shape

    def _set_input_shape(self, tensor, shape):
        tensor._declared_shape = tensor._shape = self._check_input_shape(
            f"network input '{tensor.name}'", shape)
        self._dirty = True
        self._ensure_inferred()

    def _set_input_dtype(self, tensor, dtype):
        if not isinstance(dtype, DataType):
            raise NetworkDefinitionError(f"network input '{tensor.name}'", "dtype", repr(dtype),
                                         "an engine DataType")
        tensor._dtype = dtype
        self._dirty = True

    def mark_output(self, tensor):
        self._check_tensor("mark_output", "tensor", tensor)
        if tensor not in self._outputs:
            self._outputs.append(tensor)

    def unmark_output(self, tensor):
        if tensor not in self._outputs:
            raise NetworkDefinitionError("unmark_output", "tensor", repr(tensor),
                                         "a tensor marked as a network output")
        self._outputs.remove(tensor)

    def _rename_tensor(self, tensor, name):
        if not isinstance(name, str) or not name:
            raise NetworkDefinitionError(f"tensor '{tensor.name}'", "name", repr(name),
                                         "a non-empty str")
        if name == tensor._name:
            return
        if name in self._tensors:
            raise NetworkDefinitionError(f"tensor '{tensor.name}'", "name", repr(name),
                                         "a name no other tensor has")
        del self._tensors[tensor._name]
        tensor._name = name
        self._tensors[name] = tensor

    def _check_tensor(self, where, arg, tensor):
        if not isinstance(tensor, Tensor):
            raise NetworkDefinitionError(where, arg, type(tensor).__name__, "an engine Tensor")
        if tensor._network is not self or self._tensors.get(tensor.name) is not tensor:
            raise NetworkDefinitionError(where, arg, f"tensor '{tensor.name}'",
                                         "a tensor of this network")

    # -- adding layers ---------------------------------------------------------
    def _add(self, layer):
        """Validate, infer shapes and append; on any error nothing is added."""
        kind = layer.layer_type.name.lower()
        self._ensure_inferred()
        for i, t in enumerate(layer._inputs):
            if t is None and i in layer.optional_inputs:
                continue
            self._check_tensor(layer.describe(), f"input {i}", t)
        n = len(layer._inputs)
        if not layer.min_inputs <= n <= (layer.max_inputs or n):
            layer.fail("inputs", f"{n} tensors",
                       f"between {layer.min_inputs} and {layer.max_inputs or 'any number of'}")
        results = self._infer_layer(layer)
        layer.name = layer.name or f"{kind}_{self._counter}"
        self._counter += 1
        layer._network = self
        layer._outputs = []
        for i, (shape, dtype) in enumerate(results):
            name = f"{layer.name}_out{i}" if len(results) > 1 else f"{layer.name}_out"
            while name in self._tensors:
                name += "_"
            t = Tensor(self, name, layer, i)
            t._shape, t._dtype = shape, dtype
            self._tensors[name] = t
            layer._outputs.append(t)
        propagate_values(layer)
        self._layers.append(layer)
        return layer

    def _infer_layer(self, layer, in_shapes=None, in_dtypes=None):
        if in_shapes is None:
            in_shapes = [None if t is None else t._shape for t in layer._inputs]
            in_dtypes = [None if t is None else t._dtype for t in layer._inputs]
        results = layer.infer(in_shapes, in_dtypes)
        out = []
        for i, (shape, dtype) in enumerate(results):
            shape = tuple(int(d) for d in shape)
            if len(shape) > MAX_DIMS:
                layer.fail("output", f"rank {len(shape)}", f"rank <= {MAX_DIMS}")
            out.append((shape, layer._output_types.get(i, dtype)))
        return out

    def _on_layer_changed(self, layer):
        # already in the network: re-check it now, the layers after it lazily, and only where
        # its outputs changed (not for a weight or an epilogue)
        if layer._outputs and self._infer_now(layer):
            self._dirty = True

    def _infer_now(self, layer):
        """Infer ``layer``'s outputs now; whether they came out other than they were."""
        before = [_signature(t) for t in layer._outputs]
        for t, (shape, dtype) in zip(layer._outputs, self._infer_layer(layer)):
            t._shape, t._dtype = shape, dtype
        propagate_values(layer)
        return [_signature(t) for t in layer._outputs] != before

    def _ensure_inferred(self):
        if not self._dirty:
            return
        self._dirty = False
        try:
            for layer in self._layers:
                for t, (shape, dtype) in zip(layer._outputs, self._infer_layer(layer)):
                    t._shape, t._dtype = shape, dtype
                propagate_values(layer)     # shape tensors: what later rules read
        except NetworkDefinitionError:
            self._dirty = True
            raise

    # -- rewiring (used by builder passes) ---------------------------------------
    def consumers(self):
        """tensor -> list of (layer, input index), over the whole network."""
        uses = {}
        for layer in self._layers:
            for i, t in enumerate(layer._inputs):
                if t is not None:
                    uses.setdefault(id(t), []).append((layer, i))
        return uses

    def replace_all_uses(self, old, new):
        """Point every consumer of ``old`` at ``new``; network outputs keep their names."""
        for layer in self._layers:
            layer._inputs = [new if t is old else t for t in layer._inputs]
        if old in self._outputs:
            self._outputs[self._outputs.index(old)] = new
            # the output name is part of the engine's contract: move it over
            oname = old._name
            del self._tensors[old._name]
            old._name = oname + "__replaced"
            self._tensors[old._name] = old
            self._rename_tensor(new, oname)
        # consumers that read a tensor of the same shape, type and shape values as before infer
        # the same outputs (shapes are current unless the network was dirty already)
        if _signature(new) != _signature(old):
            self._dirty = True

    def remove_layer(self, layer):
        # no layer reads its outputs any more (the callers rewire them first): the others'
        # shapes stand
        self._layers.remove(layer)
        for t in layer._outputs:
            if self._tensors.get(t._name) is t:
                del self._tensors[t._name]

    def take_output(self, keeper, donor, index=0, donor_index=0):
        """``keeper`` now produces ``donor``'s output tensor (same name, same consumers);
        ``donor`` is removed. The fused layer stays where ``keeper`` is in the order."""
        tensor = donor._outputs[donor_index]
        old = keeper._outputs[index]
        if self._tensors.get(old._name) is old:
            del self._tensors[old._name]
        tensor.producer, tensor.index = keeper, index
        keeper._outputs[index] = tensor
        donor._outputs[donor_index] = old
        self._layers.remove(donor)
        self._reinfer(keeper)

    def _reinfer(self, layer):
        """Infer ``layer`` again now; the network is marked for a full inference only where
        its outputs came out other than they were (a fusion keeps them: a ResNet-50's passes
        inferred the whole network 118 times for nothing, 0.3 s of a rebuild) or where the
        shapes it reads may be stale."""
        if self._dirty:
            return
        try:
            self._dirty = self._infer_now(layer)
        except NetworkDefinitionError:      # raised again, where it belongs, by the full inference
            self._dirty = True

    # -- the layer API (TensorRT INetworkDefinition, snake_case) -----------------
    def add_activation(self, input, type):
        return self._add(L.ActivationLayer(self, [input], activation_type=type))

    def add_concatenation(self, inputs, axis=None):
        # ``axis``: an extension of TensorRT's signature, so that a concat whose
        # inputs only fit along another axis can be added (shapes are checked here)
        inputs = list(inputs)
        rank = len(inputs[0].shape) if inputs and isinstance(inputs[0], Tensor) else 4
        axis = max(0, rank - 3) if axis is None else axis
        return self._add(L.ConcatenationLayer(self, inputs, axis=axis))

    # Window layers also take their attributes as keywords (stride_nd=, padding_mode=,
    # pre_padding=, post_padding=, dilation_nd=, num_groups=, ...): the shape check at
    # add time then sees the final geometry (a 3x3 SAME convolution on a 2x2 map is
    # only valid once padding_mode is known).
    def add_convolution_nd(self, input, num_output_maps, kernel_shape, kernel=None, bias=None,
                           **attrs):
        return self._add(L.ConvolutionLayer(self, [input], num_output_maps=num_output_maps,
                                            kernel_size_nd=kernel_shape, kernel=kernel, bias=bias,
                                            **attrs))

    def add_deconvolution_nd(self, input, num_output_maps, kernel_shape, kernel=None, bias=None,
                             **attrs):
        return self._add(L.DeconvolutionLayer(self, [input], num_output_maps=num_output_maps,
                                              kernel_size_nd=kernel_shape, kernel=kernel, bias=bias,
                                              **attrs))

    def add_elementwise(self, input1, input2, op):
        return self._add(L.ElementWiseLayer(self, [input1, input2], op=op))

    def add_flatten(self, input, axis=1):
        return self._add(L.FlattenLayer(self, [input], axis=axis))

    def add_fully_connected(self, input, num_outputs, kernel, bias=None):
        return self._add(L.FullyConnectedLayer(self, [input], num_output_channels=num_outputs,
                                               kernel=kernel, bias=bias))

    def add_lrn(self, input, window, alpha, beta, k):
        return self._add(L.LRNLayer(self, [input], window_size=window, alpha=alpha, beta=beta, k=k))

    def add_padding_nd(self, input, pre_padding, post_padding):
        return self._add(L.PaddingLayer(self, [input], pre_padding_nd=pre_padding,
                                        post_padding_nd=post_padding))

    def add_plugin_v2(self, inputs, plugin):
        return self._add(L.PluginV2Layer(self, list(inputs), plugin=plugin))

    def add_pooling_nd(self, input, type, window_size, **attrs):
        return self._add(L.PoolingLayer(self, [input], pooling_type=type, window_size_nd=window_size,
                                        **attrs))

    def add_rnn_v2(self, input, layer_count, hidden_size, max_seq_length, op):
        return self._add(L.RNNv2Layer(self, [input], num_layers=layer_count, hidden_size=hidden_size,
                                      max_seq_length=max_seq_length, op=op))

    def add_scale(self, input, mode, shift=None, scale=None, power=None):
        return self._add(L.ScaleLayer(self, [input], mode=mode, shift=shift, scale=scale,
                                      power=power, channel_axis=1))

    def add_scale_nd(self, input, mode, shift=None, scale=None, power=None, channel_axis=1):
        return self._add(L.ScaleLayer(self, [input], mode=mode, shift=shift, scale=scale,
                                      power=power, channel_axis=channel_axis))

    def add_shuffle(self, input):
        return self._add(L.ShuffleLayer(self, [input]))

    def add_shape(self, input):
        """TensorRT's IShapeLayer: the dims of ``input`` as a 1-D INT32 shape tensor
        (for a Shuffle's input 1 or a Slice's size, input 2)."""
        return self._add(ShapeLayer(self, [input]))

    def add_softmax(self, input):
        rank = len(input.shape) if isinstance(input, Tensor) else 4
        return self._add(L.SoftMaxLayer(self, [input], axes=1 << max(0, rank - 3)))

    def add_squeeze(self, input, axes):
        return self._add(L.SqueezeLayer(self, [input], axes=axes))

    def add_unsqueeze(self, input, axes):
        return self._add(L.UnsqueezeLayer(self, [input], axes=axes))

    def add_unary(self, input, op):
        return self._add(L.UnaryLayer(self, [input], op=op))

    def add_constant(self, shape, weights):
        return self._add(L.ConstantLayer(self, [], shape=shape, weights=weights))

    def add_matrix_multiply(self, input0, op0, input1, op1):
        return self._add(L.MatrixMultiplyLayer(self, [input0, input1], op0=op0, op1=op1))

    def add_normalization(self, input, scale, bias, axes):
        """TensorRT's INormalizationLayer: (x - mean) / sqrt(var + epsilon) * scale + bias
        over the ``axes`` bitmask (layer norm: the last axis; instance norm: the
        spatial axes); ``scale``/``bias`` are tensors broadcastable to the input."""
        return self._add(L.NormalizationLayer(self, [input, scale, bias], axes=axes))

    def add_reduce(self, input, op, axes, keep_dims):
        return self._add(L.ReduceLayer(self, [input], op=op, axes=axes, keep_dims=keep_dims))

    def add_slice(self, input, start, shape, stride, mode=None):
        # ``mode`` (a SampleMode): an extension, so that a slice reaching outside
        # its input (WRAP, CLAMP, FILL, REFLECT) can be added
        extra = {} if mode is None else {"mode": mode}
        return self._add(L.SliceLayer(self, [input], start=start, shape=shape, stride=stride,
                                      **extra))

    def add_gather(self, input, indices, axis):
        return self._add(L.GatherLayer(self, [input, indices], axis=axis))

    def add_resize(self, input):
        return self._add(L.ResizeLayer(self, [input]))

    def add_identity(self, input):
        return self._add(L.IdentityLayer(self, [input]))

    def add_cast(self, input, to_type):
        return self._add(L.CastLayer(self, [input], to_type=to_type))

    def add_select(self, condition, then_input, else_input):
        return self._add(L.SelectLayer(self, [condition, then_input, else_input]))

    def add_topk(self, input, op, k, axes):
        """TensorRT's ITopKLayer: outputs 0 (values) and 1 (INT32 indices) of the
        ``k`` best along the one axis set in the ``axes`` bitmask."""
        return self._add(L.TopKLayer(self, [input], op=op, k=k, axes=axes))

    def add_combined_nms(self, boxes, scores, max_output_size_per_class, max_total_size,
                         iou_threshold, score_threshold, pad_per_class=False, clip_boxes=True):
        """TF's CombinedNonMaxSuppression (no TensorRT layer; TF-TRT used a plugin):
        outputs boxes, scores, classes and the INT32 count of valid rows."""
        return self._add(L.CombinedNMSLayer(
            self, [boxes, scores], max_output_size_per_class=max_output_size_per_class,
            max_total_size=max_total_size, iou_threshold=iou_threshold,
            score_threshold=score_threshold, pad_per_class=pad_per_class, clip_boxes=clip_boxes))

    def __repr__(self):
        return f"<Network {self.name!r}: {len(self._layers)} layers>"


def _signature(t):
    """What the layers after a tensor read of it: shape, dtype and known shape values."""
    value = getattr(t, "_value", None)
    if value is not None:
        value = tuple((a.shape, a.tobytes()) for a in value)
    return t._shape, t._dtype, value
