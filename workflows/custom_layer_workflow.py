"""A custom layer: a Python plugin and a converter of our own for a TF op cupyrt lacks.

    python -m workflows.custom_layer_workflow [--batch 64] [--precision FP32|FP16]

The TensorRT samples "uff_custom_plugin" / "onnx_custom_plugin", on this
project's terms. TensorFlow's ``Cumsum`` (tf.math.cumsum) has no converter in
cupyrt, so in a model that uses it between dense layers only the part before
the first Cumsum converts (what follows is left to TensorFlow: the Cumsums
unsupported, the dense layer between them below the minimum segment size).
This workflow:

1. writes the layer as an engine plugin (``CumSumPlugin``): a shape rule, a
   NumPy implementation and a CuPy one (used by the GPU backend);
2. registers a converter for ``Cumsum`` (``@tf_integration.converter``) that
   maps the op, its constant axis and its ``exclusive``/``reverse``
   attributes onto the plugin, with a validator that refuses a computed axis;
3. converts the SavedModel again: now one engine holds the whole graph;
4. saves it and runs it in a FRESH process, which registers the plugin and
   the converter (``register()``: a plan names its plugin by type and version
   and is recreated from the registry, and an engine node rebuilds its weights
   by converting its segment) and compares it with TensorFlow there.

``register()`` / ``unregister()`` add and remove both; ``main`` removes them
again when it is done, so the process is left as it was.
"""
import argparse
import contextlib
import logging
import os
import sys
import tempfile

import numpy as np

import engine as rt
from engine.settings import settings
from workflows import run_engines_here
from workflows.fresh_process import run_in_fresh_process

log = logging.getLogger(__name__)

OP = "Cumsum"


def cumsum(xp, x, axis, exclusive, reverse):
    """tf.math.cumsum's semantics on any array module ``xp`` (NumPy or CuPy)."""
    if reverse:
        x = xp.flip(x, axis)
    y = xp.cumsum(x, axis=axis, dtype=x.dtype)
    if exclusive:           # shift by one along the axis: y[0] = 0, y[i] = sum(x[:i])
        y = y - x
    return xp.flip(y, axis) if reverse else y


class CumSumPlugin(rt.Plugin):
    """y = cumsum(x) along one engine axis, optionally exclusive and/or reversed."""
    plugin_type, plugin_version = "CupyrtExampleCumSum", "1"

    def __init__(self, axis, exclusive=False, reverse=False):
        super().__init__(axis=int(axis), exclusive=bool(exclusive), reverse=bool(reverse))

    def get_output_shapes(self, input_shapes, input_dtypes):
        # the shape rule: one output, same shape and type as the input; the axis must exist
        shape = input_shapes[0]
        if not -len(shape) <= self.axis < len(shape):
            raise rt.PluginError(f"CumSum axis {self.axis} for an input of rank {len(shape)}; "
                                 f"expected an axis in [{-len(shape)}, {len(shape)})")
        if input_dtypes[0] not in (rt.float32, rt.float16):
            raise rt.PluginError(f"CumSum input of type {input_dtypes[0].name}; expected "
                                 "float32 or float16")
        return [(tuple(shape), input_dtypes[0])]

    def enqueue_numpy(self, inputs):
        return [cumsum(np, inputs[0], self.axis, self.exclusive, self.reverse)]

    def enqueue_cupy(self, inputs):
        # optional dependency: CuPy (a GPU host)
        import cupy
        return [cumsum(cupy, inputs[0], self.axis, self.exclusive, self.reverse)]


def validate_cumsum(node, graph):
    """axis must be a constant"""
    # TensorFlow here: the plugin above also loads where there is none (engine only)
    from tf_integration.registry import Reason
    if not graph.is_const(node.input[1]):
        return Reason(Reason.ATTRIBUTE, f"Cumsum axis {node.input[1]} is computed; expected a "
                                        "constant")
    return None


def convert_cumsum(ctx, node):
    """TF Cumsum -> the CumSum plugin, on the engine axis that holds TF's axis."""
    # TensorFlow here: the plugin above also loads where there is none (engine only)
    from tf_integration.context import Value
    x = ctx.input(node, 0)
    axis = int(np.asarray(ctx.const(node, 1, "axis")))
    plugin = CumSumPlugin(x.tf_axis_to_engine(axis), exclusive=node.attr["exclusive"].b,
                          reverse=node.attr["reverse"].b)
    layer = ctx.network.add_plugin_v2([ctx.tensor(x, x.perm)], plugin)
    ctx.name(layer, "cumsum")
    # the plugin keeps the layout its input had (it works along the axis it is given)
    return [Value(layer.get_output(0), perm=x.perm)]


def register():
    """Register the plugin class and the Cumsum converter (no-op where already done)."""
    # TensorFlow here: the plugin above also loads where there is none (engine only)
    from tf_integration import converter, registry
    plugins = rt.get_plugin_registry()
    if plugins.get_creator(CumSumPlugin.plugin_type, CumSumPlugin.plugin_version) is None:
        plugins.register_creator(CumSumPlugin)
    if not registry.is_registered(OP):
        converter(OP, validator=validate_cumsum)(convert_cumsum)


def unregister():
    """Remove what ``register`` added."""
    # TensorFlow here: the plugin above also loads where there is none (engine only)
    from tf_integration import registry
    rt.get_plugin_registry().deregister_creator(CumSumPlugin)
    if registry.is_registered(OP) and registry.lookup(OP).fn is convert_cumsum:
        registry.unregister(OP)


@contextlib.contextmanager
def registered():
    register()
    try:
        yield
    finally:
        unregister()


def export_model(directory, seed=0):
    """A tf.Module: dense-ReLU, an exclusive reversed cumsum over the features,
    dense logits and a plain cumsum of those (two Cumsum ops), random weights."""
    # TensorFlow here: the plugin above also loads where there is none (engine only)
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    class Model(tf.Module):
        def __init__(self):
            super().__init__()
            self.w1 = tf.Variable(rng.standard_normal((64, 32)).astype(np.float32) / 8)
            self.b1 = tf.Variable(rng.standard_normal(32).astype(np.float32) / 4)
            self.w2 = tf.Variable(rng.standard_normal((32, 10)).astype(np.float32) / 6)

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
        def __call__(self, x):
            h = tf.nn.relu(tf.matmul(x, self.w1) + self.b1)
            h = tf.math.cumsum(h, axis=-1, exclusive=True, reverse=True)
            return {"y": tf.math.cumsum(tf.matmul(h, self.w2), axis=1)}

    model = Model()
    tf.saved_model.save(model, directory, signatures={"serving_default": model.__call__})
    return directory


def _convert(src, precision):
    # TensorFlow here: the plugin above also loads where there is none (engine only)
    from tf_integration import TrtGraphConverterV2
    conv = TrtGraphConverterV2(input_saved_model_dir=src, precision_mode=precision)
    conv.convert()
    return conv, conv.report["serving_default"]


def run(batch=64, precision="FP32", workdir=None, seed=0):
    """Convert without and with the custom converter; save; run in a fresh process.
    Returns a dict of the figures."""
    # TensorFlow here: the plugin above also loads where there is none (engine only)
    from tf_integration import registry
    if registry.is_registered(OP) and registry.lookup(OP).fn is not convert_cumsum:
        raise registry.RegistryError(f"op {OP!r} already has a converter "
                                     f"({registry.lookup(OP).fn.__qualname__}); this workflow "
                                     "shows how to add one where there is none")
    workdir = workdir or tempfile.mkdtemp(prefix="cupyrt-custom-layer-")
    src = export_model(os.path.join(workdir, "original"), seed)
    unregister()                       # the "before" picture: no converter for Cumsum
    _, before = _convert(src, precision)
    with registered():
        conv, after = _convert(src, precision)
        out = conv.save(os.path.join(workdir, "converted"))
    x = np.random.default_rng(seed + 1).standard_normal((batch, 64)).astype(np.float32)
    models = [{"name": "tensorflow", "kind": "saved_model", "path": src, "input": "x"},
              {"name": "cupyrt", "kind": "saved_model", "path": out, "input": "x"}]
    outputs, stats = run_in_fresh_process(
        # the module by name: run as __main__, this module's __name__ is not importable
        {"preload": ["workflows.custom_layer_workflow:register"], "models": models,
         "repeats": 3}, {"x": x}, os.path.join(workdir, "fresh"))
    ref, got = outputs["tensorflow"], outputs["cupyrt"]
    return {"precision": precision, "saved_model": out, "before": _summary(before),
            "after": _summary(after),
            "rel_l2": float(np.linalg.norm(got - ref) / np.linalg.norm(ref)),
            "max_abs": float(np.abs(got - ref).max()), "stats": stats["cupyrt"],
            "output": got, "reference": ref}


def _summary(rep):
    return {"engines": len(rep["engines"]), "share": rep["converted_share"],
            # the graph's own inputs and outputs are denylisted by the converter: not shown
            "left": {n: f"{r['op']}: {r['kind']}" for n, r in rep["left_to_tensorflow"].items()
                     if r["kind"] not in ("not a compute node", "denylisted")}}


def report(r, out=None):
    out = out or sys.stdout        # looked up per call: tests capture it
    for when in ("before", "after"):
        s = r[when]
        left = "; ".join(f"{n} ({why})" for n, why in s["left"].items()) or "nothing"
        out.write(f"{when} registering the Cumsum converter: {s['engines']} engine(s), "
                  f"{100 * s['share']:.0f}% of compute nodes converted; left to TensorFlow: "
                  f"{left}\n")
    st = r["stats"]
    out.write(f"saved to {r['saved_model']}; in a fresh process (plugin and converter "
              f"registered there): {st['engine_runs']} engine runs, {st['native_runs']} "
              f"TensorFlow fallbacks; vs TensorFlow rel L2 {r['rel_l2']:.2e}, max |diff| "
              f"{r['max_abs']:.2e} ({r['precision']}, backend "
              f"{settings().backend})\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64, help="rows of random input")
    p.add_argument("--precision", default="FP32", choices=["FP32", "FP16"])
    p.add_argument("--workdir", default=None, help="where the SavedModels are written")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_engines_here()
    r = run(args.batch, args.precision, args.workdir)
    report(r)
    return r


if __name__ == "__main__":
    main()
