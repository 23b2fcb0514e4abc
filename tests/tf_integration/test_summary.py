"""summary(): a loop frame left to TensorFlow is one line, control-flow reasons are
grouped, and the JSON report still names every node (issue 10, point 2)."""
import pytest

from tf_integration import TrtGraphConverter, freeze_keras_model
from tf_integration.summary import format_summary

keras = pytest.importorskip("keras")


def _frozen_lstm():
    keras.utils.set_random_seed(21)
    inp = keras.Input((None, 4), name="seq")
    return freeze_keras_model(keras.Model(inp, keras.layers.Dense(3)(keras.layers.LSTM(6)(inp))))


def test_a_loop_left_to_tensorflow_is_one_line_and_the_json_keeps_every_node():
    gd, _, outs = _frozen_lstm()
    enter = next(n.name for n in gd.node if n.op == "Enter")
    # an Enter in nodes_denylist keeps the whole loop in TensorFlow
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=[enter, outs[0].split(":")[0]],
                             minimum_segment_size=1)
    conv.convert()
    left = conv.report["left_to_tensorflow"]
    in_frame = {n: r for n, r in left.items() if r.get("frame")}
    frames = {r["frame"] for r in in_frame.values()}
    assert len(frames) == 1 and len(in_frame) > 50, frames
    assert enter in in_frame and all(r["kind"] == "control flow" for r in in_frame.values())
    text = conv.summary()
    (frame,) = frames
    lines = [line for line in text.splitlines() if frame in line]
    assert len(lines) == 1, lines
    line = lines[0]
    assert f"frame {frame!r}: {len(in_frame)} nodes (" in line and "Enter" in line
    assert "is in nodes_denylist" in line          # the reason, said once
    assert len(text.splitlines()) < 40, text
    assert not any(n in text for n in in_frame if n != enter and frame not in n), text


def _report(left):
    return {"parameters": {"precision_mode": "FP32", "is_dynamic_op": False,
                           "minimum_segment_size": 3, "maximum_cached_engines": 1},
            "compute_nodes": len(left), "converted_compute_nodes": 0, "converted_share": 0.0,
            "constants_folded": 0, "conversion_seconds": 0.0, "engines": [],
            "left_to_tensorflow": left}


def test_segmenter_reasons_of_one_frame_become_one_phrase_and_others_are_counted():
    cf = "control flow"
    left = {"f/Enter": dict(kind=cf, detail="Enter of loop frame 'f'", op="Enter"),
            "f/Merge": dict(kind=cf, detail="Merge of loop frame 'f'", op="Merge"),
            "f/body/mul": dict(kind=cf, detail="inside while-loop frame 'f'", op="Mul"),
            "f/body/add": dict(kind=cf, detail="inside while-loop frame 'f'", op="AddV2"),
            "f/body/op": dict(kind="op not supported", detail="no converter for op Foo",
                              op="Foo")}
    for entry in left.values():
        entry["frame"] = "f"
    for i in range(5):                                      # outside any loop
        left[f"while_{i}"] = dict(kind=cf, op="While",
                                  detail="functional While: its body runs in TensorFlow")
    left["cond/Switch"] = dict(kind=cf, detail="Switch of a lowered cond", op="Switch")
    left["relu"] = dict(kind="op not supported", detail="no converter for op Relu6x", op="X")
    text = format_summary(_report(left))
    (line,) = [x for x in text.splitlines() if "frame 'f'" in x]
    assert "5 nodes" in line
    assert ("a lowered while loop: stays in TensorFlow, no segment crosses its frame "
            "(4 nodes)") in line
    assert "op not supported: no converter for op Foo (1 node)" in line
    # the five functional Whiles: one line, with three names and a count of the rest
    (whiles,) = [x for x in text.splitlines() if "functional While" in x]
    assert whiles.strip().startswith("5 nodes - functional While") and "and 2 more" in whiles
    assert "while_0 (While)" in whiles and "while_4" not in whiles
    assert "cond/Switch (Switch) - Switch of a lowered cond" in text     # alone: as before
    assert "relu (X) - no converter for op Relu6x" in text
    assert sum("frame" in x for x in text.splitlines()) == 2   # header + the frame


def test_runtime_lines_say_both_engine_runs_and_inlined_imports_of_one_node():
    """An engine node imported where it ran and, in the same process, where no CUDA device
    made it inline its TensorFlow ops: the summary says both (it used to show only the runs)."""
    from tf_integration.summary import format_runtime
    st = {"modes": ["numpy"], "imports": 1, "inlined": 2, "engine_runs": 3, "native_runs": 0,
          "engines_built": 1, "fallbacks": {}}
    lines = format_runtime({"CupyrtEngine_0": st})
    assert lines[1] == ("    CupyrtEngine_0: 3 engine run(s), 0 TensorFlow run(s), 1 engine(s) built per "
                        "shape; backend numpy")
    assert lines[2] == "      also inlined as its TensorFlow ops in 2 import(s) (no CUDA device)"
    assert len(format_runtime({"E": dict(st, inlined=0)})) == 2
    only = format_runtime({"E": dict(st, imports=0)})
    assert only[1].startswith("    E: inlined as its TensorFlow ops in 2 import(s)")
