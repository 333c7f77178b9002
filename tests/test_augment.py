"""The augmentation pipelines of cnnlab.data.augment: geometry, determinism, the papers' sampling rules,
the colour PCA, and exact resume of runs that use them."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab.data import Augment, BatchLoader, Split, colour_pca
from cnnlab.data.augment import (
    AREA_RANGE,
    ASPECT_RANGE,
    Draws,
    draw,
    five_crop_corners,
    gather_crops,
    resample_crops,
)
from cnnlab.data.loader import epoch_generator
from cnnlab.data.views import AUGMENTATIONS
from cnnlab.errors import UsageError
from cnnlab.train import TrainConfig, Trainer, train

RANDOM_CROPS = ("vgg", "inception")


def _images(n: int = 6, c: int = 1, h: int = 12, w: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


def _split(images: torch.Tensor) -> Split:
    return Split("train", images, torch.arange(len(images)) % 3)


def _raw(loader: BatchLoader) -> torch.Tensor:
    """All batches of one epoch in raw pixel units (mean 0, std 1 make the loader give x / 255)."""
    return torch.cat([x for x, _ in loader]) * 255


def _pca(c: int) -> object:
    return colour_pca(_images(4, c, 6, 6, seed=9))


@pytest.mark.parametrize("pipeline", list(AUGMENTATIONS))
def test_every_pipeline_gives_the_input_size_and_the_same_batches_for_the_same_seed_and_epoch(
    pipeline,
) -> None:
    images = _images(8, 3, 12, 12)
    augment = Augment(pipeline=pipeline, input_size=8, pca=_pca(3))
    batches = [
        _raw(BatchLoader(_split(images), 3, shuffle=True, seed=seed, augment=augment, channels_last=False))
        for seed in (1, 1, 2)
    ]
    assert batches[0].shape == (8, 3, 8, 8)
    assert torch.equal(batches[0], batches[1])
    assert not torch.equal(batches[0], batches[2])  # another seed, other choices (none: another order)
    loader = BatchLoader(_split(images), 8, seed=1, augment=augment)
    loader.set_epoch(5)
    again = BatchLoader(_split(images), 8, seed=1, augment=augment)
    again.set_epoch(5)
    assert torch.equal(next(iter(loader))[0], next(iter(again))[0])  # (seed, epoch) alone decide


def test_cifar_is_the_custom_crop_and_flip_with_four_pixels_of_padding() -> None:
    """He et al. 2016 Sec. 4.2: pad 4, crop the stored size, flip; the same draws as crop_padding=4, flip."""
    images = _images(10, 3, 8, 8)
    custom = _raw(BatchLoader(_split(images), 4, seed=3, augment=Augment(crop_padding=4, flip=True)))
    cifar = _raw(BatchLoader(_split(images), 4, seed=3, augment=Augment(pipeline="cifar")))
    assert cifar.shape == (10, 3, 8, 8) and torch.equal(custom, cifar)
    assert Augment(pipeline="cifar", crop_padding=2).padding == 2


def test_crops_are_one_of_the_four_corners_or_the_centre_possibly_mirrored() -> None:
    images = _images(40, 1, 10, 10)
    out = _raw(BatchLoader(_split(images), 40, seed=0, augment=Augment(pipeline="crops", input_size=6)))
    seen = set()
    for image, got in zip(images.float(), out):
        matches = {
            (k, flip)
            for k, (top, left) in enumerate(five_crop_corners((10, 10), (6, 6)).tolist())
            for flip in (False, True)
            if torch.allclose(
                got,
                (lambda v: v.flip(-1) if flip else v)(image[:, top : top + 6, left : left + 6]),
                atol=1e-3,
            )
        }
        assert matches
        seen |= matches
    assert {k for k, _ in seen} == set(range(5)) and {f for _, f in seen} == {False, True}


def test_evaluation_takes_the_centre_crop_of_the_input_size() -> None:
    images = _images(3, 1, 10, 10)
    out = _raw(BatchLoader(_split(images), 3, augment=Augment(input_size=6)))
    assert torch.allclose(out, images[:, :, 2:8, 2:8].float(), atol=1e-3)


@settings(max_examples=30, deadline=None)
@given(
    pipeline=st.sampled_from(list(AUGMENTATIONS)),
    height=st.integers(8, 40),
    width=st.integers(8, 40),
    data=st.data(),
    seed=st.integers(0, 2**32),
)
def test_every_box_stays_inside_the_padded_image(pipeline, height, width, data, seed) -> None:
    size = data.draw(st.integers(1, min(height, width) - (pipeline == "crops")))
    augment = Augment(pipeline=pipeline, input_size=size, pca=_pca(1))
    canvas = (height + 2 * augment.padding, width + 2 * augment.padding)
    draws = draw(augment, 50, canvas, epoch_generator(seed, 0), 1)
    if draws.boxes is not None:
        top, left, h, w = draws.boxes.unbind(1)
        eps = 1e-9
        assert (top >= -eps).all() and (left >= -eps).all()
        assert (top + h <= canvas[0] + eps).all() and (left + w <= canvas[1] + eps).all()
        assert (h > 0).all() and (w > 0).all()


@settings(max_examples=25, deadline=None)
@given(height=st.integers(8, 64), width=st.integers(8, 64), seed=st.integers(0, 2**32))
def test_random_resized_crops_keep_the_papers_area_and_aspect_ratio(height, width, seed) -> None:
    """Szegedy et al. 2015 Sec. 6: 8%-100% of the area, aspect ratio in [3/4, 4/3], or the whole image."""
    draws = draw(
        Augment(pipeline="inception", input_size=8), 200, (height, width), epoch_generator(seed, 0), 1
    )
    _, _, h, w = draws.boxes.unbind(1)
    whole = (h == height) & (w == width)
    area = h * w / (height * width)
    ratio = w / h
    eps = 1e-9
    assert ((area >= AREA_RANGE[0] - eps) & (area <= AREA_RANGE[1] + eps) | whole).all()
    assert ((ratio >= ASPECT_RANGE[0] - eps) & (ratio <= ASPECT_RANGE[1] + eps) | whole).all()


def test_vgg_scale_jittering_crops_the_input_size_after_a_shorter_side_in_smin_smax() -> None:
    """Simonyan & Zisserman 2015 Sec. 3.1: rescale to S ~ U[Smin, Smax], crop; here the box in stored pixels."""
    augment = Augment(pipeline="vgg", input_size=8, scale_range=(10, 20))
    draws = draw(augment, 500, (16, 16), epoch_generator(0, 0), 1)
    scale = 8 * 16 / draws.boxes[:, 2]  # input size * stored side / box side: the S it was rescaled to
    assert scale.min() >= 10 - 1e-9 and scale.max() <= 20 + 1e-9
    assert scale.min() < 11 and scale.max() > 19  # spread over the range
    assert Augment(pipeline="vgg").scales(224) == (256.0, 512.0)  # the paper's range for 224 crops
    with pytest.raises(UsageError, match="Smin >= the input size"):
        Augment(pipeline="vgg", input_size=8, scale_range=(6, 9)).scales(8)


@settings(max_examples=25, deadline=None)
@given(size=st.integers(2, 12), seed=st.integers(0, 2**32), data=st.data())
def test_flipping_twice_is_the_identity_and_resampling_a_whole_pixel_crop_equals_the_gather(
    size, seed, data
) -> None:
    out = data.draw(st.integers(1, size))
    images = _images(5, 2, size, size, seed=seed % 1000)
    generator = torch.Generator().manual_seed(seed)
    corners = torch.randint(0, size - out + 1, (5, 2), generator=generator)
    boxes = torch.cat([corners.double(), torch.full((5, 2), float(out), dtype=torch.float64)], 1)
    flips = torch.rand(5, generator=generator) < 0.5
    full = torch.tensor([[0.0, 0.0, size, size]], dtype=torch.float64).expand(5, 4)
    twice = gather_crops(gather_crops(images, full, flips, (size, size)), full, flips, (size, size))
    assert torch.equal(twice, images)
    gathered = gather_crops(images, boxes, flips, (out, out))
    resampled = resample_crops(images, boxes, flips, (out, out))
    assert torch.allclose(resampled, gathered.float(), atol=1e-3)


def test_colour_pca_matches_numpys_covariance_and_is_exact_however_it_is_chunked(monkeypatch) -> None:
    images = _images(20, 3, 7, 5, seed=4)
    pixels = images.permute(1, 0, 2, 3).reshape(3, -1).numpy() / 255.0
    values, vectors = np.linalg.eigh(np.cov(pixels, bias=True))
    pca = colour_pca(images)
    assert np.allclose(pca.eigenvalues, values[::-1], rtol=1e-9)
    got = np.array(pca.eigenvectors)
    assert np.allclose(np.abs(got.T @ vectors[:, ::-1]), np.eye(3), atol=1e-9)  # same axes, up to sign
    import cnnlab.data.augment as augment

    monkeypatch.setattr(augment, "EXACT_CHUNK_PIXELS", 35)  # one image per chunk
    assert colour_pca(images) == pca
    assert colour_pca(images[:, :1]).eigenvectors == ((1.0,),)


def test_alexnet_colour_noise_shifts_each_image_by_one_colour_along_the_eigenvectors() -> None:
    """Krizhevsky et al. 2012 Sec. 4.1: I + [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T, alpha ~ N(0, 0.1) per image."""
    images = _images(64, 3, 6, 6, seed=1)
    pca = colour_pca(images)
    augment = Augment(pipeline="alexnet", pca=pca)  # no crop (input = stored size): flips and colour only
    out = _raw(BatchLoader(_split(images), 64, seed=2, augment=augment))
    flipped = torch.stack(
        [
            o
            if torch.allclose(o - o.mean((1, 2), keepdim=True), i - i.mean((1, 2), keepdim=True), atol=1e-2)
            else o.flip(-1)
            for o, i in zip(out, images.float())
        ]
    )
    shift = flipped - images.float()
    per_image = shift.mean((2, 3))
    assert torch.allclose(
        shift, per_image[:, :, None, None].expand_as(shift), atol=1e-2
    )  # one colour per image
    # back in eigen coordinates: alpha_i * lambda_i / 255 ... alpha ~ N(0, 0.1)
    vectors = torch.tensor(pca.eigenvectors, dtype=torch.float64)
    alpha = (per_image.double() / 255) @ vectors / torch.tensor(pca.eigenvalues, dtype=torch.float64)
    assert 0.05 < float(alpha.std()) < 0.15 and abs(float(alpha.mean())) < 0.05


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pipeline="bogus"), "unknown augmentation"),
        (dict(pipeline="vgg", crop_padding=2), "crop_padding applies to the none"),
        (dict(pipeline="alexnet", scale_range=(4, 8)), "scale_range applies to the vgg"),
        (dict(pipeline="vgg", scale_range=(9, 8)), "Smin <= Smax"),
    ],
)
def test_bad_settings_are_usage_errors(kwargs, message) -> None:
    with pytest.raises(UsageError, match=message):
        Augment(**kwargs)


def test_impossible_sizes_and_a_missing_pca_are_usage_errors() -> None:
    images = _split(_images(2, 3, 8, 8))
    with pytest.raises(UsageError, match="input_size 9 is larger than the 8x8 images"):
        BatchLoader(images, augment=Augment(input_size=9))
    with pytest.raises(UsageError, match="crops augmentation needs an input size"):
        BatchLoader(images, augment=Augment(pipeline="crops"))
    with pytest.raises(UsageError, match="needs the training set's colour PCA"):
        next(iter(BatchLoader(images, augment=Augment(pipeline="alexnet"))))
    with pytest.raises(UsageError, match="unknown augmentation"):
        TrainConfig(augment="autoaugment").validate()


# -- runs ---------------------------------------------------------------------------------------


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: row[k] for k in ("train_loss", "train_acc", "test_acc")} for row in csv.DictReader(f)]


@pytest.mark.parametrize("pipeline", ["alexnet", "vgg"])
def test_a_run_stopped_mid_epoch_resumes_to_the_metrics_of_an_uninterrupted_one(
    tmp_path: Path, tiny_short_test, no_curves, interrupt_after, pipeline
) -> None:
    cfg = TrainConfig(
        model="lecture-simple", epochs=2, batch_size=128, eval_batch_size=256, threads=1, train_subset=384,
        augment=pipeline, pad_to=32, input_size=28,
    )  # fmt: skip
    train(cfg, tmp_path / "straight", data=tiny_short_test, progress=False)
    trainer = Trainer(cfg, tmp_path / "stopped", data=tiny_short_test, progress=False)
    assert trainer.input_shape == (1, 28, 28)
    interrupt_after(trainer, 4)  # inside the second epoch (3 steps per epoch)
    assert trainer.fit().status == "interrupted"
    resumed = Trainer(cfg, tmp_path / "stopped", data=tiny_short_test, progress=False, resume=True)
    if pipeline == "alexnet":  # the colour PCA is the run's saved one
        assert (tmp_path / "stopped" / "colour_pca.json").is_file()
        assert resumed.colour_pca == trainer.colour_pca and resumed.colour_pca.eigenvalues[0] > 0
    assert resumed.fit().status == "completed"
    assert _metrics(tmp_path / "stopped") == _metrics(tmp_path / "straight")
    if pipeline == "alexnet":  # read back, not recomputed
        saved = tmp_path / "stopped" / "colour_pca.json"
        saved.write_text(json.dumps({"eigenvalues": [0.5], "eigenvectors": [[1.0]]}))
        again = Trainer(cfg, tmp_path / "stopped", data=tiny_short_test, progress=False, resume=True)
        assert again.colour_pca.eigenvalues == (0.5,)
        again.run_lock.release()


def test_configs_saved_before_augmentation_existed_still_load_complete() -> None:
    saved = TrainConfig().to_dict()
    for key in ("augment", "input_size", "scale_range"):
        saved.pop(key)
    cfg = TrainConfig.from_dict(saved, complete=True)
    assert cfg.augment == "none" and cfg.input_size is None and cfg.scale_range is None
    assert TrainConfig.from_dict({**saved, "scale_range": [4, 8]}).scale_range == (4, 8)
    assert math.isclose(TrainConfig().augmentation().pca_std, 0.1)
    assert isinstance(Draws(None, None, None).take(0, 1), Draws)


def test_large_crops_copied_image_by_image_equal_the_gather() -> None:
    """The slice-copy path for large crops (AlexNet's 224 of 256) gives the gather's values exactly."""
    from cnnlab.data.augment import SLICE_CROP_PIXELS, gather_crops, slice_crops

    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (6, 3, 80, 90), generator=g, dtype=torch.uint8)
    boxes = torch.stack([torch.randint(0, 17, (6,), generator=g), torch.randint(0, 27, (6,), generator=g)], 1)
    boxes = torch.cat([boxes, torch.full((6, 2), 64)], 1).double()
    flips = torch.rand(6, generator=g) < 0.5
    assert 64 * 64 >= SLICE_CROP_PIXELS  # gather_crops takes the slice path here
    sliced = gather_crops(batch, boxes, flips, (64, 64))
    for i in range(6):
        top, left = int(boxes[i, 0]), int(boxes[i, 1])
        window = batch[i, :, top : top + 64, left : left + 64]
        assert torch.equal(sliced[i], window.flip(-1) if flips[i] else window)
    assert torch.equal(slice_crops(batch, None, None, (64, 64)), batch[:, :, :64, :64])
