"""``cnnlab predict`` and ``cnnlab export``: PNGs of a (generated) Fashion-MNIST test split predicted through the
run, its model file and its ONNX export agree with ``cnnlab evaluate`` on the same images; clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.errors import UsageError
from cnnlab.export import export_model
from cnnlab.predict import predict
from cnnlab.train import TrainConfig, plots, train
from cnnlab.train.evaluation import evaluate_checkpoint, evaluate_tta_checkpoint
from cnnlab.weights import load_model


@pytest.fixture(scope="module")
def padded_run(tmp_path_factory: pytest.TempPathFactory, tiny_dataset_dir: Path) -> Path:
    """A short run whose test-time pipeline does something: 28 -> 32 padding and grey -> 3 channels."""
    run = tmp_path_factory.mktemp("predict") / "run"
    cfg = TrainConfig(model="lecture-simple", epochs=1, batch_size=64, eval_batch_size=256, threads=1,
                      max_steps_per_epoch=4, val_fraction=0.0, pad_to=32, in_chans=3,
                      data_dir=str(tiny_dataset_dir))  # fmt: skip
    data = load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "plot_curves", lambda *args, **kwargs: None)
        train(cfg, run, data=data, progress=False)
    return run


@pytest.fixture(scope="module")
def test_pngs(tmp_path_factory: pytest.TempPathFactory, tiny_dataset_dir: Path) -> tuple[Path, list[int]]:
    """The test split written as PNG files, in order, and its labels."""
    folder = tmp_path_factory.mktemp("pngs")
    split = load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=False).test
    for i, image in enumerate(split.images.numpy()):
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    return folder, split.labels.tolist()


def confusion(predicted: list[int], labels: list[int], classes: int = 10) -> list[list[int]]:
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix.tolist()


def test_predict_agrees_with_evaluate_through_the_run_its_model_file_and_onnx(
    padded_run: Path, test_pngs: tuple[Path, list[int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    run = tmp_path / "run"
    shutil.copytree(padded_run, run)
    folder, labels = test_pngs
    evaluation = evaluate_checkpoint(run, out_dir=tmp_path)
    expected = evaluation.result.confusion.tolist()

    from_run = [p.top[0][0] for p in predict(run, [folder], topk=1)]
    assert confusion(from_run, labels) == expected
    one_path = predict(run, str(folder), topk=1)  # one path, not its characters
    assert [p.top[0][0] for p in one_path] == from_run
    # images held in memory (a notebook's): a PIL image, a uint8 tensor [C, H, W], an array [H, W]
    from PIL import Image

    files = sorted(folder.iterdir())[:3]
    with Image.open(files[0]) as pil, Image.open(files[1]) as second, Image.open(files[2]) as third:
        rgb = torch.from_numpy(np.array(second.convert("RGB"))).permute(2, 0, 1)  # grey in 3 equal channels
        in_memory = [pil.copy(), rgb, np.array(third)]
    from_memory = predict(run, in_memory, topk=3)
    assert [p.top for p in from_memory] == [p.top for p in predict(run, files, topk=3)]
    assert [p.image for p in from_memory] == ["image 0", "image 1", "image 2"]
    with pytest.raises(UsageError, match="image 0 is a float32 array; give raw pixels as uint8"):
        predict(run, [torch.rand(3, 28, 28)])
    # a batch [N, 1, H, W] is N images; grey images stacked as [N, H, W] are refused with what to do
    batch = torch.stack([torch.from_numpy(np.array(Image.open(f))) for f in files])
    assert [p.top for p in predict(run, batch.unsqueeze(1), topk=3)] == [p.top for p in from_memory]
    with pytest.raises(UsageError, match=r"shape \(5, 28, 28\).*grey images \[N, H, W\]: x.unsqueeze\(1\)"):
        predict(run, torch.cat([batch, batch[:2]]))

    model_file = export_model(run, "safetensors", out=tmp_path / "m.safetensors").path
    onnx_file = export_model(run, "onnx", out=tmp_path / "m.onnx", dynamic_batch=True)
    assert onnx_file.max_abs_diff < 1e-4
    for path in (model_file, onnx_file.path):
        predictions = predict(path, [folder], topk=3)
        assert [p.top[0][0] for p in predictions] == from_run, path
        assert all(p.top[0][2] >= p.top[1][2] >= p.top[2][2] for p in predictions)
    # given as --weights of the model it is, the model file still says its classes, padding and mean/std
    as_weights = predict(
        "lecture-simple", [folder], topk=3, weights=model_file, model_options={"in_chans": 3}
    )
    assert [p.top for p in as_weights] == [p.top for p in predict(model_file, [folder], topk=3)]
    # the exported model file evaluates as its run did (its header carries the training recipe)
    assert evaluate_checkpoint(model_file, out_dir=tmp_path).result.confusion.tolist() == expected


def test_a_bare_weight_file_predicts_and_evaluates_as_its_run(
    padded_run: Path,
    test_pngs: tuple[Path, list[int]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    """``predict MODEL --weights FILE`` and ``evaluate MODEL --weights FILE`` (a .pth that does not say which model
    it is: the flags say what the run did) agree with the run, and with each other; ``--tta`` as evaluate's."""
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    folder, labels = test_pngs
    data_dir = str(TrainConfig.from_dict(json.loads((padded_run / "config.json").read_text())).data_dir)
    expected = evaluate_checkpoint(padded_run, out_dir=tmp_path).result.confusion.tolist()
    bare = tmp_path / "bare.pth"
    torch.save(load_model(padded_run).state_dict(), bare)

    settings = {"pad_to": 32, "in_chans": 3}
    evaluation = evaluate_checkpoint(
        "lecture-simple", weights=bare, settings=settings, data_dir=data_dir, out_dir=tmp_path
    )
    assert evaluation.result.confusion.tolist() == expected
    predictions = predict(
        "lecture-simple", [folder], topk=1, weights=bare, model_options={"in_chans": 3}, data="fashion-mnist",
        pad_to=32,
    )  # fmt: skip
    assert confusion([p.top[0][0] for p in predictions], labels) == expected
    assert (
        predictions[0].top[0][1]
        in load_dataset("fashion-mnist", data_dir=data_dir, verify=False).info.classes
    )

    # test-time views: predict --tta flip picks what evaluate --tta flip scores
    flipped = (
        evaluate_tta_checkpoint(padded_run, ["flip"], data_dir=data_dir).rows[0].result.confusion.tolist()
    )
    by_flip = [p.top[0][0] for p in predict(padded_run, [folder], topk=1, tta="flip")]
    assert confusion(by_flip, labels) == flipped
    centre = [p.top[0][0] for p in predict(padded_run, [folder], topk=1, tta="center")]
    assert confusion(centre, labels) == expected

    # the same on the command line, one line per image
    image = str(folder / "0000.png")
    args = ["lecture-simple", "--weights", str(bare), "--data", "fashion-mnist", "--pad-to", "32"]
    assert (
        main(["predict", *args, "--in-chans", "3", image, "--tta", "flip", "--topk", "1", "--format", "json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["index"] == by_flip[0]
    assert main(["evaluate", *args, "--in-chans", "3", "--data-dir", data_dir, "--out", str(tmp_path)]) == 0
    assert f"accuracy {100 * evaluation.result.accuracy:.2f}%" in capsys.readouterr().out

    # what does not fit is one line, exit status 2
    for bad, message in [
        (["predict", str(padded_run), image, "--weights", str(bare)], "with --weights, name a model"),
        (["predict", str(padded_run), image, "--pad-to", "32"], "apply with --weights"),
        (
            ["predict", *args[:3], "--pad-to", "32", "--in-chans", "3", image, "--classes", "1,2"],
            "give --data too",
        ),
        (  # the file's classifier, not a new random one for the two classes
            ["predict", *args, "--in-chans", "3", image, "--classes", "1,2"],
            "lecture-simple has 10 classes, and 2 class names were given (fashion-mnist --classes): name the 10",
        ),
        (["predict", str(padded_run), image, "--scales", "36"], "--scales applies to --tta"),
        (["predict", "lecture-simple", image, "--weights-from", "timm"], "give --weights FILE too"),
        (
            ["evaluate", "lecture-simple", "--weights", str(bare), "--data-dir", data_dir],
            "in the model: the file's model takes 3-channel images; build it with in_chans=3 (--in-chans 3)",
        ),
        (
            ["evaluate", *args, "--in-chans", "3", "--classes", "1,2", "--data-dir", data_dir],
            "evaluate it on all 10 classes of the data (drop --classes), or evaluate it on the dataset",
        ),
        (["evaluate", str(padded_run), "--pad-to", "32"], "applies with --weights"),
    ]:
        assert main(bad) == 2, bad
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (bad, err)


def test_predict_cli_table_json_and_batch_one_onnx(
    padded_run: Path, test_pngs, tmp_path: Path, capsys
) -> None:
    folder, _ = test_pngs
    images = [str(folder / "0000.png"), str(folder / "0001.png")]
    onnx = tmp_path / "b1.onnx"
    assert main(["export", str(padded_run), "--format", "onnx", "-o", str(onnx)]) == 0
    assert "onnxruntime vs PyTorch max |difference|" in capsys.readouterr().out
    assert (
        main(["predict", str(onnx), *images, "--topk", "2", "--format", "json"]) == 0
    )  # batch-1 file, 2 images
    rows = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in rows] == images and all(len(r["top"]) == 2 for r in rows)
    classes = load_dataset  # noqa: F841 - the class names come from the run's dataset
    assert rows[0]["top"][0]["class"] in ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # fmt: skip
    assert main(["predict", str(padded_run), *images, "--topk", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(images[0]) and lines[0].endswith("%")


def test_not_an_image_and_other_bad_input_are_one_line_errors(
    padded_run: Path, tmp_path: Path, capsys
) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    assert main(["predict", str(padded_run), str(bad)]) == 1  # a file that is not what it claims
    err = capsys.readouterr().err
    assert err.startswith(f"cnnlab: error: {bad} cannot be decoded as an image: not a readable image (")
    assert err.endswith("; fix or remove it, or pass --bad-images skip\n") and err.count("\n") == 1
    # --bad-images skip: the readable images are predicted, the others counted in one warning
    Image.fromarray(np.full((28, 28), 128, np.uint8)).save(tmp_path / "grey.png")
    assert main(["predict", str(padded_run), str(tmp_path), "--bad-images", "skip"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1 and out.startswith(str(tmp_path / "grey.png"))
    assert err.startswith(
        f"cnnlab: warning: skipped 1 unreadable image (first: {bad}: not a readable image ("
    )
    assert err.count("\n") == 1
    assert main(["predict", str(padded_run), str(bad), "--bad-images", "skip"]) == 1
    assert "none of the 1 images can be decoded" in capsys.readouterr().err
    (tmp_path / "grey.png").unlink()
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(padded_run), str(tmp_path / "empty")]) == 2
    assert "holds no image files" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nowhere"), str(bad)]) == 2
    assert "no run directory or model file" in capsys.readouterr().err
    out = tmp_path / "x.safetensors"
    assert main(["export", "lecture-simple", "--format", "safetensors", "-o", str(out)]) == 0
    assert main(["export", "lecture-simple", "--format", "safetensors", "-o", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    with pytest.raises(UsageError, match="unknown model"):
        export_model("lecture-simpel", "onnx", out=tmp_path / "y.onnx")


def test_an_unsupported_op_names_the_layer(tmp_path: Path) -> None:
    """An op the ONNX exporter cannot convert (adaptive max pooling to a grid that does not divide the map)."""
    from cnnlab.export import export_onnx
    from cnnlab.models import create_model

    model = create_model("lecture-simple")
    model.features.pool2 = torch.nn.AdaptiveMaxPool2d(3)  # the 8x8 map pooled to 3x3
    model.head_sized_from = None
    model.head.fc = torch.nn.Linear(20 * 3 * 3, 10)
    with pytest.raises(UsageError) as err:
        export_onnx(model, tmp_path / "bad.onnx")
    message = str(err.value)
    assert "layer 'features.pool2' (AdaptiveMaxPool2d)" in message and "\n" not in message
    assert not (tmp_path / "bad.onnx").exists()


def test_the_cli_choices_are_the_librarys() -> None:
    from cnnlab import export, predict
    from cnnlab.cli import deploy

    assert deploy.EXPORT_FORMATS == export.FORMATS and deploy.DEFAULT_OPSET == export.DEFAULT_OPSET
    assert deploy.OUTPUT_FORMATS == predict.OUTPUT_FORMATS


def test_predict_a_published_file_with_its_references_options_and_normalisation(
    tmp_path: Path, capsys
) -> None:
    from cnnlab.predict import decode_images, load_predictor, prepared_batches
    from cnnlab.references import IMAGENET_MEAN, fill_reference_weights, from_reference

    fixture = json.loads(
        (Path(__file__).parent / "fixtures" / "references" / "torchvision_resnet18.json").read_text()
    )
    state = fill_reference_weights(fixture["keys"], fixture["seed"])
    torch.save(state, tmp_path / "r18.pth")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(photo)

    predictor = load_predictor("resnet18", tmp_path / "r18.pth", "torchvision:resnet18")
    assert predictor.card.mean == IMAGENET_MEAN and predictor.card.num_classes == 10  # the file's classes
    (x,) = prepared_batches(decode_images([photo], predictor.card)[0], predictor.card)
    with torch.no_grad():
        expected = torch.softmax(from_reference("torchvision", "resnet18", state).eval()(x), dim=1)
    (prediction,) = predict(
        "resnet18",
        [photo],
        topk=2,
        weights=tmp_path / "r18.pth",
        weights_from="torchvision",
        model_options={"stride_in": "3x3"},
    )
    assert prediction.top[0][0] == int(expected.argmax()) and prediction.top[0][1] == str(
        prediction.top[0][0]
    )
    assert abs(prediction.top[0][2] - float(expected.max())) < 1e-6
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class {i}" for i in range(10)))
    args = ["predict", "resnet18", str(photo), "--weights", str(tmp_path / "r18.pth"), "--topk", "1"]
    assert main([*args, "--weights-from", "torchvision:resnet18", "--class-names", str(names)]) == 0
    assert f"class {prediction.top[0][0]}" in capsys.readouterr().out
    # the paper's resnet18 (stride_in 1x1) does not compute torchvision's function: refused, naming the option
    assert main([*args, "--weights-from", "torchvision"]) == 2
    assert "stride_in='3x3' (not '1x1')" in capsys.readouterr().err
