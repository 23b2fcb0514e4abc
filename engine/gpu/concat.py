"""Concat elision: the producers of a channel concatenation write straight into
channel slices of one NHWC buffer, and the concat itself costs no copy
(TensorRT's "concatenation elision", Developer Guide, "Optimizing Concatenation").

    producers (single consumer: the concat)      one NHWC buffer [N, H, W, Ctot]
    conv 1x1   k0 channels  -- out=, offset 0       -> [..., 0       : k0          ]
    conv 3x3   k1           -- out=, offset k0      -> [..., k0      : k0 + k1     ]
    max pool   k2           -- out=, offset k0+k1   -> [..., k0 + k1 : Ctot        ]
    concat(axis=1)  returns  buffer.transpose(0, 3, 1, 2)   (a view: no copy)

Three parts, and the data flow between them is explicit:

- ``plan_concat_elision(network)``: plain data, no GPU. Which producer writes
  into which concat at which channel offset; computed once per engine.
- ``ConcatElision`` (per engine: the plan, the concats' storage dtypes,
  counters) and ``ConcatPlacement`` (per run: the buffers). The CuPy backend
  makes a fresh placement for every run of the layer loop and routes each layer
  through ``ConcatPlacement.run_layer``: a planned producer whose chosen tactic
  can write at an offset is handed a ``ConcatTarget`` (``into=``); the concat
  is handed the buffer (``buffer=``). The buffer is a ``cupy.empty`` made by
  the first producer that claims it, inside the run, so a CUDA-graph capture
  allocates it from the capture's private pool like any other activation.
- ``ConcatElided``: the concat tactic. It checks that every input is the view
  of its slice of the buffer and copies (``kernels.gpu.reformat.concat_into``)
  any that is not, so the result is right whatever the producers did: a
  producer whose tactic cannot write at an offset (cuBLAS in a CUDA graph, the
  generic tactic), or in another dtype, costs one copy of its own slice only.

Tactic selection times producers on fresh outputs (placement applies only to
the chosen tactic's real run), so timing never writes into a buffer that holds
other producers' results.
"""
import logging
from typing import NamedTuple

import numpy as np

from kernels.gpu.errors import UnsupportedError
from kernels.gpu.reformat import concat_into

from ..types import LayerType
from .base import GENERIC, Tactic, cupy, nchw_view

log = logging.getLogger(__name__)

# layers whose GPU tactics can write NHWC at a channel offset (conv_tactics:
# implicit GEMM, cuBLAS 1x1, im2col, depthwise; pooling)
PRODUCER_TYPES = (LayerType.CONVOLUTION, LayerType.POOLING)
FLOATS = (np.dtype(np.float16), np.dtype(np.float32))


class Slot(NamedTuple):
    """Where one producer writes: the concat, its first channel, the concat's channels."""
    concat: str
    offset: int
    total: int


# -- the plan (builder side: plain data) --------------------------------------------

def plan_concat_elision(network, why=None):
    """{producer layer name: Slot(concat name, channel offset, total channels)}.

    A concat is elided when it joins rank-4 tensors along axis 1 with static
    channel counts and every input is the only output of a conv/pooling layer,
    read by nothing but this concat (once) and not a network output. If one
    input does not qualify, the concat is not elided at all (its reason goes to
    ``why[concat name]`` when a dict is given).
    """
    uses = network.consumers()
    outputs = {id(t) for t in network._outputs}
    plan = {}
    n_concat = 0
    for layer in network._layers:
        if layer.layer_type != LayerType.CONCATENATION:
            continue
        n_concat += 1
        slots, reason = _concat_slots(layer, uses, outputs)
        if slots is None:
            log.debug("concat %s not elided: %s", layer.name, reason)
            if why is not None:
                why[layer.name] = reason
            continue
        plan.update(slots)
    log.info("concat elision: %d of %d concatenations elided (%d producers)",
             len({s.concat for s in plan.values()}), n_concat, len(plan))
    return plan


def _concat_slots(concat, uses, outputs):
    """(slots, None) or (None, why not)."""
    ins = list(concat._inputs)
    if not ins or any(t is None for t in ins):
        return None, "an absent input"
    rank = len(concat._outputs[0].shape)
    if rank != 4:
        return None, f"rank {rank}; only rank-4 (n c h w) tensors"
    if concat.axis % rank != 1:
        return None, f"axis {concat.axis}; only the channel axis 1"
    if len({id(t) for t in ins}) != len(ins):
        return None, "the same tensor concatenated twice"
    slots, offset = {}, 0
    for i, t in enumerate(ins):
        where = f"input {i} ('{t.name}')"
        producer = t.producer
        if producer is None:
            return None, f"{where} is a network input"
        if producer.layer_type not in PRODUCER_TYPES:
            return None, f"{where} comes from a {producer.layer_type.name} layer; only " \
                         f"{', '.join(p.name for p in PRODUCER_TYPES)} write at a channel offset"
        if len(producer._outputs) != 1:
            return None, f"{where} comes from a layer with {len(producer._outputs)} outputs"
        if id(t) in outputs:
            return None, f"{where} is a network output"
        readers = uses.get(id(t), [])
        if len(readers) != 1:
            return None, f"{where} is read by {len(readers)} layers; the concat must be its only reader"
        shape = t.shape
        if len(shape) != 4 or shape[1] < 0:
            return None, f"{where} has shape {shape}; static channels needed"
        if producer.name in slots:
            return None, f"{where}: layer {producer.name} feeds the concat twice"
        slots[producer.name] = offset
        offset += shape[1]
    return {name: Slot(concat.name, off, offset) for name, off in slots.items()}, None


# -- per engine and per run (runtime side) ------------------------------------------

class ConcatElision:
    """Per engine: the plan, each elided concat's output storage dtype (the
    buffer's dtype), and counters a test can read (``counts``: concats run with
    every input in place / some / none)."""

    def __init__(self, engine):
        self.engine = engine
        self.plan = plan_concat_elision(engine.network)
        self.concats = {s.concat for s in self.plan.values()}
        self.dtypes = {layer.name: np.dtype(out_dtypes[0].to_numpy())
                       for layer, _, out_dtypes in engine.schedule() if layer.name in self.concats}
        self.counts = {"elided": 0, "partial": 0, "copied": 0}
        self.refused = set()      # producers whose tactic refused an `out=` (no retries)

    def placement(self):
        return ConcatPlacement(self)

    def choose(self, layer, candidates):
        """The tactic of a planned concat, untimed (timing would see the producers'
        in-place writes as free); None for any other layer."""
        if layer.name not in self.concats:
            return None
        return next((t for t in candidates if isinstance(t, ConcatElided)), None)


class ConcatPlacement:
    """One run's concat buffers: made by the first producer that writes into
    them, handed to the concat, then dropped."""

    def __init__(self, elision):
        self.elision = elision
        self.buffers = {}         # concat name -> NHWC buffer of this run

    def run_layer(self, tactic, state, layer, inputs, precision, out_dtypes):
        """The layer's outputs when placement concerns it, else None (run it as usual)."""
        e = self.elision
        slot = e.plan.get(layer.name)
        if slot is not None:
            if not getattr(tactic, "writes_into_concat", False) or layer.name in e.refused:
                return None
            try:
                return tactic.run(state, layer, inputs, precision, out_dtypes,
                                  into=ConcatTarget(self, slot))
            except UnsupportedError as err:   # raised before any launch: run it unplaced
                log.info("%s: %s does not write into the concat buffer (%s); the concat copies "
                         "its slice", layer.name, tactic.name, err)
                e.refused.add(layer.name)
                return None
        if layer.name in e.concats and isinstance(tactic, ConcatElided):
            copied = []
            outs = tactic.run(state, layer, inputs, precision, out_dtypes,
                              buffer=self.buffers.pop(layer.name, None), copied=copied)
            e.counts["elided" if not copied else
                     "copied" if len(copied) == len(inputs) else "partial"] += 1
            return outs
        return None

    def claim(self, slot, nhwc_shape, writable):
        """Launcher keywords {out, out_channel_offset}, or None when the producer
        should write a fresh output (a dtype it cannot write, a shape that does
        not fit)."""
        n, h, w, k = nhwc_shape
        dtype = self.elision.dtypes.get(slot.concat)
        if dtype is None or dtype not in writable or slot.offset + k > slot.total:
            return None
        buf = self.buffers.get(slot.concat)
        if buf is None:
            buf = self.buffers[slot.concat] = cupy().empty((n, h, w, slot.total), dtype)
        elif tuple(buf.shape[:3]) != (n, h, w):
            return None
        return {"out": buf, "out_channel_offset": slot.offset}


class ConcatTarget:
    """What a producer tactic is handed (``into=``): its slot in this run's buffer."""

    def __init__(self, placement, slot):
        self.placement, self.slot = placement, slot

    def claim(self, nhwc_shape, writable):
        return self.placement.claim(self.slot, tuple(nhwc_shape),
                                    tuple(np.dtype(d) for d in writable))


# -- helpers for the producer tactics -------------------------------------------------

def claim(into, nhwc_shape, writable):
    """Keywords for a launcher: ``{}`` (fresh output) or ``{"out": buffer,
    "out_channel_offset": offset}``; ``writable``: the dtypes the kernel can write."""
    if into is None:
        return {}
    return into.claim(nhwc_shape, writable) or {}


def written(y, place, k):
    """The logical NCHW result of a launcher that got ``place``: its slice of the
    concat buffer, or its own output."""
    if place:
        off = place["out_channel_offset"]
        y = y[..., off:off + k]
    return nchw_view(y)


# -- the concat tactic ----------------------------------------------------------------

def _address(a):
    """First element's address: CuPy (``a.data.ptr``) or NumPy (the CPU tests)."""
    ptr = getattr(a.data, "ptr", None)
    return a.__array_interface__["data"][0] if ptr is None else ptr


def in_place(x, buf, offset):
    """Is NCHW ``x`` exactly ``buf[..., offset:offset + C].transpose(0, 3, 1, 2)``?"""
    n, h, w, _ = buf.shape
    return (x.dtype == buf.dtype and tuple(x.shape) == (n, x.shape[1], h, w)
            and _address(x) == _address(buf) + offset * buf.itemsize
            and (x.size == 0 or tuple(x.strides) == tuple(nchw_view(buf).strides)))


class ConcatElided(Tactic):
    """Channel concat of rank-4 tensors into one NHWC buffer, returned as its NCHW
    view. Inputs its producers already wrote there cost nothing; the others are
    copied into their slice (any layout, cast to the output's dtype)."""
    name = "concat.elided"

    def supports(self, layer, in_shapes, in_dtypes, precision):
        if any(s is None or len(s) != 4 for s in in_shapes):
            return "rank-4 inputs only"
        if layer.axis % 4 != 1:
            return "the channel axis (1) only"
        if any(d not in ("float16", "float32") for d in in_dtypes):
            return "floating inputs only"
        return None

    def run(self, state, layer, inputs, precision, out_dtypes, buffer=None, copied=None):
        dtype = np.dtype(out_dtypes[0].to_numpy())
        if dtype not in FLOATS:           # e.g. INT8 storage: codes need the quantizing path
            return GENERIC.run(GENERIC.prepare(layer), layer, inputs, precision, out_dtypes)
        n, _, h, w = inputs[0].shape
        total = sum(x.shape[1] for x in inputs)
        if buffer is None or tuple(buffer.shape) != (n, h, w, total) or buffer.dtype != dtype \
                or not buffer.flags.c_contiguous:
            buffer = cupy().empty((n, h, w, total), dtype)
        offset = 0
        for i, x in enumerate(inputs):
            if not in_place(x, buffer, offset):
                concat_into(buffer, x.transpose(0, 2, 3, 1), offset)
                if copied is not None:
                    copied.append(i)
            offset += x.shape[1]
        return [nchw_view(buffer)]


ELIDED = ConcatElided()
