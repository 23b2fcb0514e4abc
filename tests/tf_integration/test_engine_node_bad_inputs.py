"""Bad input reaching an engine node at run time: a direct EngineRunner call with the
wrong number, dtype or shape of arrays is refused naming the node and the input; a
batch above a static engine's max_batch_size still runs the TensorFlow segment inside
TF (counted), while the engine itself refuses it with a clear error."""
import numpy as np
import pytest
import tensorflow as tf

import engine as rt
from tf_integration import TrtGraphConverter, engine_node, engine_storage
from tf_integration.engine_node import ENGINE_OP, EngineRunner
from tf_integration.errors import EngineNodeError
from tfi_helpers import build_graph, random_input, rel_l2, run_graph

W = np.random.default_rng(3).standard_normal((3, 3, 4, 4)).astype(np.float32) * 0.3


def block(x):
    return tf.nn.relu(tf.nn.conv2d(x, tf.constant(W), 1, "SAME") + 0.2)


def converted(**kw):
    gd, outs = build_graph(block, [(2, 5, 6, 4)])
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0"], minimum_segment_size=1,
                             **kw)
    out = conv.convert()
    (node,) = [n for n in out.node if n.op == ENGINE_OP]
    return gd, outs, out, node


@pytest.mark.parametrize("arrays,match", [
    ((), r"takes 1 input\(s\) \(float32\); got 0"),
    ((np.ones((2, 5, 6, 4)),), r"input 0 \(x0:0\) has dtype float64; expected float32"),
    ((np.ones((2, 5, 6), np.float32),), r"input 0 \(x0:0\) has shape \(2, 5, 6\); expected "
                                        r"\[-1, 5, 6, 4\] \(-1 = any\)"),
    ((np.ones((2, 5, 6, 3), np.float32),), r"has shape \(2, 5, 6, 3\); expected \[-1, 5, 6, 4\]"),
])
def test_a_direct_call_with_wrong_arrays_names_node_and_input(arrays, match):
    gd, outs, _, node = converted(is_dynamic_op=True)
    runner = EngineRunner(node, mode="numpy")
    with pytest.raises(EngineNodeError, match="engine node CupyrtEngine_0.*" + match):
        runner(*arrays)
    assert runner.stats["engine_runs"] == 0 and runner.stats["native_runs"] == 0
    x = random_input((3, 5, 6, 4), seed=4)
    (got,) = runner(x)
    assert rel_l2(got, run_graph(gd, outs, {"x0:0": x})[0]) <= 1e-5


def test_a_batch_above_max_is_a_counted_fallback_in_tf_and_an_error_in_the_engine():
    gd, outs, out, node = converted(is_dynamic_op=False, max_batch_size=2)
    x = random_input((3, 5, 6, 4), seed=5)
    runner = EngineRunner(node, mode="numpy")
    with pytest.warns(engine_node.EngineFallbackWarning, match="batch 3 exceeds max_batch_size 2"):
        (got,) = runner(x)
    assert runner.fallbacks == {engine_node.BATCH_TOO_LARGE: 1}
    ref = run_graph(gd, outs, {"x0:0": x})[0]
    assert rel_l2(got, ref) <= 1e-6
    (small,) = runner(x[:2])
    assert runner.stats["engine_runs"] == 1
    assert rel_l2(small, run_graph(gd, outs, {"x0:0": x[:2]})[0]) <= 1e-5
    engine = rt.Runtime(backend="numpy").deserialize_cuda_engine(engine_storage.stored_plan(node))
    assert engine.max_batch_size == 2
    with pytest.raises(rt.ExecutionError, match=r"input 'input_0' has batch 3 \(shape \(3, 5, 6, "
                                                r"4\)\); this engine takes batches up to its "
                                                "max_batch_size 2"):
        engine.create_execution_context().execute({"input_0": x})
