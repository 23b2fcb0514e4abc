"""Run saved models in a fresh Python process and bring back outputs and timings.

    python -m workflows.fresh_process MANIFEST.json INPUTS.npz OUT_DIR

The workflows use it to show that what they saved is self-contained: a new
interpreter, which has seen none of the conversion, loads each model (an
original or converted frozen .pb through ``tf_integration.import_graph_def``,
a SavedModel through ``tf_integration.load_saved_model``), runs it on the
inputs and times it. The manifest is JSON:

    {"preload": ["module:function", ...],        # called first (e.g. to register a plugin)
     "repeats": 5,
     "models": [{"name": "tf_frozen", "kind": "frozen", "path": "a.pb",
                 "input": "x:0", "output": "probs:0"},
                {"name": "cupyrt_saved", "kind": "saved_model", "path": "dir",
                 "input": "keras_tensor", "signature": "serving_default"}]}

OUT_DIR receives outputs.npz (one array per model name) and stats.json (per
model: median and best seconds of one run over all inputs, after one warm-up
run, and the engine nodes' run counters in that process).
"""
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


class FreshProcessError(RuntimeError):
    """The fresh process failed; carries its stderr tail."""


def engine_counters():
    """Engine and TensorFlow-fallback runs of every engine node of this process so far."""
    # TensorFlow loads in the fresh process only; the side that launches it needs none
    from tf_integration.engine_node import engine_runners
    out = {"engine_runs": 0, "native_runs": 0}
    for r in engine_runners():
        for k in out:
            out[k] += r.stats[k]
    return out


def _frozen_runner(entry):
    # TensorFlow loads in the fresh process only; the side that launches it needs none
    import tensorflow as tf
    from tf_integration import import_graph_def

    gd = tf.compat.v1.GraphDef()
    with open(entry["path"], "rb") as f:
        gd.ParseFromString(f.read())
    g = tf.Graph()
    with g.as_default():
        import_graph_def(gd, name="")
    sess = tf.compat.v1.Session(graph=g)
    return lambda x: sess.run(entry["output"], {entry["input"]: x})


def _saved_model_runner(entry):
    # TensorFlow loads in the fresh process only; the side that launches it needs none
    import tensorflow as tf
    from tf_integration import load_saved_model

    fn = load_saved_model(entry["path"]).signatures[entry.get("signature", "serving_default")]

    def run(x):
        out = fn(**{entry["input"]: tf.constant(x)})
        key = entry.get("output") or sorted(out)[0]
        return out[key].numpy()
    return run


RUNNERS = {"frozen": _frozen_runner, "saved_model": _saved_model_runner}


def evaluate(manifest, inputs):
    """In this process: load, run and time every model of the manifest. Returns
    ({name: outputs}, {name: stats})."""
    for ref in manifest.get("preload", []):
        module, _, fn = ref.partition(":")
        mod = importlib.import_module(module)
        if fn:
            getattr(mod, fn)()
    outputs, stats = {}, {}
    repeats = int(manifest.get("repeats", 5))
    for entry in manifest["models"]:
        if entry["kind"] not in RUNNERS:
            raise ValueError(f"model {entry['name']!r} has kind {entry['kind']!r}; expected one "
                             f"of {sorted(RUNNERS)}")
        before = engine_counters()
        run = RUNNERS[entry["kind"]](entry)
        x = inputs[entry.get("data", "x")]
        outputs[entry["name"]] = np.asarray(run(x))       # warm-up: engines built here
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - t0)
        after = engine_counters()
        stats[entry["name"]] = {"median_s": float(np.median(times)), "best_s": min(times),
                                **{k: after[k] - before[k] for k in after}}
    return outputs, stats


def run_in_fresh_process(manifest, inputs, workdir=None, timeout=300):
    """Write the manifest and inputs, run ``python -m workflows.fresh_process`` on
    them with this process's environment (so $CUPYRT_BACKEND carries over), and
    return ({name: outputs}, {name: stats})."""
    workdir = workdir or tempfile.mkdtemp(prefix="cupyrt-fresh-")
    os.makedirs(workdir, exist_ok=True)
    man, data = os.path.join(workdir, "manifest.json"), os.path.join(workdir, "inputs.npz")
    with open(man, "w") as f:
        json.dump(manifest, f)
    np.savez(data, **inputs)
    out_dir = os.path.join(workdir, "results")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run([sys.executable, "-m", "workflows.fresh_process", man, data, out_dir],
                          env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise FreshProcessError(f"the fresh process exited with status {proc.returncode}; "
                                f"expected 0. Its stderr ends:\n{proc.stderr[-3000:]}")
    with np.load(os.path.join(out_dir, "outputs.npz")) as f:
        outputs = {k: f[k] for k in f.files}
    with open(os.path.join(out_dir, "stats.json")) as f:
        stats = json.load(f)
    return outputs, stats


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] in ("-h", "--help"):
        sys.stdout.write(__doc__)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    man, data, out_dir = argv
    with open(man) as f:
        manifest = json.load(f)
    with np.load(data) as f:
        inputs = {k: f[k] for k in f.files}
    outputs, stats = evaluate(manifest, inputs)
    os.makedirs(out_dir, exist_ok=True)
    np.savez(os.path.join(out_dir, "outputs.npz"), **outputs)
    with open(os.path.join(out_dir, "stats.json"), "w") as f:
        json.dump(stats, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
