"""FP16 range check: run the optimised network in FP32 on sample inputs and name the
layers whose values FP16 cannot hold (issue 11, "FP16 range check").

FP16 (IEEE binary16) holds |x| <= 65504; the smallest subnormal is 2**-24, so a
nonzero |x| below it rounds to 0 (a random-weight MobileNetV2's logits, ~1e-11,
come out all zeros); below 2**-14 (the smallest normal) values keep fewer than
11 significant bits. A layer is named when, on the samples,

  overflow:   max |x| > 65504 (the value becomes +-inf), or
  underflow:  more than UNDERFLOW_ZERO_SHARE of its nonzero values have |x| < 2**-24,
              or more than UNDERFLOW_SUBNORMAL_SHARE have |x| < 2**-14.

With ``config.fp16_range_fallback`` the named layers, and the FP16 layers that read
their outputs, compute in FP32 (precision FLOAT before kernels are chosen); either way the findings go
into the plan's metadata ("fp16_range") and a warning names them.
"""
import logging
import warnings

import numpy as np

from .errors import BuildError
from .kernel_table import numpy_kernel
from .types import DataType

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
FP16_MIN_SUBNORMAL = 2.0 ** -24
FP16_MIN_NORMAL = 2.0 ** -14
# shares of a layer's nonzero values: a few tiny values in a big tensor are harmless
# (they are noise around zero); a layer whose values mostly sit there is not
UNDERFLOW_ZERO_SHARE = 0.01
UNDERFLOW_SUBNORMAL_SHARE = 0.5


class FP16RangeWarning(UserWarning):
    """Layers of an FP16 build whose values overflow or underflow FP16 on the samples."""


class _Stats:
    def __init__(self):
        self.max_abs, self.nonzero, self.below_tiny, self.below_normal = 0.0, 0, 0, 0

    def add(self, v):
        a = np.abs(v[np.isfinite(v)].astype(np.float64))
        if a.size:
            self.max_abs = max(self.max_abs, float(a.max()))
        nz = a[a > 0]
        self.nonzero += nz.size
        self.below_tiny += int((nz < FP16_MIN_SUBNORMAL).sum())
        self.below_normal += int((nz < FP16_MIN_NORMAL).sum())

    def finding(self, layer):
        share_tiny = self.below_tiny / self.nonzero if self.nonzero else 0.0
        share_sub = self.below_normal / self.nonzero if self.nonzero else 0.0
        kind = None
        if self.max_abs > FP16_MAX:
            kind = "overflow"
        elif share_tiny > UNDERFLOW_ZERO_SHARE or share_sub > UNDERFLOW_SUBNORMAL_SHARE:
            kind = "underflow"
        if kind is None:
            return None
        return {"layer": layer, "kind": kind, "max_abs": self.max_abs,
                "share_below_2^-24": round(share_tiny, 4),
                "share_below_2^-14": round(share_sub, 4)}


def _check_samples(network, samples):
    if isinstance(samples, dict):
        samples = [samples]
    samples = list(samples)
    if not samples:
        raise BuildError("config.range_check_inputs is empty; expected one or more dicts "
                         "input name -> array")
    names = {t.name for t in network._inputs}
    for i, feed in enumerate(samples):
        if not isinstance(feed, dict) or set(feed) != names:
            found = sorted(feed) if isinstance(feed, dict) else type(feed).__name__
            raise BuildError(f"range_check_inputs[{i}]: found {found}; expected a dict with "
                             f"the network inputs {sorted(names)}")
    return samples


def measure(network, samples):
    """Per layer (by name), FP32 value statistics over ``samples`` (dicts input -> array)."""
    stats = {}
    for feed in _check_samples(network, samples):
        values = {id(t): np.asarray(feed[t.name]) for t in network._inputs}
        for layer in network._layers:
            ins = [None if t is None else values[id(t)] for t in layer._inputs]
            # FP32 everywhere: the reference FP16 is judged against
            ins = [x.astype(np.float32) if x is not None and x.dtype == np.float16 else x
                   for x in ins]
            outs = numpy_kernel(layer)(layer, ins)
            for t, v in zip(layer._outputs, outs):
                v = np.asarray(v)
                values[id(t)] = v
                if v.dtype.kind == "f":
                    stats.setdefault(layer.name, _Stats()).add(v)
    return stats


def check(network, precisions, config):
    """Findings for the layers assigned HALF; with ``config.fp16_range_fallback`` they
    move to FLOAT in ``precisions`` (in place). Returns the list of findings."""
    stats = measure(network, config.range_check_inputs)
    findings = []
    for name, st in stats.items():
        if precisions.get(name) != DataType.HALF:
            continue
        f = st.finding(name)
        if f is None:
            continue
        if config.fp16_range_fallback:
            precisions[name] = DataType.FLOAT
            f["kept_fp32"] = True
        findings.append(f)
    if config.fp16_range_fallback and findings:
        # an FP16 consumer would round the out-of-range tensor on reading it: it stays
        # FP32 too (named, with the producer), or the fallback would change nothing
        flagged = {f["layer"]: f["kind"] for f in findings}
        out_of = {id(t): layer.name for layer in network._layers if layer.name in flagged
                  for t in layer._outputs}
        for layer in network._layers:
            src = next((out_of[id(t)] for t in layer._inputs
                        if t is not None and id(t) in out_of), None)
            if src is not None and precisions.get(layer.name) == DataType.HALF:
                precisions[layer.name] = DataType.FLOAT
                findings.append({"layer": layer.name, "kind": f"{flagged[src]} input",
                                 "producer": src, "kept_fp32": True})
    if findings:
        desc = ", ".join(f"{f['layer']} ({f['kind']}, max |x| {f['max_abs']:.3g})" if "max_abs" in f
                         else f"{f['layer']} (reads {f['producer']})" for f in findings[:8])
        more = f" and {len(findings) - 8} more" if len(findings) > 8 else ""
        action = ("kept in FP32" if config.fp16_range_fallback else
                  "set config.fp16_range_fallback = True to keep them in FP32")
        msg = f"FP16 range: {len(findings)} layer(s) out of FP16's range on the samples: {desc}{more}; {action}"
        log.warning(msg)
        warnings.warn(msg, FP16RangeWarning, stacklevel=3)
    return findings
