"""Auxiliary streams: which layers of a schedule may run beside the main stream.

A layer goes to the auxiliary stream when it is one side of a diamond: its inputs
are ready some steps before the layer that reads its output (the *join*), and that
join also reads what main-stream layers make in between. ResNet's projection
shortcut is the case: it reads the block input, as the 1x1 reduce does, and only
the expand layer reads its output, after the reduce and the 3x3 have run.

    step p-1   pool            -> x
    step p     reduce(x)         main        aux: projection(x), issued before step p
    step p+1   3x3                main
    step j     expand(3x3, proj)  main waits for the projection here

The projection is issued on the auxiliary stream right after the last producer of
its inputs (after a fork: the auxiliary stream waits for the main stream), and the
main stream waits for it just before the join. Captured into a CUDA graph, the fork
and the join are edges; the two branches' kernels may share the GPU.

Memory: the layer loop frees a tensor after its last reader. An auxiliary layer's
inputs stay alive until its join (the main stream must not reuse their bytes while
the auxiliary stream may still read them); its output is allocated on the auxiliary
stream and freed, as any tensor, after its last reader. CuPy's pool keeps an arena per
stream, so those bytes go back to the auxiliary stream's arena, and the next layer that
takes them there is issued after a later fork, behind the main-stream reader.

Per join at most one side goes to the auxiliary stream: the one that runs beside the
most main-stream layers (ResNet's projection rather than the 3x3 it could also run
beside). Only single-layer branches of compute layers are placed (not chains, not data
movement, not a concatenation's producers, which write into the concatenation's
buffer), on one auxiliary stream: auxiliary layers run in issue order.
"""
import dataclasses

from .types import LayerType

# layers that launch their own kernels and never sync the host
AUX_TYPES = frozenset({
    LayerType.CONVOLUTION, LayerType.DECONVOLUTION, LayerType.FULLY_CONNECTED,
    LayerType.MATRIX_MULTIPLY, LayerType.POOLING, LayerType.ATTENTION, LayerType.NORMALIZATION,
    LayerType.POINTWISE, LayerType.ELEMENTWISE, LayerType.ACTIVATION, LayerType.SCALE,
    LayerType.REDUCE, LayerType.SOFTMAX, LayerType.UNARY, LayerType.RESIZE, LayerType.LRN})


@dataclasses.dataclass(frozen=True)
class AuxPlan:
    """``issue_before``: step -> auxiliary steps issued before that step runs;
    ``join_before``: step -> auxiliary steps the main stream waits for before it;
    ``steps``: every auxiliary step (skipped where the loop reaches it);
    ``free_after``: the loop's frees with each auxiliary layer's inputs held to its join;
    ``by_step``: (auxiliary step, issue step, join step) for each, in step order."""
    issue_before: dict
    join_before: dict
    steps: frozenset
    free_after: list
    by_step: tuple

    def within(self, begin, end):
        """The auxiliary steps whose issue and join both fall in [begin, end)."""
        return {a for a, p, j in self.by_step if begin <= p and j < end}


def plan(layers, outputs, free_after):
    """The AuxPlan of ``layers`` (schedule order) whose network outputs are ``outputs``,
    ``free_after`` the loop's frees (step -> tensor ids freed after it). Returns None
    when no layer qualifies."""
    made_at = {}                 # tensor id -> step that writes it
    readers = {}                 # tensor id -> steps that read it
    for step, layer in enumerate(layers):
        for t in layer._outputs:
            made_at[id(t)] = step
        for t in layer._inputs:
            if t is not None:
                readers.setdefault(id(t), []).append(step)
    out_ids = {id(t) for t in outputs}
    aux, issue_before, join_before, spans = set(), {}, {}, []

    def side_branch(step, join):
        """(main-stream layers it would run beside, its issue step) of layer ``step`` as a
        side branch joined at ``join``, or None where it cannot be one."""
        layer = layers[step]
        outs = [id(t) for t in layer._outputs]
        if (layer.layer_type not in AUX_TYPES or not outs or any(t in out_ids for t in outs)
                or min(s for t in outs for s in readers.get(t, [join])) != join):
            return None
        # issued right after its inputs' producers (network inputs: before the first step)
        issue = 1 + max((made_at.get(id(t), -1) for t in layer._inputs if t is not None), default=-1)
        window = {s for s in range(issue, join) if s != step and s not in aux}
        # the join must wait for main-stream compute of the window too: otherwise the layer
        # is the critical path itself (a constant made in the window, such as a matmul's
        # weights, is no work to run beside)
        if not waits_for_compute(join, window):
            return None
        return sum(layers[s].layer_type in AUX_TYPES for s in window), -step, issue

    def waits_for_compute(join, window):
        """Whether layer ``join`` reads, directly or through data movement inside
        ``window``, what a compute layer of ``window`` makes."""
        todo = [made_at.get(id(t)) for t in layers[join]._inputs if t is not None]
        seen = set()
        while todo:
            s = todo.pop()
            if s not in window or s in seen:
                continue
            seen.add(s)
            if layers[s].layer_type in AUX_TYPES:
                return True
            todo += [made_at.get(id(t)) for t in layers[s]._inputs if t is not None]
        return False

    for join, layer in enumerate(layers):
        if layer.layer_type == LayerType.CONCATENATION:
            continue
        sides = {made_at[id(t)] for t in layer._inputs if t is not None and id(t) in made_at}
        if len(sides) < 2:
            continue
        # the side that runs beside the most main-stream layers: ResNet's projection (beside
        # the reduce and the 3x3) rather than the 3x3 (beside the projection)
        best = max(((side_branch(s, join), s) for s in sides), key=lambda c: c[0] or (-1,))
        if best[0] is None:
            continue
        (_, _, issue), step = best
        aux.add(step)
        spans.append((step, issue, join))
        issue_before.setdefault(issue, []).append(step)
        join_before.setdefault(join, []).append(step)
    if not aux:
        return None
    held = {}                    # tensor id -> the step after which it is freed instead
    for a, _, join in spans:
        for t in layers[a]._inputs:
            if t is not None:
                held[id(t)] = max(held.get(id(t), -1), join)
    moved = [[] for _ in free_after]
    for step, tids in enumerate(free_after):
        for tid in tids:
            moved[max(step, held.get(tid, -1))].append(tid)
    return AuxPlan(issue_before, join_before, frozenset(aux), moved, tuple(sorted(spans)))
