"""BatchLoader and load_dataset on the generated tiny dataset: shapes, normalisation, determinism, splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.data import Augment, BatchLoader, Split, load_dataset
from cnnlab.errors import UsageError


@pytest.fixture(scope="module")
def tiny(tiny_dataset_dir):
    return load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=False)


def _split(n: int = 10, h: int = 4, w: int = 5) -> Split:
    images = torch.arange(n * h * w, dtype=torch.int64).remainder(251).to(torch.uint8).view(n, h, w)
    return Split("train", images, torch.arange(n) % 3)


def test_tiny_dataset_loads_as_uint8(tiny):
    assert tiny.train.images.shape == (600, 28, 28) and tiny.train.images.dtype == torch.uint8
    assert tiny.test.images.shape == (200, 28, 28)
    assert tiny.train.labels.dtype == torch.int64 and set(tiny.train.labels.tolist()) == set(range(10))
    assert tiny.val is None
    assert set(tiny.checks.values()) == {"not verified"}


def test_validation_split_is_disjoint_reproducible_and_complete(tiny_dataset_dir):
    a = load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, val_fraction=0.25, seed=3, verify=False)
    b = load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, val_fraction=0.25, seed=3, verify=False)
    c = load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, val_fraction=0.25, seed=4, verify=False)
    assert len(a.val) == 150 and len(a.train) == 450
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.val.images, c.val.images)
    # Disjoint and together the whole training set: compare images as rows.
    full = load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=False).train.images.view(600, -1)
    rows = {bytes(r.numpy()) for r in full}
    val_rows = [bytes(r.numpy()) for r in a.val.images.view(150, -1)]
    train_rows = [bytes(r.numpy()) for r in a.train.images.view(450, -1)]
    assert not set(val_rows) & set(train_rows)
    assert set(val_rows) | set(train_rows) == rows


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_validation_fraction_outside_range_is_usage_error(tiny_dataset_dir, fraction):
    with pytest.raises(UsageError, match=r"val_fraction must be in \[0, 1\)"):
        load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, val_fraction=fraction, verify=False)


def test_batches_normalised_shapes_and_lengths(tiny):
    info = tiny.info
    loader = BatchLoader(tiny.train, batch_size=128, mean=info.mean, std=info.std)
    batches = list(loader)
    assert len(loader) == len(batches) == 5 and loader.num_samples == 600
    assert [len(y) for _, y in batches] == [128, 128, 128, 128, 88]
    x = torch.cat([b[0] for b in batches])
    expected = (tiny.train.images.float() / 255 - info.mean[0]) / info.std[0]
    torch.testing.assert_close(x, expected.unsqueeze(1))
    assert x.dtype == torch.float32
    assert torch.equal(torch.cat([b[1] for b in batches]), tiny.train.labels)
    assert len(BatchLoader(tiny.train, batch_size=128, drop_last=True)) == 4


def test_pad_to_and_out_chans_and_channels_last(tiny):
    info = tiny.info
    loader = BatchLoader(
        tiny.test, batch_size=50, mean=info.mean, std=info.std, pad_to=32, out_chans=3, channels_last=True
    )
    x, _ = next(iter(loader))
    assert x.shape == (50, 3, 32, 32)
    assert x.is_contiguous(memory_format=torch.channels_last)
    background = -info.mean[0] / info.std[0]  # raw 0 after normalisation
    torch.testing.assert_close(x[:, :, :2], torch.full_like(x[:, :, :2], background))
    torch.testing.assert_close(x[:, :, :, -2:], torch.full_like(x[:, :, :, -2:], background))
    expected = (tiny.test.images[:50].float() / 255 - info.mean[0]) / info.std[0]
    torch.testing.assert_close(x[:, 1, 2:30, 2:30], expected)
    torch.testing.assert_close(x[:, 0], x[:, 2])


def test_order_depends_on_seed_and_epoch_only():
    split = _split(40)
    kwargs = dict(batch_size=16, shuffle=True, augment=Augment(crop_padding=1, flip=True))
    a = BatchLoader(split, seed=5, **kwargs)
    first = [torch.cat(t) for t in zip(*list(a))]
    second = [torch.cat(t) for t in zip(*list(a))]  # iteration advanced to epoch 1
    b = BatchLoader(split, seed=5, **kwargs)
    b.set_epoch(1)
    resumed = [torch.cat(t) for t in zip(*list(b))]
    assert not torch.equal(first[1], second[1])
    assert torch.equal(second[0], resumed[0]) and torch.equal(second[1], resumed[1])
    assert sorted(first[1].tolist()) == sorted(split.labels.tolist())
    c = BatchLoader(split, seed=6, **kwargs)
    assert not torch.equal(torch.cat([y for _, y in c]), first[1])


def test_crop_and_flip_match_a_per_sample_reference():
    split = _split(12)
    loader = BatchLoader(
        split, batch_size=12, shuffle=False, seed=1, augment=Augment(crop_padding=2, flip=True)
    )
    x, _ = next(iter(loader))
    x = (x * 255).round()  # default mean 0, std 1: back to raw values
    # Reconstruct each sample independently from its raw image: it must be some crop of the padded image,
    # possibly mirrored, and the set of choices must include both flipped and unflipped samples.
    padded = torch.nn.functional.pad(split.images.float(), (2, 2, 2, 2))
    flipped_count = 0
    for i in range(12):
        matches = []
        for dy in range(5):
            for dx in range(5):
                crop = padded[i, dy : dy + 4, dx : dx + 5]
                for flip in (False, True):
                    if torch.equal(x[i, 0], crop.flip(-1) if flip else crop):
                        matches.append(flip)
        assert matches, f"sample {i} is not a crop of its padded image"
        flipped_count += all(matches)
    assert 0 < flipped_count < 12


def test_loader_rejects_bad_arguments():
    split = _split()
    with pytest.raises(UsageError, match="batch_size"):
        BatchLoader(split, batch_size=0)
    with pytest.raises(UsageError, match="pad_to"):
        BatchLoader(split, pad_to=3)
    with pytest.raises(UsageError, match="std must be positive"):
        BatchLoader(split, std=(0.0,))
    with pytest.raises(UsageError, match="mean needs 1 or 1 values"):
        BatchLoader(split, mean=(0.1, 0.2))
    loader = BatchLoader(split, mean=torch.tensor([0.5]), std=np.float64(0.25))  # tensors and scalars work
    torch.testing.assert_close(
        next(iter(loader))[0], (split.images[:10].float() / 255 - 0.5).unsqueeze(1) / 0.25
    )
    with pytest.raises(UsageError, match="crop_padding"):
        Augment(crop_padding=-1)
