"""A layered drawing of a directed graph, for the HTML conversion report.

The classic Sugiyama steps, each in its simplest useful form (Sugiyama, Tagawa and
Toda, "Methods for visual understanding of hierarchical system structures", 1981):

1. cycles are broken by reversing DFS back edges (a lowered v1 loop has one
   NextIteration edge per loop variable);
2. layers by longest path from the sources, so every edge points downwards;
3. the order inside a layer by the barycenter heuristic, a few sweeps down and up;
4. coordinates: each layer is a horizontal band, its boxes side by side, centred.

Long edges get no dummy nodes: the page draws them as curves, and a reader follows
them by hovering. Pure Python, no TensorFlow: the graph is names and pairs.
"""
import collections

GAP_X = 24          # between boxes of one layer
GAP_Y = 56          # between layers: room for the edge curves


class Layout:
    """``pos[name] = (x, y)`` (top-left corner), ``layer[name]``, the bands as
    ``(top, height)`` per layer, and the drawing's ``width``/``height``."""

    def __init__(self, pos, layer, bands, width, height):
        self.pos, self.layer, self.bands = pos, layer, bands
        self.width, self.height = width, height


def _acyclic(nodes, succ):
    """The edges to reverse so that the graph has no cycle: DFS back edges, found
    iteratively (a 2,000-node chain would overflow Python's recursion)."""
    state = dict.fromkeys(nodes, 0)       # 0 new, 1 on the DFS stack, 2 done
    back = set()
    for root in nodes:
        if state[root]:
            continue
        state[root] = 1
        stack = [(root, iter(succ[root]))]
        while stack:
            node, it = stack[-1]
            for nxt in it:
                if state[nxt] == 1:
                    back.add((node, nxt))
                elif state[nxt] == 0:
                    state[nxt] = 1
                    stack.append((nxt, iter(succ[nxt])))
                    break
            else:
                state[node] = 2
                stack.pop()
    return back


def _layers(nodes, edges):
    """Longest-path layering over the edges with back edges reversed."""
    succ = {n: [] for n in nodes}
    for a, b in edges:
        succ[a].append(b)
    back = _acyclic(nodes, succ)
    preds = {n: [] for n in nodes}
    indeg = dict.fromkeys(nodes, 0)
    dag = collections.defaultdict(list)
    for a, b in edges:
        a, b = (b, a) if (a, b) in back else (a, b)
        dag[a].append(b)
        preds[b].append(a)
        indeg[b] += 1
    layer = {}
    queue = collections.deque(n for n in nodes if indeg[n] == 0)
    while queue:                          # Kahn's order: every predecessor first
        n = queue.popleft()
        layer[n] = max((layer[p] + 1 for p in preds[n]), default=0)
        for m in dag[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                queue.append(m)
    return layer


def _order(nodes, edges, layer, sweeps):
    """Rows of names, one per layer, ordered to cut edge crossings (barycenters)."""
    rows = collections.defaultdict(list)
    for n in nodes:                       # first guess: the graph's own order
        rows[layer[n]].append(n)
    rows = [rows[i] for i in range(max(rows) + 1)] if rows else []
    up, down = collections.defaultdict(list), collections.defaultdict(list)
    for a, b in edges:
        if a != b:
            (down if layer[a] < layer[b] else up)[a].append(b)
            (up if layer[a] < layer[b] else down)[b].append(a)
    # A name's place is its rank measured from its row's centre, so rows of different
    # lengths compare as they will be drawn (centred).
    place = {}

    def measure(row):
        for i, n in enumerate(row):
            place[n] = i - (len(row) - 1) / 2

    for row in rows:
        measure(row)
    for sweep in range(sweeps):
        downward = sweep % 2 == 0
        neighbours = up if downward else down
        for row in (rows[1:] if downward else rows[-2::-1]):
            keys = {}
            for n in row:
                near = [place[m] for m in neighbours[n]]
                keys[n] = sum(near) / len(near) if near else place[n]
            row.sort(key=lambda n: keys[n])
            measure(row)
    return rows


def layered_layout(nodes, edges, size, sweeps=4, gap_x=GAP_X, gap_y=GAP_Y):
    """Lay out ``nodes`` (names, in graph order) joined by ``edges`` (pairs of names);
    ``size(name) -> (width, height)``. Returns a Layout."""
    nodes = list(nodes)
    known = set(nodes)
    edges = [(a, b) for a, b in edges if a in known and b in known and a != b]
    layer = _layers(nodes, edges)
    rows = _order(nodes, edges, layer, sweeps)
    dims = {n: size(n) for n in nodes}
    widths = [sum(dims[n][0] for n in row) + gap_x * max(len(row) - 1, 0) for row in rows]
    width = max(widths, default=0)
    pos, bands, y = {}, [], 0
    for row, row_width in zip(rows, widths):
        x = (width - row_width) / 2
        band = max(dims[n][1] for n in row)
        for n in row:
            pos[n] = (x, y)
            x += dims[n][0] + gap_x
        bands.append((y, band))
        y += band + gap_y
    return Layout(pos, layer, bands, width, max(y - gap_y, 0))
