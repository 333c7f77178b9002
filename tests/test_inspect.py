"""cnnlab.inspect: Grad-CAM on a net whose evidence is known, filters, feature maps, image input, the
report's content, ``cnnlab report`` / ``cnnlab show`` and TensorBoard event files."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnlab import fileio
from cnnlab.cli import main
from cnnlab.data import BatchLoader, load_dataset
from cnnlab.errors import DataError, UsageError
from cnnlab.inspect import activations, filters, grad_cam, image_to_tensor, load_image, write_report
from cnnlab.inspect.views import filter_tiles, overlay_heatmap, tile_grid
from cnnlab.models import create_model
from cnnlab.models.layers import ClassifierModel
from cnnlab.train import TrainConfig, train


class QuadrantNet(ClassifierModel):
    """Features: the image's brightness, one channel per quadrant (top-left, top-right, bottom-left,
    bottom-right), zero outside it. Class c's score is the mean of channel ``evidence[c]``: class c is
    decided by that quadrant alone."""

    def __init__(self, size: int = 16, evidence: tuple[int, ...] = (3, 0)) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, kernel_size=1, bias=False)
        nn.init.ones_(self.conv.weight)
        half = size // 2
        masks = torch.zeros(4, size, size)
        for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            masks[k, r * half : (r + 1) * half, c * half : (c + 1) * half] = 1
        self.register_buffer("masks", masks)
        self.fc = nn.Linear(4, len(evidence), bias=False)
        with torch.no_grad():
            self.fc.weight.zero_()
            for cls, quadrant in enumerate(evidence):
                self.fc.weight[cls, quadrant] = 4.0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)) * self.masks

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


def quadrant_of(heatmap: np.ndarray) -> int:
    row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    half = heatmap.shape[0] // 2
    return 2 * int(row >= half) + int(col >= half)


@pytest.mark.parametrize(("cls", "quadrant"), [(0, 3), (1, 0)])
def test_grad_cam_peaks_in_the_quadrant_that_decides_the_class(cls: int, quadrant: int) -> None:
    torch.manual_seed(0)
    image = torch.rand(1, 1, 16, 16) * 0.2
    image[..., 9:13, 10:14] += 0.5  # bottom-right: class 0's evidence
    image[..., 2:6, 3:7] += 0.4  # top-left: class 1's evidence
    image[..., 1:5, 10:14] += 0.9  # top-right, brightest of all: evidence for no class
    cam = grad_cam(QuadrantNet(), image, cls)
    assert cam.heatmap.shape == (16, 16) and cam.class_index == cls
    assert cam.heatmap.max() == pytest.approx(1.0) and cam.heatmap.min() >= 0
    assert quadrant_of(cam.heatmap) == quadrant
    # the brightest patch carries no weight for either class: no heat there
    assert cam.heatmap[1:5, 10:14].max() < 0.25


def test_grad_cam_defaults_to_the_predicted_class_and_refuses_a_class_out_of_range() -> None:
    image = torch.zeros(1, 1, 16, 16)
    image[..., :8, :8] = 1.0  # only top-left is lit: class 1 wins
    cam = grad_cam(QuadrantNet(), image)
    assert cam.class_index == 1 and cam.probabilities.argmax() == 1
    with pytest.raises(UsageError, match="class 5 is out of range"):
        grad_cam(QuadrantNet(), image, 5)


def test_grad_cam_runs_on_registered_models_of_several_families() -> None:
    for name, shape in (("lecture-inception", (1, 28, 28)), ("resnet20-cifar", (3, 32, 32))):
        torch.manual_seed(0)
        model = create_model(name)
        cam = grad_cam(model, torch.randn(1, *shape))
        assert cam.heatmap.shape == shape[1:] and np.isfinite(cam.heatmap).all(), name
        assert 0 <= cam.heatmap.min() and cam.heatmap.max() <= 1, name


def test_first_layer_filters_and_their_tiles() -> None:
    model = create_model("lecture-simple")
    name, weights = filters(model)
    assert name == "features.conv1" and weights.shape == (10, 1, 5, 5)
    assert filters(model, "features.conv2")[1].shape == (20, 10, 5, 5)
    with pytest.raises(UsageError, match="unknown convolution layer 'features.conv9'.*features.conv2"):
        filters(model, "features.conv9")
    tiles, columns = filter_tiles(np.array([[[[-2.0, 0.0], [1.0, 2.0]]]]))
    assert tiles[0, :, :, 0].tolist() == [[0.0, 0.5], [0.75, 1.0]] and columns == 1  # zero weight is mid-grey
    grid = tile_grid(np.ones((5, 3, 3, 1)), columns=2, gap=1)
    assert grid.shape == (11, 7, 1)


def test_activations_default_to_the_stages_and_refuse_unknown_layers() -> None:
    model = create_model("lecture-simple")
    maps = activations(model, torch.randn(2, 1, 28, 28))
    assert list(maps) == [f"features.{n}" for n in ("conv1", "pool1", "relu1", "conv2", "pool2", "relu2")]
    assert maps["features.conv1"].shape == (10, 24, 24) and maps["features.relu2"].shape == (20, 4, 4)
    assert list(activations(model, torch.randn(1, 1, 28, 28), ["features.conv2"])) == ["features.conv2"]
    with pytest.raises(UsageError, match="layer head.fc does not produce a feature map"):
        activations(model, torch.randn(1, 1, 28, 28), ["head.fc"])
    with pytest.raises(UsageError, match="unknown layer 'features.conv7'"):
        activations(model, torch.randn(1, 1, 28, 28), ["features.conv7"])


def test_an_image_file_becomes_exactly_what_the_loader_gives_for_that_image(
    tmp_path: Path, tiny_dataset_dir: Path
) -> None:
    data = load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=False)
    picture = data.test.images[3].numpy()
    Image.fromarray(picture).convert("RGB").save(tmp_path / "x.png")  # RGB on disk: converted back to grey
    cfg = TrainConfig(model="lecture-simple", pad_to=32, in_chans=3)
    x, raw = load_image(tmp_path / "x.png", cfg)
    loader = BatchLoader(
        data.test, batch_size=8, mean=data.info.mean, std=data.info.std, pad_to=32, out_chans=3
    )
    expected = next(iter(loader))[0][3:4]
    assert x.shape == (1, 3, 32, 32) and torch.equal(x, expected)
    assert raw.shape == (1, 28, 28) and (raw == picture).all()
    Image.fromarray(picture).resize((56, 56)).save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.png", cfg)[0].shape == (1, 3, 32, 32)  # resized to the data's 28x28
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(DataError, match="cannot read .*bad.png as an image"):
        load_image(tmp_path / "bad.png", cfg)
    assert image_to_tensor(np.zeros((1, 28, 28), np.uint8), TrainConfig()).shape == (1, 1, 28, 28)


def test_overlay_crops_the_heat_map_to_the_unpadded_picture() -> None:
    heat = np.zeros((32, 32))
    heat[2:30, 2:30] = 1.0  # the picture's area inside pad_to=32
    out = overlay_heatmap(np.zeros((1, 28, 28), np.uint8), heat, alpha=1.0)
    assert out.shape == (28, 28, 3) and np.allclose(out, out[0, 0])  # all of it is the hot colour
    cold = overlay_heatmap(np.full((1, 28, 28), 200, np.uint8), np.zeros((28, 28)))
    assert np.allclose(cold, 200 / 255)  # no evidence: the picture as it is


# ------------------------------------------------------------------------------ runs, CLI, files


@pytest.fixture(scope="module")
def tiny_run(tiny_short_test, tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "simple"
    cfg = TrainConfig(
        model="lecture-simple", epochs=2, batch_size=64, eval_batch_size=256, lr=0.05, threads=1,
        data_dir=str(tiny_dataset_dir), max_steps_per_epoch=3,
    )  # fmt: skip
    train(cfg, run, data=tiny_short_test, progress=False)
    return run


@pytest.fixture
def no_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")  # the generated dataset has no official checksums


def test_report_holds_the_runs_figures_inline_and_its_numbers(
    tiny_run: Path, tmp_path: Path, no_verify
) -> None:
    out = write_report(tiny_run, tmp_path / "r.html")
    page = out.read_text()
    results = json.loads((tiny_run / "results.json").read_text())
    assert f"{100 * results['test_acc']:.2f}%" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count('src="data:image/png;base64,') >= 3  # curves (2), filters, mistakes
    assert "features.conv1: 10 filters of 1x5x5" in page
    assert '<table class="confusion">' in page and "Ankle boot" in page
    with pytest.raises(UsageError, match="already exists; use --overwrite"):
        write_report(tiny_run, out)
    # a mistyped run is said first, not the report an earlier command left
    with pytest.raises(UsageError, match=f"no run directory at {tmp_path / 'nonexistent'}"):
        write_report(tmp_path / "nonexistent", out)


def test_report_refuses_a_run_that_has_not_completed(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    with pytest.raises(
        UsageError, match=r"has not completed \(no results.json\): finish it with `cnnlab train"
    ):
        write_report(tmp_path / "run", tmp_path / "r.html")
    assert main(["report", str(tmp_path / "nothing"), "-o", str(tmp_path / "r.html")]) == 2
    (tmp_path / "members.json").write_text('{"members": ["run"]}')  # a member of an experiment
    with pytest.raises(
        UsageError, match=f"finish it with the command that started the experiment in {tmp_path}, plus"
    ):
        write_report(tmp_path / "run", tmp_path / "r.html")


def test_show_commands_write_pngs_and_print_their_paths(tiny_run: Path, tmp_path: Path, capsys) -> None:
    image = tmp_path / "shoe.png"
    Image.fromarray((np.arange(28 * 28).reshape(28, 28) % 256).astype(np.uint8)).save(image)
    out = tmp_path / "views"
    assert main(["show", "cam", str(tiny_run), str(image), "--out", str(out)]) == 0
    assert main(["show", "cam", str(tiny_run), str(image), "--class", "Bag", "--out", str(out)]) == 0
    assert (
        main(
            [
                "show",
                "activations",
                str(tiny_run),
                str(image),
                "--layers",
                "features.conv1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["show", "filters", str(tiny_run), "--out", str(out)]) == 0
    assert main(["show", "filters", "lecture-residual", "--layer", "features.conv2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 5 and all(
        Path(p).is_file() and Path(p).read_bytes()[:4] == b"\x89PNG" for p in printed
    )
    assert (out / "cam-shoe-Bag.png").is_file() and (out / "act-shoe-features.conv1.png").is_file()
    # each picture says what it is, drawn above it and as the PNG's Title
    titles = {Path(p).name: Image.open(p).text.get("Title", "") for p in printed}
    assert titles["cam-shoe-Bag.png"].startswith("shoe.png: Grad-CAM of Bag (p = 0.")
    assert titles["act-shoe-features.conv1.png"] == (
        "shoe.png, features.conv1: 10 of 10 feature maps of 24x24, each scaled to its own range"
    )
    assert titles["filters-features.conv2.png"].startswith("lecture-residual, features.conv2: ")
    assert "(the first 16 inputs of each, a row per filter)" in titles["filters-features.conv2.png"]
    with Image.open(out / "act-shoe-features.conv1.png") as drawn:
        top = np.asarray(drawn.convert("L"))[:16]
    assert top.max() == 255 and top.min() < 128  # a white strip with dark text on it
    assert main(["show", "filters", str(tiny_run), "--out", str(out)]) == 2  # exists: --overwrite needed
    # conv2's file exists: the command is refused before conv1's (the first in the model) is written
    argv = ["show", "activations", str(tiny_run), str(image), "--out", str(tmp_path / "acts")]
    assert main([*argv, "--layers", "features.conv2"]) == 0
    assert main([*argv, "--layers", "features.conv1", "features.conv2"]) == 2
    assert not (tmp_path / "acts" / "act-shoe-features.conv1.png").exists()
    assert main(["show", "cam", str(tiny_run), str(image), "--class", "Cat", "--out", str(out)]) == 2
    assert main(["show", "cam", "lecture-simple", str(image)]) == 2  # a model name has no data to read with
    err = capsys.readouterr().err
    assert (
        "already exists; use --overwrite" in err and "unknown class 'Cat'" in err and "Valid classes: " in err
    )


def test_tensorboard_events_hold_the_scalars_the_confusion_image_and_the_hparams(
    tiny_short_test, tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TrainConfig(
        model="lecture-simple", epochs=2, batch_size=64, lr=0.05, threads=1, data_dir=str(tiny_dataset_dir),
        max_steps_per_epoch=2,
    )  # fmt: skip
    result = train(cfg, tmp_path / "run", data=tiny_short_test, progress=False, tensorboard=True)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    val = [e.value for e in events.Scalars("accuracy/val")]
    assert val == pytest.approx([row["val_acc"] for row in result.history])
    assert [e.step for e in events.Scalars("loss/train")] == [1, 2]
    assert events.Tags()["images"] == ["confusion_matrix/test"]
    hparams = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    assert "_hparams_/session_start_info" in hparams.summary_metadata or hparams.Tags()["tensors"] != []


def test_tensorboard_missing_is_one_line_saying_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    code = main(["train", "lecture-simple", "--tensorboard", "--out", str(tmp_path), "--epochs", "1"])
    assert code == 2 and not (tmp_path / "lecture-simple").exists()


def test_a_single_epoch_is_one_whole_tick_not_a_range_of_fractions() -> None:
    from cnnlab.train.plots import comparison_figure, curves_figure

    rows = [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.1, "val_acc": 0.4}]
    for fig in (comparison_figure({"a": [40.0]}), curves_figure(rows)):
        assert all([t.get_text() for t in ax.get_xticklabels()] == ["1"] for ax in fig.axes)


@pytest.mark.parametrize("command", ["report", "export", "model-file", "filters", "cam"])
def test_read_only_storage_is_one_line_exit_1_for_every_output(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, no_verify, command: str
) -> None:
    """Report, ONNX export, filter and Grad-CAM pictures: storage that refuses the write is one line naming
    the file (not the hidden temporary), exit 1, no traceback, and no mislabelled export failure."""
    image = tmp_path / "shoe.png"
    Image.fromarray((np.arange(28 * 28).reshape(28, 28) % 256).astype(np.uint8)).save(image)
    out = tmp_path / "out"

    def read_only(path: Path, suffix: str = fileio.TEMP_SUFFIX) -> tuple[int, str]:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path.parent / f".{path.name}.x1y2{suffix}"))

    monkeypatch.setattr(fileio, "temp_file_beside", read_only)
    argv = {
        "report": ["report", str(tiny_run), "-o", str(out / "r.html")],
        "export": ["export", str(tiny_run), "--format", "onnx", "-o", str(out / "m.onnx")],
        "model-file": ["export", str(tiny_run), "--format", "safetensors", "-o", str(out / "m.safetensors")],
        "filters": ["show", "filters", str(tiny_run), "--out", str(out)],
        "cam": ["show", "cam", str(tiny_run), str(image), "--out", str(out)],
    }[command]
    written = {
        "report": "r.html",
        "export": "m.onnx",
        "model-file": "m.safetensors",
        "filters": "filters-features.conv1.png",
    }
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cnnlab: error: cannot write the "), err
    assert "Read-only file system; free space or make it writable, or choose another " in err
    if command in written:
        assert f"({out / written[command]})" in err  # the file asked for, not the temporary beside it
    assert ".part" not in err and "opset" not in err


@pytest.mark.parametrize("damaged", ["results.json", "config.json"])
@pytest.mark.parametrize("content", ["", "{not json"])
def test_report_on_a_run_with_an_empty_or_damaged_json_file_is_one_line_exit_1(
    tiny_run: Path, tmp_path: Path, capsys, no_verify, damaged: str, content: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / damaged).write_text(content)
    assert main(["report", str(run), "-o", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    what = "empty" if not content else "damaged"
    assert err.startswith(f"cnnlab: error: {run / damaged} is {what} (") and err.count("\n") == 1, err
    assert "train the run again (cnnlab train ... --overwrite)" in err
    assert not (tmp_path / "r.html").exists()
