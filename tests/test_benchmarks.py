"""The benchmark suite's planning and target arithmetic (the timings themselves are never asserted)."""

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

from sasa.profiling import measure

spec = importlib.util.spec_from_file_location("benchmark_run", Path(__file__).parents[1] / "benchmarks" / "speed" / "run.py")
run = importlib.util.module_from_spec(spec)
sys.modules["benchmark_run"] = run  # dataclasses look their module up while the class is built
spec.loader.exec_module(run)


def plan(**overrides):
    fields = dict(quick=False, sizes=None, lengths=None, models=None, modes=None, no_attention=False,
                  attention_only=False, attention_lengths=None)
    fields.update(overrides)
    return run.plan_from(argparse.Namespace(**fields))


def test_full_plan_skips_quadratic_references_and_cpu_flex_training():
    specs = list(run.specs(plan(), repeats=1))
    assert not [s for s in specs if s["name"] in ("roberta_eager", "sasa_sdpa_dense_mask") and s["length"] > 4096]
    assert not [s for s in specs if "flex" in s["name"] and s["mode"] == "train"]
    assert not [s for s in specs if s["size"] == "base" and s["length"] > 4096]
    assert {s["name"] for s in specs if s["size"] == "small"} == set(run.MODELS)
    # SASA rows time the default layout (no layout overrides) with AST links, so every budget is spent
    assert all(s["ast_links_per_token"] and not s.get("layout") for s in specs if s.get("model") == "sasa")


def test_quick_plan_decides_every_target():
    specs = list(run.specs(plan(quick=True), repeats=1))
    rows = [dict(s, median_ms=100.0, first_ms=100.0, peak_increment_mb=float(s["length"]), gflops=50.0) for s in specs]
    checks = run.targets(rows, matmul=200.0)
    assert len(checks) == 12
    memory = next(c for c in checks if c["target"].startswith("train memory"))
    assert memory["value"] == 4.0 and memory["met"]
    throughput = next(c for c in checks if "GFLOP" in c["target"])
    assert throughput["value"] == 0.25 and not throughput["met"]
    attention = next(r for r in rows if r["name"] == "sasa_blocks" and r["size"] == "attention" and r["mode"] == "infer")
    attention["matmul_gflops"] = 80.0  # the yardstick timed beside the kernel decides when the row has one
    throughput = next(c for c in run.targets(rows, matmul=200.0) if "GFLOP" in c["target"])
    assert throughput["value"] == 0.625 and throughput["met"]


def test_targets_compare_the_right_rows():
    base = dict(size="small", length=4096)
    rows = [dict(base, name="sasa_blocks", mode="infer", median_ms=40.0),
            dict(base, name="roberta_sdpa", mode="infer", median_ms=100.0),
            dict(base, name="bigbird", mode="infer", median_ms=80.0),
            dict(base, name="longformer", mode="infer", error="timeout")]
    checks = {c["target"]: c for c in run.targets(rows, matmul=100.0)}
    assert checks["small model 4096 infer: / RoBERTa sdpa"]["value"] == pytest.approx(0.4)
    assert checks["small model 4096 infer: / RoBERTa sdpa"]["met"]
    assert not checks["small model 4096 infer: / bigbird"]["met"]  # 0.5 > 0.4
    assert "small model 4096 infer: / longformer" not in checks  # a failed peer decides nothing


@pytest.mark.parametrize("mode", ["infer", "train"])
@pytest.mark.parametrize("backend", ["sasa_blocks", "sdpa_dense_mask", "dense_sdpa"])
def test_measure_reports_time_memory_and_throughput(mode, backend):
    # The attention row as the suite plans it (its size field included), made small.
    (planned,) = [row for row in run.specs(plan(attention_only=True, attention_lengths=[1024]), repeats=1)
                  if row["name"] == backend and row["mode"] == mode]
    row = measure(dict(planned, length=256, heads=2, head_dim=16, repeats=2, layout=dict(block_size=16),
                       yardstick_size=256))
    assert row["median_ms"] > 0 and row["first_ms"] > 0 and row["peak_increment_mb"] >= 0 and row["gflops"] > 0
    assert row["matmul_gflops"] > 0


def test_attention_only_keeps_the_attention_rows_only():
    rows = list(run.specs(plan(attention_only=True, attention_lengths=[1024, 2048]), repeats=1))
    assert rows and all(row["model"] == "attention" for row in rows)
    assert {row["length"] for row in rows} == {1024, 2048}


def test_no_attention_drops_the_attention_rows_only():
    chosen = plan(no_attention=True, models=["sasa_blocks", "sasa_compiled"], lengths=[1024])
    rows = list(run.specs(chosen, repeats=1))
    assert rows and all(row["model"] == "sasa" for row in rows)
    assert {row["name"] for row in rows} == {"sasa_blocks", "sasa_compiled"}
    assert all(row.get("compile") for row in rows if row["name"] == "sasa_compiled")


@pytest.mark.parametrize("case", [dict(model="sasa"), dict(model="roberta_sdpa"), dict(model="sasa", pairs=True)])
def test_training_throughput_runs_trainer_steps_and_times_their_parts(case):
    """The plumbing of benchmarks/speed/training_throughput.py on a short input (the numbers are not asserted)."""
    spec = importlib.util.spec_from_file_location("training_throughput",
                                                  Path(__file__).parents[1] / "benchmarks" / "speed" / "training_throughput.py")
    throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput)
    row = throughput.run_case(dict(case, size="small", length=64, batch_size=2, warmup=1, steps=2))
    assert row["tokens_per_second"] > 0 and row["seconds"] > 0
    assert 0 < row["collate_share"] < 1
    assert (0 < row["layout_share"] < 1) if case["model"] == "sasa" else row["layout_share"] == 0


def test_dataset_cache_size_measures_both_ways_and_reads_them_back(bpe_dir, tmp_path):
    """The plumbing of benchmarks/speed/dataset_cache_size.py on a few short rows (the sizes themselves: only after <
    before)."""
    import datasets

    from conftest import read_snippet
    from sasa import SasaTokenizer

    spec = importlib.util.spec_from_file_location("dataset_cache_size",
                                                  Path(__file__).parents[1] / "benchmarks" / "speed" / "dataset_cache_size.py")
    cache_size = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache_size)
    tokenizer = SasaTokenizer.from_pretrained(bpe_dir, language="python")
    raw = datasets.Dataset.from_dict({"func": [read_snippet("example.py")] * 4, "target": [0, 1, 0, 1]})

    def tokenize(batch):
        return {**tokenizer(batch["func"], truncation=True, max_length=64), "labels": batch["target"]}

    result = cache_size.measure(raw, tokenize, 64, str(tmp_path), "functions")
    assert result["identical"] and result["rows"] == 4
    assert result["after"]["link_bytes"] < result["before"]["link_bytes"] / 3
    assert 0 < result["after"]["bytes"] < result["before"]["bytes"]
