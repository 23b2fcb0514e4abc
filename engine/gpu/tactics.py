"""The GPU tactics of every layer type, and a layer's candidates.

Which tactics exist for a layer type is the table below: each family module lists its
tactics (``TACTICS``), each tactic names the kernel it launches (``launch``, a function
of kernels/gpu), so the step layer -> tactic -> kernel reads in two files. Every layer
also has the fallbacks of engine/gpu/base.py: the INT8 emulation, the generic tactic
(the layer's NumPy adapter on CuPy arrays) and the host tactic (NumPy, last resort).

Switches (engine.settings) take tactics out of a layer's candidates when they are asked
for, not when modules are imported: a tactic whose ``switch`` names a setting that is
off is no candidate (``wgmma``, ``int8_smallc``, ``pw_persistent``, ``s2d_stem``); the cuDNN
tactic declines itself.
"""
from kernels.gpu import compile as kernel_compile

from ..kernel_table import TACTICS
from ..settings import settings
from ..types import DataType, LayerType
from . import (attention_tactics, concat, constant_tactics, conv_int8_tactics, conv_pw_tactics,
               conv_s2d_tactics, conv_tactics, conv_tf32_tactics, cudnn_int8_tactics,
               cudnn_s2d_tactics, cudnn_tactics, fc_tactics, matmul_tactics, norm_tactics,
               pointwise_tactics, pool_tactics, rnn_tactics, softmax_tactics)
from .base import GENERIC, HOST, INT8_EMULATION, Tactic, as_nhwc, nchw_view, register

__all__ = ["GENERIC", "HOST", "INT8_EMULATION", "Tactic", "as_nhwc", "by_name", "candidates",
           "held_back", "nchw_view", "outruns_general", "register", "supported"]

# cuDNN's graphs first: where they run they are usually fastest (52 of ResNet-50's 53
# convolutions, all 72 BERT linear layers in the H200 records), and the time of the first
# candidate is what the others are stopped early against (engine/gpu/timing.py: a candidate
# 1.5x slower stops after 3 runs, one 2x slower is not re-timed in a CUDA graph)
register(LayerType.CONVOLUTION, cudnn_tactics.ConvCudnn(), cudnn_s2d_tactics.ConvCudnnS2d(),
         cudnn_int8_tactics.ConvCudnnInt8(), *conv_s2d_tactics.TACTICS,
         *conv_tactics.TACTICS, *conv_int8_tactics.TACTICS, *conv_pw_tactics.TACTICS,
         *conv_tf32_tactics.TACTICS)
register(LayerType.FULLY_CONNECTED, *fc_tactics.TACTICS)
register(LayerType.MATRIX_MULTIPLY, cudnn_tactics.MatMulCudnn(), *matmul_tactics.TACTICS)
register(LayerType.POOLING, *pool_tactics.POOLING_TACTICS)
register(LayerType.REDUCE, *pool_tactics.REDUCE_TACTICS)
register(LayerType.NORMALIZATION, *norm_tactics.TACTICS)
register(LayerType.SOFTMAX, *softmax_tactics.TACTICS)
register(LayerType.POINTWISE, *pointwise_tactics.TACTICS)
register(LayerType.CONSTANT, *constant_tactics.TACTICS)
register(LayerType.RNN_V2, *rnn_tactics.TACTICS)
register(LayerType.CONCATENATION, concat.ELIDED)
attention_tactics.register_all()      # ATTENTION: the flash tiles, then the unfused path


def candidates(layer, precision=None):
    """The layer's specialised tactics, then generic, then host; for a given
    precision only the tactics that compute in it (INT8 is integer arithmetic on
    codes: float tactics would misread them). Tactics switched off in the settings
    are left out (a tactic's ``switch``: one setting's name, or a tuple of names that
    must all be on)."""
    s = settings()
    kernel_compile.set_debug_level(s.debug)     # kernels read no environment: told here

    def on(t):
        switch = getattr(t, "switch", None) or ()
        return all(getattr(s, name) for name in ((switch,) if isinstance(switch, str) else switch))
    every = [t for t in TACTICS.get(layer.layer_type, ()) if on(t)]
    every += [INT8_EMULATION, GENERIC, HOST]
    if precision is None:
        return every
    want = precision == DataType.INT8
    return [t for t in every if t.int8 is None or t.int8 == want]


# a plain mma.sync tile family -> the wgmma family of the same precision that outran it
# (the mma_sync_where_wgmma switch: at 0 the first is no candidate where the second is one).
# Exact types: split-K, small-C, narrow and persistent subclasses are not dominated.
DOMINATED = {conv_tactics.ConvIgemm: conv_tactics.ConvWgmma,
             conv_int8_tactics.ConvInt8: conv_int8_tactics.ConvWgmmaInt8}


def supported(layer, shapes, dtypes, precision, tf32=False, where=None):
    """The candidates the builder times for ``layer`` at these input shapes and dtype
    names: those computing in ``precision`` whose ``supports`` accepts them; plain-TF32
    tactics only under the TF32 flag; with mma_sync_where_wgmma off, no ``DOMINATED``
    tile where its dominating family is a candidate; with tiles_where_specialised off, no
    general tile (``general_tile``) where a kernel that outran them takes the layer
    (``outruns_general``; ``held_back`` lists those). ``where``: a filter applied before
    ``supports`` (precompile asks only the tactics that launch a precompiled tile: the
    cuDNN tactic's check queues its plan builds)."""
    hold = not settings().tiles_where_specialised and _outrun(layer, shapes, dtypes, precision)
    return _supported(layer, shapes, dtypes, precision, tf32,
                      lambda t: (where is None or where(t)) and not (hold and getattr(t, "general_tile", False)))


def held_back(layer, shapes, dtypes, precision, tf32=False):
    """The general tiles ``supported`` leaves out for ``layer`` (tiles_where_specialised
    off; none when it is on): what the builder times when no kernel that outruns them then
    runs the layer (every cuDNN plan failed, say). mma_sync_where_wgmma applies among them
    as in ``supported``."""
    if settings().tiles_where_specialised or not _outrun(layer, shapes, dtypes, precision):
        return []
    return _supported(layer, shapes, dtypes, precision, tf32, lambda t: getattr(t, "general_tile", False))


def _supported(layer, shapes, dtypes, precision, tf32, where):
    out = [t for t in candidates(layer, precision)
           if where(t) and (tf32 or not getattr(t, "tf32", False))
           and t.supports(layer, shapes, dtypes, precision) is None]
    if not settings().mma_sync_where_wgmma:
        present = {type(t) for t in out}
        out = [t for t in out if DOMINATED.get(type(t)) not in present]
    return out


def outruns_general(layer, shapes, dtypes, precision):
    """The names of the candidates of ``layer`` that our general convolution tiles yield to
    (``outruns_general_tiles``): in FP16 the cuDNN graphs where they take the layer (judged
    statically: no plan queued), in FP16 and INT8 our stem kernel where it does. In the FP16
    records (ResNet-50, MobileNetV2; H100 and H200, sessions 7-15) cuDNN won 544 of the 546
    convolutions both could run, the general tiles none (the closest 1.04x behind); the stem
    kernel beat every general tile on every stem since it exists (FP16 by 2.3x or more, INT8
    by 1.69x or more: five ResNet-50 INT8 builds, sessions 14-15). cuDNN's INT8 graphs do not
    outrun our INT8 tiles (wgmma and the persistent 1x1 took 15 of ResNet-50's 53 layers)."""
    if precision not in (DataType.HALF, DataType.INT8) or layer.layer_type != LayerType.CONVOLUTION \
            or not shapes or shapes[0] is None:
        return []
    out = []
    if cudnn_tactics.takes_statically(layer, shapes, precision):
        out.append(cudnn_tactics.ConvCudnn.name)
    out += [t.name for t in candidates(layer, precision)
            if getattr(t, "outruns_general_tiles", False) and t.name not in out
            and t.name != cudnn_tactics.ConvCudnn.name and t.supports(layer, shapes, dtypes, precision) is None]
    return out


def _outrun(layer, shapes, dtypes, precision):
    return bool(outruns_general(layer, shapes, dtypes, precision))


def by_name(layer, name):
    for t in candidates(layer):
        if t.name == name:
            return t
    return None
