"""benchmarks/models.py fresh_process_build_s without a GPU: the child's command, reading
its figure back, and the failure and timeout paths (None and a warning, never a crash)."""
import logging
import os
import subprocess
import types

from benchmarks import models


def _fake_run(calls, stdout="", stderr="", rc=0, raises=None):
    def run(cmd, **kw):
        calls.append((cmd, kw))
        if raises is not None:
            raise raises
        return types.SimpleNamespace(stdout=stdout, stderr=stderr, returncode=rc)
    return run


def test_the_child_rebuilds_with_the_same_cache_and_its_seconds_come_back(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", _fake_run(calls, stdout="noise\nFRESH_BUILD_S 2.75\n"))
    assert models.fresh_process_build_s("resnet50", "int8", 256, "/x/resnet50_int8.cache") == 2.75
    (cmd, kw), = calls
    code = cmd[-1]
    assert "models.build('resnet50', models.torch_model('resnet50'), 'int8', 256, '/x/resnet50_int8.cache')" \
        in code
    assert kw["timeout"] == models.FRESH_BUILD_TIMEOUT_S <= 300 and kw["capture_output"]
    assert os.path.isdir(os.path.join(kw["cwd"], "benchmarks"))         # run from the repo root


def test_a_failing_or_hanging_child_gives_none_and_says_why(monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(subprocess, "run", _fake_run(calls, stderr="Traceback ... BuildError: no CUDA", rc=1))
    with caplog.at_level(logging.WARNING, logger="benchmarks"):
        assert models.fresh_process_build_s("resnet50", "fp16", 256, "c") is None
    assert "failed (exit 1)" in caplog.text and "BuildError: no CUDA" in caplog.text
    monkeypatch.setattr(subprocess, "run", _fake_run(calls, raises=subprocess.TimeoutExpired("python", 240)))
    with caplog.at_level(logging.WARNING, logger="benchmarks"):
        assert models.fresh_process_build_s("resnet50", "fp16", 256, "c") is None
    assert "over 240 s" in caplog.text


def test_profiled_child_writes_its_cprofile_where_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", _fake_run(calls, stdout="FRESH_BUILD_S 3.2\n"))
    assert models.fresh_process_build_s("resnet50", "fp16", 256, "c", profile_path="/o/p.txt") == 3.2
    code = calls[0][0][-1]
    assert "prof.enable()" in code and "models.write_build_profile(prof, '/o/p.txt', compiles=trace.records)" in code
    assert code.index("prof.enable()") < code.index("models.build(") < code.index("prof.disable()")
    models.fresh_process_build_s("resnet50", "fp16", 256, "c")
    assert "cProfile" not in calls[1][0][-1]                       # not asked: no profiler


def test_profiled_child_code_runs_and_writes_the_profile(tmp_path, monkeypatch, capsys):
    """The child's code itself, run here with the build replaced: it must be valid Python
    that leaves the profile file and prints the figure."""
    calls = []
    monkeypatch.setattr(subprocess, "run", _fake_run(calls, stdout="FRESH_BUILD_S 1.0\n"))
    path = str(tmp_path / "fresh.txt")
    models.fresh_process_build_s("resnet50", "fp16", 8, "c", profile_path=path)
    code = calls[0][0][-1]
    monkeypatch.setattr(models, "torch_model", lambda name: None)
    monkeypatch.setattr(models, "build", lambda *a: (b"", 0.5, 3))
    exec(compile(code, "<child>", "exec"), {})
    assert capsys.readouterr().out.splitlines()[-1] == "FRESH_BUILD_S 0.5"
    assert "cumulative" in open(path).read()


def test_precision_timing_summary_counts_and_ranks_the_closest_moves():
    measured = [
        {"layer": "a", "from": "INT8", "to": "HALF", "ms": 0.2, "alt_ms": 0.3, "boundary_ms": 0.02, "moved": False},
        {"layer": "b", "from": "INT8", "to": "HALF", "ms": 0.1, "alt_ms": 0.08, "boundary_ms": 0.0, "moved": True},
        {"layer": "c", "from": "INT8", "to": "HALF", "ms": 0.1, "alt_ms": None, "boundary_ms": 0.0, "moved": False},
        {"layer": "d", "from": "HALF", "to": "FLOAT", "ms": 0.05, "alt_ms": 0.2, "boundary_ms": None, "moved": False},
        {"layer": "e", "from": "INT8", "to": "HALF", "ms": None, "alt_ms": 0.1, "boundary_ms": 0.0, "moved": False,
         "s": 0.25, "alt_s": 0.5},
    ]
    measured[0].update(s=0.125, alt_s=1.0)              # plans before session 18 have no seconds
    got = models.precision_timing_summary(measured, closest=2)
    assert got == {"INT8->HALF": {"timed": 2, "not_timed": 2, "moved": 1, "closest": [["b", 0.8], ["a", 1.6]],
                                  "current_s": 0.375, "alternative_s": 1.5},
                   "HALF->FLOAT": {"timed": 1, "not_timed": 0, "moved": 0, "closest": [["d", 4.0]],
                                   "current_s": 0.0, "alternative_s": 0.0}}
    assert models.precision_timing_summary([]) == {}
