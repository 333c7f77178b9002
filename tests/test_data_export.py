"""``cnnlab data export`` and ``data stats``: an exported folder trains exactly as the IDX files do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.data.export import class_folder_name, dataset_stats, export_imagefolder
from cnnlab.errors import UsageError
from cnnlab.train import TrainConfig, train


@pytest.fixture(scope="module")
def exported(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_NO_VERIFY", "1")  # generated stand-in files: not the official checksums
        return export_imagefolder(
            "fashion-mnist",
            tmp_path_factory.mktemp("export") / "fm",
            data_dir=tiny_dataset_dir,
            progress=False,
        )


def test_class_folders_sort_in_label_order_and_are_safe_names() -> None:
    names = [class_folder_name(k, n, 12) for k, n in enumerate(["T-shirt/top", "b", *"cdefghijkl"])]
    assert names[0] == "00_T-shirt-top" and names == sorted(names) and all("/" not in n for n in names)


def test_the_folder_holds_the_same_pixels_labels_and_order(exported: Path, tiny_dataset_dir: Path) -> None:
    idx = load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=False, val_fraction=0.1, seed=5)
    folder = load_dataset(str(exported), val_fraction=0.1, seed=5, progress=False)
    for a, b in ((idx.train, folder.train), (idx.val, folder.val), (idx.test, folder.test)):
        assert torch.equal(a.images, b.images[:, 0]) and torch.equal(a.labels, b.labels)
    assert folder.info.classes == idx.info.classes and folder.info.mean == idx.info.mean
    assert (exported / "train" / "0_T-shirt-top").is_dir()


def test_training_from_the_exported_folder_gives_the_idx_metrics(
    exported: Path, tiny_dataset_dir: Path, tmp_path: Path, no_curves, monkeypatch
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    recipe = dict(model="lecture-residual", epochs=1, batch_size=32, max_steps_per_epoch=3, seed=7,
                  val_fraction=0.1, eval_batch_size=256, device="cpu", threads=1)  # fmt: skip
    idx_cfg = TrainConfig(data="fashion-mnist", data_dir=str(tiny_dataset_dir), **recipe).validate()
    idx_run = train(idx_cfg, tmp_path / "idx", progress=False)
    folder_run = train(
        TrainConfig(data=str(exported), **recipe).validate(), tmp_path / "folder", progress=False
    )
    timing = ("epoch_seconds", "train_images_per_s", "elapsed_s")
    metrics = [[{k: v for k, v in row.items() if k not in timing} for row in run.history]
               for run in (idx_run, folder_run)]  # fmt: skip
    assert metrics[0] == metrics[1] and "val_acc" in metrics[0][0] and "test_acc" in metrics[0][0]
    assert folder_run.results["test_acc"] == idx_run.results["test_acc"]
    assert (tmp_path / "folder" / "data_manifest.json").is_file()


def test_export_refuses_a_non_empty_folder_without_overwrite(exported: Path, tiny_dataset_dir: Path, monkeypatch,
                                                             capsys) -> None:  # fmt: skip
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    before = sorted(p.name for p in (exported / "test").iterdir())
    code = main(["data", "export", "fashion-mnist", "--format", "imagefolder", str(exported),
                 "--data-dir", str(tiny_dataset_dir), "--quiet"])  # fmt: skip
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in (exported / "test").iterdir()) == before
    with pytest.raises(UsageError, match="folder already"):
        export_imagefolder(str(exported), exported.parent / "again")


def test_overwrite_replaces_an_earlier_export_whole_and_refuses_any_other_folder(
    tiny_dataset_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    out = tmp_path / "x"
    export_imagefolder("fashion-mnist", out, data_dir=tiny_dataset_dir, progress=False)
    stale = next((out / "test").iterdir()) / "stale.png"
    stale.write_bytes(b"left by an older export")
    export_imagefolder("fashion-mnist", out, data_dir=tiny_dataset_dir, overwrite=True, progress=False)
    assert not stale.exists() and len(list((out / "test").rglob("*.png"))) == 200
    assert [p.name for p in tmp_path.iterdir()] == ["x"]  # no staging folder left behind
    record = json.loads((out / "cnnlab-dataset.json").read_text())
    assert record["source"] == "fashion-mnist" and record["test_size"] == 200
    # a folder holding anything else is the user's: --overwrite refuses it and nothing in it is touched
    (out / "thesis.txt").write_text("mine")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for folder, named in ((out, "thesis.txt"), (mine, "notes.txt")):
        code = main(["data", "export", "fashion-mnist", str(folder), "--data-dir", str(tiny_dataset_dir),
                     "--overwrite", "--quiet"])  # fmt: skip
        err = capsys.readouterr().err
        assert (
            code == 2
            and err.count("\n") == 1
            and named in err
            and "not an image folder cnnlab exported" in err
        )
        assert (folder / named).read_text() == "mine"
    assert len(list((out / "test").rglob("*.png"))) == 200


def test_stats_of_a_registry_dataset_and_of_its_export_agree(exported: Path, tiny_dataset_dir: Path,
                                                             monkeypatch) -> None:  # fmt: skip
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    a = dataset_stats("fashion-mnist", data_dir=tiny_dataset_dir, progress=False)
    b = dataset_stats(str(exported), progress=False)
    assert a["counts"] == b["counts"] and a["classes"] == b["classes"]
    assert a["mean"] == pytest.approx(b["mean"]) and a["std"] == pytest.approx(b["std"])
    images = load_dataset("fashion-mnist", data_dir=tiny_dataset_dir).train.images.float() / 255
    assert a["mean"][0] == pytest.approx(images.mean().item(), abs=1e-6)
    assert a["std"][0] == pytest.approx(images.std(unbiased=False).item(), abs=1e-6)
    assert b["image_sizes"] == {"28x28": 800} and sum(a["counts"]["train"]) == 600
