"""Builder and builder config: flags, pools, precision assignment, errors."""
import numpy as np
import pytest

import engine as rt


def two_layer_network(builder):
    net = builder.create_network()
    x = net.add_input("x", rt.float32, (2, 4))
    a = net.add_activation(x, rt.ActivationType.SIGMOID)
    b = net.add_activation(a.get_output(0), rt.ActivationType.TANH)
    a.name = b.name = "same"
    net.mark_output(b.get_output(0))
    return net, a, b


def test_flags_set_clear_get():
    cfg = rt.Builder().create_builder_config()
    assert not cfg.get_flag(rt.BuilderFlag.FP16)
    cfg.set_flag(rt.BuilderFlag.FP16)
    assert cfg.get_flag(rt.BuilderFlag.FP16)
    cfg.clear_flag(rt.BuilderFlag.FP16)
    assert not cfg.get_flag(rt.BuilderFlag.FP16)
    with pytest.raises(rt.BuildError, match="valid: FP16, INT8"):
        cfg.set_flag("FP16")


def test_memory_pool_limits():
    cfg = rt.Builder().create_builder_config()
    cfg.max_workspace_size = 1 << 20
    assert cfg.get_memory_pool_limit(rt.MemoryPoolType.WORKSPACE) == 1 << 20
    cfg.set_memory_pool_limit(rt.MemoryPoolType.WORKSPACE, 1 << 24)
    assert cfg.max_workspace_size == 1 << 24
    with pytest.raises(rt.BuildError, match="size in bytes"):
        cfg.max_workspace_size = -1
    with pytest.raises(rt.BuildError, match="valid: WORKSPACE"):
        cfg.set_memory_pool_limit("workspace", 1)


def test_build_rejects_bad_arguments():
    b = rt.Builder()
    net, _, _ = two_layer_network(b)
    with pytest.raises(rt.BuildError, match="takes a Network"):
        b.build_serialized_network("net", b.create_builder_config())
    with pytest.raises(rt.BuildError, match="takes a BuilderConfig"):
        b.build_serialized_network(net, {})
    with pytest.raises(rt.BuildError, match="no outputs"):
        b.build_serialized_network(b.create_network(), b.create_builder_config())
    cfg = b.create_builder_config()
    cfg.set_flag(rt.BuilderFlag.INT8)
    with pytest.raises(rt.BuildError, match="INT8"):
        b.build_serialized_network(net, cfg)
    with pytest.raises(rt.BuildError, match="unknown builder pass"):
        cfg.disable_pass("magic")


def test_build_leaves_the_users_network_untouched_and_names_unique():
    b = rt.Builder()
    net, a, bl = two_layer_network(b)
    cfg = b.create_builder_config()
    cfg.disable_pass("pointwise_fusion")
    engine = b.build_engine(net, cfg)
    assert net.num_layers == 2 and a.name == "same" and bl.name == "same"
    assert [info.name for info in engine.layers] == ["same", "same_1"]


def test_obey_precision_constraints():
    b = rt.Builder()
    net, a, _ = two_layer_network(b)
    a.precision = rt.float16
    cfg = b.create_builder_config()
    cfg.disable_pass("pointwise_fusion")
    plain = b.build_engine(net, cfg)
    assert [i.precision for i in plain.layers] == [rt.float32, rt.float32]
    cfg.set_flag(rt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    obeyed = b.build_engine(net, cfg)
    assert [i.precision for i in obeyed.layers] == [rt.float16, rt.float32]
    cfg.set_flag(rt.BuilderFlag.FP16)
    a.precision = rt.float32
    mixed = b.build_engine(net, cfg)
    assert [i.precision for i in mixed.layers] == [rt.float32, rt.float16]
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    ref = np.tanh(1 / (1 + np.exp(-x)))
    y = mixed.create_execution_context().execute({"x": x})
    assert np.abs(list(y.values())[0] - ref).max() < 2e-3


def test_logger_severities(caplog):
    logger = rt.Logger(rt.Logger.INFO)
    with caplog.at_level("DEBUG", logger="cupyrt"):
        logger.log(rt.Logger.INFO, "hello")
        logger.log(rt.Logger.VERBOSE, "too chatty")
    assert "hello" in caplog.text and "too chatty" not in caplog.text
    assert logger.python_level() == 20


def test_build_fails_early_on_missing_rnn_weights():
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (1, 3, 4))
    rnn = net.add_rnn_v2(x, 1, 5, 3, rt.RNNOperation.TANH)
    net.mark_output(rnn.get_output(0))
    with pytest.raises(rt.BuildError, match="no W weights"):
        b.build_serialized_network(net, b.create_builder_config())


def test_set_input_on_a_variadic_layer():
    net = rt.Network()
    a = net.add_input("a", rt.float32, (2, 3))
    c = net.add_input("c", rt.float32, (2, 5))
    cat = net.add_concatenation([a, a])
    cat.axis = 1
    cat.set_input(1, c)
    assert cat.get_output(0).shape == (2, 8)
    with pytest.raises(rt.NetworkDefinitionError, match="input index"):
        cat.set_input(5, c)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_timing_feed_is_uniform_in_the_unit_interval_of_the_input_type(dtype):
    from engine.builder import timing_feed
    x = timing_feed(dtype, (4, 3, 16, 16))
    assert x.dtype == dtype and x.shape == (4, 3, 16, 16) and x.flags.c_contiguous
    assert -1.0 <= x.min() < -0.9 and 0.9 < x.max() <= 1.0 and abs(float(x.mean())) < 0.05
    assert np.array_equal(x, timing_feed(dtype, (4, 3, 16, 16)))                  # seeded
    assert not np.array_equal(x, timing_feed(dtype, (4, 3, 16, 16), seed=1))


def test_timing_feed_of_an_integer_input_is_zeros():
    from engine.builder import timing_feed
    x = timing_feed(np.int32, (3, 5))
    assert x.dtype == np.int32 and x.shape == (3, 5) and not x.any()
