"""engine.settings: every CUPYRT_* switch parsed in one place, changed on purpose only.

Each test leaves the environment as it found it (monkeypatch, or the module's own
``overridden``), and re-reads the settings after, so other tests see their own values.
"""
import os

import pytest

from engine import settings as S
from engine.errors import BuildError

ENVS = [s.env for s in S.SETTINGS]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Every switch unset for the test; the real environment (and settings) after."""
    for env in ENVS:
        monkeypatch.delenv(env, raising=False)
    yield
    monkeypatch.undo()
    S.reload()


def _switch(field):
    (s,) = [s for s in S.SETTINGS if s.field == field]
    return s


# -- parsing ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, want", [("1", True), ("0", False), ("true", True), ("false", False),
                                        ("TRUE", True), (" yes ", True), ("no", False),
                                        ("on", True), ("off", False)])
def test_flags_read_every_spelling(monkeypatch, text, want):
    monkeypatch.setenv("CUPYRT_CUDA_GRAPHS", text)
    assert S.settings().cuda_graphs is want


def test_numbers_and_paths_are_parsed_to_their_types(monkeypatch, tmp_path):
    monkeypatch.setenv("CUPYRT_CUDNN_MAX_PLANS", "7")
    monkeypatch.setenv("CUPYRT_CUDNN_BUILD_BUDGET_S", "2.5")
    monkeypatch.setenv("CUPYRT_PRECOMPILE_WORKERS", "3")
    monkeypatch.setenv("CUPYRT_TIMING_CACHE", str(tmp_path / "t.cache"))
    current = S.settings()
    assert current.cudnn_max_plans == 7 and isinstance(current.cudnn_max_plans, int)
    assert current.cudnn_build_budget_s == 2.5 and isinstance(current.cudnn_build_budget_s, float)
    assert current.precompile_workers == 3
    assert current.timing_cache == str(tmp_path / "t.cache")


@pytest.mark.parametrize("text, want", [("numpy", "numpy"), ("CuPy", "cupy"), ("auto", "auto"),
                                        (" NumPy ", "numpy")])
def test_backend_is_one_of_its_choices_in_any_case(monkeypatch, text, want):
    monkeypatch.setenv("CUPYRT_BACKEND", text)
    assert S.settings().backend == want


def test_unset_or_empty_variables_take_their_defaults(monkeypatch):
    monkeypatch.setenv("CUPYRT_CUDNN_MAX_PLANS", "")
    monkeypatch.setenv("CUPYRT_REPORT_JSON", "")
    current = S.settings()
    for s in S.SETTINGS:
        assert getattr(current, s.field) == s.default_value(), s.env
    assert current.timing_cache is None and current.report_json is None
    assert 1 <= current.precompile_workers <= 16      # the CPU count, at most 16


@pytest.mark.parametrize("env, text, expected", [
    ("CUPYRT_CUDA_GRAPHS", "maybe", "1/0, true/false"),
    ("CUPYRT_CUDNN_MAX_PLANS", "four", "an integer"),
    ("CUPYRT_CUDNN_MAX_PLANS", "2.5", "an integer"),
    ("CUPYRT_CUDNN_MAX_PLANS", "-1", ">= 0"),
    ("CUPYRT_CUDNN_BUILD_BUDGET_S", "soon", "a number"),
    ("CUPYRT_CUDNN_BUILD_BUDGET_S", "-0.5", ">= 0"),
    ("CUPYRT_BACKEND", "tpu", "valid: auto, numpy, cupy"),
])
def test_a_malformed_value_raises_naming_the_variable(monkeypatch, env, text, expected):
    monkeypatch.setenv(env, text)
    with pytest.raises(BuildError) as info:
        S.settings()
    assert env in str(info.value) and repr(text) in str(info.value) and expected in str(info.value)


def test_from_environ_reads_a_given_mapping_and_leaves_the_process_alone():
    current = S.from_environ({"CUPYRT_DEBUG": "3", "CUPYRT_WGMMA": "0", "UNRELATED": "x"})
    assert current.debug == 3 and current.wgmma is False
    assert S.settings().debug == 0 and S.settings().wgmma is True


# -- reading once, noticing changes ---------------------------------------------------

def test_settings_is_one_object_until_a_variable_changes(monkeypatch):
    first = S.settings()
    assert S.settings() is first                  # parsed once
    monkeypatch.setenv("CUPYRT_DEBUG", "2")
    changed = S.settings()
    assert changed is not first and changed.debug == 2 and first.debug == 0
    monkeypatch.delenv("CUPYRT_DEBUG")
    assert S.settings().debug == 0


def test_settings_are_frozen():
    with pytest.raises(Exception, match="cannot assign"):
        S.settings().debug = 5


# -- configure / overridden ------------------------------------------------------------

def test_configure_sets_the_environment_for_children_and_returns_the_settings():
    current = S.configure(backend="numpy", cudnn_max_plans=2, cuda_graphs=False)
    assert (current.backend, current.cudnn_max_plans, current.cuda_graphs) == ("numpy", 2, False)
    assert os.environ["CUPYRT_BACKEND"] == "numpy"
    assert os.environ["CUPYRT_CUDNN_MAX_PLANS"] == "2" and os.environ["CUPYRT_CUDA_GRAPHS"] == "0"
    assert S.settings() == current
    # the default (or None) removes the variable again
    back = S.configure(backend="auto", cudnn_max_plans=None)
    assert "CUPYRT_BACKEND" not in os.environ and "CUPYRT_CUDNN_MAX_PLANS" not in os.environ
    assert back.backend == "auto" and back.cudnn_max_plans == 4 and back.cuda_graphs is False


def test_configure_checks_values_as_the_environment_would():
    with pytest.raises(BuildError, match="CUPYRT_CUDNN_MAX_PLANS"):
        S.configure(cudnn_max_plans="many")
    with pytest.raises(BuildError, match="CUPYRT_BACKEND"):
        S.configure(debug=1, backend="tpu")
    # nothing of a refused call is left behind: not the bad value, not the good one before it
    assert "CUPYRT_CUDNN_MAX_PLANS" not in os.environ and "CUPYRT_DEBUG" not in os.environ
    assert S.settings().debug == 0


def test_unknown_names_raise_and_list_the_valid_ones():
    with pytest.raises(BuildError, match="unknown setting.*cuda_graph\\b.*valid: backend, cuda_graphs"):
        S.configure(cuda_graph=False)
    with pytest.raises(BuildError, match="unknown setting"):
        with S.overridden(no_such_switch=1):
            pass
    assert all(env not in os.environ for env in ENVS)


def test_overridden_restores_the_environment_and_the_settings(monkeypatch):
    monkeypatch.setenv("CUPYRT_DEBUG", "1")
    before = S.settings()
    with S.overridden(debug=4, wgmma=False, backend="numpy") as inside:
        assert inside.debug == 4 and inside.wgmma is False and inside.backend == "numpy"
        assert S.settings() == inside and os.environ["CUPYRT_WGMMA"] == "0"
    assert os.environ["CUPYRT_DEBUG"] == "1"
    assert "CUPYRT_WGMMA" not in os.environ and "CUPYRT_BACKEND" not in os.environ
    assert S.settings() == before


def test_overridden_restores_after_an_exception_and_a_change_inside():
    with pytest.raises(RuntimeError):
        with S.overridden(cudnn=False):
            os.environ["CUPYRT_PRECOMPILE"] = "0"        # changed by the block itself
            raise RuntimeError("boom")
    assert all(env not in os.environ for env in ENVS)
    assert S.settings().cudnn is True and S.settings().precompile is True


# -- the timing-cache key --------------------------------------------------------------

def test_tactic_key_holds_only_tactic_switches_away_from_their_default(monkeypatch):
    assert S.tactic_key() == {}
    monkeypatch.setenv("CUPYRT_WGMMA", "0")                  # a tactic switch
    monkeypatch.setenv("CUPYRT_CUDNN_MAX_PLANS", "4")        # a tactic switch, at its default
    monkeypatch.setenv("CUPYRT_CUDA_GRAPHS", "0")            # not a tactic switch
    monkeypatch.setenv("CUPYRT_DEBUG", "3")                  # not a tactic switch
    assert S.tactic_key() == {"CUPYRT_WGMMA": False}
    other = S.from_environ({"CUPYRT_CUDNN_BUILD_BUDGET_S": "1.5"})
    assert S.tactic_key(other) == {"CUPYRT_CUDNN_BUILD_BUDGET_S": 1.5}
    assert all(_switch(env[len("CUPYRT_"):].lower()).tactics for env in S.tactic_key(other))


# -- the README table ------------------------------------------------------------------

def test_markdown_table_lists_every_switch_once_with_its_default():
    table = S.markdown_table()
    rows = table.splitlines()[2:]
    assert [r.split("|")[1].strip(" `") for r in rows] == ENVS
    by_env = {r.split("|")[1].strip(" `"): r for r in rows}
    assert "| 1 |" in by_env["CUPYRT_CUDA_GRAPHS"] and "| unset |" in by_env["CUPYRT_TIMING_CACHE"]
    assert "| 4 |" in by_env["CUPYRT_CUDNN_MAX_PLANS"]
    assert "CPU count" in by_env["CUPYRT_PRECOMPILE_WORKERS"]
    for s in S.SETTINGS:
        assert ("Joins the timing-cache key" in by_env[s.env]) is s.tactics, s.env
