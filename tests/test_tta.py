"""Test-time evaluation: the views of each mode, dense evaluation with fully-connected layers as
convolutions, and ``cnnlab evaluate --tta``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cnnlab.cli import main
from cnnlab.data import Augment, BatchLoader, Split
from cnnlab.errors import UsageError
from cnnlab.models import create_model
from cnnlab.models.dense import conv_from_linear, dense_model
from cnnlab.train import TrainConfig, train
from cnnlab.train.engine import evaluate
from cnnlab.train.evaluation import evaluate_tta_checkpoint
from cnnlab.train.tta import crop_views, evaluate_tta, rescale


@pytest.mark.parametrize(
    "name, size, options",
    [
        ("lecture-simple", 28, {}),
        ("lecture-residual", 28, {}),
        ("vgg-a", 32, {}),
        ("cnn-f", 67, {}),
        ("alexnet", 67, {}),
        ("zfnet", 65, {}),
    ],
)
def test_the_converted_network_gives_the_original_logits_at_the_training_size(name, size, options) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=1, img_size=size, **options).eval()
    dense = dense_model(model).eval()
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        logits, scores = model(x), dense(x)
    assert scores.shape == (2, 7, 1, 1)
    assert torch.allclose(scores.flatten(1), logits, atol=1e-5, rtol=1e-5)


def test_on_a_larger_image_the_score_map_holds_the_logits_of_each_window() -> None:
    """lecture-simple has a total stride of 4: map cell (i, j) is the net on the 28x28 crop at (4i, 4j)."""
    torch.manual_seed(0)
    model = create_model("lecture-simple", img_size=28).eval()
    x = torch.randn(3, 1, 36, 40)
    with torch.no_grad():
        scores = dense_model(model)(x)
        assert scores.shape == (3, 10, 3, 4)
        for i in range(3):
            for j in range(4):
                crop = x[:, :, 4 * i : 4 * i + 28, 4 * j : 4 * j + 28]
                assert torch.allclose(scores[:, :, i, j], model(crop), atol=1e-5)


def test_networks_without_a_flattened_fc_classifier_are_refused_clearly() -> None:
    for name, options in (("resnet20-cifar", {}), ("vgg-a", {"adaptive_pool": True, "img_size": 32})):
        model = create_model(name, num_classes=10, **options)
        model.model_name = name
        with pytest.raises(UsageError, match=f"dense evaluation converts .*{name} has no such classifier"):
            dense_model(model)
    with pytest.raises(UsageError, match="cannot read a 2x3x3 map"):
        conv_from_linear(torch.nn.Linear(17, 4), (2, 3, 3))


def test_views_are_the_centre_the_five_crops_and_their_mirrors() -> None:
    x = torch.arange(2 * 1 * 6 * 7, dtype=torch.float32).view(2, 1, 6, 7)
    (centre,) = crop_views(x, (4, 4), corners=False, flips=False)
    assert torch.equal(centre, x[..., 1:5, 1:5])
    ten = list(crop_views(x, (4, 4), corners=True, flips=True))
    expected = [x[..., 0:4, 0:4], x[..., 0:4, 3:7], x[..., 2:6, 0:4], x[..., 2:6, 3:7], x[..., 1:5, 1:5]]
    assert len(ten) == 10
    for k, view in enumerate(expected):
        assert torch.equal(ten[2 * k], view) and torch.equal(ten[2 * k + 1], view.flip(-1))
    assert rescale(x, 12).shape == (2, 1, 12, 14) and rescale(x, 6) is x


class MeanColumns(torch.nn.Module):
    """A toy 'network' whose class scores are the column means of the image's left and right halves."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.stack([x[..., :half].mean((1, 2, 3)), x[..., half:].mean((1, 2, 3))], 1) * 10


def _loader(images: torch.Tensor, labels: torch.Tensor, **kwargs) -> BatchLoader:
    return BatchLoader(Split("test", images, labels), batch_size=4, **kwargs)


def test_center_agrees_with_plain_evaluation_and_flips_average_the_posteriors() -> None:
    images = torch.randint(
        0, 256, (10, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    labels = torch.arange(10) % 2
    model = MeanColumns()
    plain = evaluate(model, _loader(images, labels, augment=Augment(input_size=6)), 2, torch.device("cpu"))
    centre = evaluate_tta(model, _loader(images, labels), 2, torch.device("cpu"), "center", (6, 6))
    assert centre.views == 1 and centre.result.accuracy == plain.accuracy
    assert abs(centre.result.loss - plain.loss) < 1e-5
    # with its mirror image, this model's two scores swap: the averaged posterior is exactly 1/2
    dense_like = evaluate_tta(
        model, _loader(images, labels), 2, torch.device("cpu"), "multiscale", (6, 6), (8,)
    )
    assert dense_like.views == 2 and abs(dense_like.result.loss - torch.log(torch.tensor(2.0)).item()) < 1e-5


def test_bad_scales_and_modes_are_usage_errors() -> None:
    loader = _loader(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    cpu, model = torch.device("cpu"), MeanColumns()
    with pytest.raises(UsageError, match="multiscale evaluation needs the scales"):
        evaluate_tta(model, loader, 2, cpu, "multiscale", (6, 6))
    with pytest.raises(UsageError, match="at least the input size 6, got 5"):
        evaluate_tta(model, loader, 2, cpu, "multiscale", (6, 6), (5,))
    with pytest.raises(UsageError, match="scales apply to multiscale and dense evaluation, not 5crop"):
        evaluate_tta(model, loader, 2, cpu, "5crop", (6, 6), (8,))
    with pytest.raises(UsageError, match="unknown test-time mode"):
        evaluate_tta(model, loader, 2, cpu, "20crop", (6, 6))


@pytest.fixture(scope="module")
def cropped_run(tmp_path_factory: pytest.TempPathFactory, tiny_dataset_dir: Path, tiny_short_test) -> Path:
    """lecture-simple trained one short epoch on 28x28 crops of 32x32-padded images (the crops pipeline)."""
    cfg = TrainConfig(
        model="lecture-simple", epochs=1, batch_size=64, eval_batch_size=64, threads=1, train_subset=192,
        pad_to=32, input_size=28, augment="crops", data_dir=str(tiny_dataset_dir),
    )  # fmt: skip
    run = tmp_path_factory.mktemp("tta") / "run"
    train(cfg, run, data=tiny_short_test, progress=False)
    return run


def test_cnnlab_evaluate_tta_prints_one_accuracy_per_mode(cropped_run: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    code = main(["evaluate", str(cropped_run), "--tta", "center", "10crop", "dense", "--scales", "32", "36"])
    out = capsys.readouterr().out
    assert code == 0
    assert "input 28x28 from images stored at 32x32" in out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.split()[:1] in (["center"], ["10crop"], ["dense"])
    }
    assert rows["center"][1] == "1" and rows["10crop"][1] == "10" and rows["dense"][1:3] == ["4", "32,36"]
    # the centre-crop row is what plain evaluation reports (test split, the selected checkpoint)
    main(["evaluate", str(cropped_run)])
    plain = capsys.readouterr().out
    assert f"accuracy {rows['center'][3]}" in plain
    checkpoint = next(line for line in plain.splitlines() if line.startswith("checkpoint "))
    assert checkpoint.split(":")[0] in out  # the same checkpoint, named with its epoch
    tta = evaluate_tta_checkpoint(cropped_run, ["5crop"])
    assert tta.rows[0].views == 5 and 0.0 <= tta.rows[0].result.accuracy <= 1.0


def test_cli_refuses_scales_without_tta_and_unknown_modes_and_augmentations(
    cropped_run: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    assert main(["evaluate", str(cropped_run), "--scales", "32"]) == 2
    assert "--scales applies to --tta" in capsys.readouterr().err
    assert main(["evaluate", str(cropped_run), "--tta", "multiscale"]) == 2
    assert "needs the scales" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", str(cropped_run), "--tta", "sparse"])
    assert exit_.value.code == 2 and "invalid choice: 'sparse'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["train", "lecture-simple", "--out", str(tmp_path), "--augment", "bogus"])
    message = "unknown augmentation 'bogus'; choose one of none, flip"
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_tta_probabilities_average_softmax_not_logits() -> None:
    """Two views with logits (4, 0) and (0, 1): the loss is that of the mean posterior, not of the mean logits."""
    views = torch.tensor([[4.0, 0.0], [0.0, 1.0]])
    mean_posterior = F.softmax(views, 1).mean(0)

    class TwoViews(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flipped = bool(
                x[0, 0, 0, 0] < x[0, 0, 0, -1]
            )  # the mirror image has its bright column on the right
            return views[1 if flipped else 0].expand(len(x), 2)

    image = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    image[..., 0] = 255
    loader = _loader(image, torch.tensor([0]))
    got = evaluate_tta(TwoViews(), loader, 2, torch.device("cpu"), "multiscale", (4, 4), (4,))
    assert abs(got.result.loss + torch.log(mean_posterior[0]).item()) < 1e-6
    mean_logits = F.log_softmax(views.mean(0), 0)[0]
    assert abs(got.result.loss + mean_logits.item()) > 0.1
