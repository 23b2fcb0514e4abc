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
