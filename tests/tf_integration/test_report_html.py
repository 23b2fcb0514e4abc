"""The HTML picture of a conversion (tf_integration/report_html.py, report_layout.py).

Extra test packages: playwright (the interactive browser test; it drives the system's
Chromium through ``executable_path``, no browser download). Without it the
``chromium --headless --dump-dom`` test still checks the rendered page. Both skip when
no Chromium is installed (Debian: ``apt-get install chromium``; CI installs it).
"""
import html.parser
import json
import os
import re
import shutil
import subprocess
import time

import pytest
import tensorflow as tf

from tf_integration import TrtGraphConverter, TrtGraphConverterV2
from tf_integration.registry import Reason
from tf_integration.report_html import (ReportError, write_converter_report_html,
                                        write_report_html)
from tf_integration.report_layout import layered_layout
from tfi_helpers import build_graph


# ---------------------------------------------------------------------------- graphs

def _small_body(x, x1):
    """Two engines around an unsupported op, a one-node segment below the minimum
    size on a side branch, a denylisted output, and a constant expression (folded)."""
    w = tf.multiply(tf.constant([[0.5, -1.0], [1.5, 2.0]]), 2.0, name="folded_w")
    y = tf.nn.relu(tf.matmul(x, w) + 0.3)
    y = tf.math.bessel_i0(y)
    side = tf.math.bessel_i1(tf.abs(tf.math.bessel_i0(x1)))
    y = tf.tanh(tf.nn.sigmoid(y * 2.0) - 0.5) * side
    return tf.sqrt(y * y + 1.0) - 0.25


def _convert(body, shapes, **kw):
    gd, outs = build_graph(body, shapes)
    conv = TrtGraphConverter(input_graph_def=gd, is_dynamic_op=True,
                             nodes_denylist=[o.split(":")[0] for o in outs], **kw)
    conv.convert()
    return conv, gd


@pytest.fixture(scope="module")
def small():
    conv, gd = _convert(_small_body, [(1, 2), (1, 2)], minimum_segment_size=2)
    return conv.report, gd


def _big_body(x):
    """34 blocks of 8 (Mul, AddV2, Relu, Sub) rounds and one unsupported op, with
    branches that join again: 2,000+ nodes, 34 engines."""
    y = x
    for b in range(34):
        z = y
        for k in range(8):
            z = tf.nn.relu(z * (1.0 + 0.01 * k) + 0.1) - 0.05
        y = tf.math.bessel_i0((z + y) * 0.1)
    return y


@pytest.fixture(scope="module")
def big():
    conv, gd = _convert(_big_body, [(1, 4)], minimum_segment_size=3)
    assert len(gd.node) >= 2000
    return conv.report, gd


def _reasoned(report):
    return {n: r for n, r in report["left_to_tensorflow"].items()
            if r["kind"] != Reason.NOT_COMPUTE}


# ---------------------------------------------------------------------------- page content

class _Boxes(html.parser.HTMLParser):
    """The SVG boxes (class, data attributes, title and texts) and the tables' rows."""

    def __init__(self):
        super().__init__()
        self.boxes, self.rows, self.scripts, self._box, self._into = [], [], [], None, None
        self._row = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class", "")
        if tag == "g" and cls.startswith("node "):
            self._box = dict(a, kind=cls.split()[1], title="", texts=[])
            self.boxes.append(self._box)
        elif tag == "tr" and cls in ("engine-row", "native-row"):
            self.rows.append(dict(a, cells=[]))
            self._row = True
        elif tag in ("title", "text") and self._box is not None:
            self._into = tag
        elif tag == "script":
            self._into = "script"
            self.scripts.append(dict(a, text=""))
        elif tag == "td" and self._row:
            self.rows[-1]["cells"].append("")
            self._into = "td"

    def handle_endtag(self, tag):
        if tag == "g" and self._box is not None and self._into is None:
            self._box = None
        if tag == "tr":
            self._row = False
        if tag in ("title", "text", "script", "td"):
            self._into = None

    def handle_data(self, data):
        if self._into == "title":
            self._box["title"] += data
        elif self._into == "text":
            self._box["texts"].append(data)
        elif self._into == "script":
            self.scripts[-1]["text"] += data
        elif self._into == "td":
            self.rows[-1]["cells"][-1] += data


def _parse(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    p = _Boxes()
    p.feed(text)
    data = [json.loads(s["text"]) for s in p.scripts if s.get("class") == "graph-data"]
    return text, p, data


def test_page_draws_every_engine_and_every_native_node_with_its_reason(small, tmp_path):
    report, gd = small
    path = write_report_html(report, gd, str(tmp_path / "r.html"))
    text, p, (data,) = _parse(path)
    reasoned = _reasoned(report)
    kinds = {r["kind"] for r in reasoned.values()}
    assert {Reason.NOT_SUPPORTED, Reason.BELOW_MINIMUM, Reason.DENYLISTED} <= kinds
    assert len(report["engines"]) == 2
    engines = {b["data-engine"]: b for b in p.boxes if b["kind"] == "engine"}
    assert set(engines) == {e["name"] for e in report["engines"]}
    for e in report["engines"]:
        assert f"{e['nodes']} nodes" in engines[e["name"]]["texts"][1]
    natives = {b["data-name"]: b for b in p.boxes if b["kind"] == "native"}
    assert set(natives) == set(reasoned)
    for name, r in reasoned.items():
        assert r["kind"] in natives[name]["texts"][1]          # the label says why
        assert r["detail"] in natives[name]["title"]           # the tooltip says the rest
    inputs = {b["data-name"] for b in p.boxes if b["kind"] == "input"}
    assert inputs == {"x0", "x1"}
    # Constants are not drawn; nothing else is left out.
    assert not any(b.get("data-name") in {n.name for n in gd.node if n.op == "Const"}
                   for b in p.boxes)
    assert len(p.boxes) == len(engines) + len(natives) + len(inputs)
    # A folded constant expression is a Const in the report, and not drawn either.
    assert report["constants_folded"] >= 1
    assert report["left_to_tensorflow"]["folded_w"]["op"] == "Const"
    assert "folded_w" not in {b.get("data-name") for b in p.boxes}
    # An engine opens into all its members (none of them is a constant here).
    for e in report["engines"]:
        inner = data["engines"][str(data["find"][e["name"]][0])]
        assert [m[0] for m in inner["nodes"]] == e["members"]


def test_summary_table_counts_and_rows(small, tmp_path):
    report, gd = small
    text, p, _ = _parse(write_report_html(report, gd, str(tmp_path / "r.html")))
    assert (f"{report['converted_compute_nodes']} of {report['compute_nodes']} "
            f"({100 * report['converted_share']:.1f}%)") in text
    reasoned = _reasoned(report)
    native_rows = {r["data-name"]: r["cells"] for r in p.rows if r["class"] == "native-row"}
    assert set(native_rows) == set(reasoned)
    for name, cells in native_rows.items():
        assert cells[1:] == [reasoned[name]["op"], reasoned[name]["kind"],
                             reasoned[name]["detail"]]
    engine_rows = {r["data-engine"]: r["cells"] for r in p.rows if r["class"] == "engine-row"}
    assert set(engine_rows) == {e["name"] for e in report["engines"]}
    for e in report["engines"]:
        cells = engine_rows[e["name"]]
        assert cells[2] == f"{e['nodes']} ({e['compute_nodes']} compute)"
        assert all(m in cells[-1] for m in e["members"])
    assert f"Left to TensorFlow ({len(reasoned)})" in text
    assert not os.path.exists(str(tmp_path / "r.html.tmp"))


def test_edges_join_the_boxes_as_the_graph_does(small, tmp_path):
    report, gd = small
    _, p, (data,) = _parse(write_report_html(report, gd, str(tmp_path / "r.html")))
    ids = [b.get("data-name") or b.get("data-engine") for b in p.boxes]
    edges = {(ids[a], ids[b]) for a, b in data["edges"]}
    e0, e1 = (e["name"] for e in report["engines"])
    assert edges == {("x0", e0), (e0, "bessel_i0/BesselI0"), ("bessel_i0/BesselI0", e1),
                     ("x1", "bessel_i0_1/BesselI0"), ("bessel_i0_1/BesselI0", "Abs"),
                     ("Abs", "bessel_i1/BesselI1"), ("bessel_i1/BesselI1", e1), (e1, "out0")}
    layer = {ids[k]: u[4] for k, u in enumerate(data["units"])}
    assert all(layer[a] < layer[b] for a, b in edges)           # acyclic: all downwards
    # Boxes of one layer never overlap.
    for lay in set(layer.values()):
        spans = sorted((u[0], u[0] + u[2]) for u in data["units"] if u[4] == lay)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_node_text_is_escaped_in_tables_and_data(small, tmp_path):
    report, gd = small
    rep = json.loads(json.dumps(report))
    name = next(iter(_reasoned(rep)))
    rep["left_to_tensorflow"][name]["detail"] = "dtype <dtype: 'int32'> </script><b>x</b>"
    text = open(write_report_html(rep, gd, str(tmp_path / "r.html")), encoding="utf-8").read()
    assert "</script><b>" not in text
    assert "dtype &lt;dtype: &#x27;int32&#x27;&gt; &lt;/script&gt;" in text


def test_nodes_only_the_converter_made_are_drawn_and_marked(small, tmp_path):
    report, gd = small
    rep = json.loads(json.dumps(report))
    rep["left_to_tensorflow"]["rnn/loop"] = {"kind": Reason.CONTROL_FLOW, "op": "While",
                                             "detail": "loop state fed from outside"}
    _, p, _ = _parse(write_report_html(rep, gd, str(tmp_path / "r.html")))
    box = next(b for b in p.boxes if b.get("data-name") == "rnn/loop")
    assert box["kind"] == "native"
    assert box["texts"][1] == "While \u00b7 control flow (made by the converter)"
    assert "loop state fed from outside" in box["title"]


def test_large_graph_stays_small_and_quick(big, tmp_path):
    report, gd = big
    t0 = time.perf_counter()
    path = write_report_html(report, gd, str(tmp_path / "big.html"))
    seconds = time.perf_counter() - t0
    assert seconds < 5, f"writing the page of {len(gd.node)} nodes took {seconds:.1f} s"
    text, p, (data,) = _parse(path)
    n_engines, n_native = len(report["engines"]), len(_reasoned(report))
    assert n_engines == 34 and n_native == 35
    # Engines start closed: one box per engine, native node and input, whatever the size.
    assert len(p.boxes) == n_engines + n_native + 1
    assert text.count("<path") <= 2 * len(p.boxes) + 1
    assert len(text) < 1_000_000
    # Every member is in the data an opened engine draws from.
    assert sum(len(v["nodes"]) for v in data["engines"].values()) == \
        report["converted_compute_nodes"]


def test_saved_model_report_one_section_per_signature(tmp_path):
    class Model(tf.Module):
        def __init__(self):
            self.w = tf.Variable(tf.random.stateless_normal((3, 4), seed=(1, 2)))

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def __call__(self, x):
            return tf.tanh(tf.math.bessel_i0(tf.nn.relu(x @ self.w) + 0.5) * 0.5)

    m = Model()
    tf.saved_model.save(m, str(tmp_path / "sm"), signatures={"serving_default": m.__call__,
                                                             "other": m.__call__})
    conv = TrtGraphConverterV2(input_saved_model_dir=str(tmp_path / "sm"),
                               minimum_segment_size=1)
    conv.convert()
    path = write_converter_report_html(conv, str(tmp_path / "v2.html"), title="model sm")
    text, p, data = _parse(path)
    assert "<title>model sm</title>" in text
    drawn = [k for k, r in conv.report.items() if r and "same_function_as" not in r]
    assert len(data) == len(drawn) >= 1
    assert "Signature serving_default" in text and "Signature other" in text
    for key in drawn:
        names = {e["name"] for e in conv.report[key]["engines"]}
        assert names <= {b.get("data-engine") for b in p.boxes}
        assert set(_reasoned(conv.report[key])) <= {b.get("data-name") for b in p.boxes}
    assert any("BesselI0" in b.get("data-name", "") for b in p.boxes)


def test_v2_shaped_report_sections(small, tmp_path):
    report, gd = small
    rep = {"a": report, "b": None, "c": dict(report, same_function_as="a")}
    text, p, data = _parse(write_report_html(rep, {"a": gd}, str(tmp_path / "r.html")))
    assert len(data) == 1 and data[0]["prefix"] == "s0"
    assert "Not converted: this signature runs in TensorFlow" in text
    assert "The same function as signature a" in text
    # one graph for the one converted signature is taken as that signature's
    assert _parse(write_report_html(rep, gd, str(tmp_path / "r2.html")))[2][0] == data[0]


@pytest.mark.parametrize("report, graph, match", [
    (None, "gd", "the report is None"),
    ([1, 2], "gd", "expected a conversion report"),
    ({"sig": {"engines": []}}, "gd", "hold no conversion report"),
    ("rep", b"not a graph", "expected the GraphDef that was converted"),
    ({"a": "rep", "b": "rep"}, "gd", "the report converted 2 signature"),
    ({"a": "rep", "b": "rep"}, {"a": "gd"}, r"no graph for signature\(s\) \['b'\]"),
    ({"a": "rep"}, {"a": "gd2"}, r"graph_def\['a'\] is str"),
])
def test_bad_inputs_raise_typed_errors(small, tmp_path, report, graph, match):
    rep, gd = small
    names = {"rep": rep, "gd": gd, "gd2": "graph"}

    def sub(v):        # the placeholders name the module's fixtures
        if isinstance(v, dict):
            return {k: sub(x) for k, x in v.items()}
        return names.get(v, v) if isinstance(v, str) else v

    report, graph = sub(report), sub(graph)
    with pytest.raises(ReportError, match=match):
        write_report_html(report, graph, str(tmp_path / "r.html"))
    assert not os.listdir(tmp_path)                              # nothing written


def test_converter_before_convert_raises(small, tmp_path):
    _, gd = small
    with pytest.raises(ReportError, match="call convert"):
        write_converter_report_html(TrtGraphConverter(input_graph_def=gd),
                                    str(tmp_path / "r.html"))


# ---------------------------------------------------------------------------- layout

def test_layout_breaks_cycles_and_keeps_rows_apart():
    nodes = ["enter", "merge", "switch", "body", "next", "exit"]
    edges = [("enter", "merge"), ("merge", "switch"), ("switch", "body"),
             ("body", "next"), ("next", "merge"), ("switch", "exit")]
    lay = layered_layout(nodes, edges, lambda n: (40 + 10 * len(n), 30))
    assert set(lay.pos) == set(nodes)
    down = [(a, b) for a, b in edges if lay.layer[a] < lay.layer[b]]
    assert len(down) == len(edges) - 1                          # only the back edge points up
    assert lay.layer["next"] > lay.layer["merge"]
    for a in nodes:
        for b in nodes:
            if a < b and lay.layer[a] == lay.layer[b]:
                (xa, _), (xb, _) = lay.pos[a], lay.pos[b]
                wa, wb = 40 + 10 * len(a), 40 + 10 * len(b)
                assert xa + wa <= xb or xb + wb <= xa


def test_layout_barycenters_uncross_two_chains():
    # Graph order puts a2 under b1's side: the sweeps should put each chain in a column.
    nodes = ["a1", "b1", "b2", "a2", "a3", "b3"]
    edges = [("a1", "a2"), ("a2", "a3"), ("b1", "b2"), ("b2", "b3")]
    lay = layered_layout(nodes, edges, lambda n: (50, 20))
    left = {n: lay.pos[n][0] < lay.width / 2 for n in nodes}
    assert left["a1"] == left["a2"] == left["a3"] != left["b1"] == left["b2"] == left["b3"]


# ---------------------------------------------------------------------------- browser

def _chromium():
    for name in (os.environ.get("CUPYRT_CHROMIUM"), "chromium", "chromium-browser",
                 "google-chrome", "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium found (apt-get install chromium, or set CUPYRT_CHROMIUM)")


CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def test_page_renders_in_headless_chromium_dump_dom(small, tmp_path):
    exe = _chromium()
    report, gd = small
    path = write_report_html(report, gd, str(tmp_path / "r.html"))
    url = "file://" + path + "#open=all"
    out = subprocess.run([exe, *CHROME_FLAGS, "--enable-logging=stderr", "--v=0",
                          "--virtual-time-budget=3000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    console = [line for line in out.stderr.splitlines()
               if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    dom = out.stdout
    assert 'data-ready="1"' in dom                               # the script ran to its end
    members = [m for e in report["engines"] for m in e["members"]]
    drawn = re.findall(r'<g class="member" data-name="([^"]+)"', dom)
    assert sorted(drawn) == sorted(members)                      # #open=all opened them


def test_page_in_headless_chromium_open_close_pan_zoom(small, big, tmp_path):
    exe = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    report, gd = small
    pages = {"small": (write_report_html(report, gd, str(tmp_path / "s.html")), report),
             "big": (write_report_html(*big, str(tmp_path / "b.html")), big[0])}
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROME_FLAGS[1:])
        try:
            for label, (path, rep) in pages.items():
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                errors = []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto("file://" + path)
                page.wait_for_selector("body[data-ready='1']")
                for e in rep["engines"]:
                    assert page.locator(f"g.engine[data-engine='{e['name']}']").count() == 1
                for n in _reasoned(rep):
                    assert page.locator(f"g.native[data-name='{n}']").count() == 1, n
                assert page.locator("g.member").count() == 0, label     # engines start closed
                first = rep["engines"][0]
                engine = page.locator(f"g.engine[data-engine='{first['name']}']")
                height = engine.locator("rect.box").get_attribute("height")
                below = page.locator("g.native").nth(page.locator("g.native").count() - 1)
                y_before = below.get_attribute("transform")
                engine.locator("rect.box").click()
                names = engine.locator("g.member").evaluate_all(
                    "gs => gs.map(g => g.getAttribute('data-name'))")
                assert sorted(names) == sorted(first["members"])
                assert float(engine.locator("rect.box").get_attribute("height")) > float(height)
                assert below.get_attribute("transform") != y_before      # the rest moved down
                engine.locator("rect.box").click(position={"x": 5, "y": 5})
                assert engine.locator("g.member").count() == 0
                assert below.get_attribute("transform") == y_before
                svg = page.locator("svg.graph").first
                vb = svg.get_attribute("viewBox")
                svg.hover()
                page.mouse.wheel(0, 300)
                zoomed = svg.get_attribute("viewBox")
                assert zoomed != vb
                assert float(zoomed.split()[2]) > float(vb.split()[2])  # wheel down zooms out
                page.locator("input.find").first.fill(first["members"][-1])
                page.locator("input.find").first.press("Enter")
                assert engine.locator("g.member.hit").count() == 1
                assert not errors, (label, errors)
                page.close()
        finally:
            browser.close()
