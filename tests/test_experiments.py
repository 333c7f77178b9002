"""The lectures' experiments, end to end on a tiny generated dataset."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.errors import UsageError
from cnnlab.experiments.degradation import degradation
from cnnlab.train import TrainConfig


def test_degradation_trains_plain_and_residual_twins_and_writes_figure_and_table(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, no_curves
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    cfg = TrainConfig(
        data_dir=str(tiny_dataset_dir), epochs=2, batch_size=100, lr=0.1, threads=1, train_subset=200,
        max_steps_per_epoch=1, eval_batch_size=200,
    )  # fmt: skip
    result = degradation([8, 14], cfg, tmp_path / "deg", progress=False)
    assert {(r["kind"], r["depth"]) for r in result.rows()} == {
        ("plain", 8),
        ("plain", 14),
        ("residual", 8),
        ("residual", 14),
    }
    plain8, res8 = result.runs[("plain", 8)], result.runs[("residual", 8)]
    assert plain8.num_params == res8.num_params  # identity shortcuts (option A) add no parameters
    assert result.figure.stat().st_size > 1000
    saved = json.loads((tmp_path / "deg" / "degradation.json").read_text())
    assert saved["verdict"].startswith("plain-14 ends with a")
    assert "| resnet14-cifar |" in result.table.read_text()
    with pytest.raises(UsageError, match="already exists"):
        degradation([8], cfg, tmp_path / "deg", progress=False)


def test_degradation_cli_rejects_impossible_depths(capsys) -> None:
    assert main(["experiment", "degradation", "--depths", "21"]) == 2
    err = capsys.readouterr().err
    assert "6n+2" in err and err.count("\n") == 1


def _help_defaults(text: str) -> dict[str, str]:
    """``{flag: shown default}`` from argparse help printed without line wrapping."""
    shown, flag = {}, None
    for line in text.splitlines():
        if line.startswith("  -"):
            flag = line.split()[0].rstrip(",")
        head, found, tail = line.rpartition("(default: ")
        if flag and found and tail.endswith(")"):
            shown[flag] = tail[:-1]
    return shown


def test_degradation_help_shows_the_defaults_it_trains_with(capsys, monkeypatch) -> None:
    """Every recipe default printed by ``--help`` is the value the experiment passes to training."""
    import cnnlab.experiments.degradation as experiment
    from cnnlab.cli.train import RECIPE as FLAGS

    monkeypatch.setenv("COLUMNS", "2000")  # argparse wraps at the terminal width
    with pytest.raises(SystemExit):
        main(["experiment", "degradation", "--help"])
    text = capsys.readouterr().out
    shown = _help_defaults(text)

    passed = []

    def fake_degradation(depths, cfg, out, **kwargs):
        passed.append(cfg)
        raise UsageError("stop here")

    monkeypatch.setattr(experiment, "degradation", fake_degradation)
    assert main(["experiment", "degradation"]) == 2
    (cfg,) = passed
    assert cfg.lr == 0.1 and cfg.schedule == "cosine" and cfg.weight_decay == 1e-4  # He et al. 4.2
    for flag, field, _, help_text in FLAGS:
        value = getattr(cfg, field)
        described = (
            value in (None, ()) and "(default: " in help_text
        )  # --drop-rate: the model's own; --classes: all
        assert shown[flag] == (help_text.rpartition("(default: ")[2][:-1] if described else str(value)), flag
    # the description's recipe line too
    for key, value in experiment.RECIPE.items():
        assert f"{key}={value}" in " ".join(text.split()) and getattr(cfg, key) == value


def test_degradation_table_names_the_input_its_parameter_counts_are_for(tmp_path: Path) -> None:
    """On 1x28x28 input the first conv has 1 input channel, so counts differ from the registry's (3x32x32)."""
    from cnnlab.experiments.degradation import DegradationResult
    from cnnlab.models import create_model, model_info
    from cnnlab.train.engine import RunResult

    model = create_model("plain20-cifar", in_chans=1)
    ours = sum(p.numel() for p in model.parameters())
    assert (ours, model_info("plain20-cifar").num_params) == (269_434, 269_722)  # 288 = 3x3x(3-1)x16
    history = [{"epoch": 1, "train_acc": 0.5, "test_acc": 0.5, "epoch_seconds": 1.0}]
    run = RunResult(tmp_path, TrainConfig(model="plain20-cifar"), history, ours)
    result = DegradationResult({("plain", 20): run}, tmp_path / "f.png", tmp_path / "t.md", (1, 28, 28))
    table = result.markdown()
    assert table.startswith(
        "Parameters are counted for the 1x28x28 input trained on (fashion-mnist); the registry's counts "
        "(`cnnlab models`) are for 3x32x32: plain20-cifar 269,722."
    )
    assert "| plain20-cifar | 269,434 |" in table


def test_degradation_with_a_validation_split_selects_on_it_and_only_reports_the_test_set(
    tmp_path: Path,
) -> None:
    """Per-epoch curves and the "best" column use the validation split; the test error is the selected
    checkpoint's, measured once after the last epoch."""
    from cnnlab.experiments.degradation import DegradationResult, plot_degradation
    from cnnlab.train.engine import RunResult

    history = [
        {"epoch": 1, "train_acc": 0.6, "val_acc": 0.7, "epoch_seconds": 1.0},
        {"epoch": 2, "train_acc": 0.8, "val_acc": 0.65, "epoch_seconds": 1.0},
    ]
    history[0].update(test_acc=0.62, selected=1)  # epoch 1 has the best validation accuracy
    runs = {
        (kind, 8): RunResult(
            tmp_path, TrainConfig(model=f"{name}8-cifar"), history, 75_002, results={"test_acc": 0.62}
        )
        for kind, name in (("plain", "plain"), ("residual", "resnet"))
    }
    result = DegradationResult(runs, tmp_path / "f.png", tmp_path / "t.md", (1, 28, 28))
    table = result.markdown()
    assert (
        "| model | params | final train error | final validation error | best validation error | "
        "selected test error | s/epoch |" in table
    )
    assert "| plain8-cifar | 75,002 | 20.00% | 35.00% | 30.00% | 38.00% | 1.0 |" in table
    assert plot_degradation(runs, tmp_path / "f.png", "t").stat().st_size > 1000


def _stop_member(monkeypatch, interrupt_after, model: str, after_steps: int) -> None:
    """Make the experiment runner's next fresh (not resumed) run of ``model`` stop as Ctrl-C would,
    after ``after_steps`` optimiser steps."""
    from cnnlab.experiments import runner

    class Trainer(runner.Trainer):
        def __init__(self, cfg, *args, **kwargs) -> None:
            super().__init__(cfg, *args, **kwargs)
            if cfg.model == model and not kwargs.get("resume"):
                interrupt_after(self, after_steps)

    monkeypatch.setattr(runner, "Trainer", Trainer)


def _files(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    """metrics.csv and every checkpoint file of a run: modification time and contents."""
    paths = [run_dir / "metrics.csv", *sorted((run_dir / "checkpoints").iterdir())]
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in paths}


def _rows_without_timing(out: Path) -> list[dict]:
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    return [{k: v for k, v in r.items() if k not in ("seconds_per_epoch", "images_per_s")} for r in rows]


def test_an_interrupted_compare_resumes_without_retraining_the_finished_member(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, capsys, interrupt_after, no_curves
) -> None:
    from cnnlab.experiments.runner import RESUME_HINT

    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    models = ["lecture-simple", "lecture-residual"]
    recipe = ["--data-dir", str(tiny_dataset_dir), "--epochs", "2", "--batch-size", "100"]
    recipe += ["--train-subset", "300", "--threads", "1", "--quiet"]
    assert main(["compare", *models, "--out", str(tmp_path / "straight"), *recipe]) == 0

    out = tmp_path / "stopped"
    _stop_member(
        monkeypatch, interrupt_after, "lecture-residual", after_steps=2
    )  # mid-way through its first epoch
    assert main(["compare", *models, "--out", str(out), *recipe]) == 130
    assert capsys.readouterr().out.rstrip().endswith(RESUME_HINT)
    partial = _rows_without_timing(out)  # the partial table is written
    assert [(r["model"], r["status"]) for r in partial] == [
        ("lecture-simple", "completed"),
        ("lecture-residual", "interrupted"),
    ]
    # the member stopped in its first epoch has no time per epoch: "-" (null), not 0
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert rows[1]["seconds_per_epoch"] is None and rows[1]["images_per_s"] is None
    assert rows[0]["seconds_per_epoch"] > 0 and rows[0]["images_per_s"] > 0
    assert (out / "comparison.md").read_text().splitlines()[3].endswith("| - | - | - | - | - |")
    first = _files(out / "lecture-simple")

    assert main(["compare", *models, "--out", str(out), "--resume", *recipe]) == 0
    assert _files(out / "lecture-simple") == first  # read, not trained or evaluated again
    assert _rows_without_timing(out) == _rows_without_timing(tmp_path / "straight")


def test_a_stop_in_a_members_last_step_ends_the_experiment_after_that_member(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, capsys, interrupt_after, no_curves
) -> None:
    """Ctrl-C during the last step of a member's last epoch: that run completes (its test is one evaluation
    away), and the experiment stops there, exit 130, instead of training the next member."""
    from cnnlab.experiments.runner import RESUME_HINT

    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    recipe = ["--data-dir", str(tiny_dataset_dir), "--epochs", "1", "--batch-size", "100"]
    recipe += ["--train-subset", "300", "--threads", "1", "--quiet"]
    out = tmp_path / "cmp"
    _stop_member(monkeypatch, interrupt_after, "lecture-simple", after_steps=3)  # 270 images: 3 steps
    assert main(["compare", "lecture-simple", "lecture-residual", "--out", str(out), *recipe]) == 130
    assert capsys.readouterr().out.rstrip().endswith(RESUME_HINT)
    assert [(r["model"], r["status"]) for r in _rows_without_timing(out)] == [("lecture-simple", "completed")]
    assert not (out / "lecture-residual").exists()
    assert (
        main(["compare", "lecture-simple", "lecture-residual", "--out", str(out), "--resume", *recipe]) == 0
    )
    assert [r["status"] for r in _rows_without_timing(out)] == ["completed", "completed"]
    both = ["compare", "lecture-simple", "--out", str(out), "--resume", "--overwrite", *recipe]
    assert main(both) == 2  # as train refuses them
    assert "--overwrite and --resume contradict each other" in capsys.readouterr().err


def test_an_interrupted_degradation_writes_its_partial_table_and_exits_130(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, capsys, interrupt_after, no_curves
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    _stop_member(monkeypatch, interrupt_after, "resnet8-cifar", after_steps=2)
    argv = ["experiment", "degradation", "--depths", "8", "--out", str(tmp_path / "deg"), "--quiet"]
    argv += ["--data-dir", str(tiny_dataset_dir), "--epochs", "1", "--batch-size", "100"]
    argv += ["--train-subset", "300", "--threads", "1"]
    assert main(argv) == 130
    assert "--resume" in capsys.readouterr().out
    table = (tmp_path / "deg" / "degradation.md").read_text()
    assert "| plain8-cifar |" in table and "resnet8-cifar" not in table
    assert main([*argv, "--resume"]) == 0
    assert "| resnet8-cifar |" in (tmp_path / "deg" / "degradation.md").read_text()


def test_resuming_an_experiment_with_another_recipe_is_refused(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch
) -> None:
    from cnnlab.experiments.runner import run_members

    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")  # generated files, not the official ones
    cfg = TrainConfig(
        model="lecture-simple", epochs=1, batch_size=64, max_steps_per_epoch=2, data_dir=str(tiny_dataset_dir),
        recipe="speedrun", recipe_fields=("batch_size", "lr"),
    )  # fmt: skip
    run_members(tmp_path, [("lecture-simple", cfg)], table="t.json", progress=False)
    # --lr given over the recipe's: named once, as the user set it (recipe_fields only records the override)
    changed = dataclasses.replace(cfg, lr=0.1, recipe_fields=("batch_size",))
    with pytest.raises(UsageError, match=r"asks for another: --lr 0.05 -> 0.1\. Drop that flag"):
        run_members(tmp_path, [("lecture-simple", changed)], table="t.json", resume=True, progress=False)


def test_transfer_trains_every_member_and_its_table_comes_from_the_runs(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, capsys, no_curves
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    out = tmp_path / "transfer"
    argv = ["experiment", "transfer", "--model", "lecture-simple", "--split", "dissimilar", "--out", str(out)]
    argv += ["--data-dir", str(tiny_dataset_dir), "--epochs", "1", "--batch-size", "50", "--threads", "1"]
    argv += ["--max-steps-per-epoch", "1", "--train-subset", "100", "--n", "2", "--quiet"]
    assert main(argv) == 0
    saved = json.loads((out / "transfer.json").read_text())
    assert (saved["A"], saved["B"]) == ([5, 7, 9, 8, 1], [0, 2, 3, 4, 6])
    assert [r["n"] for r in saved["rows"]] == [2]  # lecture-simple: conv1, conv2, fc
    for row in saved["rows"]:
        for kind in ("BnB", "BnB+", "AnB", "AnB+"):
            name = f"{kind[0]}{row['n']}B{kind[3:]}"
            assert row[kind] == json.loads((out / name / "results.json").read_text())["test_acc"], name
    assert saved["baseB"] == json.loads((out / "baseB" / "results.json").read_text())["test_acc"]
    frozen = json.loads((out / "A2B" / "config.json").read_text())
    assert frozen["freeze"] == ["2"] and len(frozen["frozen"]) >= 2 and frozen["init"].endswith("baseA")
    assert json.loads((out / "A2B+" / "config.json").read_text())["frozen"] == []
    assert (out / "transfer.png").stat().st_size > 1000 and "| 2 |" in (out / "transfer.md").read_text()
    before = (out / "baseA" / "metrics.csv").stat().st_mtime_ns
    assert main([*argv, "--resume"]) == 0  # finished members are read, not trained again
    assert (out / "baseA" / "metrics.csv").stat().st_mtime_ns == before
    assert main([*argv[:4], "--split", "nope", *argv[6:]]) == 2
    assert "valid splits: random, dissimilar" in capsys.readouterr().err


def test_batchnorm_trains_the_five_variants_and_its_table_comes_from_the_runs(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, capsys, no_curves
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    out = tmp_path / "bn"
    argv = ["experiment", "batchnorm", "--steps", "4", "--eval-every", "2", "--out", str(out), "--quiet"]
    argv += ["--data-dir", str(tiny_dataset_dir), "--batch-size", "20", "--threads", "1", "--lr", "0.01"]
    assert main(argv) == 0
    saved = json.loads((out / "batchnorm.json").read_text())
    assert [r["net"] for r in saved["rows"]] == [
        "Inception",
        "BN-Baseline",
        "BN-x5",
        "BN-x30",
        "BN-x5-Sigmoid",
    ]
    for row in saved["rows"]:
        config = json.loads((out / row["net"] / "config.json").read_text())
        results = json.loads((out / row["net"] / "results.json").read_text())
        assert row["test_acc"] == results["test_acc"] and row["lr"] == config["lr"]
        metrics = (out / row["net"] / "metrics.csv").read_text().splitlines()
        assert len(metrics) == 3 and row["steps"] == 4  # two evaluations, every 2 steps
    assert saved["rows"][3]["lr"] == pytest.approx(0.3)  # x30
    sigmoid = json.loads((out / "BN-x5-Sigmoid" / "config.json").read_text())
    assert sigmoid["model_options"] == {"batch_norm": True, "activation": "sigmoid"}
    inception_best = max(acc for _, acc in saved["curves"]["Inception"])
    assert saved["target"] == inception_best
    assert (out / "batchnorm.png").stat().st_size > 1000 and "| BN-x30 | 0.3 |" in (
        out / "batchnorm.md"
    ).read_text()
    # resumed with --resume alone: every flag left out takes the value it started with (flags.json); one given,
    # even at its default, is taken as given
    capsys.readouterr()
    assert main(["experiment", "batchnorm", "--out", str(out), "--resume", "--quiet"]) == 0
    assert "| BN-x30 | 0.3 |" in capsys.readouterr().out
    assert main(["experiment", "batchnorm", "--out", str(out), "--resume", "--eval-every", "100"]) == 2
    assert "--steps 4 is not a multiple of --eval-every 100" in capsys.readouterr().err  # not the saved 2
    # resumed with another --eval-every: named by that flag, not by the setting it makes
    changed = [*argv[:5], "1", *argv[6:], "--resume"]
    capsys.readouterr()
    assert main(changed) == 2
    err = capsys.readouterr().err
    assert "asks for another: --eval-every 2 -> 1. Drop that flag," in err and err.count("\n") == 1, err
    fewer = [*argv[:3], "2", *argv[4:], "--resume"]  # 2 steps where 4 were trained
    assert main(fewer) == 2
    err = capsys.readouterr().err
    assert (
        "has already trained 4 steps (2 evaluations, one every 2); resume it with 4 steps or more" in err
    ), err


def test_augmentation_trains_three_variants_and_its_table_comes_from_the_runs(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, no_curves
) -> None:
    from cnnlab.train.evaluation import evaluate_tta_checkpoint

    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    out = tmp_path / "aug"
    argv = [
        "experiment",
        "augmentation",
        "--out",
        str(out),
        "--data-dir",
        str(tiny_dataset_dir),
        "--epochs",
        "1",
    ]
    argv += ["--batch-size", "50", "--threads", "1", "--max-steps-per-epoch", "2", "--quiet"]
    assert main(argv) == 0
    saved = json.loads((out / "augmentation.json").read_text())
    assert [(r["variant"], r["crop_padding"], r["flip"]) for r in saved["rows"]] == [
        ("no-aug", 0, False),
        ("flip", 0, True),
        ("crops+flip", 4, True),
    ]
    for row in saved["rows"]:
        results = json.loads((out / row["variant"] / "results.json").read_text())
        assert row["test_acc_centre"] == results["test_acc"] and row["val_acc"] == results["val_acc"]
        (ten,) = evaluate_tta_checkpoint(out / row["variant"], ["10crop"]).rows  # the selected checkpoint
        assert row["test_acc_10crop"] == ten.result.accuracy and ten.views == 10
    assert "test acc (10crop)" in (out / "augmentation.md").read_text()
    assert (out / "augmentation.png").stat().st_size > 1000 and "| crops+flip |" in (
        out / "augmentation.md"
    ).read_text()


def test_compare_takes_one_model_name_as_one_name(tmp_path: Path) -> None:
    """A name given alone, not in a list, is that name (it was read one character at a time: model 'l')."""
    from cnnlab.experiments.compare import compare

    with pytest.raises(UsageError, match="unknown model 'lecture-simpel'"):
        compare("lecture-simpel", TrainConfig(), tmp_path / "cmp")


# A setting that an experiment sets itself per member, given anyway: each would silently be replaced, or leak
# into every member and make the variants the table names alike. Tiny budgets: unrefused, each trains briefly.
SET_BY_THE_EXPERIMENT = [
    (
        ["augmentation", "--augment", "cifar", "--flip", "--epochs", "1"],
        "the augmentation experiment sets flip itself (per variant); drop --flip",
    ),
    (["augmentation", "--augment", "cifar", "--epochs", "1"], "sets augment itself"),
    (["augmentation", "--eval-tta", "flip", "--epochs", "1"], "sets eval_tta itself"),
    (["augmentation", "--test-tta", "flip-shift", "--epochs", "1"], "sets test_tta itself"),
    (
        ["transfer", "--model", "lecture-simple", "--classes", "0,1,2", "--n", "1", "--epochs", "1"],
        "the transfer experiment sets classes itself (the halves A and B of the split); drop --classes",
    ),
    (
        ["batchnorm", "--epochs", "3", "--steps", "2", "--eval-every", "2"],
        "the batchnorm experiment sets epochs itself (from --steps and --eval-every); drop --epochs",
    ),
    (
        ["batchnorm", "--steps", "2", "--eval-every", "2", "--max-steps-per-epoch", "1"],
        "drop --max-steps-per-epoch",
    ),
    (
        ["batchnorm", "--steps", "2", "--eval-every", "2", "--model-option", "activation=sigmoid"],
        "sets the model option activation itself (per net); drop --model-option activation=sigmoid",
    ),
    (
        ["degradation", "--depths", "8", "--epochs", "1", "--model-option", "plain=false"],
        "the degradation experiment sets the model option plain itself",
    ),
    # given with the value the experiment would use: refused all the same (it would mean nothing)
    (
        ["augmentation", "--epochs", "1", "--no-flip"],
        "the augmentation experiment sets flip itself (per variant); drop --no-flip",
    ),
    (
        ["augmentation", "--epochs", "1", "--eval-tta=center"],
        "sets eval_tta itself (the test views: centre and 10 crops); drop --eval-tta",
    ),
    (
        ["batchnorm", "--steps", "2", "--eval-every", "2", "--epochs", "1"],
        "sets epochs itself (from --steps and --eval-every); drop --epochs",
    ),
]


@pytest.mark.parametrize(
    ("argv", "message"), SET_BY_THE_EXPERIMENT, ids=[" ".join(a[:3]) for a, _ in SET_BY_THE_EXPERIMENT]
)
def test_an_experiment_refuses_a_setting_it_sets_itself(
    argv: list[str], message: str, tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, capsys, no_curves
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    out = tmp_path / "x"
    budget = [
        "--data-dir",
        str(tiny_dataset_dir),
        "--train-subset",
        "40",
        "--batch-size",
        "20",
        "--threads",
        "1",
    ]
    budget += [] if argv[0] == "batchnorm" else ["--max-steps-per-epoch", "1"]
    assert main(["experiment", *argv, *budget, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not out.exists()  # refused before anything is written


def test_the_transfer_experiment_refuses_python_settings_it_sets_itself(tmp_path: Path) -> None:
    """Python callers are protected too: the members' freeze/init were replaced without a word."""
    from cnnlab.experiments.transfer import transfer

    with pytest.raises(
        UsageError, match=r"sets freeze itself \(the first n layers of BnB and AnB\); drop --freeze"
    ):
        transfer(TrainConfig(freeze=("1",), epochs=1, max_steps_per_epoch=1), tmp_path / "t", progress=False)
    with pytest.raises(UsageError, match="sets init itself .*; drop --weights"):
        transfer(TrainConfig(init=str(tmp_path / "w.pt")), tmp_path / "t", progress=False)


@pytest.mark.parametrize(
    ("steps", "eval_every", "nearest"),
    [(5, 10, "use --steps 10, or a smaller --eval-every"), (45, 10, "use --steps 40 or 50")],
)
def test_batchnorm_refuses_steps_that_are_not_a_multiple_of_eval_every(
    steps: int,
    eval_every: int,
    nearest: str,
    tmp_path: Path,
    tiny_dataset_dir: Path,
    monkeypatch,
    capsys,
    no_curves,
) -> None:
    """The steps were rounded up to the next evaluation: --steps 5 --eval-every 10 trained 10."""
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    argv = ["experiment", "batchnorm", "--steps", str(steps), "--eval-every", str(eval_every), "--quiet"]
    argv += ["--data-dir", str(tiny_dataset_dir), "--batch-size", "100", "--threads", "1"]
    assert main([*argv, "--out", str(tmp_path / "bn")]) == 2
    assert f"--steps {steps} is not a multiple of --eval-every {eval_every}" in (
        err := capsys.readouterr().err
    )
    assert nearest in err and not (tmp_path / "bn").exists()


def test_batchnorm_refuses_an_epoch_shorter_than_eval_every(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, capsys, no_curves
) -> None:
    """--eval-every only capped each "epoch": 40 images in batches of 20 trained 2 steps where it said 4."""
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    out = tmp_path / "bn"
    argv = ["experiment", "batchnorm", "--steps", "8", "--eval-every", "4", "--train-subset", "40", "--quiet"]
    argv += ["--data-dir", str(tiny_dataset_dir), "--batch-size", "20", "--threads", "1", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        "an epoch of the training split is 2 batches of 20 (40 images), fewer than the 4 steps per epoch "
        "--eval-every asks for; give --eval-every 2 or less" in err
    )
    assert not out.exists()  # refused before the experiment folder is made


def _tree(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder``: modification time and contents."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_bad_member_is_refused_before_any_member_trains_and_the_folder_stays_as_it_was(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, capsys, no_curves
) -> None:
    """Every member is built for the data before the first trains: a late member's usage error neither
    retrains nor replaces an existing experiment (with --overwrite) nor leaves a new folder behind."""
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    recipe = ["--data-dir", str(tiny_dataset_dir), "--epochs", "1", "--batch-size", "100", "--threads", "1"]
    recipe += ["--max-steps-per-epoch", "1", "--quiet"]
    out = tmp_path / "cmp"
    assert main(["compare", "lecture-simple", "--out", str(out), *recipe]) == 0
    before = _tree(out)
    assert main(["compare", "lecture-simple", "alexnet", "--out", str(out), "--overwrite", *recipe]) == 2
    assert "input 1x28x28 is too small for alexnet" in capsys.readouterr().err
    assert _tree(out) == before
    fresh = tmp_path / "fresh"
    assert main(["compare", "lecture-simple", "alexnet", "--out", str(fresh), *recipe]) == 2
    assert not fresh.exists()
    bn = tmp_path / "bn"
    argv = ["experiment", "batchnorm", "--model", "lecture-simple", "--steps", "2", "--eval-every", "2"]
    argv += ["--out", str(bn), "--data-dir", str(tiny_dataset_dir), "--batch-size", "20", "--quiet"]
    assert main(argv) == 2
    assert "model 'lecture-simple' has no option 'batch_norm'" in capsys.readouterr().err
    assert not bn.exists()
    # CUDA asked for where there is none: refused before members.json or any member's folder is written
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gpu = tmp_path / "gpu"
    assert main(["compare", "lecture-simple", "--out", str(gpu), *recipe, "--device", "cuda"]) == 2
    assert "device cuda was asked for, but no CUDA GPU is available" in capsys.readouterr().err
    assert not gpu.exists()


def test_a_member_folder_that_is_no_run_is_refused_even_with_overwrite(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, capsys, no_curves
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    recipe = ["--data-dir", str(tiny_dataset_dir), "--epochs", "1", "--batch-size", "100", "--threads", "1"]
    recipe += ["--max-steps-per-epoch", "1", "--quiet"]
    out = tmp_path / "cmp"
    (out / "lecture-simple").mkdir(parents=True)
    (out / "lecture-simple" / "notes.txt").write_text("mine")
    for flags in ([], ["--overwrite"]):
        assert main(["compare", "lecture-simple", "--out", str(out), *flags, *recipe]) == 2
        assert f"{out / 'lecture-simple'} is not a cnnlab run (it holds notes.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == ["lecture-simple", "notes.txt"]
    # a folder with other things in it (an image dataset's class folders): not an experiment to write into
    images = tmp_path / "images"
    (images / "cat").mkdir(parents=True)
    for flags in ([], ["--overwrite"]):
        assert main(["compare", "lecture-simple", "--out", str(images), *flags, *recipe]) == 2
        assert f"{images} is not an experiment folder (it holds cat)" in capsys.readouterr().err
    argv = ["experiment", "degradation", "--depths", "8", "8", "--out", str(tmp_path / "deg"), *recipe]
    assert main(argv) == 2
    assert "--depths lists 8 twice; give each depth once" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp", "images"]


def test_resume_where_there_is_no_experiment_is_refused_as_a_run_is(tmp_path: Path, capsys) -> None:
    """A mistyped --out with --resume: refused, nothing created, not a fresh experiment; `train` says the same."""
    missing = tmp_path / "no" / "such"
    assert main(["compare", "lecture-simple", "--resume", "--out", str(missing), "--quiet"]) == 2
    assert f"nothing to resume in {missing}: no experiment there; drop --resume to start one" in (
        capsys.readouterr().err
    )
    assert not missing.exists()
    assert main(["train", "lecture-simple", "--resume", "--out", str(missing), "--quiet"]) == 2
    run = missing / "lecture-simple"
    assert f"nothing to resume in {run}: no run there; drop --resume to start one" in capsys.readouterr().err
    assert not missing.exists()


def test_a_repeated_member_is_refused_in_the_experiments_own_words(tmp_path: Path, capsys) -> None:
    """The user named no member: transfer's --n and compare's models say what was repeated."""
    from cnnlab.experiments.runner import run_members

    argv = [
        "experiment",
        "transfer",
        "--model",
        "lecture-simple",
        "--n",
        "1",
        "1",
        "--out",
        str(tmp_path / "t"),
    ]
    assert main([*argv, "--quiet"]) == 2
    assert "--n lists 1 twice; give each n once" in capsys.readouterr().err
    assert main(["compare", "lecture-simple", "lecture-simple", "--out", str(tmp_path / "c"), "--quiet"]) == 2
    assert "model lecture-simple is named twice" in capsys.readouterr().err
    with pytest.raises(UsageError, match="member a appears twice"):
        run_members(tmp_path / "r", [("a", TrainConfig()), ("a", TrainConfig())], table="t.json")
    assert not any(tmp_path.iterdir())


def test_resuming_an_experiment_that_leaves_out_a_member_is_refused_and_one_added_is_trained_with_a_warning(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch
) -> None:
    """members.json holds the members an experiment started with: --resume without one of them is one usage
    error that names it and leaves the folder as it was (its table would lose that run); --resume with one
    more (a model, a seed) trains only the new one, and says so."""
    from cnnlab.experiments.runner import MEMBERS_FILE, run_members

    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    cfg = TrainConfig(
        model="lecture-simple", epochs=1, batch_size=64, max_steps_per_epoch=1, data_dir=str(tiny_dataset_dir)
    )
    simple, residual = (
        ("lecture-simple", cfg),
        ("lecture-residual", dataclasses.replace(cfg, model="lecture-residual")),
    )
    run_members(tmp_path, [simple], table="t.json", progress=False)
    assert json.loads((tmp_path / MEMBERS_FILE).read_text()) == {"members": ["lecture-simple"]}
    first = _files(tmp_path / "lecture-simple")
    with pytest.raises(
        UsageError,
        match=r"whose members are lecture-simple, but the command leaves out lecture-simple and has "
        r"lecture-residual instead; name every",
    ):
        run_members(tmp_path, [residual], table="t.json", resume=True, progress=False)
    assert _files(tmp_path / "lecture-simple") == first and not (tmp_path / "lecture-residual").exists()
    # one that adds a member but is refused (another recipe) says nothing of adding it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UsageError, match="asks for another: --lr 0.05 -> 0.1"):
            changed = [(name, dataclasses.replace(c, lr=0.1)) for name, c in (simple, residual)]
            run_members(tmp_path, changed, table="t.json", resume=True, progress=False)
    with pytest.warns(
        UserWarning, match="adding lecture-residual to the experiment in .* which started with lecture-simple"
    ):
        runs = run_members(tmp_path, [simple, residual], table="t.json", resume=True, progress=False)
    assert runs.status == "completed" and list(runs.runs) == ["lecture-simple", "lecture-residual"]
    assert _files(tmp_path / "lecture-simple") == first  # read, not trained again
    assert json.loads((tmp_path / MEMBERS_FILE).read_text()) == {
        "members": ["lecture-simple", "lecture-residual"]
    }
    # resumed with the members in another order: the record keeps the order they came in
    run_members(tmp_path, [residual, simple], table="t.json", resume=True, progress=False)
    assert json.loads((tmp_path / MEMBERS_FILE).read_text())["members"] == [
        "lecture-simple",
        "lecture-residual",
    ]
    with pytest.raises(UsageError, match=r"leaves out lecture-residual; name every member .*added\)$"):
        run_members(tmp_path, [simple], table="t.json", resume=True, progress=False)
    # a resume that trains nothing still refuses a device this machine lacks, before it writes anything
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = _tree(tmp_path)
    on_gpu = [(name, dataclasses.replace(c, device="cuda")) for name, c in (simple, residual)]
    with pytest.raises(UsageError, match="device cuda was asked for, but no CUDA GPU is available"):
        run_members(tmp_path, on_gpu, table="t.json", resume=True, progress=False)
    assert _tree(tmp_path) == before


def test_compare_resume_with_fewer_seeds_names_seeds(tmp_path, tiny_dataset_dir, monkeypatch):
    """A comparison started with --seeds 2 and resumed with --seeds 1 is refused in words that name --seeds:
    its members are <model>-seed<S>, and one seed names the model's run without the suffix."""
    from cnnlab.experiments.compare import compare

    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    cfg = TrainConfig(
        model="lecture-simple", epochs=1, batch_size=64, max_steps_per_epoch=1, data_dir=str(tiny_dataset_dir)
    )
    compare(["lecture-simple"], cfg, tmp_path, seeds=2, progress=False)
    with pytest.raises(
        UsageError,
        match=r"leaves out lecture-simple-seed0, lecture-simple-seed1 and has lecture-simple instead; .*"
        r"resume with the --seeds and --seed it started with",
    ):
        compare(["lecture-simple"], cfg, tmp_path, seeds=1, resume=True, progress=False)


def test_compare_resumed_with_more_seeds_keeps_its_one_seed_run_and_adds_the_others(
    tmp_path, tiny_dataset_dir, monkeypatch
):
    """A comparison started with one seed holds that run in <model>/: --resume with --seeds 2 continues it
    there (read, not trained again) and trains <model>-seed1 beside it, saying so."""
    from cnnlab.experiments.compare import compare

    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    cfg = TrainConfig(
        model="lecture-simple", epochs=1, batch_size=64, max_steps_per_epoch=1, data_dir=str(tiny_dataset_dir)
    )
    compare(["lecture-simple"], cfg, tmp_path, seeds=1, progress=False)
    first = _files(tmp_path / "lecture-simple")
    with pytest.warns(UserWarning, match="adding lecture-simple-seed1 to the experiment"):
        result = compare(["lecture-simple"], cfg, tmp_path, seeds=2, resume=True, progress=False)
    assert _files(tmp_path / "lecture-simple") == first  # read, not trained again
    assert [r.config.seed for r in result.runs] == [0, 1]
    assert json.loads((tmp_path / "members.json").read_text())["members"] == [
        "lecture-simple",
        "lecture-simple-seed1",
    ]
    assert (tmp_path / "lecture-simple-seed1" / "results.json").is_file()
