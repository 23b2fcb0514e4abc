"""A TF2 SavedModel in, a converted SavedModel out, reloaded and compared.

    python -m workflows.saved_model_example [--model small_cnn|ResNet50] [--size 32]
                                            [--precision FP16] [--batches 1,4]

Exports a Keras model (the bundled small residual CNN, or a Keras application
with weights=None: no download) with ``model.export`` (what a TF2 user
serves), converts it with TrtGraphConverterV2, builds its engines ahead for
the batch sizes given, saves the converted SavedModel, loads it back with
``tf_integration.load_saved_model`` and compares every signature with the
original on random images (rel. L2 error and max error), printing the
conversion summary's first lines and both timings. Without a GPU it runs the
engines on the NumPy backend (CUPYRT_BACKEND=numpy).

The same saved model also loads with plain ``tf.saved_model.load`` in any
process that has run ``import tf_integration``.
"""
import argparse
import logging
import os
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from engine.settings import settings
from tf_integration import TrtGraphConverterV2, load_saved_model
from workflows import run_engines_here


def small_cnn(size, seed=0):
    """The bundled example: a small residual CNN (conv-BN-ReLU, a residual block,
    global pooling, dense logits), random weights with a fixed seed."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inp)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    y = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    y = keras.layers.Conv2D(16, 3, padding="same")(y)
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10, name="logits")(x), name="small_cnn")


def export_model(name, size, directory, seed=0):
    """Export the bundled small CNN, or ``keras.applications.<name>`` (random
    weights, logits out), with ``model.export``."""
    if name == "small_cnn":
        model = small_cnn(size, seed)
    else:
        keras.utils.set_random_seed(seed)
        model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3),
                                                  classifier_activation=None)
    model.export(directory, verbose=False)
    return directory


def run(model="small_cnn", size=32, precision="FP16", batches=(1, 4), workdir=None):
    """Export, convert, build, save, reload, compare. Returns a dict of the figures."""
    workdir = workdir or tempfile.mkdtemp(prefix="cupyrt-saved-model-")
    src = export_model(model, size, os.path.join(workdir, "original"))
    rng = np.random.default_rng(0)
    images = {b: rng.standard_normal((b, size, size, 3)).astype(np.float32) for b in batches}

    t0 = time.perf_counter()
    converter = TrtGraphConverterV2(input_saved_model_dir=src, precision_mode=precision,
                                    maximum_cached_engines=len(batches))
    converter.convert()
    converter.build(lambda: iter(images.values()))          # one engine per batch size
    out = converter.save(os.path.join(workdir, "converted"))
    convert_s = time.perf_counter() - t0

    original = tf.saved_model.load(src)
    converted = load_saved_model(out)
    result = {"saved_model": out, "convert_seconds": convert_s, "signatures": {},
              "summary": converter.summary(),
              # engines built ahead hold no second copy of the weights
              "dir_bytes": {"original": _dir_bytes(src), "converted": _dir_bytes(out)}}
    for key in sorted(converted.signatures.keys()):
        (name,) = original.signatures[key].structured_input_signature[1]
        for b, x in images.items():
            t1 = time.perf_counter()
            ref = original.signatures[key](**{name: x})
            t_tf = time.perf_counter() - t1
            t1 = time.perf_counter()
            got = converted.signatures[key](**{name: x})
            t_ours = time.perf_counter() - t1
            for out_name in ref:
                r, g = ref[out_name].numpy(), got[out_name].numpy()
                result["signatures"][f"{key}/{out_name}/batch{b}"] = {
                    "rel_l2": float(np.linalg.norm(g - r) / np.linalg.norm(r)),
                    "max_abs": float(np.abs(g - r).max()),
                    "tf_seconds": t_tf, "cupyrt_seconds": t_ours}
    return result


def _dir_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="small_cnn",
                   help="small_cnn (bundled) or a keras.applications name, e.g. ResNet50")
    p.add_argument("--size", type=int, default=32, help="input height and width")
    p.add_argument("--precision", default="FP16", choices=["FP32", "FP16"])
    p.add_argument("--batches", default="1,4", help="batch sizes to build ahead and compare")
    p.add_argument("--workdir", default=None, help="where to write both SavedModels")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_engines_here()
    result = run(args.model, args.size, args.precision,
                 tuple(int(b) for b in args.batches.split(",")), args.workdir)
    out = sys.stdout
    out.write("\n".join(result["summary"].splitlines()[:6]) + "\n...\n")
    out.write(f"converted, built and saved in {result['convert_seconds']:.1f} s: "
              f"{result['saved_model']}\n")
    sizes = result["dir_bytes"]
    out.write(f"SavedModel size: original {sizes['original'] / 1e6:.2f} MB, converted "
              f"{sizes['converted'] / 1e6:.2f} MB "
              f"({sizes['converted'] / sizes['original']:.2f}x)\n")
    for key, r in result["signatures"].items():
        out.write(f"{key}: rel L2 {r['rel_l2']:.2e}, max |diff| {r['max_abs']:.2e}, "
                  f"TensorFlow {1e3 * r['tf_seconds']:.1f} ms, cupyrt "
                  f"{1e3 * r['cupyrt_seconds']:.1f} ms (backend "
                  f"{settings().backend})\n")
    return result


if __name__ == "__main__":
    main()
