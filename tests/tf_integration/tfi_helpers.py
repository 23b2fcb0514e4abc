"""Shared test helper: build a TF graph, convert it, run both, compare (torch2trt's
``cross_validate`` idea, for frozen graphs)."""
import warnings

import numpy as np
import tensorflow as tf

from tf_integration import EngineFallbackWarning, TrtGraphConverter, import_graph_def
from tf_integration.engine_node import ENGINE_OP, engine_runners


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def random_input(shape, seed=0, dtype=np.float32, positive=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    if positive:
        x = np.abs(x) + 0.1
    return x


def build_graph(body, input_shapes, dtype=tf.float32):
    """``body(*placeholders)`` -> output tensor(s); returns (GraphDef, output names)."""
    g = tf.Graph()
    with g.as_default():
        xs = [tf.compat.v1.placeholder(dtype, [None] + list(s[1:]) if s else [], name=f"x{i}")
              for i, s in enumerate(input_shapes)]
        outs = body(*xs)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        names = []
        for i, o in enumerate(outs):
            names.append(tf.identity(o, name=f"out{i}").name)
    return g.as_graph_def(), names


def run_graph(graph_def, fetches, feeds, converted=False):
    g = tf.Graph()
    with g.as_default():
        (import_graph_def if converted else tf.compat.v1.import_graph_def)(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            return sess.run(fetches, feeds)


def cross_validate(body, inputs, tol=1e-5, minimum_segment_size=1, expect_engines=1,
                   **converter_kw):
    """Convert ``body``'s graph, check it runs on engines only, and matches TF."""
    gd, outs = build_graph(body, [x.shape for x in inputs])
    feeds = {f"x{i}:0": x for i, x in enumerate(inputs)}
    ref = run_graph(gd, outs, feeds)
    converter_kw.setdefault("is_dynamic_op", True)
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=[o.split(":")[0] for o in outs],
                             minimum_segment_size=minimum_segment_size, **converter_kw)
    converted = conv.convert()
    n_engines = sum(1 for n in converted.node if n.op == ENGINE_OP)
    assert n_engines == expect_engines, conv.summary()
    before = len(engine_runners())
    with warnings.catch_warnings():
        warnings.simplefilter("error", EngineFallbackWarning)
        got = run_graph(converted, outs, feeds, converted=True)
    for runner in engine_runners()[before:]:
        assert runner.stats["native_runs"] == 0, runner.stats
    for r, o in zip(ref, got):
        assert r.shape == o.shape, (r.shape, o.shape)
        if r.dtype.kind == "f":
            assert rel_l2(o, r) <= tol, (rel_l2(o, r), conv.summary())
        else:
            np.testing.assert_array_equal(o, r)
    return conv, converted
