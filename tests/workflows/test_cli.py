"""The cupyrt command line: engine-side commands."""
import json

import pytest

import engine as rt
from workflows import cli


@pytest.fixture
def plan_path(tmp_path):
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("x", rt.float32, (-1, 4))
    y = net.add_activation(x, rt.ActivationType.TANH).get_output(0)
    y.name = "y"
    net.mark_output(y)
    path = tmp_path / "m.plan"
    path.write_bytes(b.build_serialized_network(net, b.create_builder_config()))
    return path


def test_inspect_prints_layers_and_io(plan_path, capsys):
    assert cli.main(["inspect", str(plan_path)]) == 0
    out = capsys.readouterr().out
    assert "1 layers" in out and "input  x: [-1, 4]" in out and "ACTIVATION" in out


def test_inspect_json(plan_path, capsys):
    assert cli.main(["inspect", "--json", str(plan_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["outputs"] == {"y": [-1, 4]} and info["layers"][0]["kernel"] == "numpy.reference"


def test_inspect_rejects_a_corrupt_plan(plan_path):
    data = bytearray(plan_path.read_bytes())
    data[-1] ^= 0xFF
    plan_path.write_bytes(bytes(data))
    with pytest.raises(rt.PlanFormatError, match="checksum"):
        cli.main(["inspect", str(plan_path)])


def test_a_command_is_required():
    with pytest.raises(SystemExit):
        cli.main([])


def _cnn(rng):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 3, 8, 8))
    c = net.add_convolution_nd(x, 8, (3, 3), kernel=rng.standard_normal((8, 3, 3, 3)).astype("f4"),
                               bias=rng.standard_normal(8).astype("f4"), padding_nd=(1, 1))
    r = net.add_activation(c.get_output(0), rt.ActivationType.RELU)
    fc = net.add_fully_connected(r.get_output(0), 5, rng.standard_normal((5, 512)).astype("f4") * 0.1,
                                 None)
    fc.get_output(0).name = "logits"
    net.mark_output(fc.get_output(0))
    return net


def test_debug_precision_ranks_layers_and_keeps_the_worst(tmp_path, capsys):
    import numpy as np
    rng = np.random.default_rng(0)
    path = tmp_path / "net.bin"
    path.write_bytes(rt.serialize_network(_cnn(rng)))
    data = tmp_path / "calib.npz"
    np.savez(data, x=rng.standard_normal((16, 3, 8, 8)).astype("f4"))
    out = tmp_path / "marked.bin"
    assert cli.main(["debug-precision", str(path), "--calib-data", str(data), "--batch-size", "8",
                     "--calibrator", "minmax", "--budget", "1e-9", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "convolution" in text and "kept in FP16" in text
    marked = rt.deserialize_network(out.read_bytes())
    assert any(layer.precision_is_set for layer in marked)
