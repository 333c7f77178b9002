"""``cnnlab speedrun``: its net and recipe, flip evaluation, time to each mark, its table and figure."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.cli import main
from cnnlab.errors import UsageError
from cnnlab.experiments.speedrun import speedrun_config, time_to_marks
from cnnlab.models import create_model, model_info
from cnnlab.train.config import TrainConfig
from cnnlab.train.engine import evaluate
from cnnlab.train.recipes import SPEEDRUNS, recipe


def test_the_speedrun_net_is_registered_with_its_own_recipe_and_the_recipe_is_data() -> None:
    run = SPEEDRUNS["fashion-mnist"]
    assert model_info(run.model).recipe == run.recipe == "speedrun"
    settings = recipe("speedrun").settings()
    assert (settings["eval_tta"], settings["test_tta"]) == ("center", "flip-shift")
    assert settings["flip"] and settings["label_smoothing"] > 0
    cfg = speedrun_config("fashion-mnist", epochs=2)
    assert (cfg.model, cfg.recipe, cfg.epochs) == ("speedrun-fmnist", "speedrun", 2)
    assert (cfg.eval_tta, cfg.test_tta) == ("center", "flip-shift")
    assert "epochs" not in cfg.recipe_fields  # given, so not the recipe's
    model = create_model("speedrun-fmnist", num_classes=3, in_chans=3)
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 3)
    with pytest.raises(UsageError, match="widths must be 4 positive whole numbers"):
        create_model("speedrun-fmnist", widths=(8, 8))
    with pytest.raises(UsageError, match="unknown speedrun dataset 'cifar10'"):
        speedrun_config("cifar10")


class LeftHalf(nn.Module):
    """Logits from the left half of the image alone: its mirror image gives other logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = x[..., : x.shape[-1] // 2].flatten(1)
        return torch.stack([left.sum(1), -left.sum(1), left[:, 0]], 1)


def test_flip_evaluation_averages_the_posteriors_of_each_image_and_its_mirror() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(10, 1, 4, 6), torch.randint(0, 3, (10,))
    model = LeftHalf()
    flip = evaluate(model, [(x, y)], 3, torch.device("cpu"), tta="flip", keep_outputs=True)
    probs = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
    assert torch.allclose(flip.probabilities, probs, atol=1e-6)
    assert flip.accuracy == int((probs.argmax(1) == y).sum()) / 10
    assert abs(flip.loss - float(nn.functional.nll_loss(probs.log(), y))) < 1e-5
    center = evaluate(model, [(x, y)], 3, torch.device("cpu"))
    assert (
        abs(center.loss - float(nn.functional.cross_entropy(model(x), y))) < 1e-5 and center.loss != flip.loss
    )
    with pytest.raises(UsageError, match="unknown evaluation test-time mode '10crop'"):
        TrainConfig(eval_tta="10crop").validate()


def test_time_to_a_mark_is_the_wall_time_of_the_first_epoch_that_reaches_it() -> None:
    history = [
        {"epoch": 1, "val_acc": 0.899, "elapsed_s": 10.0},
        {"epoch": 2, "val_acc": 0.9105, "elapsed_s": 19.0},
        {"epoch": 3, "val_acc": 0.905, "elapsed_s": 28.0},
        {"epoch": 4, "val_acc": 0.93, "elapsed_s": 37.0},
    ]
    assert time_to_marks(history, (90.0, 91.0, 92.0, 93.0, 94.0)) == {
        "90": 19.0, "91": 19.0, "92": 37.0, "93": 37.0, "94": None,
    }  # fmt: skip


def test_speedrun_cli_trains_each_seed_and_its_table_comes_from_the_runs(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, capsys, no_curves
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    out = tmp_path / "sr"
    argv = [
        "speedrun",
        "fashion-mnist",
        "--out",
        str(out),
        "--data-dir",
        str(tiny_dataset_dir),
        "--seeds",
        "2",
    ]
    argv += ["--epochs", "1", "--batch-size", "50", "--max-steps-per-epoch", "3", "--threads", "1", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "speedrun.json").read_text())
    assert saved["config"]["recipe"] == "speedrun" and saved["config"]["test_tta"] == "flip-shift"
    assert [r["seed"] for r in saved["rows"]] == [0, 1]
    for row in saved["rows"]:
        run_dir = out / f"speedrun-fmnist-seed{row['seed']}"
        results = json.loads((run_dir / "results.json").read_text())
        metrics = (run_dir / "metrics.csv").read_text().splitlines()
        assert metrics[0].endswith(",elapsed_s") and len(metrics) == 2
        last_elapsed = float(metrics[-1].rsplit(",", 1)[1])
        assert row["test_acc"] == results["test_acc"] and row["wall_s"] == pytest.approx(last_elapsed)
        assert row["epochs"] == 1 and set(row["time_to_val_acc"]) == {"90", "91", "92", "93", "94"}
    mean = sum(r["test_acc"] for r in saved["rows"]) / 2
    assert saved["summary"]["test_acc_mean"] == pytest.approx(mean)
    table = (out / "speedrun.md").read_text()
    assert f"{100 * mean:.2f}%" in printed and "| mean of 2 |" in table
    # what was trained heads the table: another precision, recipe or width reads differently
    caption = (
        "speedrun-fmnist on fashion-mnist: recipe speedrun, fp32, 1 epoch of batch 50, at most 3 steps per epoch, "
        "tested on flip-shift views\n"
    )
    assert table.startswith(caption) and caption in printed
    assert [r["processes"] for r in saved["rows"]] == [1, 1] and "| seed | epochs | processes |" in table
    assert "| 0 | 1 | 1 |" in table and "do not compare" not in table
    assert (out / "speedrun.png").stat().st_size > 1000


def test_speedrun_cli_names_the_datasets_it_has(capsys) -> None:
    assert main(["speedrun", "mnist"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown speedrun dataset 'mnist'" in err and "fashion-mnist" in err


def test_a_speedrun_folder_is_not_replaced_without_overwrite(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sr"
    out.mkdir()
    (out / "speedrun.json").write_text("{}")
    assert main(["speedrun", "fashion-mnist", "--out", str(out), "--epochs", "1"]) == 2
    assert "already exists; use --overwrite" in capsys.readouterr().err
    assert (out / "speedrun.json").read_text() == "{}"


def test_a_speedrun_stopped_before_its_first_epoch_says_so_instead_of_an_empty_table(tmp_path: Path) -> None:
    from cnnlab.experiments.speedrun import SpeedrunResult

    cfg = TrainConfig(model="speedrun-fmnist", amp="bf16", model_options={"widths": (8, 16, 32, 64)})
    result = SpeedrunResult([], (93.0,), tmp_path / "t.md", tmp_path / "f.png", "interrupted", config=cfg)
    assert result.markdown() == (
        "speedrun-fmnist on fashion-mnist: recipe none, bf16, 10 epochs of batch 128, model options "
        "widths=8,16,32,64\n\nNo epoch of any seed has finished yet: nothing to tabulate."
    )


def test_seeds_run_on_different_process_counts_are_said_not_to_compare(tmp_path: Path) -> None:
    """A resume with another --nproc: the table shows each seed's processes and says its times differ in kind."""
    from cnnlab.experiments.speedrun import SpeedrunResult
    from cnnlab.train.engine import RunResult

    cfg = speedrun_config("fashion-mnist")
    history = [{"epoch": 1, "val_acc": 0.9, "elapsed_s": 60.0}]
    runs = [
        RunResult(
            tmp_path / str(seed),
            dataclasses.replace(cfg, seed=seed),
            history,
            1,
            results={"test_acc": 0.9, "val_acc": 0.9, "processes": processes},
        )  # fmt: skip
        for seed, processes in ((0, 2), (1, 1))
    ]
    table = SpeedrunResult(runs, (90.0,), tmp_path / "t.md", tmp_path / "f.png", config=cfg).markdown()
    assert "| 0 | 1 | 2 | 60 s |" in table and "| 1 | 1 | 1 | 60 s |" in table
    assert table.endswith("The seeds ran on 1 and 2 processes: their wall times do not compare.")
    result = SpeedrunResult(runs, (90.0,), tmp_path / "t.md", tmp_path / "f.png", config=cfg)
    summary = result.summary()  # no mean of unlike times, in the table or the JSON
    assert (
        summary["processes"] == [1, 2] and summary["wall_s_mean"] is None and summary["test_acc_mean"] == 0.9
    )
    assert "| mean of 2 | | | - | | 90.00% ± 0.00% |" in table


def test_flip_shift_evaluation_averages_six_views_moved_one_pixel_with_edges_repeated() -> None:
    from cnnlab.train.tta import averaged_posteriors, shifted, view_count

    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 5, 6), torch.randint(0, 3, (8,))
    model = LeftHalf()

    def moved(image: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """Each output pixel reads the input pixel ``rows`` up and ``cols`` left, clamped into the image."""
        height, width = image.shape[-2:]
        r = (torch.arange(height) - rows).clamp(0, height - 1)
        c = (torch.arange(width) - cols).clamp(0, width - 1)
        return image[..., r[:, None], c[None, :]]

    views = [moved(x, rows, cols) for rows, cols in ((0, 0), (1, 1), (-1, -1))]
    assert torch.equal(views[1][..., 1:, 1:], x[..., :-1, :-1])  # down-right by one, content intact
    for rows, cols in ((1, 1), (-1, -1), (1, -1), (0, 1)):
        assert torch.equal(shifted(x, rows, cols), moved(x, rows, cols)), (rows, cols)
    expected = sum(model(v).softmax(1) + model(v.flip(-1)).softmax(1) for v in views) / 6
    got = averaged_posteriors(model, x, "flip-shift", (5, 6))
    assert torch.allclose(got, expected, atol=1e-6) and view_count("flip-shift", ()) == 6
    shift = evaluate(model, [(x, y)], 3, torch.device("cpu"), tta="flip-shift")
    assert shift.accuracy == int((expected.argmax(1) == y).sum()) / 8
    with pytest.raises(UsageError, match="unknown test view mode 'shift'. Did you mean 'flip-shift'"):
        TrainConfig(test_tta="shift").validate()


def test_test_tta_sets_the_final_tests_views_and_validation_keeps_eval_tta(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, no_curves
) -> None:
    from cnnlab.train import engine

    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    seen: list[str] = []
    real = engine.evaluate

    def recording(*args, tta: str = "center", **kwargs):
        seen.append(tta)
        return real(*args, tta=tta, **kwargs)

    monkeypatch.setattr(engine, "evaluate", recording)
    cfg = speedrun_config(
        "fashion-mnist", data_dir=str(tiny_dataset_dir), epochs=2, batch_size=50, max_steps_per_epoch=2,
        threads=1, eval_tta="center", test_tta="flip-shift",
    )  # fmt: skip
    result = engine.train(cfg, tmp_path / "run", progress=False)
    assert seen == ["center", "center", "flip-shift"]  # two validations, one test
    assert json.loads((tmp_path / "run" / "results.json").read_text())["test_views"] == "flip-shift"
    assert result.results["test_acc"] is not None
    # evaluate's default, the centre crop, says that the run's own test figure averaged other views
    from cnnlab.train.evaluation import evaluate_checkpoint

    report = evaluate_checkpoint(tmp_path / "run", plot=False).report()
    assert (
        "centre crop; the run measured its test split on flip-shift views (--tta flip-shift does too)"
        in report
    )
    assert "views" not in evaluate_checkpoint(tmp_path / "run", split="val", plot=False).report()


def test_speedrun_runs_as_data_parallel_processes_and_rank_0_alone_reports(
    tmp_path: Path, tiny_dataset_dir: Path
) -> None:
    import os
    import subprocess
    import sys

    out = tmp_path / "sr"
    src = str(Path(__file__).parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1", "CNNLAB_NO_VERIFY": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "cnnlab", "speedrun", "fashion-mnist", "--nproc", "2", "--data-dir",
         str(tiny_dataset_dir), "--out", str(out), "--epochs", "2", "--batch-size", "50",
         "--max-steps-per-epoch", "2", "--quiet"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("| seed | epochs |") == 1  # one table: rank 0's
    (row,) = json.loads((out / "speedrun.json").read_text())["rows"]
    results = json.loads((out / "speedrun-fmnist" / "results.json").read_text())
    assert results["processes"] == 2 and row["test_acc"] == results["test_acc"]
    # every rank meets the existing folder; rank 0 alone says so
    again = subprocess.run(done.args, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 2 and again.stderr.count("cnnlab: error:") == 1, again.stderr
    assert "already exists; use --overwrite" in again.stderr


def test_speedrun_help_shows_the_recipes_test_views_as_the_one_default(capsys) -> None:
    """A flag whose help says what leaving it unset means shows the recipe's value in its place."""
    with pytest.raises(SystemExit):
        main(["speedrun", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "as --eval-tta (default: flip-shift)" in text and "--eval-tta's" not in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "as --eval-tta (default: --eval-tta's)" in " ".join(capsys.readouterr().out.split())
