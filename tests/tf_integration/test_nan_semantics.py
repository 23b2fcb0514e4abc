"""NaN and +-Inf in single elements of random inputs: the converted graph (NumPy backend)
has TensorFlow's NaN / +Inf / -Inf pattern, op by op (issue 11, "NaN/Inf semantics").

TensorFlow's own answer depends on its CPU kernels: with oneDNN (the x86 default) Softmax
gives NaN only where the input was NaN/+Inf and 0 elsewhere in the row, while TF's
reference (Eigen) kernels and its GPU kernels give NaN for the whole row. The engines
follow the reference kernels; for the ops where the two differ the TF reference is run
once in a subprocess with TF_ENABLE_ONEDNN_OPTS=0 (it must be set before TF loads).
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfi_helpers import build_graph, run_graph
from tf_integration import TrtGraphConverter
from tf_integration.engine_node import ENGINE_OP

SHAPE = (2, 5, 5, 4)
# one NaN, one +Inf, one -Inf, in different windows / rows
SPECIALS = ((3, np.nan), (42, np.inf), (117, -np.inf))


def poisoned(seed=0, specials=SPECIALS, shape=SHAPE):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    for i, v in specials:
        x.reshape(-1)[i] = v
    return x


def convert_and_run(body, x):
    gd, outs = build_graph(body, [x.shape])
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=[o.split(":")[0] for o in outs],
                             minimum_segment_size=1, is_dynamic_op=True)
    converted = conv.convert()
    assert sum(n.op == ENGINE_OP for n in converted.node) == 1, conv.summary()
    return gd, outs, run_graph(converted, outs, {"x0:0": x}, converted=True)[0]


def assert_same_pattern(got, ref):
    """NaN where TF has NaN, +Inf where +Inf, -Inf where -Inf; finite values close."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape
    for what, f in (("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)):
        np.testing.assert_array_equal(f(got), f(ref), err_msg=f"{what} positions differ")
    fin = np.isfinite(ref)
    np.testing.assert_allclose(got[fin], ref[fin], rtol=1e-5, atol=1e-6)


def check(body, x=None):
    x = poisoned() if x is None else x
    gd, outs, got = convert_and_run(body, x)
    ref = run_graph(gd, outs, {"x0:0": x})[0]
    assert not np.isfinite(ref).all(), "the case must put NaN/Inf into TF's answer"
    assert_same_pattern(got, ref)
    return got


# -- activations ----------------------------------------------------------------------

@pytest.mark.parametrize("fn", [tf.nn.relu, tf.nn.relu6, tf.nn.leaky_relu, tf.nn.elu,
                                tf.nn.selu, tf.nn.softplus, tf.sigmoid],
                         ids=lambda f: f.__name__)
def test_activation_nan_inf_pattern_equals_tf(fn):
    got = check(fn)
    assert np.isnan(got.reshape(-1)[3])          # relu(NaN) = NaN in TF, not 0


# -- pooling ---------------------------------------------------------------------------

@pytest.mark.parametrize("window,stride,padding", [(3, 2, "SAME"), (2, 2, "VALID"), (3, 1, "SAME")])
def test_max_pool_skips_nan_like_tf(window, stride, padding):
    got = check(lambda x: tf.nn.max_pool2d(x, window, stride, padding))
    assert not np.isnan(got).any()               # TF's MaxPool drops a NaN tap


def test_max_pool_all_nan_and_all_neg_inf_windows_give_lowest_like_tf():
    x = poisoned(specials=())
    x[0, :2, :2, 0] = np.nan                     # a whole 2x2 window of NaN
    x[1, 2:4, 2:4, 1] = -np.inf                  # a whole 2x2 window of -Inf
    x[1, 0, 0, 2] = np.inf
    got = check(lambda t: tf.nn.max_pool2d(t, 2, 2, "VALID"), x)
    assert got[0, 0, 0, 0] == got[1, 1, 1, 1] == np.finfo(np.float32).min


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_avg_pool_nan_inf_pattern_equals_tf(padding):
    check(lambda x: tf.nn.avg_pool2d(x, 3, 2, padding))


# -- reductions ------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["reduce_sum", "reduce_mean", "reduce_max", "reduce_min",
                                "reduce_prod"])
@pytest.mark.parametrize("axis", [[1, 2], -1])
def test_reduction_nan_inf_pattern_equals_tf(op, axis):
    check(lambda x: getattr(tf, op)(x, axis=axis))


# -- binary min / max and clipping -----------------------------------------------------

@pytest.mark.parametrize("fn", [tf.maximum, tf.minimum], ids=lambda f: f.__name__)
def test_maximum_minimum_nan_if_either_is_nan_like_tf(fn):
    got = check(lambda x: fn(x, tf.reverse(x, [0])))
    assert np.isnan(got.reshape(-1)[3])
    check(lambda x: fn(x, 0.25))                  # a constant on one side


@pytest.mark.parametrize("bounds", ["scalar", "tensor"])
def test_clip_by_value_keeps_nan_like_tf(bounds):
    lo, hi = (np.float32(-0.5), np.float32(0.5)) if bounds == "scalar" else (
        np.full(SHAPE, -0.5, np.float32), np.full(SHAPE, 0.5, np.float32))
    got = check(lambda x: tf.raw_ops.ClipByValue(t=x, clip_value_min=tf.constant(lo),
                                                 clip_value_max=tf.constant(hi)))
    assert np.isnan(got.reshape(-1)[3])


def test_tf_clip_by_value_keeps_nan_like_tf():
    check(lambda x: tf.clip_by_value(x, -0.5, 0.5))


# -- softmax and the graph: against TF's reference kernels (oneDNN off) ----------

def _net(x):
    rng = np.random.default_rng(1)
    w = tf.constant(rng.standard_normal((3, 3, 4, 8)).astype(np.float32))
    b = tf.constant(np.linspace(-1, 1, 8).astype(np.float32))
    y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, w, 1, "SAME"), b))
    return tf.nn.softmax(tf.reduce_mean(y, axis=[1, 2]))


_REFERENCE_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    sys.path.insert(0, sys.argv[1])
    import test_nan_semantics as t
    out = {}
    for name, (body, x) in t.reference_cases().items():
        out[name] = np.asarray(body(tf.constant(x))).tolist()
    print("REF" + json.dumps(out))
""")


def reference_cases():
    one_nan = poisoned(specials=((3, np.nan),))
    return {"softmax": (tf.nn.softmax, poisoned()),
            "softmax_axis1": (lambda x: tf.nn.softmax(x, axis=1), poisoned()),
            "log_softmax": (tf.nn.log_softmax, poisoned()),
            "net_nan": (_net, one_nan),
            "net_inf": (_net, poisoned(specials=((42, np.inf),)))}


@pytest.fixture(scope="module")
def tf_reference():
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="3",
               CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", _REFERENCE_SCRIPT, os.path.dirname(__file__)],
                          capture_output=True, text=True, env=env, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("REF")), None)
    assert line is not None, proc.stderr[-2000:]
    return {k: np.asarray(v, np.float32) for k, v in json.loads(line[3:]).items()}


@pytest.mark.parametrize("name", list(reference_cases()))
def test_softmax_and_conv_relu_mean_softmax_equal_tf_reference(name, tf_reference):
    body, x = reference_cases()[name]
    _, _, got = convert_and_run(body, x)
    ref = tf_reference[name]
    assert not np.isfinite(ref).all()
    assert_same_pattern(got, ref)


def test_softmax_nan_fills_its_row_only():
    _, _, got = convert_and_run(tf.nn.softmax, poisoned(specials=((3, np.nan),)))
    rows = np.isnan(got).reshape(-1, SHAPE[-1])
    assert rows[0].all() and not rows[1:].any()
