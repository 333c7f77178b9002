"""Benchmarks: where their JSON goes and the verdict they print, on a tiny run (seconds, not a measurement)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    yield lambda name: importlib.import_module(name)
    for name in (
        "_common",
        "train_throughput",
        "zoo_throughput",
        "image_loader",
        "onnx_inference",
        "speedrun",
    ):
        sys.modules.pop(name, None)


def test_a_trial_run_never_replaces_the_committed_results(bench, tmp_path: Path) -> None:
    common = bench("_common")
    assert common.results_path("x", True, tmp_path) == tmp_path / "x.json"
    first = common.results_path("x", False, tmp_path)
    assert first.parent == tmp_path and first.name.startswith("x-") and first.name.endswith("Z.json")
    first.write_text("{}")
    assert common.results_path("x", False, tmp_path) != first  # a second run in the same second


def test_train_throughput_prints_its_verdict_and_writes_a_new_file(
    bench, tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    throughput = bench("train_throughput")
    committed = (BENCHMARKS / "results" / "train_throughput.json").read_bytes()
    argv = [
        "--steps",
        "1",
        "--rounds",
        "1",
        "--models",
        "lecture-simple",
        "--data-dir",
        str(tiny_dataset_dir),
    ]
    assert throughput.main([*argv, "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "verdict: lecture-simple, cnnlab default vs the lectures' loop: target >= 2.00x, measured " in out
    (written,) = tmp_path.glob("train_throughput-*Z.json")
    result = json.loads(written.read_text())
    assert {"cpu_model", "isa", "verdicts", "all_meet_target"} <= set(result)
    assert set(result["isa"]) == {"avx2", "avx512f", "amx_bf16"}
    row = result["rows"][0]
    assert row["bf16_settings"] == {"amp": "bf16", "cpu_shards": 1} and "bf16_speedup" in row
    # one change from the default engine per column: the lectures' batch size, and NCHW
    assert row["batch64_settings"] == {"batch_size": 64} and row["nchw_settings"] == {"channels_last": False}
    assert row["batch64_images_per_s"] > 0 and row["nchw_vs_default"] > 0
    assert row["engine_default"]["batch_size"] == 128 and row["engine_default"]["channels_last"] is True
    assert {"cnnlab", "batch64", "nchw", "shards", "bf16"} <= set(result["columns"])
    assert "batch64" in out and "nchw" in out  # the printed table and its legend name the columns
    assert (BENCHMARKS / "results" / "train_throughput.json").read_bytes() == committed
    assert throughput.parse_args([*argv, "--save"]).save  # --save: results_path(..., True, ...) above


def test_speedrun_measures_a_variant_of_the_net_against_the_marks(
    bench, tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, capsys
) -> None:
    """The whole benchmark on the tiny images (one step per run): the yardstick, the marks' verdicts, the
    JSON and the figure; ``--model-option`` reaches the speedrun's net and not lecture-residual's run."""
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    speedrun = bench("speedrun")
    argv = [
        "--seeds",
        "1",
        "--long-seeds",
        "0",
        "--epochs",
        "1",
        "--long-epochs",
        "1",
        "--default-epochs",
        "1",
    ]
    argv += ["--yardstick-steps", "2", "--precisions", "fp32", "--model-option", "widths=8,8,8,8"]
    assert speedrun.main([*argv, "--data-dir", str(tiny_dataset_dir), "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "verdict: speedrun (fp32): mean test accuracy of 1 seeds: target >= 93.0%, measured " in out
    assert "verdict: speedrun (fp32): mean wall time in lecture-residual epochs of the lectures' loop" in out
    assert "speedrun-long" not in out  # no seeds asked of it
    (written,) = tmp_path.glob("speedrun-*Z.json")
    result = json.loads(written.read_text())
    assert result["recipe"]["model"] == "speedrun-fmnist"
    assert result["recipe"]["model_options"] == {"widths": [8, 8, 8, 8]}
    assert result["summary"]["speedrun"]["seeds"] == 1 and result["default_recipe"]["epochs"] == 1
    assert (tmp_path / result["figure"]).stat().st_size > 0


def test_zoo_throughput_compares_the_engine_with_a_plain_loop(
    bench, tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    zoo = bench("zoo_throughput")
    argv = ["--steps", "1", "--rounds", "1", "--models", "resnet8-cifar", "--batch-size", "4"]
    assert zoo.main([*argv, "--data-dir", str(tiny_dataset_dir), "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "verdict: resnet8-cifar 3x64x64, cnnlab vs a plain loop: target >= 1.00x, measured " in out
    (written,) = tmp_path.glob("zoo_throughput-*Z.json")
    result = json.loads(written.read_text())
    assert result["input"] == "3x64x64" and {"cpu_model", "isa"} <= set(result)
    assert result["rows"][0]["plain_images_per_s"] > 0 and result["rows"][0]["engine_images_per_s"] > 0


def test_image_loader_prints_both_verdicts_and_writes_its_json(bench, tmp_path: Path, capsys) -> None:
    loader = bench("image_loader")
    argv = [
        "--png",
        "30",
        "--jpeg",
        "6",
        "--rounds",
        "1",
        "--batch-size",
        "16",
        "--work-dir",
        str(tmp_path / "w"),
    ]
    assert loader.main([*argv, "--results-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert (
        "verdict: png32, cnnlab loader vs per-sample Pillow DataLoader(num_workers=2): target >= 3.00x" in out
    )
    assert "verdict: jpeg256, " in out
    (written,) = (tmp_path / "r").glob("image_loader-*Z.json")
    rows = json.loads(written.read_text())["rows"]
    assert [r["images"] for r in rows] == [30, 6] and all(r["baseline_images_per_s"] > 0 for r in rows)


def test_onnx_inference_prints_its_verdict_and_writes_a_new_file(bench, tmp_path: Path, capsys) -> None:
    onnx_bench = bench("onnx_inference")
    argv = ["--models", "lecture-simple", "--batches", "1", "3", "--rounds", "1"]
    assert onnx_bench.main([*argv, "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (
        "verdict: lecture-simple batch 3, onnxruntime vs PyTorch images/s: target >= 1.00x, measured " in out
    )
    (written,) = tmp_path.glob("onnx_inference-*Z.json")
    result = json.loads(written.read_text())
    assert [r["batch"] for r in result["rows"]] == [1, 3]
    assert all(r["max_abs_diff"] < 1e-4 and r["onnxruntime_images_per_s"] > 0 for r in result["rows"])
