"""The import graph of engine/, kernels/ and tf_integration/, read from the source
(AST only: nothing is imported or executed, so this runs in well under a second).

Between packages, data flows one way: tf_integration -> engine -> kernels; kernels
import neither engine nor TensorFlow, and engine never imports TensorFlow.

Inside engine/, modules form layers. From top to bottom, each group may import only
its own group and the groups below it, and nothing may close a circle (imports
inside functions count too):

    facade      engine/__init__.py (the TensorRT-style public names)
    tools       testing.py (test helpers), precision_debug.py (INT8 precision
                debugger: builds and runs engines)
    builder     builder.py, calibration.py, quantization.py (INT8 stage),
                precision_timing.py (precision by timing)
    runtime     runtime.py (Runtime, CudaEngine, ExecutionContext), plan.py
    backends    engine/backends/* (NumPy, CuPy; the builder's tactic selection
                is ``CupyBackend.select_tactics``)
    gpu         engine/gpu/* (tactics, timing, precompile, device)
    execution   execution.py (the layer loop, storage types), layer_exec.py (one
                layer on the host), int8_exec.py (INT8 storage and arithmetic),
                precision_range.py (FP16 range check), aux_streams.py (side
                branches the loop runs on an auxiliary stream)
    passes      engine/passes/*
    layers      network.py, engine/layers/*
    base        types, errors, logger, settings, atomic_file, exchange,
                shape_values, kernel_table, memory, metrics

No module inside engine/ imports the ``engine`` package itself (``from engine import
X`` or ``from .. import X``): each imports the module that defines what it needs.
An import inside a function in engine/, kernels/ or tf_integration/ carries a comment saying why it
is there (an optional heavy dependency such as cupy, torch, the cuDNN frontend,
tqdm, psutil; or a measured import cost), on its line or on a comment line right
above a run of such imports.
"""
import ast
import io
import os
import re
import tokenize
from collections import defaultdict

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("engine", "kernels", "tf_integration")

# engine's layers, top first: (group, module-name patterns); "pkg.*" = every module under pkg
LAYERS = [
    ("facade", ["engine"]),
    ("tools", ["engine.testing", "engine.precision_debug"]),
    ("builder", ["engine.builder", "engine.calibration", "engine.quantization",
                 "engine.precision_timing"]),
    ("runtime", ["engine.runtime", "engine.plan"]),
    ("backends", ["engine.backends", "engine.backends.*"]),
    ("gpu", ["engine.gpu", "engine.gpu.*"]),
    ("execution", ["engine.execution", "engine.layer_exec", "engine.int8_exec",
                   "engine.precision_range", "engine.aux_streams"]),
    ("passes", ["engine.passes", "engine.passes.*"]),
    ("layers", ["engine.network", "engine.layers", "engine.layers.*"]),
    ("base", ["engine.types", "engine.errors", "engine.logger", "engine.settings",
              "engine.atomic_file", "engine.exchange", "engine.shape_values",
              "engine.kernel_table", "engine.memory", "engine.metrics"]),
]
# TensorFlow and its Keras front ends: never below tf_integration
TENSORFLOW = ("tensorflow", "keras", "tf_keras")


def _area(module):
    """engine.gpu, engine (the rest of it), kernels or tf_integration."""
    return "engine.gpu" if module.startswith("engine.gpu") else module.split(".")[0]


def _modules():
    mods = {}
    for pkg in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(folder, f)
                    name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    if name.endswith(".__init__"):
                        name = name[:-len(".__init__")]
                    mods[name] = path
    return mods


MODULES = _modules()


class Import:
    """One import statement: where it is, what it names, whether inside a function."""

    def __init__(self, module, node, in_function, targets, external):
        self.module, self.node, self.in_function = module, node, in_function
        self.targets, self.external = targets, external   # repo modules; other top-level names

    @property
    def where(self):
        return f"{MODULES[self.module]}:{self.node.lineno}"

    def __repr__(self):
        return f"{self.where}: {ast.unparse(self.node)}"


def _resolve(module, node):
    """The repo modules an import statement runs, and the outside top-level names.
    ``from pkg import name`` counts as importing ``pkg`` too (as /work's import tool
    does); a module in another subpackage also runs that subpackage's __init__."""
    is_pkg = MODULES[module].endswith("__init__.py")
    names = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = module.split(".")
            if not is_pkg:
                parts = parts[:-1]
            parts = parts[:len(parts) - (node.level - 1)]
            base = ".".join(parts + ([base] if base else []))
        names = [base] + [f"{base}.{a.name}" for a in node.names]
    targets, external = set(), set()
    for name in names:
        found = name
        while found and found not in MODULES:
            found = found.rpartition(".")[0]
        if found:
            targets.add(found)
            parts = found.split(".")
            for i in range(2, len(parts)):            # subpackage __init__s it runs,
                parent = ".".join(parts[:i])           # unless it is the importer's own
                if not (module + ".").startswith(parent + "."):
                    targets.add(parent)
        elif name.split(".")[0] not in PACKAGES:
            external.add(name.split(".")[0])
    targets.discard(module)
    return targets, external


def _imports():
    out = []
    for module, path in MODULES.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        inside = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inside.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets, external = _resolve(module, node)
                out.append(Import(module, node, id(node) in inside, targets, external))
    return out


IMPORTS = _imports()


def _graph(package):
    g = defaultdict(set)
    for imp in IMPORTS:
        if imp.module.split(".")[0] == package:
            g[imp.module] |= {t for t in imp.targets if t.split(".")[0] == package}
    return g


def _cycles(g):
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in list(g):
        if root in index:
            continue
        work = [(root, iter(sorted(g.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _edges_in(cycle, package):
    members = set(cycle)
    return sorted(repr(i) for i in IMPORTS
                  if i.module in members and i.targets & members and i.module.split(".")[0] == package)


def _group(module):
    for rank, (name, patterns) in enumerate(LAYERS):
        for p in patterns:
            if module == p or (p.endswith(".*") and module.startswith(p[:-1])):
                return rank, name
    return None


# -- between packages ------------------------------------------------------------------

def test_kernels_import_neither_engine_nor_tensorflow():
    bad = [i for i in IMPORTS if i.module.startswith("kernels")
           and ({t.split(".")[0] for t in i.targets} & {"engine", "tf_integration"}
                or i.external & set(TENSORFLOW))]
    assert not bad, "kernels/ is a leaf:\n" + "\n".join(map(repr, bad))


def test_engine_never_imports_tensorflow_or_tf_integration():
    bad = [i for i in IMPORTS if i.module.split(".")[0] == "engine"
           and ({t.split(".")[0] for t in i.targets} & {"tf_integration"}
                or i.external & set(TENSORFLOW))]
    assert not bad, "engine/ runs without TensorFlow:\n" + "\n".join(map(repr, bad))


# -- circles -------------------------------------------------------------------------

@pytest.mark.parametrize("area", ["engine", "engine.gpu", "kernels"])
def test_no_import_cycle(area):
    """No circle touches ``area`` (for "engine": any engine module outside engine/gpu)."""
    package = area.split(".")[0]
    cycles = [c for c in _cycles(_graph(package)) if any(_area(m) == area for m in c)]
    assert not cycles, "\n\n".join(f"circle {c}:\n  " + "\n  ".join(_edges_in(c, package))
                                   for c in cycles)


def test_tf_integration_cycles_only_through_the_registry():
    """The converter registry imports the converter modules to register them (and
    they import the registry): that circle is allowed, no other."""
    g = _graph("tf_integration")
    g["tf_integration.registry"] = {t for t in g["tf_integration.registry"]
                                    if not t.startswith("tf_integration.converters")}
    cycles = _cycles(g)
    assert not cycles, "\n\n".join(f"circle {c}:\n  " + "\n  ".join(_edges_in(c, "tf_integration"))
                                   for c in cycles)


# -- engine's layers -------------------------------------------------------------------

def test_every_engine_module_belongs_to_a_layer():
    missing = sorted(m for m in MODULES if m.split(".")[0] == "engine" and _group(m) is None)
    assert not missing, f"add these to LAYERS (and to the docstring's table): {missing}"


def test_engine_modules_import_only_their_layer_and_below():
    bad = []
    for i in IMPORTS:
        if i.module.split(".")[0] != "engine" or _group(i.module) is None:
            continue
        rank, name = _group(i.module)
        for t in sorted(i.targets):
            g = _group(t) if t.split(".")[0] == "engine" else None
            if g is not None and g[0] < rank:
                bad.append(f"{i!r}  ({name} -> {g[1]}, an upward arrow)")
    assert not bad, "\n".join(bad)


def test_no_engine_module_imports_the_engine_facade():
    bad = [i for i in IMPORTS if i.module.split(".")[0] == "engine" and i.module != "engine"
           and "engine" in i.targets]
    assert not bad, ("import from the defining module, not the package:\n"
                     + "\n".join(map(repr, bad)))


# -- imports inside functions ---------------------------------------------------------

def _comments(path):
    """{line number: comment text, noqa codes left out} of one file."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for tok in tokenize.generate_tokens(io.StringIO(f.read()).readline):
            if tok.type == tokenize.COMMENT:
                text = re.sub(r"^noqa(:\s*[A-Z]+[0-9]+(\s*,\s*[A-Z]+[0-9]+)*)?", "",
                              tok.string.lstrip("#").strip())
                out[tok.start[0]] = text.strip(" -")
    return out


def _explained(imp, comments, lines):
    node = imp.node
    if any(comments.get(n) for n in range(node.lineno, node.end_lineno + 1)):
        return True
    # a comment line right above a run of imports explains the run
    n = node.lineno - 1
    while n >= 1 and lines[n - 1].strip().startswith(("import ", "from ")):
        if comments.get(n):
            return True
        n -= 1
    return n >= 1 and lines[n - 1].strip().startswith("#") and bool(comments.get(n))


@pytest.mark.parametrize("area", [a for a in ("engine", "engine.gpu", "kernels",
                                                                 "tf_integration")])
def test_every_import_inside_a_function_says_why(area):
    bad = []
    cache = {}
    for i in IMPORTS:
        if not i.in_function or _area(i.module) != area:
            continue
        path = MODULES[i.module]
        if path not in cache:
            with open(path, encoding="utf-8") as f:
                cache[path] = (_comments(path), f.read().splitlines())
        if not _explained(i, *cache[path]):
            bad.append(repr(i))
    assert not bad, (f"{len(bad)} imports inside functions without a comment saying why (move "
                     "them to the module top, or name the reason):\n" + "\n".join(bad))


def test_the_checker_sees_circles_upward_arrows_and_silent_imports(tmp_path):
    """The helpers above on a made-up graph: a circle is found, a tree is not."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert _group("engine.gpu.tactics")[1] == "gpu" and _group("engine.builder")[1] == "builder"
    assert _group("engine.not_a_module") is None
    src = tmp_path / "m.py"
    src.write_text("def f():\n    import a  # noqa: F401\n    # optional dependency: b\n"
                   "    import b\n    import c\n    import d  # noqa: F401  (optional: d)\n")
    tree = ast.parse(src.read_text())
    lines = src.read_text().splitlines()
    comments = _comments(str(src))
    said = [_explained(Import("m", n, True, set(), set()), comments, lines)
            for n in ast.walk(tree) if isinstance(n, ast.Import)]
    assert said == [False, True, True, True]
