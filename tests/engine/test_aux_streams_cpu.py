"""Auxiliary streams (engine/aux_streams.py, settings aux_streams): which layers a plan
puts beside the main stream, that their inputs outlive the join, and that the layer
loop issues, skips and joins them in order and gives the sequential outputs (a NumPy
backend with a logging stand-in for the CuPy backend's AuxStream)."""
import numpy as np
import pytest

import engine as rt
from engine import aux_streams
from engine.backends.numpy_backend import NumpyBackend
from engine.types import LayerType

RNG = np.random.default_rng(5)


def randn(*s, scale=1.0):
    return (scale * RNG.standard_normal(s)).astype(np.float32)


def conv(net, x, c, k, r, stride=1, name=None, relu=True):
    layer = net.add_convolution_nd(x, k, (r, r), kernel=randn(k, c, r, r, scale=(c * r * r) ** -0.5),
                                   bias=randn(k, scale=0.1), padding_nd=(r // 2, r // 2),
                                   stride_nd=(stride, stride))
    layer.name = name
    y = layer.get_output(0)
    return net.add_activation(y, rt.ActivationType.RELU).get_output(0) if relu else y


def bottleneck(net, x, c, mid, out, stride, tag, torch_order=False):
    """ResNet's first block of a stage: a 1x1 projection of ``x`` added to 1x1 -> 3x3 -> 1x1;
    ``torch_order``: the projection made after the main branch, as torchvision traces it."""
    if not torch_order:
        proj = conv(net, x, c, out, 1, stride, f"{tag}_proj", relu=False)
    y = conv(net, x, c, mid, 1, 1, f"{tag}_reduce")
    y = conv(net, y, mid, mid, 3, stride, f"{tag}_3x3")
    y = conv(net, y, mid, out, 1, 1, f"{tag}_expand", relu=False)
    if torch_order:
        proj = conv(net, x, c, out, 1, stride, f"{tag}_proj", relu=False)
    return net.add_activation(net.add_elementwise(y, proj, rt.ElementWiseOperation.SUM).get_output(0),
                              rt.ActivationType.RELU).get_output(0)


def two_blocks(n=2, proj_is_output=False, hw=8, width=1, torch_order=False):
    """stem -> two projection bottlenecks (the second strided) on an (n, 8, hw, hw) input,
    channels times ``width``: the builder fuses each add and ReLU into its expand
    convolution (in ``torch_order`` once branch_order has moved the projection), nine layers."""
    net = rt.Network()
    x = net.add_input("data", rt.float32, (n, 8, hw, hw))
    w = width
    y = conv(net, x, 8, 16 * w, 3, 1, "stem")
    y = bottleneck(net, y, 16 * w, 8 * w, 32 * w, 1, "b1", torch_order)
    y = bottleneck(net, y, 32 * w, 16 * w, 64 * w, 2, "b2", torch_order)
    net.mark_output(y)
    if proj_is_output:
        proj = next(layer for layer in net._layers if layer.name == "b1_proj")
        net.mark_output(proj.get_output(0))
    return net


def build(net, backend="numpy", flags=()):
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = backend
    for f in flags:
        cfg.set_flag(f)
    return rt.Runtime(backend=backend).deserialize_cuda_engine(b.build_serialized_network(net, cfg))


def names(engine):
    return [layer.name for layer in engine.network._layers]


def aux_plan(engine, n=2):
    return engine.create_execution_context()._schedule({"data": np.zeros((n, 8, 8, 8), np.float32)})["aux"]


def test_each_projection_runs_beside_its_blocks_main_branch():
    engine = build(two_blocks())
    order = names(engine)
    assert order == ["stem", "b1_proj", "b1_reduce", "b1_3x3", "b1_expand",
                     "b2_proj", "b2_reduce", "b2_3x3", "b2_expand"]
    plan = aux_plan(engine)
    # issued where its input is made, joined before the expand; the reduce (whose only
    # reader is the 3x3) is the main branch, not a side branch
    assert [(order[a], order[p], order[j]) for a, p, j in plan.by_step] == [
        ("b1_proj", "b1_proj", "b1_expand"), ("b2_proj", "b2_proj", "b2_expand")]
    assert plan.steps == {1, 5}


def test_traced_in_torchvisions_order_the_projections_move_first_and_run_beside_the_same():
    net = two_blocks(torch_order=True)
    engine = build(net)
    order = names(engine)
    assert order == ["stem", "b1_reduce", "b1_3x3", "b1_proj", "b1_expand",
                     "b2_reduce", "b2_3x3", "b2_proj", "b2_expand"]
    assert engine.meta["pass_stats"]["branch_order"] == 2
    expand = engine.network._layers[4]
    assert expand.get_input(1) is engine.network._layers[3].get_output(0)      # the add fused here
    plan = aux_plan(engine)
    # issued where the block input is made (before the reduce), joined before the expand
    assert [(order[a], order[p], order[j]) for a, p, j in plan.by_step] == [
        ("b1_proj", "b1_reduce", "b1_expand"), ("b2_proj", "b2_reduce", "b2_expand")]
    # the same network built without the pass: one chain (the add fused into the projection)
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend = "numpy"
    cfg.disable_pass("branch_order")
    chain = rt.Runtime(backend="numpy").deserialize_cuda_engine(b.build_serialized_network(net, cfg))
    assert names(chain)[3:5] == ["b1_expand", "b1_proj"] and aux_plan(chain) is None
    x = randn(2, 8, 8, 8)
    out = engine.network._outputs[0].name
    np.testing.assert_allclose(engine.create_execution_context().execute({"data": x})[out],
                               chain.create_execution_context().execute({"data": x})[out], rtol=1e-5, atol=1e-5)


def test_an_auxiliary_layers_inputs_are_freed_after_its_join_not_its_last_reader():
    engine = build(two_blocks())
    ctx = engine.create_execution_context()
    sched = ctx._schedule({"data": np.zeros((2, 8, 8, 8), np.float32)})
    layers = engine.network._layers
    stem_out = id(layers[0]._outputs[0])
    # sequentially the stem's output dies after the reduce (step 2); beside a projection
    # still reading it, after the expand (step 4)
    assert stem_out in sched["free_after"][2]
    held = sched["aux"].free_after
    assert stem_out in held[4] and all(stem_out not in held[s] for s in range(4))
    # nothing else moved, nothing lost
    assert sorted(t for s in held for t in s) == sorted(t for s in sched["free_after"] for t in s)
    moved = {t for s, (a, b) in enumerate(zip(sched["free_after"], held)) for t in set(a) ^ set(b)}
    assert moved == {stem_out, id(layers[4]._outputs[0])}      # b1's output, read by b2_proj


def test_no_side_branch_in_a_chain_or_into_a_concatenation_or_a_network_output():
    import os
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    from test_concat_plan import build as build_inception, inception_net
    from test_runtime import chain_engine
    assert aux_plan_of(chain_engine(), "x", (2, 8)) is None
    net, _, _ = inception_net()
    assert aux_plan_of(build_inception(net), "data", (2, 8, 8, 8)) is None   # branches join at a concat
    engine = build(two_blocks(proj_is_output=True))
    order = names(engine)
    # b1's projection is a network output (read by the caller, not joined): only b2's is placed
    assert [order[a] for a in aux_plan(engine).steps] == ["b2_proj"]


def aux_plan_of(engine, name, shape):
    return engine.create_execution_context()._schedule({name: np.zeros(shape, np.float32)})["aux"]


class LoggedAux:
    """The CuPy backend's AuxStream on the host: ``issue`` runs the layer at once."""

    def __init__(self, log):
        self.log = log

    def issue(self, fn, name):
        self.log.append("fork")
        self.log.append(("for", name))          # the name graph notes give
        fn()
        self.log.append("issued")
        return len(self.log)

    def join(self, token):
        self.log.append(("join", token))


def logged_engine(n=2):
    engine = build(two_blocks(n))
    log = []

    class Logged(NumpyBackend):
        @staticmethod
        def aux_stream():
            return LoggedAux(log)

        @staticmethod
        def run_layer(layer, *args):
            log.append(layer.name)
            return NumpyBackend.run_layer(layer, *args)

    plain = engine.create_execution_context()
    engine.backend = Logged()
    return engine, plain, log


def test_the_loop_forks_each_side_branch_after_its_input_and_joins_it_before_its_reader():
    engine, plain, log = logged_engine()
    x = randn(2, 8, 8, 8)
    want = plain.execute({"data": x})
    log.clear()
    got = engine.create_execution_context().execute({"data": x})
    fork1, fork2 = [i + 4 for i, e in enumerate(log) if e == "fork"]      # the token: len(log) after "issued"
    assert log == ["stem", "fork", ("for", "b1_proj"), "b1_proj", "issued", "b1_reduce", "b1_3x3", ("join", fork1),
                   "b1_expand", "fork", ("for", "b2_proj"), "b2_proj", "issued", "b2_reduce", "b2_3x3",
                   ("join", fork2), "b2_expand"]
    np.testing.assert_array_equal(got[engine.network._outputs[0].name], want[engine.network._outputs[0].name])


def test_profiled_and_visited_runs_never_issue_on_the_auxiliary_stream():
    engine, _, log = logged_engine()
    x = randn(2, 8, 8, 8)
    ctx = engine.create_execution_context()
    ctx.profiler = rt.Profiler()
    ctx.execute({"data": x})
    assert "fork" not in log and len(log) == 9
    log.clear()
    seen = []
    runner = engine.create_execution_context()
    runner.run_layers({"data": x}, runner._schedule({"data": x}), visit=lambda t, v: seen.append(t.name))
    assert "fork" not in log and len(seen) == 9


def test_a_side_branch_crossing_the_batch_tiled_prefix_runs_in_place_on_the_main_stream():
    engine = build(two_blocks(n=4))
    plan = aux_plan(engine, n=4)
    assert plan.within(0, 9) == {1, 5}
    assert plan.within(0, 4) == set()        # b1's join (step 4) is past the prefix
    assert plan.within(0, 5) == {1} and plan.within(5, 9) == {5} and plan.within(6, 9) == set()
    from engine import settings as S
    x = randn(4, 8, 8, 8)
    engine, plain, log = logged_engine(n=4)
    want = plain.execute({"data": x})
    with S.overridden(batch_tiles=2, batch_tile_layers=4):
        tiled = engine.create_execution_context()
    log.clear()
    got = tiled.execute({"data": x})
    out = engine.network._outputs[0].name
    np.testing.assert_allclose(got[out], want[out], rtol=1e-5, atol=1e-5)
    # the prefix (stem, b1's first three layers) twice, b1's projection among them in place;
    # b2's projection beside its branch
    assert log.count("b1_proj") == 2 and log.count("fork") == 1
    assert log[log.index("fork") + 2] == "b2_proj"


def test_the_switch_is_on_by_default_and_parsed_like_the_others():
    from engine import settings as S
    assert S.from_environ({}).aux_streams is True
    with S.overridden(aux_streams=False):
        assert S.settings().aux_streams is False
    with pytest.raises(rt.BuildError, match="CUPYRT_AUX_STREAMS"):
        S.from_environ({"CUPYRT_AUX_STREAMS": "sometimes"})


def test_aux_plan_helpers_agree_with_each_other():
    plan = aux_plan(build(two_blocks()))
    assert isinstance(plan, aux_streams.AuxPlan)
    for a, p, j in plan.by_step:
        assert a in plan.issue_before[p] and a in plan.join_before[j] and p <= a < j


def test_the_cupy_aux_stream_forks_after_the_current_stream_and_joins_back():
    """AuxStream on a recording stand-in for CuPy: the auxiliary stream waits for an event
    of the current stream, the layer runs with the auxiliary stream current, and the
    join makes the current stream wait for the auxiliary stream's event."""
    import types

    from engine.backends.cupy_backend import AuxStream
    log, current = [], []

    class Event:
        def __init__(self, disable_timing=False):
            assert disable_timing          # capture-friendly, no timestamps
            self.at = None

    class Stream:
        def __init__(self, name="aux", non_blocking=False):
            self.name = name
            assert name != "aux" or non_blocking

        def record(self, event):
            event.at = self.name
            log.append(("record", self.name))
            return event

        def wait_event(self, event):
            log.append(("wait", self.name, event.at))

        def __enter__(self):
            current.append(self)

        def __exit__(self, *exc):
            current.pop()

    main = Stream("main")
    current.append(main)
    cp = types.SimpleNamespace(cuda=types.SimpleNamespace(
        Stream=Stream, Event=Event, get_current_stream=lambda: current[-1]))
    aux = AuxStream(cp)
    done = aux.issue(lambda: log.append(("layer on", current[-1].name)), "proj")
    assert log == [("record", "main"), ("wait", "aux", "main"), ("layer on", "aux"), ("record", "aux")]
    assert current == [main] and aux.issued == ["proj"]
    log.clear()
    aux.join(done)
    assert log == [("wait", "main", "aux")]


def weights_chain():
    """BERT's shape of the problem: matrix multiplies whose weights are Constant layers made
    just before them, the last one adding the input back (a residual)."""
    net = rt.Network()
    x = net.add_input("data", rt.float32, (4, 16))
    t = x
    for i in range(3):
        w = net.add_constant((16, 16), randn(16, 16, scale=0.25))
        w.name = f"w{i}"
        mm = net.add_matrix_multiply(t, rt.MatrixOperation.NONE, w.get_output(0), rt.MatrixOperation.NONE)
        mm.name = f"mm{i}"
        t = net.add_activation(mm.get_output(0), rt.ActivationType.RELU).get_output(0)
    net.mark_output(net.add_elementwise(t, x, rt.ElementWiseOperation.SUM).get_output(0))
    return net


def test_a_constant_made_beside_a_layer_is_no_work_to_run_it_beside():
    """Each matmul's join (the next matmul) also reads a Constant made after the matmul's
    input: that is not main-stream compute, so nothing is a side branch (71 of BERT's layers
    went to the auxiliary stream before, 0.952x the speed at batch 1)."""
    engine = build(weights_chain())
    kinds = [layer.layer_type for layer in engine.network._layers]
    assert LayerType.CONSTANT in kinds and kinds.count(LayerType.MATRIX_MULTIPLY) == 3
    assert aux_plan_of(engine, "data", (4, 16)) is None


def test_the_bert_encoder_keeps_every_layer_on_the_main_stream():
    """The bert suite's encoder (workflows/random_encoder.py: its layout, small sizes) built
    as the suite builds it: every layer is a chain link whose join also reads Constants, so
    the plan is empty. Before, attention, the matmuls and the layer norms of every encoder
    layer went to the auxiliary stream (on an H100 the same 71 names: 0.952x at b1)."""
    from workflows.random_encoder import random_encoder
    from workflows.transformer import import_encoder
    b, net = import_encoder(random_encoder(hidden=64, heads=4, ff=256, n_layers=2), 16, 64)
    cfg = b.create_builder_config()
    cfg.backend = "numpy"
    cfg.set_flag(rt.BuilderFlag.FP16)
    engine = rt.Runtime(backend="numpy").deserialize_cuda_engine(b.build_serialized_network(net, cfg))
    kinds = {layer.layer_type for layer in engine.network._layers}
    assert {LayerType.ATTENTION, LayerType.NORMALIZATION, LayerType.MATRIX_MULTIPLY} <= kinds
    assert aux_plan_of(engine, "tokens", (2, 16, 64)) is None


def test_builder_config_max_aux_streams_is_tensorrts_knob_recorded_in_the_plan():
    from engine import settings as S
    from engine.backends.cupy_backend import aux_streams_on
    cfg = rt.Builder().create_builder_config()
    assert cfg.max_aux_streams == -1
    for bad in (-2, 1.5, "1", True, None):
        with pytest.raises(rt.BuildError, match="max_aux_streams"):
            cfg.max_aux_streams = bad
    assert cfg.max_aux_streams == -1
    plans = {}
    for n in (-1, 0, 2):
        b = rt.Builder()
        c = b.create_builder_config()
        c.backend, c.max_aux_streams = "numpy", n
        plans[n] = rt.Runtime(backend="numpy").deserialize_cuda_engine(
            b.build_serialized_network(two_blocks(), c)).meta
    assert "max_aux_streams" not in plans[-1]
    assert plans[0]["max_aux_streams"] == 0 and plans[2]["max_aux_streams"] == 2
    on, off = S.from_environ({}), S.from_environ({"CUPYRT_AUX_STREAMS": "0"})
    assert aux_streams_on(plans[-1], on) and not aux_streams_on(plans[-1], off)     # the switch decides
    assert not aux_streams_on(plans[0], on) and aux_streams_on(plans[2], off)        # the plan decides


def test_num_aux_streams_counts_the_stream_a_replay_would_use():
    import types
    engine = build(two_blocks())
    assert engine.num_aux_streams == 0                           # the NumPy backend: one thread
    numpy_backend = engine.backend
    engine.backend = types.SimpleNamespace(aux_streams=True, use_graphs=True)
    assert engine.num_aux_streams == 1
    engine.backend.use_graphs = False                            # no graph, no capture
    assert engine.num_aux_streams == 0
    engine.backend = types.SimpleNamespace(aux_streams=False, use_graphs=True)
    assert engine.num_aux_streams == 0
    chain = build(weights_chain())
    chain.backend = types.SimpleNamespace(aux_streams=True, use_graphs=True)
    assert chain.num_aux_streams == 0                            # nothing to run beside
    assert numpy_backend.aux_stream() is None


def test_the_inspector_and_cupyrt_inspect_name_the_side_branches(tmp_path, capsys):
    import json

    from workflows import cli
    engine = build(two_blocks())
    info = json.loads(engine.create_engine_inspector().get_engine_information())
    assert info["side_branches"] == ["b1_proj", "b2_proj"] and info["num_aux_streams"] == 0   # NumPy backend
    assert json.loads(build(weights_chain()).create_engine_inspector()
                      .get_engine_information())["side_branches"] == []
    b = rt.Builder()
    cfg = b.create_builder_config()
    cfg.backend, cfg.max_aux_streams = "numpy", 0
    (tmp_path / "m.plan").write_bytes(b.build_serialized_network(two_blocks(), cfg))
    assert cli.main(["inspect", str(tmp_path / "m.plan")]) == 0
    out = capsys.readouterr().out
    assert ("side branches (an auxiliary stream in CUDA-graph replays; max_aux_streams 0): b1_proj, b2_proj"
            in out)
    assert cli.main(["inspect", "--json", str(tmp_path / "m.plan")]) == 0
    (engine_doc,) = json.loads(capsys.readouterr().out)["engines"]
    assert engine_doc["side_branches"] == {"layers": ["b1_proj", "b2_proj"], "max_aux_streams": 0}
