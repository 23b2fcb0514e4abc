"""Style and script of the HTML conversion report (report_html.py), inline so the
page needs no network.

The script moves boxes the Python layout placed; it never lays out from scratch.
Opening an engine grows its box to the engine's own layout (computed in Python too),
so every box right of it in its layer moves right by the growth in width and every
lower layer moves down by the largest growth in height of the layers above: boxes
never overlap and the picture the reader knows keeps its shape. Edges are redrawn
from the new positions. Pan is a drag, zoom the wheel, both on the viewBox.

Address suffixes: ``#open=all`` or ``#open=CupyrtEngine_0,CupyrtEngine_2`` opens
engines on load, ``#find=NAME`` shows a node. ``body[data-ready]`` is set once every
drawing is wired (the browser test waits for it).
"""

PAGE_CSS = """
body{font-family:system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:20px}h2{font-size:17px;margin-top:28px}h3{font-size:15px}
.toolbar{margin:6px 0}.toolbar button{margin-right:6px}.toolbar .msg{margin-left:8px;color:#a33}
.canvas{border:1px solid #ccc;height:70vh}
svg.graph{width:100%;height:100%;cursor:grab;background:#fcfcfc;user-select:none;touch-action:none}
.node text{font:11px monospace;fill:#222;pointer-events:none}.node text.sub{fill:#555;font-size:10px}
.engine{cursor:pointer}.engine>rect.box{stroke-width:1.5}
.native rect.box{fill:#fdecea;stroke:#c0392b;stroke-width:1.5}
.input rect.box{fill:#e8f1fb;stroke:#2e6da4}.plain rect.box{fill:#fff;stroke:#999}
.member rect{fill:#fff;fill-opacity:.9;stroke:#666}.member{cursor:default}
.edge{fill:none;stroke:#8a8a8a;stroke-width:1.2}
.hit>rect{stroke:#e67e22 !important;stroke-width:4 !important}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
.swatch{display:inline-block;width:14px;height:14px;border:1px solid #555}
.legend{font-size:13px}.legend .key{display:inline-block;width:16px;height:11px;border:1px solid;margin:0 4px 0 12px}
.legend .key.engine{background:hsl(200,65%,85%);border-color:hsl(200,65%,35%)}
.legend .key.native{background:#fdecea;border-color:#c0392b}
.legend .key.input{background:#e8f1fb;border-color:#2e6da4}.legend .key.plain{background:#fff;border-color:#999}
a.locate{color:#1a5fb4;text-decoration:none}
"""

PAGE_JS = r"""
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  function el(tag, attrs, parent) {
    var e = document.createElementNS(NS, tag);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(e);
    return e;
  }
  function curve(a, b) {    // same rule as report_html._curve
    var x1 = a.x + a.w / 2, y1 = a.y + a.h, x2 = b.x + b.w / 2, y2 = b.y;
    if (y2 - y1 > 2 * a.h + 30) {
      var xr = Math.max(a.x + a.w, b.x + b.w) + 16;
      return "M" + x1 + "," + y1 + " C" + x1 + "," + (y1 + 24) + " " + xr + "," + (y1 + 8) +
        " " + xr + "," + (y1 + 32) + " L" + xr + "," + (y2 - 32) + " C" + xr + "," + (y2 - 8) +
        " " + x2 + "," + (y2 - 24) + " " + x2 + "," + y2;
    }
    var d = Math.max(24, Math.abs(y2 - y1) / 2);
    return "M" + x1 + "," + y1 + " C" + x1 + "," + (y1 + d) + " " + x2 + "," + (y2 - d) +
      " " + x2 + "," + y2;
  }

  function Graph(section) {
    var data = JSON.parse(section.querySelector("script.graph-data").textContent);
    var svg = section.querySelector("svg.graph"), p = data.prefix;
    var msg = section.querySelector(".msg");
    var boxes = data.units.map(function (u, k) {
      return {x: u[0], y: u[1], w: u[2], h: u[3], layer: u[4],
              g: document.getElementById(p + "-u" + k)};
    });
    var rows = [];
    boxes.forEach(function (b, k) { (rows[b.layer] = rows[b.layer] || []).push(k); });
    rows.forEach(function (r) { r.sort(function (a, b) { return boxes[a].x - boxes[b].x; }); });
    var edges = data.edges.map(function (e, k) {
      return {a: e[0], b: e[1], path: document.getElementById(p + "-e" + k)};
    });
    var opened = {}, cur = [], size = {w: data.width, h: data.height};
    var vb = {x: -20, y: -20, w: data.width + 40, h: data.height + 40};
    svg.setAttribute("preserveAspectRatio", "xMinYMin meet");

    function layout() {
      var shift = 0;
      size = {w: 0, h: 0};
      rows.forEach(function (row, layer) {
        var band = data.bands[layer][1], grow = 0, acc = 0;
        row.forEach(function (k) {
          var b = boxes[k], inner = opened[k] ? data.engines[k] : null;
          var w = inner ? inner.w : b.w, h = inner ? inner.h : b.h;
          cur[k] = {x: b.x + acc, y: b.y + shift, w: w, h: h};
          acc += w - b.w;
          grow = Math.max(grow, h - band);
          size.w = Math.max(size.w, cur[k].x + w);
          size.h = Math.max(size.h, cur[k].y + h);
        });
        shift += grow;
      });
      boxes.forEach(function (b, k) {
        b.g.setAttribute("transform", "translate(" + cur[k].x + "," + cur[k].y + ")");
        var r = b.g.querySelector("rect.box");
        r.setAttribute("width", cur[k].w);
        r.setAttribute("height", cur[k].h);
      });
      edges.forEach(function (e) { e.path.setAttribute("d", curve(cur[e.a], cur[e.b])); });
    }

    function openEngine(k, open) {
      var g = boxes[k].g, inner = data.engines[k], sub = g.querySelector("text.sub");
      if (!inner || !!opened[k] === open) return;
      opened[k] = open;
      sub.textContent = sub.textContent.slice(0, -1) + (open ? "\u25be" : "\u25b8");
      g.classList.toggle("open", open);
      if (!open) {
        g.removeChild(g.querySelector("g.inner"));
        return;
      }
      var gi = el("g", {"class": "inner", transform: "translate(" + data.pad + "," +
                        data.header + ")"}, g);
      var ge = el("g", {"class": "inner-edges"}, gi);
      var geo = inner.nodes.map(function (m) { return {x: m[3], y: m[4], w: m[5], h: inner.mh}; });
      inner.edges.forEach(function (e) {
        el("path", {"class": "edge", d: curve(geo[e[0]], geo[e[1]]),
                    "marker-end": "url(#" + p + "-arrow)"}, ge);
      });
      inner.nodes.forEach(function (m, j) {
        var gm = el("g", {"class": "member", "data-name": m[0], "data-index": j,
                          transform: "translate(" + m[3] + "," + m[4] + ")"}, gi);
        el("title", {}, gm).textContent = m[0] + " (" + m[2] + ")";
        el("rect", {width: m[5], height: inner.mh, rx: 3}, gm);
        el("text", {x: 8, y: 14}, gm).textContent = m[1];
        el("text", {"class": "sub", x: 8, y: 27}, gm).textContent = m[2];
      });
    }

    function setAll(open) {
      Object.keys(data.engines).forEach(function (k) { openEngine(+k, open); });
      layout();
    }

    function show() { svg.setAttribute("viewBox", [vb.x, vb.y, vb.w, vb.h].join(" ")); }
    function view(scale, cx, top) {
      var cw = svg.clientWidth || 800, ch = svg.clientHeight || 600;
      vb.w = cw / scale; vb.h = ch / scale;
      vb.x = cx - vb.w / 2; vb.y = top;
      show();
    }
    function fit() {
      var cw = svg.clientWidth || 800, ch = svg.clientHeight || 600;
      view(Math.min(cw / (size.w + 40), ch / (size.h + 40)), size.w / 2, -20);
    }
    function start() {   // whole graph when readable, else its top at natural size
      var cw = svg.clientWidth || 800, ch = svg.clientHeight || 600;
      var s = Math.min(1.5, cw / (size.w + 40), ch / (size.h + 40));
      view(s < 0.5 ? 1 : s, size.w / 2, -20);
    }
    function toSvg(ev) {
      var m = svg.getScreenCTM();
      return m ? new DOMPoint(ev.clientX, ev.clientY).matrixTransform(m.inverse()) : null;
    }

    function locate(name) {
      var hit = data.find[name];
      if (!hit) {
        var low = name.toLowerCase(), keys = Object.keys(data.find);
        for (var i = 0; i < keys.length && !hit; i++)
          if (keys[i].toLowerCase().indexOf(low) >= 0) hit = data.find[keys[i]];
      }
      msg.textContent = hit ? "" : "no node named like " + JSON.stringify(name);
      if (!hit) return false;
      var k = hit[0], j = hit[1], g = boxes[k].g, at = cur[k];
      if (j >= 0) {
        openEngine(k, true);
        layout();
        var m = data.engines[k].nodes[j];
        g = g.querySelector('g.member[data-index="' + j + '"]');
        at = {x: cur[k].x + data.pad + m[3], y: cur[k].y + data.header + m[4], w: m[5]};
      }
      view(Math.max(vb.w ? (svg.clientWidth || 800) / vb.w : 1, 1), at.x + (at.w || 0) / 2,
           at.y - 120);
      g.classList.add("hit");
      setTimeout(function () { g.classList.remove("hit"); }, 2500);
      return true;
    }

    var drag = null, moved = false;
    svg.addEventListener("pointerdown", function (ev) {
      drag = {x: ev.clientX, y: ev.clientY};
      moved = false;
    });
    svg.addEventListener("pointermove", function (ev) {
      if (!drag) return;
      var m = svg.getScreenCTM(), dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (!m || Math.abs(dx) + Math.abs(dy) < 3 && !moved) return;
      moved = true;
      vb.x -= dx / m.a; vb.y -= dy / m.d;
      drag = {x: ev.clientX, y: ev.clientY};
      show();
    });
    window.addEventListener("pointerup", function () { drag = null; });
    svg.addEventListener("wheel", function (ev) {
      var pt = toSvg(ev);
      if (!pt) return;
      ev.preventDefault();
      var f = Math.exp(ev.deltaY * 0.0015);
      vb.x = pt.x - (pt.x - vb.x) * f; vb.y = pt.y - (pt.y - vb.y) * f;
      vb.w *= f; vb.h *= f;
      show();
    }, {passive: false});
    svg.addEventListener("click", function (ev) {
      var g = ev.target.closest("g.engine");
      if (moved || !g || ev.target.closest("g.inner")) return;
      var k = +g.id.slice(p.length + 2);
      openEngine(k, !opened[k]);
      layout();
    });
    svg.addEventListener("keydown", function (ev) {
      var g = ev.target.closest && ev.target.closest("g.engine");
      if (!g || (ev.key !== "Enter" && ev.key !== " ")) return;
      ev.preventDefault();
      var k = +g.id.slice(p.length + 2);
      openEngine(k, !opened[k]);
      layout();
    });
    section.querySelectorAll(".toolbar button").forEach(function (b) {
      b.addEventListener("click", function () {
        var act = b.getAttribute("data-act");
        if (act === "fit") fit(); else setAll(act === "open");
      });
    });
    section.querySelector("input.find").addEventListener("keydown", function (ev) {
      if (ev.key === "Enter") locate(ev.target.value.trim());
    });
    section.querySelectorAll("a.locate").forEach(function (a) {
      a.addEventListener("click", function (ev) {
        ev.preventDefault();
        svg.scrollIntoView({block: "center"});
        locate(a.getAttribute("data-locate"));
      });
    });

    layout();
    start();
    return {setAll: setAll, locate: locate, open: function (name) {
      var hit = data.find[name];
      if (hit && hit[1] < 0 && data.engines[hit[0]]) { openEngine(hit[0], true); layout(); }
    }};
  }

  var graphs = [];
  document.querySelectorAll("section.sig").forEach(function (s) {
    if (s.querySelector("script.graph-data")) graphs.push(Graph(s));
  });
  var hash = decodeURIComponent(location.hash.slice(1));
  if (hash.indexOf("open=") === 0) {
    hash.slice(5).split(",").forEach(function (name) {
      graphs.forEach(function (g) { if (name === "all") g.setAll(true); else g.open(name); });
    });
  } else if (hash.indexOf("find=") === 0) {
    graphs.forEach(function (g) { g.locate(hash.slice(5)); });
  }
  document.body.setAttribute("data-ready", "1");
})();
"""
