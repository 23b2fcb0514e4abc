"""Builder passes: an ordered list of small rewrites, repeated until none fires.

Each pass is a module with ``NAME`` and ``run(network) -> int`` (the number of
rewrites it made). ``COUNTERS`` accumulates rewrites per pass over the process
so a test can see a pass fire; ``optimize`` also returns the per-build counts.
Passes must never change results beyond rounding (tests/engine/test_passes.py
runs every pass on and off and compares).
"""
import logging

from ..errors import BuildError

from . import (branch_order, cancel_shuffles, constant_folding, dead_layers, fold_scale, fuse_attention,
               fuse_epilogue, fuse_matmul_epilogue, fuse_pointwise, merge_qkv, shape_tensors)

log = logging.getLogger(__name__)

PASSES = [constant_folding, shape_tensors, dead_layers, cancel_shuffles, fold_scale, branch_order,
          fuse_epilogue, fuse_matmul_epilogue, fuse_attention, merge_qkv, fuse_pointwise]
PASS_NAMES = [p.NAME for p in PASSES]
COUNTERS = {name: 0 for name in PASS_NAMES}
MAX_ROUNDS = 50


def optimize(network, disabled=()):
    """Run the enabled passes in order until a whole round changes nothing."""
    unknown = set(disabled) - set(PASS_NAMES)
    if unknown:
        raise BuildError(f"unknown pass name(s) {sorted(unknown)}; valid: {', '.join(PASS_NAMES)}")
    stats = {name: 0 for name in PASS_NAMES}
    before = network.num_layers
    # late passes (pointwise fusion) see the graph only once the others are done,
    # so that nothing they would take is still foldable into a convolution
    for stage in ([p for p in PASSES if not getattr(p, "LATE", False)],
                  [p for p in PASSES if getattr(p, "LATE", False)] + [dead_layers]):
        for _ in range(MAX_ROUNDS):
            changed = 0
            for p in stage:
                if p.NAME in disabled:
                    continue
                n = p.run(network)
                if n:
                    network._ensure_inferred()
                    stats[p.NAME] += n
                    COUNTERS[p.NAME] += n
                    changed += n
            if not changed:
                break
    log.info("passes: %d layers -> %d layers (%s)", before, network.num_layers,
             ", ".join(f"{k}={v}" for k, v in stats.items() if v) or "no rewrites")
    return stats

