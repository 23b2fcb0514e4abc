"""TrtGraphConverterV2: TF-TRT's TF2 converter API over SavedModels.

    converter = TrtGraphConverterV2(input_saved_model_dir="model/", precision_mode="FP16")
    converter.convert()                      # INT8: convert(calibration_input_fn=gen)
    converter.build(input_fn=gen)            # optional: engines built ahead, per shape
    converter.save("model_cupyrt/")
    loaded = tf_integration.load_saved_model("model_cupyrt/")
    loaded.signatures["serving_default"](image=x)

Per signature of the source model (each one is converted unless
``input_saved_model_signature_key`` names just one; the others are saved
frozen and run in TensorFlow):

    signature ConcreteFunction
      --convert_variables_to_constants_v2(lower_control_flow=False)-->  frozen GraphDef
      --TrtGraphConverter.convert() [+ calibrate()]-->  GraphDef with engine nodes
      --saved_model_runtime.runnable_graph_def-->  engine nodes as EagerPyFunc + constants
      --graph_function-->  ConcreteFunction with the source signature's inputs/outputs

Loops keep their functional While/If form (lower_control_flow=False): such a
node stays in TensorFlow as one node, with its reason in ``summary()``, and
the segmenter converts what is around it. The saved model is self-contained:
variables are frozen, engines (and the segments they replace, for the
fallback) are constants of its graph. ``tf.saved_model.load`` runs it after
``import tf_integration`` (saved_model_runtime.py says how, and what happens
without the import).

Parameters mean what they mean in TF-TRT, with two differences of substance:
``input_saved_model_signature_key=None`` converts every signature (TF-TRT
converts only 'serving_default' and saves no other), and
``use_dynamic_shape=True`` builds one engine per segment at convert() whose
unknown dims stay dynamic (our engines take any shape at run time, so no
optimization profiles are needed; ``dynamic_shape_profile_strategy`` is
accepted and changes nothing). With ``use_dynamic_shape`` False (TF-TRT's
default) engines are built per input shape, at run time or ahead by build().
Signatures that are one function (Keras ``model.export`` writes 'serve' and
'serving_default') are converted once and saved once, under both keys.

FP16 range check (engine/precision_range.py): FP16 and INT8 engines built with
sample inputs -- build(input_fn) ahead of time, INT8 calibration at convert() --
are checked on the inputs each engine node received; the layers whose values
FP16 cannot hold are named per engine in the report ("fp16_range") and in
summary(), and ``fp16_range_fallback=True`` keeps them in FP32.
"""
import collections.abc
import hashlib
import json
import logging
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
from tensorflow.python.saved_model import loader_impl

import engine as rt

from .calibration import check_algorithm, collect_engine_inputs
from .calibration_table import TableCalibrator
from .errors import ConverterArgumentError, GraphError, TFIntegrationError
from .graph_converter import TrtGraphConverter, check_fp16_range_fallback, fp16_range_findings
from .graph_utils import node_of
from .saved_model_runtime import bound_engine, graph_function, record_shapes, runnable_graph_def
from .segment_to_engine import PRECISIONS, build_plan, build_serialized_network_plan
from .summary import fp16_range_line

logger = logging.getLogger(__name__)

SERVING = "serving_default"
PROFILE_STRATEGIES = ("Range", "Optimal", "Range+Optimal", "ImplicitBatchModeCompatible")
# TF-TRT's TrtConversionParams fields (rewriter_config_template: None only, no Grappler)
CONVERSION_PARAMS = ("max_workspace_size_bytes", "precision_mode", "minimum_segment_size",
                     "maximum_cached_engines", "use_calibration", "allow_build_at_runtime",
                     "rewriter_config_template")
NO_BATCH_LIMIT = 2 ** 31 - 1
REPORT_FILE = os.path.join("assets.extra", "cupyrt_report.json")


class _Signature:
    """One signature of the source model, from frozen graph to runnable function."""
    def __init__(self, key, func):
        self.key = key
        frozen = convert_variables_to_constants_v2(func, lower_control_flow=False)
        self.graph_def = frozen.graph.as_graph_def()
        kwargs = func.structured_input_signature[1]   # signatures take keywords only
        placeholders = [t for t in frozen.inputs if t.dtype != tf.resource]
        by_name = {t.op.name: t.name for t in placeholders}
        if set(by_name) == set(kwargs):       # placeholders named after the keys
            self.input_names = [by_name[k] for k in sorted(kwargs)]
        else:                                 # else the flat order of the signature
            self.input_names = [t.name for t in placeholders]
        self.input_specs = [(k, kwargs[k]) for k in sorted(kwargs)]
        self.output_names = [t.name for t in frozen.outputs]
        self.structured_outputs = func.structured_outputs
        self.converter = None            # TrtGraphConverter, when this signature converts
        self.converted = self.graph_def
        self.prebuilt = {}               # engine name -> {input shapes: plan}
        self.fp16_range = {}             # engine name -> {input shapes: range findings}
        self.keys = {}                   # engine name -> key of its saved blob
        self.function = None

    def digest(self):
        """Equal for signatures with the same graph, inputs and outputs."""
        h = hashlib.sha256(self.graph_def.SerializeToString(deterministic=True))
        h.update(repr((self.input_names, self.input_specs, self.output_names,
                       tf.nest.map_structure(lambda _: None, self.structured_outputs))).encode())
        return h.hexdigest()

    def make_function(self, allow_build_at_runtime):
        runnable, self.keys, shapes = runnable_graph_def(
            self.converted, self.prebuilt, allow_build_at_runtime)
        self.function = graph_function(runnable, self.input_names, self.output_names,
                                       self.input_specs, self.structured_outputs,
                                       shapes)

    def feeds(self, item, argument):
        """The arrays of one yielded input (array, list/tuple in input order, or dict)."""
        keys = [k for k, _ in self.input_specs]
        if isinstance(item, collections.abc.Mapping):
            if sorted(item) != keys:
                raise ConverterArgumentError(argument, f"a dict with keys {sorted(item)}",
                                             f"a dict with keys {keys} (signature {self.key!r})")
            values = [item[k] for k in keys]
        elif isinstance(item, (list, tuple)):
            if len(item) != len(keys):
                raise ConverterArgumentError(argument, f"a {type(item).__name__} of "
                                             f"{len(item)} inputs", f"{len(keys)} inputs in "
                                             f"the order {keys} (signature {self.key!r})")
            values = list(item)
        elif len(keys) == 1:
            values = [item]
        else:
            raise ConverterArgumentError(argument, f"one {type(item).__name__}",
                                         f"a list/tuple or dict of {len(keys)} inputs {keys} "
                                         f"(signature {self.key!r})")
        return [np.asarray(v, dtype=spec.dtype.as_numpy_dtype)
                for v, (_, spec) in zip(values, self.input_specs)]


class TrtGraphConverterV2:
    """Convert a TF2 SavedModel; parameters mean what they mean in TF-TRT (see module doc)."""
    def __init__(self, input_saved_model_dir=None, input_saved_model_tags=None,
                 input_saved_model_signature_key=None, use_dynamic_shape=None,
                 dynamic_shape_profile_strategy=None, max_workspace_size_bytes=1 << 30,
                 precision_mode="FP32", minimum_segment_size=3, maximum_cached_engines=1,
                 use_calibration=True, allow_build_at_runtime=True, conversion_params=None,
                 calibration_algorithm="entropy", fp16_range_fallback=False):
        params = dict(max_workspace_size_bytes=max_workspace_size_bytes,
                      precision_mode=precision_mode, minimum_segment_size=minimum_segment_size,
                      maximum_cached_engines=maximum_cached_engines,
                      use_calibration=use_calibration,
                      allow_build_at_runtime=allow_build_at_runtime)
        params.update(_conversion_params(conversion_params))     # TF-TRT: the object wins
        self.params = _check_params(params)
        self.input_saved_model_dir = _check_dir(input_saved_model_dir)
        self.input_saved_model_tags = _check_tags(input_saved_model_tags)
        keys = _signature_keys(self.input_saved_model_dir, self.input_saved_model_tags)
        if input_saved_model_signature_key is not None and (
                input_saved_model_signature_key not in keys):
            raise ConverterArgumentError("input_saved_model_signature_key",
                                         input_saved_model_signature_key,
                                         "None (every signature) or one of the model's "
                                         f"signatures: {keys}")
        self.input_saved_model_signature_key = input_saved_model_signature_key
        if use_dynamic_shape not in (None, True, False):
            raise ConverterArgumentError("use_dynamic_shape", use_dynamic_shape,
                                         "None, True or False")
        self.use_dynamic_shape = bool(use_dynamic_shape)
        if dynamic_shape_profile_strategy is not None and (
                dynamic_shape_profile_strategy not in PROFILE_STRATEGIES):
            raise ConverterArgumentError("dynamic_shape_profile_strategy",
                                         dynamic_shape_profile_strategy,
                                         "None or one of " + ", ".join(PROFILE_STRATEGIES))
        self.calibration_algorithm = check_algorithm(calibration_algorithm)
        self.fp16_range_fallback = check_fp16_range_fallback(fp16_range_fallback)
        self._signatures = None          # key -> _Signature, after convert()
        self._built = {}                 # key -> number of inputs build() ran

    @property
    def need_calibration(self):
        return self.params["precision_mode"] == "INT8" and self.params["use_calibration"]

    @property
    def signatures(self):
        """{signature key: ConcreteFunction} of the converted model (runs in this process)."""
        self._require("signatures")
        return {k: s.function for k, s in self._signatures.items()}

    def _require(self, what):
        if self._signatures is None:
            raise TFIntegrationError(f"{what} before convert(); call convert() first")

    # ------------------------------------------------------------------ convert
    def convert(self, calibration_input_fn=None):
        """Freeze and convert every selected signature; returns the main signature's
        converted ConcreteFunction (``input_saved_model_signature_key``, else
        'serving_default', else the first). ``calibration_input_fn``: INT8 with
        use_calibration only; a generator function yielding one input per call
        (an array, a list/tuple in input order, or a dict by input name), or a
        dict {signature key: such a function} when signatures take different inputs."""
        if self.need_calibration and calibration_input_fn is None:
            raise ConverterArgumentError("calibration_input_fn", None,
                                         "a generator function of calibration inputs "
                                         "(precision_mode='INT8' with use_calibration=True)")
        if not self.need_calibration and calibration_input_fn is not None:
            raise ConverterArgumentError("calibration_input_fn", "a function",
                                         "None: calibration is for precision_mode='INT8' with "
                                         "use_calibration=True only")
        loaded = _load(self.input_saved_model_dir, self.input_saved_model_tags)
        selected = ([self.input_saved_model_signature_key]
                    if self.input_saved_model_signature_key else sorted(loaded.signatures))
        signatures, twins = {}, {}
        for key in sorted(loaded.signatures, key=lambda k: (k != SERVING, k)):
            sig = _Signature(key, loaded.signatures[key])
            # Keras export's 'serve' and 'serving_default' are one function: convert
            # and save it once, under both keys (named after 'serving_default')
            signatures[key] = twins.setdefault((sig.digest(), key in selected), sig)
            if signatures[key] is not sig:
                logger.info("signature %r is the same function as %r: converted and saved once",
                            key, signatures[key].key)
        primaries = [k for k in selected if signatures[k].key == k]
        calib_fns = (_per_signature(calibration_input_fn, primaries, selected,
                                    "calibration_input_fn")
                     if calibration_input_fn is not None else {})
        for key, sig in signatures.items():
            if sig.key != key:
                continue
            if key in primaries:
                self._convert_signature(sig, calib_fns.get(key))
            else:
                logger.info("signature %r is saved frozen, not converted "
                            "(input_saved_model_signature_key=%r)", key,
                            self.input_saved_model_signature_key)
            sig.make_function(self.params["allow_build_at_runtime"])
        self._signatures, self._built = signatures, {}
        main = self.input_saved_model_signature_key or (
            SERVING if SERVING in signatures else sorted(signatures)[0])
        return signatures[main].function

    def _convert_signature(self, sig, calibration_input_fn):
        p = self.params
        keep = [node_of(n) for n in sig.input_names + sig.output_names]
        conv = TrtGraphConverter(
            input_graph_def=sig.graph_def, nodes_denylist=keep,
            # dynamic shape: one plan per segment, unknown dims kept dynamic, no batch
            # limit; per shape: the batch only picks example shapes for checks
            max_batch_size=NO_BATCH_LIMIT if self.use_dynamic_shape else 1,
            max_workspace_size_bytes=p["max_workspace_size_bytes"],
            precision_mode=p["precision_mode"], minimum_segment_size=p["minimum_segment_size"],
            is_dynamic_op=not self.use_dynamic_shape,
            maximum_cached_engines=p["maximum_cached_engines"],
            use_calibration=p["use_calibration"],
            calibration_algorithm=self.calibration_algorithm,
            fp16_range_fallback=self.fp16_range_fallback)
        converted = conv.convert()
        if conv.need_calibration:
            batches = [dict(zip(sig.input_names, sig.feeds(item, "calibration_input_fn")))
                       for item in _items(calibration_input_fn, "calibration_input_fn")]
            feeds = iter(batches)
            converted = conv.calibrate(sig.output_names, len(batches),
                                       feed_dict_fn=lambda: next(feeds))
        sig.converter, sig.converted = conv, converted

    # ------------------------------------------------------------------ build
    def build(self, input_fn):
        """Build engines ahead for the input shapes ``input_fn`` yields (a generator
        function, as for convert's calibration_input_fn, or a dict per signature).

        Each engine node sees its own input shapes while the converted signature
        runs (in TensorFlow: nothing is built at run time here); one engine per
        distinct shape, at most maximum_cached_engines per node, is then built and
        stored in the node, so the saved model runs these shapes without a build.
        With use_dynamic_shape=True the engines were built at convert() for every
        shape; build() then only runs the inputs through them.
        """
        self._require("build()")
        converted = [k for k, s in self._signatures.items()
                     if s.converter is not None and s.key == k]
        fns = _per_signature(input_fn, converted,
                             [k for k, s in self._signatures.items() if s.converter is not None],
                             "input_fn")
        for key in converted:
            sig = self._signatures[key]
            items = [sig.feeds(item, "input_fn") for item in _items(fns[key], "input_fn")]
            if self.use_dynamic_shape:
                for arrays in items:
                    sig.function(*arrays)
            else:
                with record_shapes() as seen:
                    for arrays in items:
                        sig.function(*arrays)
                self._build_ahead(sig, seen, self._range_samples(sig, items))
                sig.make_function(self.params["allow_build_at_runtime"])
            self._built[key] = self._built.get(key, 0) + len(items)

    def _range_samples(self, sig, items):
        """{engine name: [{"input_i": array}...]}: what each engine node receives from
        ``items``, recorded with every engine running its TensorFlow segment (the FP16
        range check's samples); {} for FP32, where there is nothing to check."""
        if self.params["precision_mode"] not in ("FP16", "INT8"):
            return {}
        feeds = iter(items)
        runs = collect_engine_inputs(
            sig.converted, sig.output_names, len(items),
            feed_dict_fn=lambda: dict(zip(sig.input_names, next(feeds))), native=True)
        return {name: [{f"input_{i}": a for i, a in enumerate(arrays)} for arrays in r]
                for name, r in runs.items()}

    def _build_ahead(self, sig, seen, samples=None):
        cap = self.params["maximum_cached_engines"]
        for name, key in sig.keys.items():
            plans = sig.prebuilt.setdefault(name, {})
            shapes_seen = list(dict.fromkeys(seen.get(key, [])))    # distinct, in order
            wanted = [s for s in shapes_seen if s not in plans]
            room = max(0, cap - len(plans))
            if len(wanted) > room:
                logger.warning("engine %s: %d input shapes but maximum_cached_engines=%d; "
                               "not building ahead for %s", name, len(plans) + len(wanted),
                               cap, [list(map(list, s)) for s in wanted[room:]])
            engine = bound_engine(key)
            for shapes in wanted[:room]:
                # the samples of this shape: a build is for these shapes only
                feeds = [f for f in (samples or {}).get(name, [])
                         if tuple(tuple(a.shape) for a in f.values()) == shapes]
                try:
                    plans[shapes] = (self._build_checked(engine, shapes, feeds) if feeds
                                     else engine.build_plan(shapes))
                except (TFIntegrationError, rt.CupyrtError, ValueError, RuntimeError,
                        TypeError) as exc:
                    logger.warning("engine %s: building for input shapes %s failed (%s); "
                                   "left to run time", name, [list(s) for s in shapes], exc)
                    continue
                logger.info("engine %s: built ahead for input shapes %s", name,
                            [list(s) for s in shapes])
                if feeds:
                    sig.fp16_range.setdefault(name, {})[shapes] = fp16_range_findings(
                        plans[shapes])

    def _build_checked(self, engine, shapes, feeds):
        """The plan engine.build_plan(shapes) makes, range-checked on ``feeds``."""
        r = engine.runner
        calibrator = (TableCalibrator(r.table)
                      if r.precision == "INT8" and r.table else None)
        kwargs = dict(input_shapes=[list(s) for s in shapes],
                      max_workspace_size_bytes=r.workspace, calibrator=calibrator,
                      range_inputs=feeds, fp16_range_fallback=self.fp16_range_fallback)
        if r.network is not None:
            return build_serialized_network_plan(r.network, r.precision, **kwargs)
        return build_plan(r.segment_gd, r.precision, **kwargs)

    # ------------------------------------------------------------------ save
    def save(self, output_saved_model_dir):
        """Write the converted SavedModel into a new (or empty) directory; returns its path.

        Written into a temporary sibling first and renamed, so a failure leaves
        nothing half-written. The conversion report goes to
        assets.extra/cupyrt_report.json (TensorFlow does not load that folder).
        """
        self._require("save()")
        if not isinstance(output_saved_model_dir, (str, os.PathLike)):
            raise ConverterArgumentError("output_saved_model_dir",
                                         type(output_saved_model_dir).__name__,
                                         "a directory path (str or os.PathLike)")
        path = os.path.abspath(os.fspath(output_saved_model_dir))
        if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
            raise ConverterArgumentError("output_saved_model_dir", path,
                                         "a new or empty directory (refusing to overwrite)")
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".cupyrt-save-", dir=parent)
        try:
            target = os.path.join(tmp, "model")
            tf.saved_model.save(tf.Module(), target, signatures=self.signatures)
            os.makedirs(os.path.join(target, "assets.extra"), exist_ok=True)
            with open(os.path.join(target, REPORT_FILE), "w") as f:
                json.dump(self.report, f, indent=1, sort_keys=True, default=str)
            if os.path.isdir(path):
                os.rmdir(path)
            os.replace(target, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("saved %s: signatures %s", path, sorted(self._signatures))
        return path

    # ------------------------------------------------------------------ reports
    @property
    def report(self):
        """{signature key: TrtGraphConverter report (with engines built ahead), or None
        for a signature saved without conversion}."""
        self._require("report")
        out = {}
        for key, sig in self._signatures.items():
            if sig.converter is None:
                out[key] = None
                continue
            rep = dict(sig.converter.report)
            if sig.key != key:
                rep["same_function_as"] = sig.key
            rep["built_ahead"] = {name: [[list(s) for s in shapes] for shapes in plans]
                                  for name, plans in sig.prebuilt.items() if plans}
            rep["build_inputs"] = self._built.get(key, 0)
            if sig.fp16_range:
                rep["engines"] = [dict(e) for e in rep["engines"]]
                for e in rep["engines"]:
                    by_shape = sig.fp16_range.get(e["name"])
                    if by_shape:
                        e["fp16_range"] = _merged(by_shape.values())
                        e["fp16_range_by_shape"] = {str([list(s) for s in shapes]): f
                                                    for shapes, f in by_shape.items()}
            out[key] = rep
        return out

    def summary(self):
        """Human-readable report: per signature, engines, share converted, and why not."""
        self._require("summary()")
        p = self.params
        lines = [f"cupyrt SavedModel conversion of {self.input_saved_model_dir} "
                 f"(tags {self.input_saved_model_tags}): {len(self._signatures)} signature(s), "
                 f"use_dynamic_shape={self.use_dynamic_shape}, "
                 f"allow_build_at_runtime={p['allow_build_at_runtime']}"]
        for key, sig in self._signatures.items():
            if sig.key != key:
                lines.append(f"signature {key!r}: the same function as {sig.key!r} (converted "
                             "and saved once)")
                continue
            ins = ", ".join(f"{k} {s.dtype.name} {_shape(s.shape)}" for k, s in sig.input_specs)
            lines.append(f"signature {key!r}: inputs {ins}; outputs "
                         + ", ".join(sorted(tf.nest.flatten(_output_keys(sig)))))
            if sig.converter is None:
                lines.append("  not converted (input_saved_model_signature_key="
                             f"{self.input_saved_model_signature_key!r}): runs in TensorFlow")
                continue
            lines.extend("  " + line for line in sig.converter.summary().splitlines())
            for name, plans in sorted(sig.prebuilt.items()):
                if plans:
                    lines.append(f"  engine {name} built ahead for input shapes "
                                 + "; ".join(str([list(s) for s in shapes]) for shapes in plans))
                found = _merged(sig.fp16_range.get(name, {}).values())
                if found:
                    lines.append("  " + fp16_range_line(found))
        return "\n".join(lines)


# ---------------------------------------------------------------------------- helpers

def _items(fn, argument):
    items = list(fn())
    if not items:
        raise ConverterArgumentError(argument, "a function that yielded nothing",
                                     "a generator function yielding at least one input")
    return items


def _per_signature(fn, keys, allowed, argument):
    """{signature key: input function} for ``keys`` from one function (used for each)
    or a dict holding every key of ``keys`` and only keys of ``allowed``."""
    if callable(fn):
        return {k: fn for k in keys}
    if isinstance(fn, collections.abc.Mapping):
        missing = [k for k in keys if k not in fn]
        extra = [k for k in fn if k not in allowed]
        if missing or extra or not all(callable(f) for f in fn.values()):
            raise ConverterArgumentError(argument, f"a dict with keys {sorted(fn)}",
                                         "a dict {signature key: generator function} for "
                                         f"the converted signatures {list(keys)}")
        return {k: fn[k] for k in keys}
    raise ConverterArgumentError(argument, type(fn).__name__,
                                 "a generator function, or a dict {signature key: "
                                 "generator function}")


def _merged(findings_lists):
    """Findings of several builds of one engine, one per layer (the first seen)."""
    out = {}
    for findings in findings_lists:
        for f in findings:
            out.setdefault(f["layer"], f)
    return list(out.values())


def _output_keys(sig):
    outs = sig.structured_outputs
    return list(outs) if isinstance(outs, collections.abc.Mapping) else [
        f"output_{i}" for i in range(len(tf.nest.flatten(outs)))]


def _shape(shape):
    dims = tf.TensorShape(shape)
    if dims.rank is None:
        return "?"
    return "(" + ", ".join("-1" if d is None else str(d) for d in dims.as_list()) + ")"


def _conversion_params(conversion_params):
    """TF-TRT's TrtConversionParams (a namedtuple) or a dict, as a dict."""
    if conversion_params is None:
        return {}
    if hasattr(conversion_params, "_asdict"):
        conversion_params = conversion_params._asdict()
    if not isinstance(conversion_params, collections.abc.Mapping) or any(
            k not in CONVERSION_PARAMS for k in conversion_params):
        raise ConverterArgumentError("conversion_params", conversion_params,
                                     "None, or a TrtConversionParams namedtuple or dict with "
                                     "fields among " + ", ".join(CONVERSION_PARAMS))
    params = dict(conversion_params)
    if params.pop("rewriter_config_template", None) is not None:
        raise ConverterArgumentError("conversion_params.rewriter_config_template",
                                     "a RewriterConfig", "None (cupyrt runs no Grappler pass)")
    return params


def _check_params(p):
    mode = p["precision_mode"]
    if not isinstance(mode, str) or mode.upper() not in PRECISIONS:
        raise ConverterArgumentError("precision_mode", mode, "one of "
                                     + ", ".join(PRECISIONS) + " (any case)")
    p["precision_mode"] = mode.upper()
    for arg, low in (("minimum_segment_size", -1), ("maximum_cached_engines", 1),
                     ("max_workspace_size_bytes", 0)):
        value = p[arg]
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (
                arg == "minimum_segment_size" and value == 0):
            raise ConverterArgumentError(arg, value, f"an int >= {low}" + (
                ", not 0 (-1 disables conversion)" if arg == "minimum_segment_size" else ""))
    for arg in ("use_calibration", "allow_build_at_runtime"):
        if not isinstance(p[arg], bool):
            raise ConverterArgumentError(arg, p[arg], "True or False")
    return p


def _check_dir(path):
    if not isinstance(path, (str, os.PathLike)):
        raise ConverterArgumentError("input_saved_model_dir", path,
                                     "the path of a SavedModel directory")
    path = os.fspath(path)
    if not (os.path.isfile(os.path.join(path, "saved_model.pb"))
            or os.path.isfile(os.path.join(path, "saved_model.pbtxt"))):
        raise ConverterArgumentError("input_saved_model_dir", path,
                                     "a SavedModel directory (holding saved_model.pb)")
    return path


def _pb_file(path):
    name = "saved_model.pb" if os.path.isfile(os.path.join(path, "saved_model.pb")) else (
        "saved_model.pbtxt")
    full = os.path.join(path, name)
    return f"{full} ({os.path.getsize(full)} bytes)"


def _load(path, tags):
    """tf.saved_model.load, its failures on damaged files said as GraphError naming the
    folder (TensorFlow raises FileNotFoundError, IndexError, DataLossError... there)."""
    try:
        return tf.saved_model.load(path, tags=tags)
    except (OSError, IndexError, ValueError, tf.errors.OpError) as exc:
        variables = os.path.join(path, "variables")
        found = (f"no {variables} folder" if not os.path.isdir(variables) else
                 f"{variables} holding {sorted(os.listdir(variables))}")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GraphError(f"SavedModel {path} cannot be loaded ({type(exc).__name__}: {first}); "
                         f"found {found}; expected the saved_model.pb and variables/ "
                         "(variables.index and its data shards) tf.saved_model.save "
                         "wrote, complete") from exc


def _check_tags(tags):
    if tags is None:
        return ["serve"]
    if isinstance(tags, str) or not isinstance(tags, (list, tuple, set)) or not all(
            isinstance(t, str) for t in tags):
        raise ConverterArgumentError("input_saved_model_tags", tags,
                                     "None or a list of tag strings, e.g. ['serve']")
    return sorted(tags)


def _signature_keys(path, tags):
    """The signature keys of the meta graph with exactly ``tags`` (read from the proto)."""
    try:
        proto = loader_impl.parse_saved_model(path)
    except (OSError, ValueError) as exc:     # TF says a truncated or foreign file this way
        raise GraphError(f"{_pb_file(path)} cannot be parsed ({str(exc).splitlines()[0]}); "
                         "expected a SavedModel protocol buffer as tf.saved_model.save "
                         "writes it") from exc
    if not proto.meta_graphs:
        raise GraphError(f"{_pb_file(path)} holds no meta graph; expected a SavedModel with "
                         "at least one (an empty or truncated file reads this way)")
    tag_sets = [sorted(m.meta_info_def.tags) for m in proto.meta_graphs]
    for meta, tag_set in zip(proto.meta_graphs, tag_sets):
        if tag_set == sorted(tags):
            keys = sorted(k for k in meta.signature_def if not k.startswith("__"))
            if not keys:
                raise ConverterArgumentError("input_saved_model_dir", path,
                                             "a SavedModel with at least one signature")
            return keys
    raise ConverterArgumentError("input_saved_model_tags", list(tags),
                                 f"the tags of one of the model's meta graphs: {tag_sets}")
