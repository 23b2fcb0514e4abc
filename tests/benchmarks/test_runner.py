"""The benchmark runner's CPU-side logic: result file names, peer matching, ratios and
the RESULTS.md tables generated from results files (the suites themselves run on a GPU)."""
import json
import time

import pytest

from benchmarks import __main__ as runner
from benchmarks import report
from benchmarks.suites import SUITES

ROWS = [
    {"system": "cupyrt", "model": "resnet50", "precision": "fp16", "batch": 1, "ms": 0.4, "cuda_graph": True,
     "rel_l2_vs_torch_fp32": 3e-3},
    {"system": "torch.eager", "model": "resnet50", "precision": "fp16", "batch": 1, "ms": 3.2},
    {"system": "torch.compile", "model": "resnet50", "precision": "fp16", "batch": 1, "ms": 0.8},
    {"system": "torch.compile.reduce-overhead", "model": "resnet50", "precision": "fp16", "batch": 1, "ms": 0.5},
    {"system": "cupyrt", "model": "resnet50", "precision": "int8", "batch": 256, "ms": 5.0},
    {"system": "torch.compile", "model": "resnet50", "precision": "fp16", "batch": 256, "ms": 10.0},
    {"system": "torch.compile.reduce-overhead", "model": "resnet50", "precision": "fp16", "batch": 256,
     "error": "RuntimeError: boom"},
]


def test_every_issue_suite_is_declared_once():
    assert set(SUITES) == {"resnet50", "mobilenet_v2", "bert", "int8", "kernels", "tf_path"}


def test_result_file_is_named_by_date_card_and_suite(tmp_path):
    assert runner.card_slug("NVIDIA H200") == "h200"
    assert runner.card_slug("NVIDIA H100 80GB HBM3") == "h100"
    assert runner.result_path("r", "2026-12-04", "NVIDIA H200", "int8") == "r/2026-12-04_h200_int8.json"


def test_ratios_use_the_peer_of_the_same_run_batch_and_precision():
    ours = ROWS[0]
    peers = {s: report.peer_for(ROWS, ours, s) for s in runner_systems()}
    assert peers == {"torch.eager": 3.2, "torch.compile": 0.8, "torch.compile.reduce-overhead": 0.5}
    x = report.ratios(ours, peers)
    assert x["eager"] == pytest.approx(8.0) and x["compile"] == pytest.approx(2.0)
    assert x["best_compile"] == pytest.approx(1.25)
    int8 = ROWS[4]                             # INT8 against PyTorch's FP16; a failed peer is absent
    assert report.peer_for(ROWS, int8, "torch.compile") == 10.0
    assert report.peer_for(ROWS, int8, "torch.compile.reduce-overhead") is None
    assert report.ratios(int8, {"torch.compile": 10.0})["compile"] == pytest.approx(2.0)


def runner_systems():
    from benchmarks.models import SYSTEMS
    return SYSTEMS


def test_report_renders_tables_and_writes_between_markers(tmp_path):
    doc = {"suite": "resnet50", "what": "ResNet-50", "card": "NVIDIA H200", "date": "2026-12-04T10:00:00",
           "commit": "abc123", "command": "python -m benchmarks run resnet50", "rows": ROWS,
           "builds": [{"model": "resnet50", "precision": "fp16", "cold_s": 20.0, "cached_s": 1.5,
                       "layers_in": 175, "layers_out": 57, "cudnn_layers": 12}]}
    (tmp_path / "2026-12-04_h200_resnet50.json").write_text(json.dumps(doc))
    text = report.render(report.load_results(str(tmp_path)))
    assert "| resnet50 | fp16 | 1 | 0.400 | 2,500 | 3.200 | 0.800 | 0.500 | 8.00 | 2.00 | 1.25 |" in text
    assert "| resnet50 | int8 | 256 | 5.000 | 51,200 | – | 10.000 | – | – | 2.00 | 2.00 |" in text
    assert "did not run: RuntimeError: boom" in text and "| 175 -> 57 | 12 |" in text
    md = tmp_path / "RESULTS.md"
    md.write_text(f"# R\n{report.BEGIN}\nold\n{report.END}\nhistory\n")
    report.write_into(str(md), "new")
    assert md.read_text() == f"# R\n{report.BEGIN}\nnew\n{report.END}\nhistory\n"
    md.write_text("no markers")
    with pytest.raises(ValueError, match="no generated section"):
        report.write_into(str(md), "new")


def test_short_table_prints_ratios_last_line_per_row():
    table = runner.short_table(ROWS)
    assert table.splitlines()[1].split()[-3:] == ["8.00", "2.00", "1.25"]


def test_plot_draws_one_bar_pair_per_cupyrt_row_with_same_run_ratios(tmp_path):
    doc = {"suite": "resnet50", "card": "NVIDIA H200", "date": "2026-12-04T10:00:00", "rows": ROWS}
    bars = report.plot_bars([doc])
    # b1: best compiled is reduce-overhead 0.5 ms -> 1.25x, eager 3.2 / 0.4 = 8x; INT8 b256: 10 / 5
    assert bars == [("resnet50 fp16 b1", pytest.approx(1.25), pytest.approx(8.0)),
                    ("resnet50 int8 b256", pytest.approx(2.0), None)]
    svg = report.render_plot([doc])
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert svg.count("<rect") == 3 and "1.25x" in svg and "8.00x" in svg and "NVIDIA H200" in svg
    import xml.dom.minidom
    xml.dom.minidom.parseString(svg)                  # well-formed
    assert report.render_plot([]).count("<rect") == 0


def test_report_write_draws_the_plot_beside_the_results(tmp_path, monkeypatch):
    doc = {"suite": "resnet50", "what": "ResNet-50", "card": "NVIDIA H200", "date": "2026-12-04T10:00:00",
           "commit": "abc", "command": "c", "rows": ROWS}
    results = tmp_path / "results"
    results.mkdir()
    (results / "2026-12-04_h200_resnet50.json").write_text(json.dumps(doc))
    (tmp_path / "RESULTS.md").write_text(f"# R\n{report.BEGIN}\nold\n{report.END}\n")
    monkeypatch.setattr(runner, "HERE", str(tmp_path))
    assert runner.main(["report", "--write", "--results", str(results)]) == 0
    assert "| resnet50 | fp16 | 1 |" in (tmp_path / "RESULTS.md").read_text()
    assert (results / report.PLOT_NAME).read_text().count("<rect") == 3


def test_recorded_command_names_a_scratch_output_folder_out(tmp_path):
    scratch = str(tmp_path / "out")
    assert runner.command_line(["run", "resnet50", "--out", scratch, "--reps", "30"], scratch) == \
        "python -m benchmarks run resnet50 --out $OUT --reps 30"
    inside = runner.os.path.join(runner.HERE, "results")
    assert runner.command_line(["run", "int8", "--out", inside], inside).endswith(f"--out {inside}")


def test_ab_settings_are_named_like_the_environment_or_the_field():
    assert runner.parse_settings(["CUPYRT_WGMMA_F16_FAST_EPILOGUE=1", "cudnn=0"]) == {
        "wgmma_f16_fast_epilogue": "1", "cudnn": "0"}
    for bad in ("wgmma", "no_such_switch=1", "=1"):
        with pytest.raises(SystemExit, match="expected NAME=VALUE"):
            runner.parse_settings([bad])


def test_ab_passes_left_out_of_b_must_be_builder_passes():
    runner.check_passes(["qkv_merge", "attention_fusion"])
    with pytest.raises(SystemExit, match="--disable-pass 'no_such_pass'"):
        runner.check_passes(["qkv_merge", "no_such_pass"])


def test_ab_without_anything_to_compare_says_so():
    with pytest.raises(SystemExit, match="nothing to compare"):
        runner.main(["ab", "bert"])


def test_build_profile_lists_the_slow_function_by_cumulative_and_own_time(tmp_path):
    import cProfile
    from benchmarks import models

    def slow_builder_step():
        return sum(i * i for i in range(200_000))
    prof = cProfile.Profile()
    prof.enable()
    slow_builder_step()
    prof.disable()
    path = tmp_path / "build_profile.txt"
    models.write_build_profile(prof, str(path), lines=10)
    text = path.read_text()
    assert text.index("## by cumulative") < text.index("## by tottime")
    assert text.count("slow_builder_step") == 2


def test_compile_trace_records_each_nvrtc_run_with_its_kernel_and_our_caller(tmp_path, monkeypatch):
    """Every NVRTC run while the trace is on: its seconds, the kernel (name expression, else
    the source's first __global__) and the frame of ours that asked; the profile file lists
    them by call site; the compiler is restored after."""
    import cProfile
    import types
    import cupy.cuda.compiler as compiler
    from benchmarks import models
    from kernels.gpu import compile as kc

    def fake_compile(prog, options=(), log_stream=None):
        time.sleep(0.01)
        return b"cubin", None
    monkeypatch.setattr(compiler._NVRTCProgram, "compile", fake_compile)
    templated = types.SimpleNamespace(name_expressions=["conv_x<128,64>"], src="")
    plain = types.SimpleNamespace(name_expressions=None,
                                  src='extern "C" __global__ void __launch_bounds__(128) cupy_add(int n) {}')
    monkeypatch.setattr(kc, "debug_level", lambda: compiler._NVRTCProgram.compile(templated))
    with models.CompileTrace() as trace:
        kc.debug_level()                                 # a call of ours that compiles
        compiler._NVRTCProgram.compile(plain)
    assert compiler._NVRTCProgram.compile is fake_compile
    assert [r[1] for r in trace.records] == ["conv_x<128,64>", "cupy_add"]
    assert all(r[0] >= 0.01 for r in trace.records)
    prof = cProfile.Profile()
    prof.enable()
    sum(range(1000))
    prof.disable()
    path = tmp_path / "p.txt"
    models.write_build_profile(prof, str(path), lines=5, compiles=trace.records)
    text = path.read_text()
    assert "## NVRTC runs in the build's process: 2," in text
    assert text.index("conv_x<128,64>") > text.index("## NVRTC runs")


def test_ab_also_adds_engines_whose_settings_are_checked_before_anything_runs(monkeypatch):
    import sys
    with pytest.raises(SystemExit, match="'bad'"):
        runner.main(["ab", "resnet50", "cudnn_s2d=1", "--also", "stem_kernel=1,cudnn_max_plans=8",
                     "--also", "bad"])
    monkeypatch.setitem(sys.modules, "torch", None)      # valid: the command goes on to the GPU part
    with pytest.raises(ImportError):
        runner.main(["ab", "resnet50", "cudnn_s2d=1", "--also", "stem_kernel=1,cudnn_max_plans=8"])


def test_ab_accuracy_is_rel_l2_and_top1_against_fp32():
    import numpy as np
    from benchmarks import models
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((8, 10)).astype(np.float32)
    got = ref.copy()
    got[0] = -ref[0]                                    # one row's arg-max moves (its values negated)
    acc = models.accuracy_against(got, ref)
    assert acc["rel_l2"] == pytest.approx(2 * np.linalg.norm(ref[0]) / np.linalg.norm(ref), rel=1e-6)
    assert acc["top1_agreement"] == pytest.approx(7 / 8)
    # an encoder's 3-D output: rel L2 only; a flat output of the same size is reshaped to the reference's
    enc = rng.standard_normal((2, 4, 6))
    assert models.accuracy_against((enc * 1.01).ravel(), enc) == {"rel_l2": pytest.approx(0.01),
                                                                   "top1_agreement": None}
    nan = got.copy()
    nan[1, 2] = np.nan                                  # a NaN is never a small error
    assert models.accuracy_against(nan, ref) == {"rel_l2": float("inf"), "top1_agreement": 0.0}


def test_ab_table_shows_every_engine_against_a_fp32_and_the_same_run_torch_compile():
    row = {"batch": 256, "A_ms": 8.0, "B_ms": 6.0, "rel_l2_B_vs_A": 1e-2,
           "variants": {"C": {"ms": 5.0, "rel_l2_vs_A": 2e-2}},
           "vs_fp32": {"A": {"rel_l2": 1.5e-2, "top1_agreement": 0.99},
                       "B": {"rel_l2": 1.8e-2, "top1_agreement": 0.98},
                       "C": {"rel_l2": 2.5e-2, "top1_agreement": 0.97}}}
    plain = runner.ab_table([row]).splitlines()
    assert "compile" not in plain[0] and len(plain) == 4
    assert plain[2].split() == ["256", "B", "6.000", "0.750", "1.00e-02", "1.80e-02", "0.980"]
    timed = runner.ab_table([dict(row, peers={"torch.eager": 15.0, "torch.compile": 10.0})]).splitlines()
    assert timed[3].split()[-2:] == ["10.000", "2.00"]         # C: 10.0 / 5.0
    assert timed[1].split()[-2:] == ["10.000", "1.25"]         # A: 10.0 / 8.0
    failed = runner.ab_table([dict(row, peers={"torch.eager": 15.0, "torch.compile": None})]).splitlines()
    assert failed[1].split()[-2:] == ["-", "-"]                # a peer that failed has no ratio


def test_benchmarks_folder_holds_at_most_a_dozen_files():
    """Issue 14: one runner, no one-off scripts; results/ holds the suite files."""
    from pathlib import Path
    root = Path(runner.HERE)
    files = [p.name for p in root.iterdir() if p.is_file() and p.name != ".gitignore"]
    assert len(files) <= 12, sorted(files)


def _two_conv_engine(scale2=1.0):
    import numpy as np

    import engine as rt
    rng = np.random.default_rng(2)
    b = rt.Builder()
    net = b.create_network()
    x = net.add_input("input", rt.float32, (-1, 4, 6, 6))
    c1 = net.add_convolution_nd(x, 8, (3, 3), kernel=rng.standard_normal((8, 4, 3, 3)).astype(np.float32))
    c1.get_output(0).name = "c1"
    r = net.add_activation(c1.get_output(0), rt.ActivationType.RELU).get_output(0)
    r.name = "r1"
    w2 = rng.standard_normal((6, 8, 1, 1)).astype(np.float32) * np.float32(scale2)
    c2 = net.add_convolution_nd(r, 6, (1, 1), kernel=w2)
    c2.get_output(0).name = "c2"
    net.mark_output(c2.get_output(0))
    cfg = b.create_builder_config()
    cfg.backend = "numpy"
    return rt.Runtime(backend="numpy").deserialize_cuda_engine(b.build_serialized_network(net, cfg))


def test_ab_layerwise_names_where_a_variant_parts_from_a():
    import numpy as np
    from benchmarks import models
    x = np.random.default_rng(3).standard_normal((2, 4, 6, 6)).astype(np.float32)
    table = models.layerwise_rows({"A": (_two_conv_engine(), {}), "B": (_two_conv_engine(), {"debug": 0}),
                                   "C": (_two_conv_engine(scale2=1.01), {})}, "input", x, worst=2)
    assert set(table) == {"B", "C"}
    assert table["B"]["first_over_1e-3"] is None and table["B"]["compared"] >= 2
    first = table["C"]["first_over_1e-3"]
    assert first["tensor"] == "c2" and first["rel_l2"] == pytest.approx(0.01, rel=1e-3)
    assert [r["tensor"] for r in table["C"]["worst"]][0] == "c2" and len(table["C"]["worst"]) == 2
    assert table["B"]["kernels"] == {}                         # the same kernels ran (NumPy's)


def test_report_layers_sets_each_batch_against_the_largest(tmp_path, capsys):
    doc = {"card": "H", "commit": "abc", "builds": [
        {"model": "resnet50", "precision": "int8",
         # JSON keys are strings; schedule order kept
         "layer_ms": {"256": {"stem": 0.5, "conv_a": 0.2, "fc": 0.01},
                      "32": {"stem": 0.05, "conv_a": 0.03, "fc": 0.005}}},
        {"model": "bert", "precision": "fp16"}]}            # no profile: left out
    text = report.render_layers(doc)
    # b256 0.71; b32 x 8: 0.68; the better per layer: 0.4 (stem) + 0.2 + 0.01
    assert "b256: 0.710 ms; b32 x 8: 0.680 ms; the better per layer: 0.610 ms" in text
    # prefixes: none 0.71; stem 0.4+0.2+0.01 = 0.61; stem+conv_a 0.4+0.24+0.01 = 0.65; all 0.68
    assert "the first 1 (batch_tiles=8 batch_tile_layers=1), 0.610 ms" in text
    assert report.best_prefix({"a": 1.0, "b": 1.0}, {"a": 0.2, "b": 0.3}, 4) == (1, pytest.approx(1.8))
    assert report.best_prefix({"a": 1.0}, {"a": 0.3}, 4) == (0, pytest.approx(1.0))
    assert report.best_prefix({"a": 1.0, "b": 2.0}, {"b": 0.1}, 4) == (0, pytest.approx(3.0))  # no "a": stop
    rows = [line.split() for line in text.splitlines() if line.strip().startswith(("stem", "conv_a", "fc"))]
    assert [r[0] for r in rows] == ["stem", "conv_a", "fc"]
    assert [float(r[2]) for r in rows] == [0.4, 0.24, 0.04]
    assert report.render_layers({"builds": [{"model": "m"}]}).startswith("no per-layer times")
    path = tmp_path / "int8.json"
    path.write_text(json.dumps(doc))
    assert runner.main(["report", "--layers", str(path)]) == 0
    assert "the better per layer: 0.610 ms" in capsys.readouterr().out


def test_layer_profile_file_lists_every_layer_slowest_first_then_in_order_with_its_kernel(tmp_path):
    import numpy as np

    import engine as rt
    from benchmarks import models
    b = rt.Builder()
    net = b.create_network()
    t = net.add_input("x", rt.float32, (-1, 8))
    for kind in (rt.ActivationType.SIGMOID, rt.ActivationType.TANH, rt.ActivationType.RELU):
        t = net.add_activation(t, kind).get_output(0)
    net.mark_output(t)
    cfg = b.create_builder_config()
    cfg.disable_pass("pointwise_fusion")
    engine = b.build_engine(net, cfg)
    path = tmp_path / "profile.txt"
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    ms, gaps = models.write_layer_profile(engine, "x", x, str(path), runs=2)
    names = [info.name for info in engine.layers]
    assert set(ms) == set(names) and all(v > 0 for v in ms.values()) and gaps is False
    text = path.read_text()
    ordered = text.split("in layer order")[1].splitlines()[1:]
    assert [line.split()[0] for line in ordered] == names
    assert all(line.split()[2] == "numpy.reference" for line in ordered)
    assert f"sum {sum(ms.values()):.3f} ms" in text
    slowest = text.splitlines()[1].split()[0]
    assert ms[slowest] == max(ms.values())


def test_kernel_rows_keep_device_events_per_call_most_time_first():
    from types import SimpleNamespace as E

    from benchmarks import models
    events = [E(key="cudaLaunchKernel", count=40, self_device_time_total=0),     # host side
              E(key="conv_stem_f16<...>", count=10, self_device_time_total=3890.0),
              E(key="sm90_xmma_fprop_imma", count=520, self_device_time_total=41000.0),
              E(key="pool_int8", count=10, self_cuda_time_total=1700.0)]      # older torch's name
    rows = models.kernel_rows(events, calls=10)
    assert rows == [("sm90_xmma_fprop_imma", 52.0, 4100.0), ("conv_stem_f16<...>", 1.0, 389.0),
                    ("pool_int8", 1.0, 170.0)]


def test_runners_up_name_the_chosen_time_and_the_next_fastest_that_ran():
    from benchmarks import models
    timed = {"conv.cudnn_i8": 0.377, "conv.pwi8_a": 0.41, "conv.wgi8_b": 0.52, "conv.i8_c": None,
             "conv.i8_d": 0.9, "conv.i8_e": 1.2}
    assert models.runners_up(timed, "conv.cudnn_i8") == \
        "  (build: chosen 0.3770 ms; then conv.pwi8_a 0.4100, conv.wgi8_b 0.5200, conv.i8_d 0.9000)"
    assert models.runners_up({"x": None}, "y") == ""
    assert models.runners_up({"y": 0.5}, "y") == "  (build: chosen 0.5000 ms)"
    assert models.runners_up({"x": 0.2}, "y") == "  (build: chosen untimed; then x 0.2000)"


def test_cudnn_layer_count_takes_every_cudnn_tactic_from_the_kernel_counts():
    build = {"kernels": {"conv.cudnn_i8": 37, "conv.cudnn": 2, "matmul.cudnn": 3, "conv.cudnn_s2d": 1,
                         "conv.wgi8_128x64_s4": 3, "pool.int8_nhwc": 1}, "cudnn_layers": 0}
    assert report.cudnn_layers(build) == 43
    assert report.cudnn_layers({"cudnn_layers": 5}) == 5          # older files: as recorded
    assert report.cudnn_layers({}) == "–"
    assert [report.is_cudnn(t) for t in ("conv.cudnn_i8", "matmul.cudnn", "conv.i8_64x64", "cudnn")] == [
        True, True, False, True]


def test_the_recorded_commit_says_when_the_files_are_not_that_commit(monkeypatch):
    """The device machine's copy kept an older HEAD than its files (session 20's suite files
    said 2c32eb9): a tree that differs from HEAD is recorded as such, BENCH_COMMIT wins."""
    import subprocess
    out = {"rev-parse": "abc1234\n", "status": ""}

    def run(cmd, **kw):
        if out.get("fail"):
            raise OSError("no git")
        return subprocess.CompletedProcess(cmd, 0, stdout=out[cmd[1]], stderr="")
    monkeypatch.setattr(runner.subprocess, "run", run)
    monkeypatch.delenv("BENCH_COMMIT", raising=False)
    assert runner.commit() == "abc1234"
    out["status"] = " M engine/execution.py\n"
    assert runner.commit() == "abc1234+changes (set BENCH_COMMIT)"
    monkeypatch.setenv("BENCH_COMMIT", "def5678")
    assert runner.commit() == "def5678"
    monkeypatch.delenv("BENCH_COMMIT")
    out["fail"] = True
    assert runner.commit() == "unknown (set BENCH_COMMIT)"
