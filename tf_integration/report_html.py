"""The conversion drawn as one self-contained HTML page (``cupyrt convert --report-html``).

    conv = TrtGraphConverter(input_graph_def=gd, ...); conv.convert()
    write_report_html(conv.report, gd, "report.html")
    # SavedModels: one report and one graph per signature
    write_report_html(conv_v2.report, {"serving_default": gd}, "report.html")
    write_converter_report_html(conv_or_conv_v2, "report.html")      # both in one call

The page holds the graph as SVG (laid out here, report_layout.py), each engine one
coloured box that a click opens into its member nodes, every node left to TensorFlow
labelled with its reason, and the summary tables. No network: the style and a short
script (pan, zoom, open/close engines, find a node) are inline (report_page.py).

What is drawn: engines, nodes left to TensorFlow for a reason, graph inputs, and the
other non-constant nodes. Constants, and the Identity/NoOp nodes that only pass
constants on (frozen variable reads), are counted in the table but not drawn: they
would be most of a frozen graph's boxes and say nothing about the conversion. The
drawing starts with every engine closed, so a 2,000-node graph is a few dozen boxes;
an engine's members are drawn only while it is open.
"""
import collections
import html
import json
import logging
import os

from .errors import TFIntegrationError
from .registry import Reason
from .report_layout import layered_layout
from .report_page import PAGE_CSS, PAGE_JS

logger = logging.getLogger(__name__)

CHAR_W = 6.6          # px per character of the 11px monospace labels
NAME_CHARS = 36       # longer names are cut from the left (the end is the specific part)
BOX_H, MEMBER_H = 38, 34
MEMBER_GAP_Y = 36
ENGINE_HEADER, ENGINE_PAD = 40, 12
PASS_ON_OPS = frozenset({"Identity", "IdentityN", "Snapshot", "StopGradient",
                         "PreventGradient", "NoOp"})
INPUT_OPS = frozenset({"Placeholder", "PlaceholderWithDefault"})


class ReportError(TFIntegrationError, ValueError):
    """The report or graph given to write_report_html cannot be drawn."""


# ---------------------------------------------------------------------------- public API

def write_report_html(report, graph_def, path, title=None):
    """Write the page for ``report`` to ``path`` (written whole, then renamed).

    ``report``: TrtGraphConverter.report, or TrtGraphConverterV2.report (a dict
    signature key -> report or None). ``graph_def``: the GraphDef that was converted;
    for a V2 report a dict signature key -> GraphDef (a single GraphDef is taken when
    one signature was converted). Returns ``path``."""
    sections = [_Section(key, rep, gd, i) for i, (key, rep, gd)
                in enumerate(_pairs(report, graph_def))]
    page = _page(sections, title or "cupyrt conversion report")
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    logger.info("wrote the conversion report %s (%d signature(s), %d KiB)", path,
                len(sections), len(page) // 1024)
    return path


def write_converter_report_html(converter, path, title=None):
    """write_report_html for a converted TrtGraphConverter or TrtGraphConverterV2:
    takes the report and the graph(s) it converted from the converter."""
    if getattr(converter, "report", None) is None:
        raise ReportError(f"{type(converter).__name__} has no report; call convert() "
                          "before writing the HTML report")
    if hasattr(converter, "input_graph_def"):
        return write_report_html(converter.report, converter.input_graph_def, path, title)
    # The V2 converter keeps one TrtGraphConverter per converted signature; its
    # input_graph_def is the frozen function graph the report speaks of.
    graphs = {key: sig.converter.input_graph_def
              for key, sig in converter._signatures.items() if sig.converter is not None}
    return write_report_html(converter.report, graphs, path, title)


# ---------------------------------------------------------------------------- inputs

def _is_report(rep):
    return isinstance(rep, dict) and "engines" in rep and "left_to_tensorflow" in rep


def _pairs(report, graph_def):
    """[(signature key or None, report, GraphDef or None)], checked."""
    if report is None:
        raise ReportError("the report is None: convert() has not run; expected "
                          "TrtGraphConverter.report or TrtGraphConverterV2.report")
    if _is_report(report):
        _check_graph(graph_def, "graph_def")
        return [(None, report, graph_def)]
    if not isinstance(report, dict) or not report:
        raise ReportError(f"the report is {type(report).__name__} {str(report)[:80]!r}; "
                          "expected a conversion report (with 'engines' and "
                          "'left_to_tensorflow') or a dict signature key -> report")
    bad = [k for k, r in report.items() if r is not None and not _is_report(r)]
    if bad:
        raise ReportError(f"signature(s) {bad} of the report hold no conversion report; "
                          "expected a report with 'engines' and 'left_to_tensorflow', or None")
    drawn = [k for k, r in report.items() if r is not None and "same_function_as" not in r]
    if not isinstance(graph_def, dict):
        if len(drawn) != 1:
            raise ReportError(f"graph_def is one graph but the report converted {len(drawn)} "
                              f"signature(s) {drawn}; expected a dict signature key -> GraphDef")
        graph_def = {drawn[0]: graph_def}
    missing = [k for k in drawn if k not in graph_def]
    if missing:
        raise ReportError(f"graph_def has no graph for signature(s) {missing} (it has "
                          f"{sorted(graph_def)}); expected one GraphDef per converted signature")
    out = []
    for k, r in report.items():
        gd = graph_def.get(k) if k in drawn else None
        if gd is not None:
            _check_graph(gd, f"graph_def[{k!r}]")
        out.append((k, r, gd))
    return out


def _check_graph(gd, what):
    if not hasattr(gd, "node"):
        raise ReportError(f"{what} is {type(gd).__name__}; expected the GraphDef that was "
                          "converted (a tf.compat.v1.GraphDef)")


def _node_input(name):
    """'^a' -> None (control edges are not drawn), 'a:1' -> 'a'."""
    return None if name.startswith("^") else name.split(":")[0]


# ---------------------------------------------------------------------------- the model

def _label(name):
    return name if len(name) <= NAME_CHARS else "\u2026" + name[-(NAME_CHARS - 1):]


def _width(*lines):
    return round(max(min(len(s), NAME_CHARS) for s in lines) * CHAR_W + 20)


def engine_colour(i, light=85):
    """Hue by the golden angle, so neighbouring engine numbers look different; reds
    (hue under 30 or over 330) are left to the nodes that stay in TensorFlow."""
    return f"hsl({30 + (i * 137.508) % 300:.0f},65%,{light}%)"


class _Section:
    """One converted graph: what is drawn, where, and the tables' figures."""

    def __init__(self, key, report, graph_def, index):
        self.key, self.report, self.prefix = key, report, f"s{index}"
        if report is None or graph_def is None:
            self.units = []
            return
        self.engines = report["engines"]
        self.left = report["left_to_tensorflow"]
        ops, inputs, order = {}, {}, []
        for n in graph_def.node:
            # The report's op wins: constant folding turned whole subgraphs into Const
            # nodes of the same names, and constants are not drawn.
            ops[n.name] = self.left.get(n.name, {}).get("op", n.op)
            inputs[n.name] = [m for m in map(_node_input, n.input) if m]
            order.append(n.name)
        self.member_of = {m: i for i, e in enumerate(self.engines) for m in e["members"]}
        # Names the converter's rewrites made (not in the given graph) are still drawn,
        # without the edges only the rewritten graph knows.
        self.added = [n for n in list(self.member_of) + list(self.left) if n not in ops]
        for n in self.added:
            ops[n], inputs[n] = self.left.get(n, {}).get("op", "?"), []
            order.append(n)
        self.ops = ops
        self.folded = [n for n in order if n not in self.member_of and n not in self.left]
        self.hidden = self._hidden(order, inputs)
        self._build(order, inputs)

    def _hidden(self, order, inputs):
        """Constants, what only passes constants on, and what the converter folded
        away before segmenting; never a node left to TensorFlow for a reason."""
        def reasoned(n):
            r = self.left.get(n)
            return r is not None and r["kind"] != Reason.NOT_COMPUTE

        consumers = collections.defaultdict(list)
        for n in order:
            for m in inputs[n]:
                consumers[m].append(n)
        hidden = {n for n in self.folded if not reasoned(n)}
        work = [n for n in order if self.ops[n] == "Const" and not reasoned(n)]
        hidden.update(work)
        while work:                       # spread to pass-on nodes fed only by hidden ones
            for c in consumers[work.pop()]:
                if (c not in hidden and self.ops[c] in PASS_ON_OPS and not reasoned(c)
                        and all(m in hidden for m in inputs[c])):
                    hidden.add(c)
                    work.append(c)
        hidden.update(n for n in order if self.ops[n] == "NoOp" and not reasoned(n))
        return hidden

    def _kind(self, n):
        r = self.left.get(n)
        if r is not None and r["kind"] != Reason.NOT_COMPUTE:
            return "native"
        return "input" if self.ops[n] in INPUT_OPS else "plain"

    def _build(self, order, inputs):
        """Units (engines closed, other drawn nodes), their edges and the layout; and
        each engine's own layout for when it is opened."""
        unit_of, self.units, sizes = {}, [], {}
        for n in order:
            if n in self.hidden:
                continue
            if n in self.member_of:
                i = self.member_of[n]
                uid = f":engine:{i}"
                if uid not in sizes:
                    e = self.engines[i]
                    lines = (e["name"], self._engine_sub(e))
                    sizes[uid] = (_width(*lines), BOX_H)
                    self.units.append(dict(id=uid, kind="engine", engine=i, lines=lines))
                unit_of[n] = uid
                continue
            unit_of[n] = n
            kind = self._kind(n)
            r = self.left.get(n)
            sub = f"{self.ops[n]} \u00b7 {r['kind']}" if kind == "native" else self.ops[n]
            if n in self.added:
                sub += " (made by the converter)"
            title = n + f" ({self.ops[n]})" + (f"\n{r['kind']}: {r['detail']}"
                                               if kind == "native" and r["detail"] else "")
            self.units.append(dict(id=n, kind=kind, lines=(_label(n), sub), title=title))
            sizes[n] = (_width(n, sub), BOX_H)
        edges = []
        for n in order:
            for m in inputs[n]:
                if n in unit_of and m in unit_of and unit_of[m] != unit_of[n]:
                    edges.append((unit_of[m], unit_of[n]))
        edges = list(dict.fromkeys(edges))        # one edge per pair of boxes
        layout = layered_layout([u["id"] for u in self.units], edges, sizes.__getitem__)
        index = {u["id"]: k for k, u in enumerate(self.units)}
        for u in self.units:
            u["x"], u["y"] = layout.pos[u["id"]]
            u["w"], u["h"] = sizes[u["id"]]
            u["layer"] = layout.layer[u["id"]]
        self.edges = [(index[a], index[b]) for a, b in edges]
        self.bands, self.width, self.height = layout.bands, layout.width, layout.height
        self.inner = {index[u["id"]]: self._engine_inner(u["engine"], inputs, unit_of)
                      for u in self.units if u["kind"] == "engine"}

    def _engine_sub(self, e):
        return (f"{e['nodes']} nodes \u00b7 {e['precision']} \u00b7 "
                f"{'static' if e['static'] else 'dynamic'} \u25b8")

    def _engine_inner(self, i, inputs, unit_of):
        members = [m for m in self.engines[i]["members"] if m not in self.hidden]
        member_set = set(members)
        sizes = {m: (_width(m, self.ops[m]), MEMBER_H) for m in members}
        edges = [(p, m) for m in members for p in inputs[m] if p in member_set and p != m]
        lay = layered_layout(members, edges, sizes.__getitem__, gap_y=MEMBER_GAP_Y)
        at = {m: k for k, m in enumerate(members)}
        e = self.engines[i]
        width = max(lay.width, _width(e["name"], self._engine_sub(e))) + 2 * ENGINE_PAD
        ox = (width - lay.width) / 2 - ENGINE_PAD          # members centred in the box
        nodes = [[m, _label(m), self.ops[m], round(lay.pos[m][0] + ox, 1), lay.pos[m][1],
                  sizes[m][0]] for m in members]
        return {"w": round(width), "h": round(lay.height + ENGINE_HEADER + ENGINE_PAD),
                "mh": MEMBER_H, "nodes": nodes,
                "edges": list(dict.fromkeys((at[a], at[b]) for a, b in edges))}

    def _find(self):
        """name -> [box index, member index or -1]: what "find" and the tables' links
        show (an engine's hidden constants show the engine)."""
        out = {}
        for k, u in enumerate(self.units):
            if u["kind"] != "engine":
                out[u["id"]] = [k, -1]
                continue
            out[self.engines[u["engine"]]["name"]] = [k, -1]
            drawn = {m[0]: j for j, m in enumerate(self.inner[k]["nodes"])}
            for m in self.engines[u["engine"]]["members"]:
                out[m] = [k, drawn.get(m, -1)]
        return out

    # ------------------------------------------------------------------ emitted data
    def data(self):
        return {"prefix": self.prefix, "width": self.width, "height": self.height,
                "bands": self.bands, "edges": self.edges,
                "units": [[u["x"], u["y"], u["w"], u["h"], u["layer"]] for u in self.units],
                "engines": {str(k): v for k, v in self.inner.items()},
                "find": self._find(),
                "header": ENGINE_HEADER, "pad": ENGINE_PAD}


# ---------------------------------------------------------------------------- HTML

def _esc(s):
    return html.escape(str(s), quote=True)


def _json_script(obj, cls):
    # "<" as \u003c: no node name can close the script element early
    text = json.dumps(obj, separators=(",", ":")).replace("<", "\\u003c")
    return f'<script type="application/json" class="{cls}">{text}</script>'


def _curve(a, b):
    x1, y1 = a["x"] + a["w"] / 2, a["y"] + a["h"]
    x2, y2 = b["x"] + b["w"] / 2, b["y"]
    if y2 - y1 > 2 * a["h"] + 30:
        # An edge that skips layers has no dummy boxes to route through: it leaves its
        # source sideways and runs down just right of the boxes between.
        xr = max(a["x"] + a["w"], b["x"] + b["w"]) + 16
        return (f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + 24:.1f} {xr:.1f},{y1 + 8:.1f} "
                f"{xr:.1f},{y1 + 32:.1f} L{xr:.1f},{y2 - 32:.1f} C{xr:.1f},{y2 - 8:.1f} "
                f"{x2:.1f},{y2 - 24:.1f} {x2:.1f},{y2:.1f}")
    d = max(24, abs(y2 - y1) / 2)
    return f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + d:.1f} {x2:.1f},{y2 - d:.1f} {x2:.1f},{y2:.1f}"


def _svg(sec):
    p = sec.prefix
    out = [f'<svg class="graph" id="{p}-svg" xmlns="http://www.w3.org/2000/svg" '
           f'viewBox="-20 -20 {sec.width + 40:.0f} {sec.height + 40:.0f}">',
           f'<defs><marker id="{p}-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
           'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
           '<path d="M0,0 L10,5 L0,10 z" fill="#8a8a8a"/></marker></defs>',
           '<g class="viewport"><g class="edges">']
    for k, (a, b) in enumerate(sec.edges):
        out.append(f'<path class="edge" id="{p}-e{k}" marker-end="url(#{p}-arrow)" '
                   f'd="{_curve(sec.units[a], sec.units[b])}"/>')
    out.append('</g><g class="nodes">')
    for k, u in enumerate(sec.units):
        attrs = f'id="{p}-u{k}" transform="translate({u["x"]:.1f},{u["y"]:.1f})"'
        if u["kind"] == "engine":
            e = sec.engines[u["engine"]]
            out.append(f'<g class="node engine" {attrs} data-engine="{_esc(e["name"])}" '
                       f'tabindex="0"><title>{_esc(e["name"])}: {e["nodes"]} nodes '
                       f'({e["compute_nodes"]} compute), click to open or close</title>'
                       f'<rect class="box" width="{u["w"]}" height="{u["h"]}" rx="6" '
                       f'style="fill:{engine_colour(u["engine"])};stroke:'
                       f'{engine_colour(u["engine"], 35)}"/>')
        else:
            out.append(f'<g class="node {u["kind"]}" {attrs} data-name="{_esc(u["id"])}">'
                       f'<title>{_esc(u["title"])}</title>'
                       f'<rect class="box" width="{u["w"]}" height="{u["h"]}" rx="4"/>')
        out.append(f'<text x="10" y="16">{_esc(u["lines"][0])}</text>'
                   f'<text class="sub" x="10" y="30">{_esc(u["lines"][1])}</text></g>')
    out.append("</g></g></svg>")
    return "".join(out)


def _shape(s):
    return "?" if s is None else "(" + ", ".join(str(d) for d in s) + ")"


def _locate(name):
    return f'<a href="#" class="locate" data-locate="{_esc(name)}">{_esc(name)}</a>'


def _tables(sec):
    rep, p = sec.report, sec.report["parameters"]
    left = sec.left
    reasoned = {n: r for n, r in left.items() if r["kind"] != Reason.NOT_COMPUTE}
    kinds = collections.Counter(r["kind"] for r in reasoned.values())
    rows = [("precision", p["precision_mode"]),
            ("engines", "dynamic (built per input shape)" if p["is_dynamic_op"] else "static"),
            ("minimum segment size", p["minimum_segment_size"]),
            ("compute nodes converted", f"{rep['converted_compute_nodes']} of "
             f"{rep['compute_nodes']} ({100 * rep['converted_share']:.1f}%)"),
            ("engines built", len(sec.engines)),
            ("nodes left to TensorFlow", f"{len(reasoned)} (+{len(left) - len(reasoned)} "
             "constants/inputs/NoOps)"),
            ("constant expressions folded", rep["constants_folded"]),
            ("conversion time", f"{rep['conversion_seconds']:.2f} s"),
            ("boxes drawn (engines closed)", f"{len(sec.units)} of {len(sec.ops)} nodes; "
             f"{len(sec.hidden)} constants and constant pass-throughs not drawn")]
    if rep.get("calibration"):
        c = rep["calibration"]
        rows.append(("INT8 calibration", f"{c['algorithm']}, {c['num_runs']} run(s), "
                     f"{c['seconds']:.2f} s"))
    out = ['<table class="summary">'] + [f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>"
                                         for k, v in rows] + ["</table>"]
    out.append("<h3>Engines</h3>")
    if sec.engines:
        out.append('<table class="engines"><tr><th></th><th>engine</th><th>nodes</th>'
                   "<th>precision</th><th>kind</th><th>inputs</th><th>outputs</th>"
                   "<th>ops</th><th>members</th></tr>")
    for i, e in enumerate(sec.engines):
        tensors = {k: "<br>".join(f"{_esc(t['name'])} {t['dtype']} {_shape(t['shape'])}"
                                  for t in e[k]) for k in ("inputs", "outputs")}
        ops = ", ".join(f"{_esc(op)} {n}" for op, n in e["ops"].items())
        members = " ".join(_locate(m) for m in e["members"])
        out.append(f'<tr class="engine-row" data-engine="{_esc(e["name"])}">'
                   f'<td><span class="swatch" style="background:{engine_colour(i)}"></span></td>'
                   f'<td>{_locate(e["name"])}</td><td>{e["nodes"]} ({e["compute_nodes"]} '
                   f'compute)</td><td>{e["precision"]}</td>'
                   f'<td>{"static plan" if e["static"] else "built per input shape"}</td>'
                   f'<td>{tensors["inputs"]}</td><td>{tensors["outputs"]}</td><td>{ops}</td>'
                   f'<td><details><summary>{len(e["members"])}</summary>{members}'
                   "</details></td></tr>")
    out.append("</table>" if sec.engines else
               "<p>No engine: nothing was converted (see the reasons below).</p>")
    out.append(f"<h3>Left to TensorFlow ({len(reasoned)})</h3>")
    if kinds:
        out.append("<p>" + "; ".join(f"{_esc(k)}: {n}" for k, n in kinds.most_common())
                   + "</p>")
        out.append('<table class="native"><tr><th>node</th><th>op</th><th>reason</th>'
                   "<th>detail</th></tr>")
        out.extend(f'<tr class="native-row" data-name="{_esc(n)}"><td>{_locate(n)}</td>'
                   f'<td>{_esc(r["op"])}</td><td>{_esc(r["kind"])}</td>'
                   f'<td>{_esc(r["detail"])}</td></tr>' for n, r in reasoned.items())
        out.append("</table>")
    quiet = [(n, r) for n, r in left.items() if r["kind"] == Reason.NOT_COMPUTE]
    if quiet:
        out.append(f"<details><summary>{len(quiet)} constants, inputs and NoOps (not compute "
                   'nodes)</summary><table class="quiet">')
        out.extend(f"<tr><td>{_esc(n)}</td><td>{_esc(r['op'])}</td><td>{_esc(r['detail'])}"
                   "</td></tr>" for n, r in quiet)
        out.append("</table></details>")
    return "".join(out)


def _section_html(sec):
    head = "" if sec.key is None else f"<h2>Signature {_esc(sec.key)}</h2>"
    if sec.report is None:
        return (f'<section class="sig" id="{sec.prefix}">{head}<p>Not converted: this '
                "signature runs in TensorFlow.</p></section>")
    if not sec.units and "same_function_as" in sec.report:
        return (f'<section class="sig" id="{sec.prefix}">{head}<p>The same function as '
                f"signature {_esc(sec.report['same_function_as'])} (converted once).</p>"
                "</section>")
    toolbar = ('<div class="toolbar"><button data-act="fit">fit</button>'
               '<button data-act="open">open all engines</button>'
               '<button data-act="close">close all engines</button>'
               '<input class="find" placeholder="find a node by name" size="32">'
               '<span class="msg"></span></div>')
    return (f'<section class="sig" id="{sec.prefix}">{head}{toolbar}'
            f'<div class="canvas">{_svg(sec)}</div>{_json_script(sec.data(), "graph-data")}'
            f"{_tables(sec)}</section>")


LEGEND = ('<div class="legend"><span class="key engine"></span>engine (click: open or close; '
          'colour per engine) <span class="key native"></span>left to TensorFlow, with its '
          'reason <span class="key input"></span>graph input <span class="key plain"></span>'
          'other node. Drag to pan, wheel to zoom; hover a box for its full name.</div>')


def _page(sections, title):
    body = "".join(_section_html(s) for s in sections)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><link rel=\"icon\" href=\"data:,\">"
            f"<style>{PAGE_CSS}</style></head><body><h1>{_esc(title)}</h1>{LEGEND}{body}"
            f"<script>{PAGE_JS}</script></body></html>")
