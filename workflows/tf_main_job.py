"""The README's main job for TensorFlow users, end to end on one machine.

    pip install -e .[test] && python -m workflows.tf_main_job [--model ResNet50] [--size 224]

Freezes a bundled Keras application (weights=None: no download), converts it
with TrtGraphConverter, runs the original and the converted graph in
tf.compat.v1.Session, and prints the converted share, the max error and both
timings. Without a GPU it says it runs the NumPy backend.
"""
import argparse
import logging
import sys

from tf_integration.cli import run_demo


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ResNet50", choices=["ResNet50", "MobileNetV2"])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--legacy-keras", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rep = run_demo(args.model, args.size, args.batch, args.legacy_keras, args.runs)
    return 0 if rep["share"] > 0 and rep["max_error"] < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
