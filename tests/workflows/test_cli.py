"""The cupyrt command line, engine side: plans and networks (no TensorFlow needed).

Optional package: tqdm (the progress bar on a terminal); its test skips without it.
"""
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import engine as rt
from workflows import cli
from workflows.progress import BuildProgress, Progress, build_progress

LONG = "a_layer_name_that_is_much_longer_than_thirty_two_characters_to_be_cut"


def _net(rng):
    net = rt.Network()
    x = net.add_input("x", rt.float32, (-1, 4))
    fc = net.add_matrix_multiply(x, rt.MatrixOperation.NONE,
                                 net.add_constant((4, 3), rng.standard_normal((4, 3)).astype(
                                     "f4")).get_output(0), rt.MatrixOperation.NONE)
    act = net.add_activation(fc.get_output(0), rt.ActivationType.TANH)
    soft = net.add_softmax(act.get_output(0))
    soft.name = LONG                 # a softmax survives the builder's fusions
    y = soft.get_output(0)
    y.name = "y"
    net.mark_output(y)
    return net


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    net = _net(rng)
    b = rt.Builder()
    config = b.create_builder_config()
    config.backend = "numpy"
    (tmp_path / "m.plan").write_bytes(b.build_serialized_network(net, config))
    (tmp_path / "m.network").write_bytes(rt.serialize_network(net))
    x = rng.standard_normal((5, 4)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    return tmp_path, x


def _reference(path, x):
    eng = rt.Runtime(backend="numpy").deserialize_cuda_engine((path / "m.plan").read_bytes())
    return eng.create_execution_context().execute({"x": x})["y"]


def _main(argv, capsys):
    rc = cli.main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# -- inspect -----------------------------------------------------------------------------

def test_inspect_a_plan_shows_layers_precisions_kernels_memory_and_full_names(files, capsys):
    path, _ = files
    rc, out, _ = _main(["inspect", str(path / "m.plan")], capsys)
    assert rc == 0
    assert "view: plan: the optimised network as built (after the builder's passes)" in out
    assert LONG in out and "SOFTMAX" in out and "numpy.reference" in out
    assert "input  x: [-1, 4]" in out and "activation bytes" in out and "weight bytes 48" in out


def test_inspect_a_network_says_which_view_it_shows(files, capsys):
    path, _ = files
    _, source, _ = _main(["inspect", str(path / "m.network")], capsys)
    assert "before the builder's passes" in source and "CONSTANT" in source
    _, built, _ = _main(["inspect", "--built", "--precision", "fp16", str(path / "m.network")],
                        capsys)
    assert "after the builder's passes at FP16" in built and "HALF" in built


def test_inspect_json(files, capsys):
    path, _ = files
    rc, out, _ = _main(["inspect", "--json", str(path / "m.plan")], capsys)
    info = json.loads(out)
    (engine,) = info["engines"]
    assert rc == 0 and info["kind"] == "plan" and engine["outputs"] == {"y": [-1, 4 - 1]}
    assert [li["name"] for li in engine["layers"]][-1] == LONG
    assert engine["memory"]["plan_bytes"] == os.path.getsize(path / "m.plan")


def test_inspect_built_int8_is_refused_with_the_reason(files, capsys):
    path, _ = files
    rc, _, err = _main(["inspect", "--built", "--precision", "int8", str(path / "m.network")],
                       capsys)
    assert rc == 1 and "expected fp32 or fp16" in err and err.count("\n") == 1


# -- run and bench -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["m.plan", "m.network"])
def test_run_prints_shapes_and_values_and_saves_outputs(files, capsys, kind):
    path, x = files
    rc, out, _ = _main(["run", str(path / kind), "--inputs", str(path / "x.npz"), "-o",
                        str(path / "y.npz")], capsys)
    assert rc == 0 and "y: shape [5, 3] float32" in out
    with np.load(path / "y.npz") as saved:
        np.testing.assert_allclose(saved["y"], _reference(path, x), rtol=1e-6)
    assert abs(_reference(path, x)).max() > 0.01          # not a vacuous comparison


def test_bench_reports_percentiles_throughput_and_a_profile(files, capsys):
    path, _ = files
    rc, out, _ = _main(["bench", str(path / "m.plan"), "--inputs", str(path / "x.npz"),
                        "--iterations", "7", "--warmup", "0", "--batch", "8", "--profile",
                        "--json"], capsys)
    res = json.loads(out)
    lat = res["latency"]
    assert rc == 0 and lat["iterations"] == 7 and lat["batch"] == 8     # 5 samples repeated
    assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
    assert lat["throughput_per_s"] == pytest.approx(8e3 / lat["median_ms"])
    assert LONG in {row["layer"] for row in res["profile"]}
    _, text, _ = _main(["bench", str(path / "m.plan"), "--inputs", str(path / "x.npz"),
                        "--iterations", "2", "--profile"], capsys)
    assert "median" in text and "p99" in text and "samples/s" in text and LONG in text


def test_latency_stats_on_known_times():
    from workflows.cli_run import latency_stats

    st = latency_stats([0.004, 0.001, 0.003, 0.002, 0.005], batch=10)
    assert st["min_ms"] == pytest.approx(1) and st["median_ms"] == pytest.approx(3)
    assert st["p90_ms"] == pytest.approx(4.6) and st["throughput_per_s"] == pytest.approx(10 / 3e-3)


# -- errors: one line on stderr, exit 1; usage errors exit 2 -----------------------------

def _bad_inputs(path, kind):
    bad = path / "bad.npz"
    if kind == "names":
        np.savez(bad, a=np.ones((2, 4), "f4"), b=np.ones((2, 4), "f4"))
    elif kind == "dtype":
        np.savez(bad, x=np.ones((2, 4), np.complex64))
    elif kind == "shape":
        np.savez(bad, x=np.ones((2, 5), "f4"))
    elif kind == "empty":
        np.savez(bad)
    elif kind == "npy":
        np.save(path / "bad.npy", np.ones((2, 4), "f4"))
        os.replace(path / "bad.npy", bad)
    elif kind == "garbage":
        bad.write_bytes(b"not a zip file at all")
    return bad


@pytest.mark.parametrize("kind, message", [
    ("names", "arrays ['a', 'b']; expected one array per model input, named ['x']"),
    ("dtype", "dtype complex64; expected dtype float32"),
    ("shape", "shape [2, 5]; expected shape [-1, 4]"),
    ("empty", "an .npz holding no array"),
    ("npy", "a single .npy array"),
    ("garbage", "not a readable .npz"),
])
def test_bad_inputs_are_one_line_errors(files, capsys, kind, message):
    path, _ = files
    rc, out, err = _main(["run", str(path / "m.plan"), "--inputs",
                          str(_bad_inputs(path, kind))], capsys)
    assert rc == 1 and out == "" and message in err and err.count("\n") == 1
    assert err.startswith("cupyrt run: error: --inputs ")


@pytest.mark.parametrize("argv, message", [
    (["run", "{p}/missing.plan", "--inputs", "{p}/x.npz"], "MODEL '{p}/missing.plan': no such"),
    (["run", "{p}/m.plan", "--inputs", "{p}/missing.npz"], "--inputs '{p}/missing.npz': no such"),
    (["run", "{p}/x.npz", "--inputs", "{p}/x.npz"], "a NumPy file (.npz/.npy: data, not a model)"),
    (["run", "{p}", "--inputs", "{p}/x.npz"], "a directory without saved_model.pb"),
    (["run", "{p}/m.plan", "--inputs", "{p}/x.npz", "--outputs", "z"], "['z'] not outputs"),
    (["run", "{p}/m.plan", "--inputs", "{p}/x.npz", "--backend", "tensorflow"],
     "has no TensorFlow graph"),
    (["run", "{p}/m.network", "--inputs", "{p}/x.npz", "--precision", "int8"],
     "an INT8 engine needs calibration"),
    (["bench", "{p}/m.plan", "--inputs", "{p}/x.npz", "--warmup", "-1"], "--warmup: -1"),
    (["bench", "{p}/m.plan", "--inputs", "{p}/x.npz", "--compare"], "(no TensorFlow graph)"),
    (["debug-precision", "{p}/m.plan", "--calib-data", "{p}/x.npz"], "a plan (already built)"),
    (["inspect", "{p}/damaged.plan"], "a damaged cupyrt file"),
])
def test_every_mistake_is_one_line_naming_what_and_where(files, capsys, argv, message):
    path, _ = files
    data = bytearray((path / "m.plan").read_bytes())
    data[-1] ^= 0xFF
    (path / "damaged.plan").write_bytes(bytes(data))
    rc, _, err = _main([a.format(p=path) for a in argv], capsys)
    assert rc == 1 and message.format(p=path) in err and err.count("\n") == 1, err


def test_verbose_shows_the_traceback(files):
    path, _ = files
    with pytest.raises(cli.CliError, match="no such file"):
        cli.main(["-v", "run", str(path / "missing.plan"), "--inputs", str(path / "x.npz")])


@pytest.mark.parametrize("argv", [[], ["inspect"], ["bench", "m.plan"], ["run", "m", "--inputs",
                                   "x", "--backend", "gpu"], ["bench", "m", "--inputs", "x",
                                   "--iterations", "0"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2 and "usage: cupyrt" in capsys.readouterr().err


def test_every_option_has_help_text():
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    missing = [f"{name} {a.option_strings or a.dest}" for name, sp in subs.items()
               for a in sp._actions if not a.help]
    assert not missing


def test_help_is_fast_and_imports_no_tensorflow():
    code = ("import sys\nfrom workflows import cli\ntry:\n    cli.main(['--help'])\n"
            "except SystemExit:\n    pass\nfor c in ['convert', 'run', 'bench', 'inspect']:\n"
            "    try:\n        cli.main([c, '--help'])\n    except SystemExit:\n        pass\n"
            "print('TF-IMPORTED' if 'tensorflow' in sys.modules else 'NO-TF')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.rstrip().endswith("NO-TF") and out.returncode == 0
    assert "--calib-data" in out.stdout and "--profile" in out.stdout
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "workflows.cli", "--help"], capture_output=True,
                         text=True, timeout=60)
    seconds = time.perf_counter() - t0
    assert out.returncode == 0 and "cupyrt convert MODEL -o OUT" in out.stdout
    assert out.stderr == ""                       # no TensorFlow log lines
    assert seconds < 2.5, f"--help took {seconds:.2f} s (bar: 1 s; 2.5 s for a loaded host)"


# -- progress ------------------------------------------------------------------------------

class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_writes_plain_lines_when_not_a_terminal():
    s = io.StringIO()
    with Progress("calibrating", 8, s) as bar:
        for i in range(8):
            bar.update(detail=f"batch {i}")
    lines = s.getvalue().splitlines()
    assert lines[0] == "calibrating: 0/8" and "\r" not in s.getvalue()
    assert lines[-1].startswith("calibrating: 8/8 done in")
    assert 3 <= len(lines) <= 6                    # a few lines, not one per step


def test_progress_draws_a_bar_on_a_terminal(monkeypatch):
    import workflows.progress as progress
    monkeypatch.setattr(progress, "_tqdm", lambda: None)       # our own bar
    s = _Tty()
    with Progress("building", 4, s) as bar:
        bar.update(2, detail="conv1")
    text = s.getvalue()
    assert "\rbuilding [###############...............] 2/4 conv1" in text
    # closed after 2 of 4 steps: the last frame says so, with the time taken
    assert text.endswith("2/4\x1b[K 0.0 s\n")


def test_progress_uses_tqdm_on_a_terminal_when_installed():
    pytest.importorskip("tqdm")
    s = _Tty()
    with Progress("timing", 3, s) as bar:
        assert bar._tqdm is not None
        bar.update(3)
    assert "3/3" in s.getvalue()


def test_build_progress_shows_engine_builds(files):
    path, _ = files
    s = io.StringIO()
    b = rt.Builder()
    config = b.create_builder_config()
    config.backend = "numpy"
    with build_progress(s, "lines") as listener:
        b.build_serialized_network(rt.deserialize_network((path / "m.network").read_bytes()),
                                   config)
    assert listener.builds == 1
    assert "engine build 1: 4 layers" in s.getvalue() and "after the builder's passes" in s.getvalue()
    from engine import builder
    assert listener not in builder.PROGRESS_LISTENERS


def test_build_progress_draws_per_layer_tactic_timing():
    s = io.StringIO()
    listener = BuildProgress(s, "lines")
    listener("build_start", layers=3)
    listener("stage", name="tactics")
    for i in range(3):
        listener("layer", index=i + 1, total=3, name=f"layer{i}")
    listener("build_end", layers=3, seconds=0.5)
    text = s.getvalue()
    assert "engine build 1: timing tactics: 0/3" in text
    assert "engine build 1: timing tactics: 3/3 done" in text and "0.50 s" in text


def test_batch_of_repeats_samples_and_refuses_scalars():
    from workflows.cli_run import batch_of

    x = np.arange(6, dtype=np.float32).reshape(3, 2) + 1
    np.testing.assert_array_equal(batch_of({"x": x}, 5)["x"][3:], x[:2])
    assert batch_of({"x": x}, 2)["x"].shape == (2, 2) and batch_of({"x": x}, None)["x"] is x
    with pytest.raises(cli.CliError, match="--batch: input 'x' is a scalar"):
        batch_of({"x": np.float32(1)}, 2)


@pytest.mark.parametrize("argv", [["run", "m", "--inputs", "x", "--precision", "int9"],
                                  ["bench", "m", "--inputs", "x", "--batch", "two"]])
def test_bad_option_values_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and ("expected fp32, fp16 or int8" in err
                                    or "'two' is not an integer" in err)
