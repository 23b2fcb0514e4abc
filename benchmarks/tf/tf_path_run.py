"""The TensorFlow path to the GPU, part 2 (GPU machine: numpy + cupy + the engine, no TensorFlow).

Reads what benchmarks/tf/tf_path_prepare.py wrote (--dir: one model's folder, or a
folder of them, e.g. random224/ and digits/, each run in turn), builds every
exported engine network with the chosen backend in FP32 and FP16 at the input
shapes of inputs.npz, runs it, and compares with TensorFlow's values for the same
inputs (tf_outputs.npz for model outputs, engine_outputs.npz for the rest):
FP32 rel. L2 <= 1e-5 (the builder's FP32 kernels, no TF32: the TF32 flag is
not set), FP16 <= 1e-2. For (batch, classes) outputs also the top-1 agreement
with TF and, where labels.npz came along, the accuracy against the labels (TF's
own on the same batch is in the model's tf_path.json). Prints a short table;
writes JSON to --out ("prepared": {model: its tf_path.json}, "rows": one per
model, engine output and precision). Exit status 1 when an output is out of
tolerance (the accuracy is reported, not judged).

    python benchmarks/tf/tf_path_run.py [--dir benchmarks/tf_path] [--out tf_path_results.json]
                                     [--backend cupy|numpy] [--precisions FP32 FP16]

Times are wall-clock per execute() with NumPy arrays in and out (host copies
included), median of --reps; a sanity figure, not a benchmark.
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import engine as rt  # noqa: E402

TOLERANCE = {"FP32": 1e-5, "FP16": 1e-2}


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _load(folder, name):
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return {}
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def load(folder):
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    return (manifest, _load(folder, "inputs.npz"), _load(folder, "tf_outputs.npz"),
            _load(folder, "engine_inputs.npz"), _load(folder, "engine_outputs.npz"))


def model_folders(folder):
    """[(model name, folder)]: ``folder`` itself when it holds a manifest (the
    layout of one model), else each subfolder that does, by name."""
    if os.path.exists(os.path.join(folder, "manifest.json")):
        return [(os.path.basename(os.path.normpath(folder)), folder)]
    found = [(d, os.path.join(folder, d)) for d in sorted(os.listdir(folder))
             if os.path.exists(os.path.join(folder, d, "manifest.json"))]
    if not found:
        raise FileNotFoundError(f"{folder} holds no manifest.json, nor any subfolder with one; "
                                "write it with benchmarks/tf/tf_path_prepare.py --out")
    return found


def classes(value, ref, labels):
    """Top-1 agreement with TF and accuracy against ``labels`` of a (batch, classes)
    output; None where the output is no such thing or there are no labels."""
    if value.ndim != 2 or value.shape[1] < 2 or value.shape != ref.shape:
        return None, None
    top1 = np.argmax(value, axis=1)
    agree = float(np.mean(top1 == np.argmax(ref, axis=1)))
    if labels is None or labels.shape != (len(value),):
        return agree, None
    return agree, float(np.mean(top1 == labels))


def engine_feeds(entry, inputs, engine_inputs):
    feeds = {}
    for i in entry["inputs"]:
        key = f"{entry['name']}/{i['name']}"
        if i["replaces"] in inputs:
            feeds[i["name"]] = inputs[i["replaces"]]
        elif key in engine_inputs:
            feeds[i["name"]] = engine_inputs[key]
        else:
            raise KeyError(f"no value for engine input {key} (TF tensor {i['replaces']}) in "
                           "inputs.npz or engine_inputs.npz; run tf_path_prepare.py again")
    return feeds


def expected_outputs(manifest, entry, tf_outputs, engine_outputs):
    """{engine output name: (TF's value, where it came from)}."""
    want = {}
    for tf_name, m in manifest.get("model_outputs", {}).items():
        if m and m["engine"] == entry["name"] and tf_name in tf_outputs:
            want[m["output"]] = (tf_outputs[tf_name], tf_name)
    for o in entry["outputs"]:
        key = f"{entry['name']}/{o['name']}"
        if o["name"] not in want and key in engine_outputs:
            want[o["name"]] = (engine_outputs[key], o["replaces"])
    return want


def build(path, shapes, precision, backend):
    with open(path, "rb") as f:
        network = rt.deserialize_network(f.read())
    for name, shape in shapes.items():
        network.get_tensor(name).shape = tuple(shape)   # -1 dims -> this run's shape
    builder = rt.Builder()
    config = builder.create_builder_config()
    config.backend = backend
    if precision == "FP16":
        config.set_flag(rt.BuilderFlag.FP16)
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    engine = rt.Runtime(backend=backend).deserialize_cuda_engine(plan)
    return engine.create_execution_context(), seconds


def run(folder, backend="cupy", precisions=("FP32", "FP16"), reps=5, model=None):
    manifest, inputs, tf_outputs, engine_inputs, engine_outputs = load(folder)
    labels = _load(folder, "labels.npz").get("labels")
    model = model or os.path.basename(os.path.normpath(folder))
    rows = []
    for entry in manifest["engines"]:
        feeds = engine_feeds(entry, inputs, engine_inputs)
        want = expected_outputs(manifest, entry, tf_outputs, engine_outputs)
        for precision in precisions:
            ctx, build_s = build(os.path.join(folder, entry["file"]),
                                 {k: v.shape for k, v in feeds.items()}, precision, backend)
            got = ctx.execute(feeds)                      # first run: warm-up
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                got = ctx.execute(feeds)
                times.append(time.perf_counter() - t0)
            for out_name, (ref, tf_name) in sorted(want.items()):
                value = np.asarray(got[out_name] if not hasattr(got[out_name], "get")
                                   else got[out_name].get())
                err = rel_l2(value, ref)
                agree, accuracy = classes(value, ref, labels)
                rows.append({"model": model, "engine": entry["name"], "output": out_name,
                             "tf_tensor": tf_name,
                             "precision": precision, "backend": backend,
                             "shape": list(value.shape), "rel_l2": err,
                             "tolerance": TOLERANCE[precision],
                             "ok": bool(value.shape == ref.shape and err <= TOLERANCE[precision]),
                             "top1_agree": agree, "accuracy": accuracy,
                             "build_seconds": round(build_s, 3),
                             "execute_ms": round(1e3 * statistics.median(times), 3)})
    return rows


def _device():
    try:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:          # noqa: BLE001 - no GPU / no CuPy: say so, don't fail
        return "cpu"


def _fraction(x):
    return f"{'-':>6s}" if x is None else f"{x:6.3f}"


def table(rows):
    head = (f"{'model':10s} {'engine':16s} {'output':13s} {'prec':5s} {'backend':7s} "
            f"{'rel L2':>10s} {'tol':>7s} {'ok':3s} {'top-1':>6s} {'acc':>6s} "
            f"{'build s':>8s} {'exec ms':>9s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model'][:10]:10s} {r['engine'][:16]:16s} "
                     f"{r.get('name', r['output'])[:13]:13s} "
                     f"{r['precision']:5s} {r['backend']:7s} {r['rel_l2']:10.3e} "
                     f"{r['tolerance']:7.0e} {'yes' if r['ok'] else 'NO':3s} "
                     f"{_fraction(r['top1_agree'])} {_fraction(r['accuracy'])} "
                     f"{r['build_seconds']:8.2f} {r['execute_ms']:9.2f}")
    return "\n".join(lines)


def _summary(name, info):
    """One line per model: what it is and, for a trained one, TF's accuracy."""
    line = f"{name}: {info.get('model', '?')}"
    if "tf_heldout_accuracy" in info:
        line += (f", TF accuracy {info['tf_heldout_accuracy']:.4f} on the held-out split "
                 f"({info.get('heldout_images', '?')} images), "
                 f"{info.get('tf_batch_accuracy', float('nan')):.4f} on the carried batch")
    return line


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default=os.path.join(ROOT, "benchmarks", "tf_path"))
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--backend", default="cupy", choices=["cupy", "numpy"])
    p.add_argument("--precisions", nargs="+", default=["FP32", "FP16"], choices=["FP32", "FP16"])
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    rows, prepared = [], {}
    for name, folder in model_folders(args.dir):
        info = os.path.join(folder, "tf_path.json")
        if os.path.exists(info):
            with open(info) as f:
                prepared[name] = json.load(f)
        named = prepared.get(name, {}).get("output_names", {})
        for row in run(folder, args.backend, args.precisions, args.reps, model=name):
            row["name"] = named.get(row["tf_tensor"], row["output"])
            rows.append(row)
    if not rows:
        sys.stderr.write("no engine output could be compared with TensorFlow's values\n")
        return 1
    device = _device() if args.backend == "cupy" else "cpu (NumPy backend)"
    sys.stdout.write(f"from TensorFlow, on {device}\n"
                     + "".join(_summary(n, i) + "\n" for n, i in prepared.items())
                     + table(rows) + "\n")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": device, "date": datetime.date.today().isoformat(),
                       "command": " ".join(sys.argv), "prepared": prepared, "rows": rows},
                      f, indent=1)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
