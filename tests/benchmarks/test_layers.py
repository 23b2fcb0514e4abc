"""benchmarks/layers.py on the CPU: every measurement's command line parses, the layer
tables and presets are consistent, and the NumPy-only parts (attention reference, layer
geometry, totals, timer choice) compute what they claim. The measurements need a GPU."""
import math

import numpy as np
import pytest

from benchmarks import __main__ as runner
from benchmarks import layers
from benchmarks.suites import KERNEL_LAYERS


@pytest.mark.parametrize("name", layers.NAMES)
def test_every_measurement_parses_with_its_defaults_and_the_old_scripts_arguments(name):
    args = layers.parser().parse_args([name])
    assert (args.name, args.batches, args.reps, args.graph) == (name, None, 20, False)
    # the per-layer scripts took --batch N (one) or --batches N M: both spellings reach one list
    assert layers.parser().parse_args([name, "--batch", "256"]).batches == [256]
    assert layers.parser().parse_args([name, "--batches", "1", "32", "--reps", "30"]).batches == [1, 32]


def test_conv_options_parse_and_unknown_names_are_refused(capsys):
    args = layers.parser().parse_args(["kernels", "--batches", "256", "--tactics", "igemm2_128x64x32_w2x2_s4",
                                       "--families", "mma16", "torch16", "--layers", "s3_3x3_256"])
    assert (args.tactics, args.families, args.layers) == (["igemm2_128x64x32_w2x2_s4"], ["mma16", "torch16"],
                                                         ["s3_3x3_256"])
    with pytest.raises(SystemExit) as e:
        layers.parser().parse_args(["bench_kernels"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        layers.parser().parse_args(["int8", "--families", "cudnn"])


def test_tf32_base_family_compiles_from_the_named_source_and_restores_it():
    args = layers.parser().parse_args(["fp32", "--families", "tf32x3", "tf32x3_base",
                                       "--tf32-base", "conv_tf32_base.cu"])
    assert args.tf32_base == "conv_tf32_base.cu" and args.families == ["tf32x3", "tf32x3_base"]
    assert layers.parser().parse_args(["fp32"]).tf32_base is None

    class Case:
        tf32_base = None
    assert layers.FAMILIES["tf32x3_base"](Case()) == {}        # without --tf32-base: no candidates

    class Module:
        SOURCE = "conv_tf32.cu"
    seen = []
    assert layers.with_source(Module, "conv_tf32_base.cu", lambda: seen.append(Module.SOURCE) or 7) == 7
    assert seen == ["conv_tf32_base.cu"] and Module.SOURCE == "conv_tf32.cu"

    def fails():
        raise RuntimeError("no kernel")
    with pytest.raises(RuntimeError, match="no kernel"):
        layers.with_source(Module, "conv_tf32_base.cu", fails)
    assert Module.SOURCE == "conv_tf32.cu"


def test_runner_hands_layers_its_own_command_line(capsys):
    with pytest.raises(SystemExit) as e:
        runner.main(["layers", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m benchmarks layers") and "int8_stem" in out


def test_layer_tables_match_the_networks():
    # ResNet-50 v1.5: 53 convolutions; MobileNetV2: 17 depthwise and 34 pointwise (19 shapes)
    assert sum(r[-1] for r in layers.RESNET50) == 53
    assert sum(r[-1] for r in layers.MOBILENET_DW) == 17
    assert (sum(r[-1] for r in layers.MOBILENET_PW), len(layers.MOBILENET_PW)) == (34, 19)
    names = {r[0] for r in layers.RESNET50 + [layers.FC] + layers.MOBILENET_PW}
    assert set(KERNEL_LAYERS) <= names                # the kernels suite reads this table
    for preset in layers.PRESETS.values():
        assert set(preset["families"]) <= set(layers.FAMILIES)
        assert set(preset.get("layers", ())) <= names


def test_geometry_gives_padding_output_size_and_true_macs():
    stem = layers.RESNET50[0]
    assert layers.geometry(stem, 2) == (3, 112, 2 * 112 * 112 * 64 * 7 * 7 * 3)
    s2 = next(r for r in layers.RESNET50 if r[0] == "s2_3x3s2_128")
    pad, p, macs = layers.geometry(s2, 5)
    assert (pad, p) == (1, 28) and macs == 5 * 28 * 28 * 128 * 9 * 128
    assert layers.geometry(layers.FC, 256) == (0, 1, 256 * 2048 * 1000)


def test_attention_reference_matches_a_loop_over_heads_and_rows():
    rng = np.random.default_rng(3)
    n, s, heads, d = 2, 5, 3, 4
    q, k, v = (rng.standard_normal((n, s, heads * d)).astype(np.float16) for _ in range(3))
    got = layers.attention_reference(q, k, v, 0.7, heads=heads)
    want = np.zeros((n, s, heads * d))
    for b in range(n):
        for h in range(heads):
            cols = slice(h * d, (h + 1) * d)
            for i in range(s):
                logits = [0.7 * float(np.dot(q[b, i, cols].astype(np.float64), k[b, j, cols])) for j in range(s)]
                w = [math.exp(x - max(logits)) for x in logits]
                want[b, i, cols] = sum(wj / sum(w) * v[b, j, cols].astype(np.float64) for j, wj in enumerate(w))
    assert np.abs(got).min() > 0
    assert np.allclose(got, want, rtol=1e-12, atol=1e-12)


def _row(layer, batch, count, **families):
    ms = {f: dict(v) for f, v in families.items()}
    return {"layer": layer, "batch": batch, "count": count, "macs": 2e9, "ms": ms,
            "best": {f: min(v, key=v.get) for f, v in ms.items()}}


def test_totals_sum_the_best_per_family_times_count_and_fill_a_missing_family():
    rows = [_row("a_1x1", 256, 3, mma16={"t1": 2.0, "t2": 1.5}, cublas16={"cublas_1x1": 1.0},
                 torch16={"conv2d": 0.5}, linear16={"linear": 0.25}),
            _row("b_3x3", 256, 2, mma16={"t1": 4.0, "t2": float("inf")}, torch16={"conv2d": 3.0}),
            _row("a_1x1", 1, 1, mma16={"t1": 0.1})]
    t = layers.conv_totals(rows)
    # b_3x3 has no cuBLAS candidate: the best of ours (mma16, 4.0) stands in; no linear: the fastest peer
    assert t[256] == pytest.approx({"mma16": 1.5 * 3 + 4.0 * 2, "cublas16": 1.0 * 3 + 4.0 * 2,
                                    "torch16": 0.5 * 3 + 3.0 * 2, "linear16": 0.25 * 3 + 3.0 * 2,
                                    "ours": 1.0 * 3 + 4.0 * 2})
    assert t[1] == pytest.approx({"mma16": 0.1, "ours": 0.1})
    text = layers.conv_table(rows)
    assert "total x count, ms: mma16 12.500, cublas16 11.000" in text
    assert "b_3x3" in text and "mma16:t1" in text


def test_a_bound_is_neither_ours_nor_a_peer_and_expand_rows_print_bandwidth():
    # the DRAM floor (dram8) faster than every kernel must not become "ours"; rows with
    # bytes print GB/s (FP16 families at two bytes an element), not TFLOP/s
    rows = [_row("s1_1x1_64_256", 256, 4, dram8={"stream": 0.2}, pw8={"p": 0.4}, cudnn8={"c": 0.5},
                 pw16={"h": 1.0}, torch16={"conv2d": 0.8})]
    rows[0]["bytes"] = 4.0e8
    t = layers.conv_totals(rows)
    assert t[256] == pytest.approx({"dram8": 0.8, "pw8": 1.6, "cudnn8": 2.0, "pw16": 4.0,
                                    "torch16": 3.2, "ours": 1.6})
    text = layers.conv_table(rows)
    assert "GB/s of x, residual and output" in text and "TFLOP/s" not in text
    assert "0.2000 (2000)" in text and "0.4000 (1000)" in text and "1.0000 ( 800)" in text
    assert "dram8:" not in text and "pw8:p" in text


def test_time_all_scores_a_failing_candidate_infinite_and_keeps_timing_the_rest():
    def boom():
        raise RuntimeError("no kernel for this shape")
    ms, best = layers.time_all({"fails": boom, "slow": lambda: 2.0, "fast": lambda: 0.5}, lambda f: f())
    assert ms == {"fails": float("inf"), "slow": 2.0, "fast": 0.5} and best == "fast"


def test_timer_replays_a_graph_at_small_batch_or_when_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(layers, "graph_ms", lambda fn, lib, n, reps: calls.append(("graph", n, reps)) or 1.0)
    monkeypatch.setattr(layers, "median_ms", lambda fn, lib, reps, warmup: calls.append(("events", reps)) or 2.0)
    args = layers.parser().parse_args(["kernels", "--reps", "30", "--calls", "7"])
    assert layers.timer(args, 256)(None, None) == 2.0
    assert layers.timer(args, 1)(None, None) == 1.0
    assert layers.timer(args, 256, graph=True)(None, None) == 1.0
    assert calls == [("events", 30), ("graph", 20, 15), ("graph", 7, 15)]
