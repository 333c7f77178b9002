"""``cnnlab evaluate``: which checkpoint it picks and says, where it writes, and clear errors."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.errors import CheckpointError, UsageError
from cnnlab.train import TrainConfig, evaluation, plots, train
from cnnlab.train.evaluation import evaluate_checkpoint


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory, tiny_dataset_dir: Path) -> Path:
    """A 2-epoch run with a validation split (so a best checkpoint) that ``cnnlab evaluate`` can rebuild."""
    run = tmp_path_factory.mktemp("eval") / "run"
    cfg = TrainConfig(model="lecture-simple", epochs=2, batch_size=64, eval_batch_size=256, threads=1,
                      max_steps_per_epoch=3, val_fraction=0.2, data_dir=str(tiny_dataset_dir))  # fmt: skip
    data = load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=False, val_fraction=0.2)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "plot_curves", lambda *args, **kwargs: None)  # not what these tests are about
        train(cfg, run, data=data, progress=False)
    return run


@pytest.fixture()
def run(saved_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")  # generated files, not the official ones
    copy = tmp_path / "run"
    shutil.copytree(saved_run, copy)
    return copy


def test_evaluate_names_the_selected_checkpoint_best_else_last(run: Path) -> None:
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    report = evaluate_checkpoint(run).report()
    assert (
        f"checkpoint best (epoch {best['epoch']}): {run / 'checkpoints' / best['files']['weights']}" in report
    )
    for name in [best["files"]["weights"], "best.json"]:  # a run without a validation split has no best
        (run / "checkpoints" / name).unlink()
    report = evaluate_checkpoint(run).report()
    assert "checkpoint last (epoch 2)" in report and "its result is its last epoch" in report
    assert "checkpoint last (epoch 2)" in evaluate_checkpoint(run, which="best").report()  # the CLI's default


def test_a_run_stopped_in_its_first_epoch_is_evaluated_at_its_mid_epoch_checkpoint_and_says_so(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch, interrupt_after
) -> None:
    """No best checkpoint because no epoch ended (it has a validation split): not "no validation split"."""
    from cnnlab.train import Trainer

    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    monkeypatch.setattr(plots, "plot_curves", lambda *args, **kwargs: None)
    cfg = TrainConfig(model="lecture-simple", epochs=1, batch_size=64, eval_batch_size=256, threads=1,
                      max_steps_per_epoch=3, val_fraction=0.2, data_dir=str(tiny_dataset_dir))  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    interrupt_after(trainer, 1)
    assert trainer.fit().status == "interrupted"
    report = evaluate_checkpoint(tmp_path / "run").report()
    assert "checkpoint last (epoch 0)" in report and "it stopped in its first epoch" in report
    assert "no validation split" not in report


def test_evaluate_on_a_comparison_folder_lists_its_runs(run: Path, capsys) -> None:
    comparison = run.parent / "cmp"
    comparison.mkdir()
    shutil.copytree(run, comparison / "lecture-simple")
    (comparison / "comparison.json").write_text("{}")
    assert main(["evaluate", str(comparison)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"cnnlab: error: {comparison} is a comparison folder (cnnlab compare) of runs, not a run; "
        f"name one of its runs: {comparison / 'lecture-simple'}"
    )


def test_a_misspelt_checkpoint_or_split_is_a_usage_error_not_another_answer(run: Path) -> None:
    """which="lats" evaluated the best checkpoint (anything but "last" did); split="tst" was a KeyError."""
    with pytest.raises(UsageError, match="unknown checkpoint 'lats'. Did you mean 'last'"):
        evaluate_checkpoint(run, which="lats")
    with pytest.raises(UsageError, match="unknown split 'tst'. Did you mean 'test'"):
        evaluate_checkpoint(run, split="tst")


def test_evaluate_on_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=f"no run directory or checkpoint at {tmp_path / 'nope'}"):
        evaluate_checkpoint(tmp_path / "nope")


def test_a_full_disk_only_costs_the_confusion_plot(
    run: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args, **kwargs) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(evaluation, "plot_confusion", full)
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "per-class accuracy" in out
    assert out.rstrip().endswith(
        f"cnnlab: warning: could not save the confusion matrix plot in {run}: No space left on device"
    )


def test_evaluate_writes_only_in_the_run_directory_and_refuses_manifests_pointing_elsewhere(
    run: Path, tmp_path: Path
) -> None:
    manifest_path = run / "checkpoints" / "last.json"
    manifest = json.loads(manifest_path.read_text())
    evaluate_checkpoint(manifest_path)
    assert (run / "confusion.png").is_file() and not (run / "checkpoints" / "confusion.png").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    weights = run / "checkpoints" / manifest["files"]["weights"]
    shutil.copy(weights, elsewhere / "w.safetensors")
    manifest["files"]["weights"] = str(elsewhere / "w.safetensors")
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="is refused: its weights file .* is not a plain file name"):
        evaluate_checkpoint(manifest_path)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["w.safetensors"]


def test_a_confusion_png_outside_a_run_is_kept_and_the_run_s_own_is_refreshed(
    run: Path, tmp_path: Path
) -> None:
    """Evaluating a weights file copied out of its run writes beside it: a confusion.png there is the user's."""
    manifest = json.loads((run / "checkpoints" / "last.json").read_text())
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(run / "checkpoints" / manifest["files"]["weights"], mine / "w.safetensors")
    (mine / "confusion.png").write_bytes(b"the user's own picture")
    report = evaluate_checkpoint(mine / "w.safetensors").report()
    assert (mine / "confusion.png").read_bytes() == b"the user's own picture"
    assert f"{mine / 'confusion.png'} exists and is not a run's file, so it was kept" in report
    (run / "confusion.png").write_bytes(b"stale")
    evaluate_checkpoint(run)
    assert (run / "confusion.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("model.onnx", b"onnx", "is not a checkpoint: name a run directory, a checkpoint manifest (.json) or a "
         ".safetensors file cnnlab wrote; an ONNX model runs with cnnlab predict"),
        ("metrics.csv", b"epoch,lr", "is not a checkpoint: name a run directory"),
        ("config.json", b'{"model": "lecture-simple"}', "is not a checkpoint manifest; name a run directory"),
    ],
)  # fmt: skip
def test_a_file_that_is_not_a_checkpoint_is_a_usage_error(
    tmp_path: Path, capsys, name: str, content: bytes, said: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cnnlab: error: {path} {said}") and err.count("\n") == 1, err


def test_a_weights_file_with_a_damaged_header_is_a_clear_error(run: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    manifest = json.loads((run / "checkpoints" / "last.json").read_text())
    weights = run / "checkpoints" / manifest["files"]["weights"]
    with safe_open(str(weights), framework="pt") as f:
        header = json.loads(f.metadata()["json"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    for damage in ({"config": [1]}, {"input_shape": [1, 28]}, {"config": {"model": "x", "bogus": 1}}):
        save_file(tensors, str(run / "bad.safetensors"), metadata={"json": json.dumps({**header, **damage})})
        with pytest.raises(CheckpointError, match="has a damaged"):
            evaluate_checkpoint(run / "bad.safetensors")


def test_bn_recalibrate_recomputes_the_statistics_over_the_training_split(
    tmp_path, tiny_dataset_dir, monkeypatch
) -> None:
    import torch

    from cnnlab.cli import main
    from cnnlab.data import BatchLoader, load_dataset
    from cnnlab.models import create_model
    from cnnlab.train.evaluation import recalibrate_batchnorm

    model = create_model("resnet8-cifar", num_classes=10, in_chans=1)
    data = load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=False)
    loader = BatchLoader(data.train, batch_size=150, shuffle=False, seed=0, mean=(0.5,), std=(0.5,))
    assert recalibrate_batchnorm(model, loader) == sum(
        isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()
    )
    images = torch.cat([x for x, _ in loader])
    first = model.conv1.bn
    with torch.no_grad():
        expected = model.conv1.conv(images).mean((0, 2, 3))
    assert torch.allclose(first.running_mean, expected, atol=1e-4)  # the whole split, not a moving average
    assert not model.training and first.momentum == 0.1

    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    common = ["--data-dir", str(tiny_dataset_dir)]
    argv = [
        "train",
        "resnet8-cifar",
        "--epochs",
        "1",
        "--max-steps-per-epoch",
        "2",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    assert main([*argv, *common, "--batch-size", "50", "--threads", "1"]) == 0
    assert main(["evaluate", str(tmp_path / "resnet8-cifar"), "--bn-recalibrate", *common]) == 0
    assert main(["train", "lecture-simple", *argv[2:], *common]) == 0
    assert main(["evaluate", str(tmp_path / "lecture-simple"), "--bn-recalibrate", *common]) == 2


def test_a_runs_weights_file_named_directly_is_checked_against_the_manifest_beside_it(
    run: Path, capsys, monkeypatch
) -> None:
    """Naming `checkpoints/best.N.weights.safetensors` must not skip the SHA-256 that naming the run checks."""
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    weights = run / "checkpoints" / best["files"]["weights"]
    assert f"checkpoint best (epoch {best['epoch']})" in evaluate_checkpoint(weights).report()
    content = bytearray(weights.read_bytes())
    content[-10] ^= 1  # one bit of a tensor: the header still parses
    weights.write_bytes(bytes(content))
    for named in (run, weights):
        with pytest.raises(CheckpointError, match="SHA-256 does not match its manifest"):
            evaluate_checkpoint(named)
    from PIL import Image

    Image.new("L", (28, 28), 128).save(run / "grey.png")
    assert main(["predict", str(weights), str(run / "grey.png")]) == 1
    assert "SHA-256 does not match its manifest" in capsys.readouterr().err
    # the same file, intact, as MODEL --weights FILE: its plot does not replace the run's own
    weights.write_bytes(bytes(content[:-10]) + bytes([content[-10] ^ 1]) + bytes(content[-9:]))
    (run / "confusion.png").write_bytes(b"the run's own plot")
    monkeypatch.chdir(run.parent)
    capsys.readouterr()
    assert main(["evaluate", "lecture-simple", "--weights", str(weights)]) == 0
    assert f"(epoch {best['epoch']})" in capsys.readouterr().out  # from the manifest beside it
    assert (run / "confusion.png").read_bytes() == b"the run's own plot"
    assert (run.parent / "confusion.png").is_file()
    weights.write_bytes(bytes(content))
    # the damaged file as MODEL --weights FILE: to evaluate, predict or start training from
    for argv in (
        ["evaluate", "lecture-simple", "--weights", str(weights)],
        ["predict", "lecture-simple", "--weights", str(weights), str(run / "grey.png")],
    ):
        assert main(argv) == 1, argv
        assert "SHA-256 does not match its manifest" in capsys.readouterr().err
