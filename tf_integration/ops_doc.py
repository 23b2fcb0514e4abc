"""SUPPORTED_OPS.md: the registry's table of ops, beside TF-TRT's, with totals.

    python -m tf_integration.ops_doc          # rewrite SUPPORTED_OPS.md
    python -m tf_integration.ops_doc --check  # exit 1 if the committed file is stale

(Not named ``supported_ops``: that is the package's function listing the ops.)
"""
import argparse
import logging
import os
import sys

from . import registry, tftrt_ops

logger = logging.getLogger(__name__)

DOC_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "SUPPORTED_OPS.md")

_HEAD = """# Supported TensorFlow ops

Generated from the converter registry by `python -m tf_integration.ops_doc`; do not
edit by hand (tests/tf_integration/test_op_coverage.py fails when this file is stale).

One row per TF op that cupyrt or TF-TRT converts. "in TF-TRT": the op is in
TF-TRT's converter list (`tf_integration/tftrt_ops.py`, read from TensorFlow's
tf2tensorrt sources, TF 2.10 - 2.15). "constraints": what the op's validator
requires; a node that does not meet them stays in TensorFlow, and the
conversion summary says why.

"""


def render():
    ours = set(registry.supported_ops())
    theirs = set(tftrt_ops.TFTRT_OPS)
    excluded = sorted(theirs - ours)
    totals = [
        f"- {len(ours)} ops registered in cupyrt, in "
        f"{len({registry.lookup(op).family for op in ours})} families.",
        f"- {len(theirs)} ops in TF-TRT's converter list; {len(theirs & ours)} of them "
        f"registered here.",
        f"- {len(excluded)} TF-TRT ops not registered: " + (", ".join(excluded) or "none")
        + " (reasons in the table).",
        f"- {len(ours - theirs)} cupyrt ops TF-TRT does not convert.",
    ]
    return _HEAD + registry.supported_ops_markdown() + "\n## Totals\n\n" + "\n".join(totals) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tf_integration.ops_doc",
                                     description="Generate SUPPORTED_OPS.md from the registry.")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if SUPPORTED_OPS.md differs from the registry")
    parser.add_argument("--path", default=DOC_PATH, help="where the document lives")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        try:
            with open(args.path) as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != text:
            logger.error("%s is stale; regenerate it with `python -m tf_integration.ops_doc`",
                         args.path)
            return 1
        return 0
    with open(args.path, "w") as f:
        f.write(text)
    logger.info("wrote %s (%d ops)", args.path, len(registry.supported_ops()))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
