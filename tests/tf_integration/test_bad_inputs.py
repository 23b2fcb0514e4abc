"""The conversion-time half of issue 11's bad-input catalogue: each bad GraphDef or
SavedModel is answered by a typed error naming the node, tensor or file, what was
found and what was expected; inputs that are legal but not ours to convert (non-float
tensors, attribute values TF accepts that no converter takes) stay in TensorFlow with
their reason, and the converted graph still matches TensorFlow."""
import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tf_integration import TrtGraphConverter, TrtGraphConverterV2
from tf_integration.engine_node import ENGINE_OP
from tf_integration.errors import ConverterArgumentError, GraphError
from tf_integration.graph_utils import check_graph_def
from tfi_helpers import build_graph, random_input, rel_l2, run_graph

W = np.random.default_rng(3).standard_normal((3, 3, 2, 4)).astype(np.float32)


def conv_relu(x):
    return tf.nn.relu(tf.nn.conv2d(x, tf.constant(W), 1, "SAME", name="conv"), name="relu")


def graph():
    gd, _ = build_graph(conv_relu, [(1, 5, 5, 2)])
    return gd


def convert(gd, denylist=("out0",)):
    return TrtGraphConverter(input_graph_def=gd, nodes_denylist=list(denylist),
                             minimum_segment_size=1).convert()


def edited(op, fn):
    gd = graph()
    for node in gd.node:
        if node.op == op:
            fn(node)
    return gd


# ---------------------------------------------------------------------------- GraphDefs

def test_an_empty_graph_is_refused():
    with pytest.raises(GraphError, match="input_graph_def has no nodes; expected a frozen graph"):
        convert(tf.compat.v1.GraphDef(), denylist=())


def test_duplicate_node_names_are_refused():
    gd = graph()
    twin = tf.compat.v1.NodeDef()
    twin.CopyFrom(gd.node[-1])
    gd.node.append(twin)
    with pytest.raises(GraphError, match="two nodes named 'out0'; expected unique names"):
        convert(gd)


def test_a_cycle_that_is_not_a_loop_is_refused():
    gd = edited("Conv2D", lambda n: n.input.__setitem__(0, "relu"))
    with pytest.raises(GraphError,
                       match=r"cycle through \['conv', 'out0', 'relu'\]; expected a DAG"):
        convert(gd)


def test_a_graph_truncated_inside_a_node_does_not_parse():
    data = graph().SerializeToString()
    with pytest.raises(Exception, match="Error parsing message"):
        tf.compat.v1.GraphDef.FromString(data[:len(data) - 7])


def test_a_graph_truncated_at_a_node_boundary_lacks_its_outputs():
    gd = graph()
    del gd.node[-1]                     # what a file cut after a whole node reads as
    with pytest.raises(ConverterArgumentError, match=r"'nodes_denylist' is \['out0'\]; expected "
                                                      "names of nodes in input_graph_def"):
        convert(gd)


def test_a_node_missing_from_the_middle_leaves_a_dangling_input():
    gd = graph()
    keep = [n for n in gd.node if n.name != "conv"]
    del gd.node[:]
    gd.node.extend(keep)
    with pytest.raises(GraphError, match="node 'relu' reads 'conv', which no node produces"):
        convert(gd)


def test_an_op_tensorflow_does_not_know_is_named_with_its_node():
    gd = edited("Relu", lambda n: setattr(n, "op", "MyCustomRelu"))
    with pytest.raises(GraphError, match=r"1 node\(s\) use ops TensorFlow does not know: 'relu' "
                                         r"\(MyCustomRelu\); expected registered ops"):
        convert(gd)


def test_engine_nodes_and_library_functions_are_known_ops():
    gd = edited("Relu", lambda n: setattr(n, "op", ENGINE_OP))
    with pytest.raises(GraphError, match="CupyrtEngineOp"):
        check_graph_def(gd)
    check_graph_def(gd, known_ops={ENGINE_OP})
    fn = gd.library.function.add()
    fn.signature.name = "my_function"
    gd.node[-1].op = "my_function"
    check_graph_def(gd, known_ops={ENGINE_OP})


@pytest.mark.parametrize("op, attr, value, message", [
    ("Conv2D", "padding", b"SAME ", r"node 'conv' \(Conv2D\): attribute 'padding' is 'SAME '; "
                                    "expected one of SAME, VALID, EXPLICIT"),
    ("Conv2D", "data_format", b"NCDHW", "attribute 'data_format' is 'NCDHW'; expected one of "
                                        "NHWC, NCHW"),
    ("Relu", "T", tf.string, r"node 'relu' \(Relu\): attribute 'T' is 'string'; expected one "
                             "of float32, float64, int32"),
])
def test_attribute_values_outside_the_op_definition_are_refused(op, attr, value, message):
    def set_value(node):
        if isinstance(value, bytes):
            node.attr[attr].s = value
        else:
            node.attr[attr].type = value.as_datatype_enum
    with pytest.raises(GraphError, match=message):
        convert(edited(op, set_value))


def test_a_required_attribute_that_is_missing_is_refused():
    gd = edited("Conv2D", lambda n: n.attr.pop("strides"))
    with pytest.raises(GraphError, match=r"node 'conv' \(Conv2D\) has no attribute 'strides'; "
                                         "expected one of type list\\(int\\)"):
        convert(gd)


def test_shapes_that_conflict_are_refused_with_the_node():
    gd, _ = build_graph(lambda x: tf.nn.relu(tf.matmul(x, np.ones((4, 3), np.float32),
                                                       name="mm")), [(2, 4)])
    for node in gd.node:
        if node.op == "Placeholder":
            node.attr["shape"].shape.dim[1].size = 5          # 5 columns into a 4-row matrix
    with pytest.raises(GraphError, match=r"cannot be imported by TensorFlow: Dimensions must be "
                                         r"equal, but are 5 and 4 for '\{\{node mm\}\}"):
        convert(gd)


def test_a_denylist_naming_missing_nodes_or_tensors_is_refused():
    with pytest.raises(ConverterArgumentError, match=r"\['nope', 'gone'\]; expected names"):
        convert(graph(), denylist=("out0", "nope", "gone:0"))


def test_non_float_inputs_stay_in_tensorflow_with_their_reason():
    def body(x, s):
        y = tf.nn.relu(x * 3, name="int_relu")                 # int32: no Relu converter
        return [y, tf.strings.length(s, name="strlen")]
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.int32, (None, 4), name="x0")
        s = tf.compat.v1.placeholder(tf.string, (None,), name="x1")
        outs = [tf.identity(o, name=f"out{i}").name for i, o in enumerate(body(x, s))]
    gd = g.as_graph_def()
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0", "out1"],
                             minimum_segment_size=1)
    converted = conv.convert()
    text = conv.summary()
    assert ("int_relu (Relu) - dtype int32 not supported by Relu; supported: float32, "
            "float16") in text
    assert "strlen (StringLength) - no converter for op StringLength" in text
    feeds = {"x0:0": np.arange(-6, 6, dtype=np.int32).reshape(3, 4),
             "x1:0": np.array([b"a", b"bcd", b""])}
    for got, ref in zip(run_graph(converted, outs, feeds, converted=True),
                        run_graph(gd, outs, feeds)):
        np.testing.assert_array_equal(got, ref)


def test_an_attribute_value_tf_takes_but_no_converter_does_stays_in_tensorflow():
    x = random_input((1, 6, 6, 2), seed=4)
    gd, outs = build_graph(lambda t: tf.nn.relu(tf.nn.conv2d(
        t, tf.constant(W), 1, "SAME", dilations=[1, 2, 2, 1], name="conv") + 1.0), [x.shape])
    for node in gd.node:                       # strides on the batch axis: TF-legal proto,
        if node.op == "Conv2D":                # refused by our validator with its reason
            node.attr["strides"].list.i[:] = [2, 1, 1, 1]
            node.attr["dilations"].list.i[:] = [1, 1, 1, 1]
    conv = TrtGraphConverter(input_graph_def=gd, nodes_denylist=["out0"], minimum_segment_size=1)
    conv.convert()
    assert "conv (Conv2D) - " in conv.summary()
    assert not any("conv" in line and "CupyrtEngine" in line for line in conv.summary().splitlines()
                   if line.strip().startswith("ops:"))


# ---------------------------------------------------------------------------- SavedModels

class Model(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(W)

    @tf.function(input_signature=[tf.TensorSpec([None, 5, 5, 2], tf.float32)])
    def __call__(self, x):
        return tf.nn.relu(tf.nn.conv2d(x, self.w, 1, "SAME"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("bad_sm") / "model")
    tf.saved_model.save(Model(), path)
    return path


def damaged(saved, tmp_path, how):
    path = str(tmp_path / how)
    shutil.copytree(saved, path)
    pb = os.path.join(path, "saved_model.pb")
    if how == "truncated_pb":
        data = open(pb, "rb").read()
        open(pb, "wb").write(data[:len(data) // 2])
    elif how == "empty_pb":
        open(pb, "wb").close()
    elif how == "no_variables":
        shutil.rmtree(os.path.join(path, "variables"))
    elif how == "truncated_variables":
        (shard,) = glob.glob(os.path.join(path, "variables", "variables.data-*"))
        data = open(shard, "rb").read()
        open(shard, "wb").write(data[:len(data) // 2])
    return path


@pytest.mark.parametrize("how, message", [
    ("truncated_pb", r"truncated_pb/saved_model.pb \(\d+ bytes\) cannot be parsed \(.*Wire "
                     "format was corrupt.*expected a SavedModel protocol buffer"),
    ("empty_pb", r"empty_pb/saved_model.pb \(0 bytes\) holds no meta graph; expected a "
                 "SavedModel with at least one"),
])
def test_a_damaged_saved_model_pb_is_refused_naming_the_file(saved, tmp_path, how, message):
    with pytest.raises(GraphError, match=message):
        TrtGraphConverterV2(input_saved_model_dir=damaged(saved, tmp_path, how))


@pytest.mark.parametrize("how, message", [
    ("no_variables", r"no_variables cannot be loaded \(FileNotFoundError: .*\); found no "
                     r".*no_variables/variables folder; expected the saved_model.pb and "
                     "variables/"),
    ("truncated_variables", r"truncated_variables cannot be loaded .*found .*variables holding "
                            r"\['variables.data-00000-of-00001', 'variables.index'\]"),
])
def test_missing_or_truncated_variables_are_refused_naming_the_folder(saved, tmp_path, how,
                                                                      message):
    conv = TrtGraphConverterV2(input_saved_model_dir=damaged(saved, tmp_path, how))
    with pytest.raises(GraphError, match=message):
        conv.convert()


def test_the_undamaged_saved_model_converts_and_matches(saved):
    conv = TrtGraphConverterV2(input_saved_model_dir=saved, minimum_segment_size=1)
    fn = conv.convert()
    x = random_input((2, 5, 5, 2), seed=7)
    ref = tf.saved_model.load(saved)(tf.constant(x)).numpy()
    got = list(fn(tf.constant(x)).values())[0].numpy()
    assert rel_l2(got, ref) <= 1e-5


def test_a_folder_without_a_saved_model_is_refused(tmp_path):
    with pytest.raises(ConverterArgumentError, match="expected a SavedModel directory"):
        TrtGraphConverterV2(input_saved_model_dir=str(tmp_path))
