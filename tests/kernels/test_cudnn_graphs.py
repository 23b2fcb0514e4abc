"""The CPU-side logic of the cuDNN graph tactics (kernels/gpu/cudnn_graphs.py): graph
specs, the plan choice, the cross-process plan cache. The graphs themselves run in
tests/gpu/test_cudnn_gpu.py."""
import json
import math

import pytest

from kernels.gpu import cudnn_graphs as G


def spec(**kw):
    base = dict(n=2, c=16, h=9, w=11, k=32, r=3, s=3, stride=(2, 2), pre_padding=(1, 1),
                post_padding=(1, 1))
    return G.ConvSpec(**{**base, **kw})


def test_output_size_follows_explicit_pre_and_post_padding():
    assert spec().out_hw() == (5, 6)
    assert spec(pre_padding=(0, 1), post_padding=(2, 0), stride=(1, 1)).out_hw() == (9, 10)
    assert spec(dilation=(2, 2), stride=(1, 1)).out_hw() == (7, 9)


@pytest.mark.parametrize("kw, words", [
    (dict(act="GELU_TANH"), "activation GELU_TANH not fused"),
    (dict(out_dtype="int8"), "output dtype int8"),
    (dict(h=1, w=1, r=7, s=7, pre_padding=(0, 0), post_padding=(0, 0)), "empty output"),
    (dict(out_ldc=16), "row pitch 16 channels"),
])
def test_specs_a_graph_cannot_express_say_why(kw, words):
    assert words in spec(**kw).reason()
    with pytest.raises(ValueError, match=words):
        G.ConvGraph(spec(**kw))


def test_supported_specs_have_no_reason_and_distinct_keys():
    a, b = spec(act="CLIP", alpha=0.0, beta=6.0), spec(act="RELU", residual=True)
    assert a.reason() is None and b.reason() is None
    assert a.key("H200") != b.key("H200") and a.key("H200") != a.key("H100")
    assert a.key("H200") == spec(act="CLIP", alpha=0.0, beta=6.0).key("H200")


def test_fastest_plan_skips_failed_ones():
    assert G.fastest({0: 0.31, 1: math.inf, 2: 0.12, 3: 0.2}) == (2, 0.12)
    assert G.fastest({0: math.inf}) == (None, math.inf)
    assert G.fastest({}) == (None, math.inf)


@pytest.mark.skipif(G.available(), reason="the frontend is installed here")
def test_without_the_frontend_the_graphs_are_off_with_the_reason():
    assert "cupyrt[cudnn]" in G.unavailable_reason()
    with pytest.raises(RuntimeError, match="cuDNN frontend is not usable"):
        G.ConvGraph(spec())


def test_plan_choices_persist_merge_and_survive_a_bad_file(tmp_path, caplog):
    path = tmp_path / "plans.json"
    first = G.PlanChoices(str(path))
    first.put("a", 3)
    other = G.PlanChoices(str(path))          # another process wrote meanwhile
    other.put("b", 1)
    first.put("c", 0)                          # merges: b is kept
    assert json.loads(path.read_text())["plans"] == {"a": 3, "b": 1, "c": 0}
    assert G.PlanChoices(str(path)).get("b") == 1
    path.write_text("{not json")
    with caplog.at_level("WARNING"):
        assert G.PlanChoices(str(path)).entries == {}
    assert "unreadable" in caplog.text
    assert G.PlanChoices(None).get("a") is None      # no file: in-process only
