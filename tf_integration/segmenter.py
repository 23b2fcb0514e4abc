"""Partition a frozen graph into engine segments and what stays in TensorFlow.

The algorithm follows TF-TRT's segmenter (tensorflow/compiler/tf2tensorrt/
segment/segment.cc): every candidate node starts as its own cluster; walking
the graph in a deterministic topological order, a node is merged with the
cluster of each candidate producer along a data edge, unless the contracted
graph would get a cycle. A cycle appears exactly when, besides the direct edge
A -> B, some other path leaves A and comes back into B:

      A ----------> B          merging A and B would make the engine node
      '--> X (TF) --^          both feed X and wait for it

so ``_can_merge`` searches the cluster graph for such a path. Control edges are
part of the cluster graph (they order execution just as data edges do) but
never cause merging.

Constants (Const, and Identity chains over a Const, which is what a frozen
variable read looks like) are never members: a segment copies the constants it
reads, and the constant stays in the graph if anything else reads it. A copied
constant's control inputs (a cond branch's pivot) become the segment's, so an
engine in a cond branch still runs only when its branch is taken.

Control flow is never an error. Functional While/If/Case nodes and the lowered
primitives (Switch, Merge, Enter, Exit, NextIteration, LoopCond) stay in
TensorFlow. Every node inside a lowered loop's frame stays too, with the frame
named in its reason (``allow_loop_frames=True`` lets frame members form
segments, but never with a node of another frame), and NextIteration back
edges are left out of the cluster graph, as TF orders them.
"""
import collections
import logging

from .graph_utils import (FORWARDING_OPS, FUNCTIONAL_CONTROL_FLOW_OPS, LOWERED_CONTROL_FLOW_OPS,
                          NON_COMPUTE_OPS, ROOT_FRAME, node_of, parse_input, tensor_name)
from .registry import Reason

logger = logging.getLogger(__name__)


class Segment:
    """A cluster of TF nodes that becomes one engine node."""

    def __init__(self, index, nodes, graph):
        self.index = index
        self.nodes = nodes                        # member names, topological order
        members = set(nodes)
        self.compute_nodes = [n for n in nodes if graph.nodes[n].op not in NON_COMPUTE_OPS]
        self.const_inputs, self.inputs, self.control_inputs = [], [], []
        self.outputs, self.control_outputs = [], []
        seen = set()
        for name in nodes:
            for inp in graph.nodes[name].input:
                src, port, ctrl = parse_input(inp)
                if src in members:
                    continue
                if ctrl:
                    if src not in self.control_inputs:
                        self.control_inputs.append(src)
                    continue
                t = tensor_name(src, port)
                if t in seen:
                    continue
                seen.add(t)
                if graph.is_const(t):
                    self.const_inputs.append(t)
                    for c in _const_control_inputs(graph, t):
                        if c not in members and c not in self.control_inputs:
                            self.control_inputs.append(c)
                else:
                    self.inputs.append(t)
        outs = set()
        for name in nodes:
            for consumer, port in graph.consumers.get(name, ()):
                if consumer in members:
                    continue
                if port < 0:
                    if consumer not in self.control_outputs:
                        self.control_outputs.append(consumer)
                    continue
                for inp in graph.nodes[consumer].input:
                    src, p, ctrl = parse_input(inp)
                    if src == name and not ctrl:
                        outs.add(tensor_name(src, p))
            if not graph.consumers.get(name):
                outs.add(tensor_name(name, 0))     # a graph output: keep it fetchable
        # outputs in member order, then port order: deterministic engine output indices
        pos = {n: i for i, n in enumerate(nodes)}
        self.outputs = sorted(outs, key=lambda t: (pos[parse_input(t)[0]], parse_input(t)[1]))

    @property
    def name(self):
        return f"CupyrtEngine_{self.index}"

    def __repr__(self):
        return (f"Segment({self.index}, {len(self.nodes)} nodes, inputs={self.inputs}, "
                f"outputs={self.outputs})")


def _const_control_inputs(graph, tensor):
    """Control inputs along the Const/Identity chain behind ``tensor``: the segment
    copies the value but must keep waiting on what the chain waited on."""
    out, name = [], parse_input(tensor)[0]
    for _ in range(64):
        node = graph.nodes[name]
        out.extend(graph.control_inputs(node))
        if node.op not in FORWARDING_OPS:
            break
        name = node_of(graph.data_inputs(node)[0])
    return out


class SegmentationResult:
    def __init__(self, segments, reasons, candidates):
        self.segments = segments
        self.reasons = reasons          # node name -> Reason, for every node left to TF
        self.candidates = candidates    # names the registry accepted

    def segment_of(self, node):
        for seg in self.segments:
            if node in seg.nodes:
                return seg
        return None


class _Clusters:
    """Union-find over nodes plus the contracted graph between cluster roots."""

    def __init__(self, graph, order):
        self.parent = {n: n for n in order}
        self.members = {n: [n] for n in order}
        self.pos = {n: i for i, n in enumerate(order)}
        self.succ = {n: set() for n in order}
        self.pred = {n: set() for n in order}
        for n in order:
            for src in graph.producers(n):
                if src != n and not graph.is_back_edge(src):
                    self.succ[src].add(n)
                    self.pred[n].add(src)

    def find(self, n):
        root = n
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[n] != root:                       # path compression
            self.parent[n], n = root, self.parent[n]
        return root

    def other_path(self, a, b):
        """A cluster on a path a -> ... -> b other than the direct edge, or None."""
        stack = [(s, s) for s in self.succ[a] if s != b]
        visited = set()
        while stack:
            c, first = stack.pop()
            if c == b:
                return first
            if c in visited:
                continue
            visited.add(c)
            stack.extend((s, first) for s in self.succ[c])
        return None

    def merge(self, a, b):
        """Contract clusters a and b; the root with the earlier first member survives."""
        keep, gone = (a, b) if self.pos[a] <= self.pos[b] else (b, a)
        self.parent[gone] = keep
        self.members[keep].extend(self.members.pop(gone))
        for s in self.succ.pop(gone):
            self.pred[s].discard(gone)
            if s != keep:
                self.pred[s].add(keep)
                self.succ[keep].add(s)
        for p in self.pred.pop(gone):
            self.succ[p].discard(gone)
            if p != keep:
                self.succ[p].add(keep)
                self.pred[keep].add(p)
        self.succ[keep].discard(keep)
        self.pred[keep].discard(keep)
        return keep


def control_flow_reason(graph, node, allow_loop_frames=False):
    """The Reason a control-flow node stays in TensorFlow, or None for other nodes."""
    if node.op in FUNCTIONAL_CONTROL_FLOW_OPS:
        return Reason(Reason.CONTROL_FLOW, f"functional {node.op}: its branches/body "
                                           "run in TensorFlow")
    frame = graph.frame_of(node.name)
    if node.op in LOWERED_CONTROL_FLOW_OPS:
        where = f"loop frame {frame!r}" if frame != ROOT_FRAME else "a lowered cond"
        return Reason(Reason.CONTROL_FLOW, f"{node.op} of {where}")
    if frame != ROOT_FRAME and not allow_loop_frames:
        return Reason(Reason.CONTROL_FLOW, f"inside while-loop frame {frame!r}")
    return None


def segment_graph(graph, validate, nodes_denylist=(), minimum_segment_size=3,
                  allow_loop_frames=False):
    """Find the engine segments of ``graph`` (a ``GraphIndex``).

    ``validate(node, graph) -> None | Reason`` decides candidates (normally
    ``registry.validate``). Returns a ``SegmentationResult`` whose ``reasons``
    explain every node left to TensorFlow. ``allow_loop_frames``: let nodes inside
    a lowered loop form segments of their own frame (default: they stay in TF).
    """
    deny = {node_of(n) for n in nodes_denylist}
    order = graph.topological_order()
    reasons, candidates = {}, set()
    for name in order:
        node = graph.nodes[name]
        if graph.is_const(tensor_name(name, 0)) and node.op != "Placeholder":
            reasons[name] = Reason(Reason.NOT_COMPUTE, "constant (copied into segments that "
                                                       "read it)")
            continue
        if name in deny:
            reasons[name] = Reason(Reason.DENYLISTED, "in nodes_denylist")
            continue
        if node.op in ("Placeholder", "PlaceholderWithDefault"):
            reasons[name] = Reason(Reason.NOT_COMPUTE, "graph input")
            continue
        if node.op == "NoOp":
            reasons[name] = Reason(Reason.NOT_COMPUTE, "NoOp (control dependencies only)")
            continue
        why = control_flow_reason(graph, node, allow_loop_frames) or validate(node, graph)
        if why is None:
            candidates.add(name)
        else:
            reasons[name] = why

    if minimum_segment_size < 0:
        for name in sorted(candidates, key=order.index):
            reasons[name] = Reason(Reason.BELOW_MINIMUM, "conversion disabled "
                                                         "(minimum_segment_size=-1)")
        return SegmentationResult([], reasons, candidates)

    clusters = _Clusters(graph, order)
    blocked = {}
    for name in order:
        if name not in candidates:
            continue
        for inp in graph.nodes[name].input:
            src, _, ctrl = parse_input(inp)
            if ctrl or src not in candidates:
                continue
            a, b = clusters.find(src), clusters.find(name)
            if a == b or graph.frame_of(src) != graph.frame_of(name):
                continue            # an engine runs in one frame: never merge across
            via = clusters.other_path(a, b)
            if via is not None:
                blocked.setdefault(name, (src, via))
                continue
            clusters.merge(a, b)

    segments = []
    roots = sorted({clusters.find(n) for n in candidates}, key=clusters.pos.get)
    for root in roots:
        members = sorted(clusters.members[root], key=clusters.pos.get)
        compute = [n for n in members if graph.nodes[n].op not in NON_COMPUTE_OPS]
        if len(compute) >= max(1, minimum_segment_size):
            segments.append(Segment(len(segments), members, graph))
            continue
        for n in members:
            if n in blocked:
                src, via = blocked[n]
                via_node = clusters.members.get(via, [via])[0]
                reasons[n] = Reason(Reason.CYCLE, f"merging with {src} would create a cycle "
                                                  f"through {via_node}")
            else:
                reasons[n] = Reason(Reason.BELOW_MINIMUM,
                                    f"its segment has {len(compute)} compute node(s); "
                                    f"minimum_segment_size={minimum_segment_size}")
    for seg in segments:
        for n in seg.nodes:
            if n in blocked:      # merged elsewhere after all: no reason to report
                blocked.pop(n)
    logger.info("segmenter: %d candidates, %d segments (%s compute nodes)", len(candidates),
                len(segments), [len(s.compute_nodes) for s in segments])
    return SegmentationResult(segments, reasons, candidates)


def histogram(graph, names):
    return dict(sorted(collections.Counter(graph.nodes[n].op for n in names).items()))
