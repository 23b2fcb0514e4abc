"""Integrity of what engine nodes carry (tf_integration/integrity.py) and atomic saves.

Every payload of an engine node (segment graph, network, plan, calibration table,
plans built ahead and their shapes), in a frozen GraphDef and in a SavedModel, has
a SHA-256 recorded at conversion; one flipped byte in any of them raises
PayloadIntegrityError naming the node and the attribute before anything runs.
Files written by save() are whole or absent."""
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf

from engine import atomic_file
from tf_integration import (TrtGraphConverter, TrtGraphConverterV2, export, import_graph_def,
                            integrity, load_saved_model)
from tf_integration import saved_model_runtime as runtime
from tf_integration.engine_node import ENGINE_OP, EngineRunner, import_with_runners
from tf_integration.integrity import IntegrityWarning, PayloadIntegrityError
from tfi_helpers import build_graph, rel_l2, run_graph

RNG = np.random.default_rng(14)
W1 = (0.3 * RNG.standard_normal((3, 3, 3, 8))).astype(np.float32)
W2 = (0.2 * RNG.standard_normal((3, 3, 8, 4))).astype(np.float32)
X = RNG.standard_normal((2, 8, 8, 3)).astype(np.float32)
CALIB = [RNG.standard_normal((2, 8, 8, 3)).astype(np.float32) for _ in range(2)]


def cnn(x):
    h = tf.nn.relu(tf.nn.conv2d(x, W1, 1, "SAME") + 0.1)
    return tf.nn.tanh(tf.nn.conv2d(h, W2, 1, "SAME"))


@pytest.fixture(scope="module")
def graphs():
    """(GraphDef, outputs, {kind: converted}): a static INT8 node (segment, plan,
    calibration table) and a dynamic FP32 node (segment, network)."""
    gd, outs = build_graph(cnn, [X.shape])
    static = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0"], precision_mode="INT8",
                               minimum_segment_size=1, max_batch_size=2, is_dynamic_op=False)
    static.convert()
    calib = iter(CALIB)
    int8 = static.calibrate(outs, len(CALIB), feed_dict_fn=lambda: {"x0:0": next(calib)})
    dynamic = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0"],
                                minimum_segment_size=1, is_dynamic_op=True).convert()
    return gd, outs, {"static_int8": int8, "dynamic": dynamic}


def engine_node(gd):
    (node,) = [n for n in gd.node if n.op == ENGINE_OP]
    return node


def flipped(data, at=None):
    at = len(data) // 2 if at is None else at
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1:]


def tampered_copy(gd, attr):
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(gd)
    node = engine_node(out)
    node.attr[attr].s = flipped(node.attr[attr].s)
    return out


GRAPH_PAYLOADS = [("static_int8", "segment_graph"), ("static_int8", "serialized_plan"),
                  ("static_int8", "calibration_table"), ("dynamic", "segment_graph"),
                  ("dynamic", "serialized_network")]


def test_converted_nodes_record_a_digest_of_every_payload(graphs):
    _, _, converted = graphs
    for kind, gd in converted.items():
        node = engine_node(gd)
        assert set(integrity.recorded(node)) == set(integrity.digests(node))
        assert integrity.recorded(node) == integrity.digests(node) and integrity.verify(node)
    assert engine_node(converted["static_int8"]).attr["calibration_table"].s  # sealed after it


@pytest.mark.parametrize("kind,attr", GRAPH_PAYLOADS)
@pytest.mark.parametrize("inline", [True, False])
def test_a_flipped_byte_in_a_graphdef_payload_raises_before_anything_runs(graphs, kind, attr,
                                                                         inline):
    gd, outs, converted = graphs
    bad = tampered_copy(converted[kind], attr)
    with tf.Graph().as_default():
        with pytest.raises(PayloadIntegrityError, match=f"'CupyrtEngine_0': attribute '{attr}' "
                                                        "has sha256") as info:
            import_with_runners(bad, name="", inline=inline)
        assert not tf.compat.v1.get_default_graph().get_operations()   # nothing imported
    assert (info.value.node, info.value.attribute) == ("CupyrtEngine_0", attr)
    with pytest.raises(PayloadIntegrityError, match=attr):
        EngineRunner(engine_node(bad), mode="numpy")
    # the untouched graph still runs and matches TensorFlow
    ref = run_graph(gd, outs, {"x0:0": X})[0]
    tol = 0.1 if kind == "static_int8" else 1e-5
    assert rel_l2(run_graph(converted[kind], outs, {"x0:0": X}, converted=True)[0], ref) <= tol


def test_the_issue_example_a_flipped_weight_in_the_segment_no_longer_answers_wrong(graphs):
    """Issue 11: bytes flipped inside the segment ran as the fallback (max error 0.78)."""
    gd, outs, converted = graphs
    bad = tf.compat.v1.GraphDef()
    bad.CopyFrom(converted["dynamic"])
    node = engine_node(bad)
    segment = tf.compat.v1.GraphDef.FromString(node.attr["segment_graph"].s)
    const = next(n for n in segment.node if n.op == "Const"
                 and len(n.attr["value"].tensor.tensor_content) == W1.nbytes)
    content = const.attr["value"].tensor.tensor_content
    const.attr["value"].tensor.tensor_content = flipped(content, 3)   # an exponent byte
    node.attr["segment_graph"].s = segment.SerializeToString()
    with pytest.raises(PayloadIntegrityError, match="'segment_graph'"):
        run_graph(bad, outs, {"x0:0": X}, converted=True)


def test_a_payload_added_or_removed_after_conversion_is_named(graphs):
    _, _, converted = graphs
    bad = tf.compat.v1.GraphDef()
    bad.CopyFrom(converted["dynamic"])
    node = engine_node(bad)
    node.attr["prebuilt_plans"].list.s.append(b"a plan slipped in")
    with pytest.raises(PayloadIntegrityError, match="'prebuilt_plans' is present but has no "
                                                    "digest"):
        import_graph_def(bad, name="")
    del node.attr["prebuilt_plans"]
    del node.attr["serialized_network"]
    with pytest.raises(PayloadIntegrityError, match="'serialized_network' is missing"):
        import_graph_def(bad, name="")
    node.attr["serialized_network"].s = engine_node(converted["dynamic"]).attr[
        "serialized_network"].s
    node.attr[integrity.DIGESTS_ATTR].list.s.append(b"segment_graph:not hex")
    with pytest.raises(PayloadIntegrityError, match="'payload_digests' holds the entry"):
        import_graph_def(bad, name="")


def test_nodes_written_before_digests_load_with_one_warning(graphs, monkeypatch):
    gd, outs, converted = graphs
    old = tf.compat.v1.GraphDef()
    old.CopyFrom(converted["dynamic"])
    del engine_node(old).attr[integrity.DIGESTS_ATTR]
    monkeypatch.setattr(integrity, "_WARNED", [])
    with pytest.warns(IntegrityWarning, match="carries no payload digests"):
        got = run_graph(old, outs, {"x0:0": X}, converted=True)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", IntegrityWarning)         # once per process
        again = run_graph(old, outs, {"x0:0": X}, converted=True)[0]
    ref = run_graph(gd, outs, {"x0:0": X})[0]
    assert rel_l2(got, ref) <= 1e-5 and rel_l2(again, ref) <= 1e-5


# ---------------------------------------------------------------------------- SavedModels

class Small(tf.Module):
    def __init__(self):
        super().__init__()
        self.w1, self.w2 = tf.Variable(W1), tf.Variable(W2)

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32, name="x")])
    def serve(self, x):
        h = tf.nn.relu(tf.nn.conv2d(x, self.w1, 1, "SAME") + 0.1)
        return {"y": tf.nn.tanh(tf.nn.conv2d(h, self.w2, 1, "SAME"))}


SAVED_PAYLOADS = ["segment_graph", "serialized_network", "calibration_table",
                  "prebuilt_input_shapes", "prebuilt_plans"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A SavedModel converted INT8 (calibrated) with an engine built ahead."""
    root = tmp_path_factory.mktemp("integrity")
    module = Small()
    src = str(root / "src")
    tf.saved_model.save(module, src, signatures={"serving_default": module.serve})
    conv = TrtGraphConverterV2(input_saved_model_dir=src, precision_mode="INT8",
                               minimum_segment_size=1)
    conv.convert(calibration_input_fn=lambda: iter(CALIB))
    conv.build(lambda: iter([X]))
    return src, conv.save(str(root / "converted"))


def _payload(blob, attr):
    value = tf.compat.v1.NodeDef.FromString(blob).attr[attr]
    return value.list.s[0] if value.WhichOneof("value") == "list" else value.s


def _tampered_dir(src_dir, dst_dir, edit):
    import shutil

    shutil.copytree(src_dir, dst_dir)
    pb = os.path.join(dst_dir, "saved_model.pb")
    with open(pb, "rb") as f:
        data = f.read()
    with open(pb, "wb") as f:
        f.write(edit(data))
    return dst_dir


@pytest.mark.parametrize("attr", SAVED_PAYLOADS)
def test_a_flipped_byte_in_a_saved_model_payload_raises_at_load(saved, attr, tmp_path):
    _, out = saved
    ((_, blob),) = runtime.engine_blobs(out).items()
    payload = _payload(blob, attr)
    assert len(payload) > 8, attr

    def flip_every_copy(data):
        assert payload in data
        return data.replace(payload, flipped(payload))

    bad = _tampered_dir(out, str(tmp_path / "bad"), flip_every_copy)
    for inline in (True, False):
        with pytest.raises(PayloadIntegrityError,
                           match=f"'CupyrtEngine_0': attribute '{attr}' has sha256") as info:
            load_saved_model(bad, inline=inline)
        assert info.value.attribute == attr
    # plain tf.saved_model.load: the dispatcher checks before it binds the engine
    sig = tf.saved_model.load(bad).signatures["serving_default"]
    with pytest.raises(Exception, match=f"attribute '{attr}'"):
        sig(x=tf.constant(X * 0.5))


def test_a_changed_blob_or_key_constant_is_named(saved, tmp_path):
    src, out = saved
    ((key, blob),) = runtime.engine_blobs(out).items()
    node = tf.compat.v1.NodeDef.FromString(blob)
    node.attr["allow_build_at_runtime"].b = False     # no payload: only the key sees it
    other = node.SerializeToString()
    with pytest.raises(PayloadIntegrityError, match="'cupyrt_blob' has sha256.*cupyrt_key"):
        runtime.bind_engine(other, key)
    bad = _tampered_dir(out, str(tmp_path / "bad"), lambda d: d.replace(key, key[::-1]))
    with pytest.raises(PayloadIntegrityError, match="'cupyrt_blob'"):
        load_saved_model(bad)
    # the good model loads and matches TensorFlow
    got = load_saved_model(out).signatures["serving_default"](x=tf.constant(X))["y"]
    ref = tf.saved_model.load(src).signatures["serving_default"](x=tf.constant(X))["y"]
    assert rel_l2(got, ref) <= 0.1


def test_saving_a_node_changed_after_conversion_does_not_reseal_it(graphs):
    _, _, converted = graphs
    node = engine_node(tampered_copy(converted["dynamic"], "segment_graph"))
    with pytest.raises(PayloadIntegrityError, match="'segment_graph'"):
        runtime.saved_engine_node(node)


# ---------------------------------------------------------------------------- atomic saves

def _fail_after_half(monkeypatch):
    """The writer writes half of the data, then fails (as a full disk would)."""
    def half_then_fail(f, chunk):
        f.write(chunk[:len(chunk) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_file, "_write_chunk", half_then_fail)


def test_a_failed_save_leaves_the_old_pb_intact_and_no_partial_file(graphs, tmp_path,
                                                                      monkeypatch):
    gd, outs, converted = graphs
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0"], minimum_segment_size=1,
                             is_dynamic_op=True)
    conv.convert()
    path = conv.save(str(tmp_path / "model.pb"))
    with open(path, "rb") as f:
        good = f.read()
    os.chmod(path, 0o644)
    _fail_after_half(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        conv.save(path)
    assert os.listdir(tmp_path) == ["model.pb"]
    with open(path, "rb") as f:
        assert f.read() == good
    with pytest.raises(OSError, match="No space left"):
        conv.save(str(tmp_path / "new.pb"))
    assert os.listdir(tmp_path) == ["model.pb"]
    monkeypatch.undo()
    assert conv.save(path) == path and os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()
    reread = tf.compat.v1.GraphDef.FromString(open(path, "rb").read())
    ref = run_graph(gd, outs, {"x0:0": X})[0]
    assert rel_l2(run_graph(reread, outs, {"x0:0": X}, converted=True)[0], ref) <= 1e-5


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_engine_export_keeps_the_files_already_there(graphs, tmp_path, monkeypatch):
    _, _, converted = graphs
    first = export.export_engines(converted["dynamic"], str(tmp_path))
    before = {p: open(p, "rb").read() for p in first}
    _fail_after_half(monkeypatch)
    with pytest.raises(OSError):
        export.export_engines(converted["dynamic"], str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in first)
    assert {p: open(p, "rb").read() for p in first} == before


def test_a_failed_saved_model_save_leaves_nothing(saved, tmp_path, monkeypatch):
    src, _ = saved
    conv = TrtGraphConverterV2(input_saved_model_dir=src, minimum_segment_size=1)
    conv.convert()
    real = tf.saved_model.save

    def save_then_fail(obj, target, signatures=None):
        real(obj, target, signatures=signatures)        # everything written, then a failure
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        conv.save(str(tmp_path / "out"))
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    out = conv.save(str(tmp_path / "out"))
    assert os.listdir(tmp_path) == ["out"] and runtime.engine_blobs(out)
