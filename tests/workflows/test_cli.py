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
