"""Image folders: every format and mode, sizes, splits, the decoded cache, streaming, bad input, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import imagefolder as imf
from cnnlab.data import load_dataset
from cnnlab.errors import DataError, UsageError


def write_folder(root: Path, per_class: int = 4, size: int = 8, mode: str = "RGB", ext: str = "png",
                 classes: tuple[str, ...] = ("cat", "dog"), seed: int = 0) -> Path:  # fmt: skip
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).convert(mode).save(
                root / c / f"{i:03d}.{ext}"
            )
    return root


def grey_ramp(size: int = 8) -> np.ndarray:
    return (np.arange(size * size, dtype=np.uint8).reshape(size, size) * 3).astype(np.uint8)


@pytest.mark.parametrize(
    ("mode", "ext"),
    [("L", "png"), ("RGB", "jpg"), ("RGBA", "png"), ("P", "gif"), ("CMYK", "jpg"), ("RGB", "bmp"),
     ("RGB", "webp"), ("I;16", "png"), ("LA", "png")],
)  # fmt: skip
def test_every_mode_and_format_decodes_to_the_requested_channels(tmp_path: Path, mode: str, ext: str) -> None:
    base = Image.fromarray(grey_ramp())
    if mode in ("I;16", "I"):
        image = Image.fromarray(grey_ramp().astype(np.uint16) * 256 + 7)  # 16-bit grey, mode I;16
    else:
        image = base.convert(mode)
    path = tmp_path / f"x.{ext}"
    image.save(path)
    for chans in (1, 3):
        out = imf.decode_image(path, None, chans)
        assert out.shape == (chans, 8, 8) and out.dtype == np.uint8
        if ext in ("png", "bmp", "gif"):
            # lossless formats keep the grey ramp exactly (16-bit: its top 8 bits)
            assert np.array_equal(out[0], grey_ramp()), mode


def test_32_bit_and_float_grey_keep_their_8_bit_range() -> None:
    wide = Image.fromarray(grey_ramp().astype(np.int32) * 256)  # mode I, 16-bit values (as some PNGs open)
    assert wide.mode == "I" and np.array_equal(np.asarray(imf.to_eight_bit(wide)), grey_ramp())
    floats = Image.fromarray(grey_ramp().astype(np.float32))
    assert floats.mode == "F" and np.array_equal(np.asarray(imf.to_eight_bit(floats)), grey_ramp())


def test_a_folder_trains_on_every_format_predict_reads(tmp_path: Path) -> None:
    """TIFF, PGM and PPM files are images to training as to predict, not files silently left out."""
    root = write_folder(tmp_path / "f", per_class=2, ext="tif")
    write_folder(root, per_class=2, mode="L", ext="pgm", seed=1)
    Image.open(root / "cat" / "000.tif").save(root / "cat" / "000.ppm")
    data = load_dataset(str(root), image_size=8, progress=False)
    assert len(data.train) + len(data.test) == 9 and data.manifest["ignored_files"] == 0


def test_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("L", (4, 4), v) for v in (10, 200)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert int(imf.decode_image(tmp_path / "a.gif", None, 1).max()) == 10


def test_default_channels_are_one_for_grey_folders_and_three_otherwise(tmp_path: Path) -> None:
    grey = load_dataset(str(write_folder(tmp_path / "g", mode="L")), progress=False)
    colour = load_dataset(str(write_folder(tmp_path / "c", mode="RGB")), progress=False)
    assert grey.train.images.shape[1:] == (1, 8, 8) and colour.train.images.shape[1:] == (3, 8, 8)
    assert grey.info.classes == ("cat", "dog") and len(grey.info.mean) == 1 and len(colour.info.std) == 3
    forced = load_dataset(f"imagefolder:{tmp_path / 'g'}", in_chans=3, progress=False)
    assert forced.train.images.shape[1] == 3
    assert torch.equal(forced.train.images[:, 0], forced.train.images[:, 2])


def test_sizes_must_agree_unless_an_image_size_is_given(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "f", size=8)
    Image.new("RGB", (12, 6), (255, 0, 0)).save(root / "cat" / "wide.png")
    with pytest.raises(UsageError, match=r"differ in size .*--image-size"):
        load_dataset(str(root), progress=False)
    data = load_dataset(str(root), image_size=4, progress=False)
    assert data.train.images.shape[1:] == (3, 4, 4)
    wide = imf.decode_image(root / "cat" / "wide.png", 4, 3)  # 12x6 -> 8x4, centre 4x4 of a red image
    assert wide.shape == (3, 4, 4) and (wide[0] == 255).all() and (wide[1] == 0).all()


def test_split_folders_val_folder_and_the_seeded_test_hold_out(tmp_path: Path) -> None:
    write_folder(tmp_path / "s" / "train", per_class=10)
    write_folder(tmp_path / "s" / "val", per_class=2, seed=1)
    data = load_dataset(str(tmp_path / "s"), val_fraction=0.5, seed=3, progress=False)
    assert len(data.val) == 4  # the val/ folder, not a seeded half of train
    assert len(data.test) == 4 and len(data.train) == 16  # 20% of train/ held out as the test split
    again = load_dataset(str(tmp_path / "s"), val_fraction=0.5, seed=4, progress=False)
    assert torch.equal(data.test.images, again.test.images)  # the test split does not depend on the seed
    flat = load_dataset(
        str(write_folder(tmp_path / "flat", per_class=10)), val_fraction=0.25, seed=0, progress=False
    )
    assert (len(flat.train), len(flat.val), len(flat.test)) == (12, 4, 4)
    with pytest.raises(DataError, match="not among the train/ classes"):
        write_folder(tmp_path / "s" / "test", classes=("cow",))
        load_dataset(str(tmp_path / "s"), progress=False)


def test_the_cache_is_reused_verified_and_keyed_by_the_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = write_folder(tmp_path / "f")
    first = load_dataset(str(root), progress=False)
    (npy,) = imf.image_cache_dir().glob("*.npy")
    calls = []
    real = imf._decode_chunk
    monkeypatch.setattr(imf, "_decode_chunk", lambda *a: calls.append(1) or real(*a))
    second = load_dataset(str(root), progress=False)
    assert calls == [] and torch.equal(first.train.images, second.train.images)  # from the cache
    raw = bytearray(npy.read_bytes())
    raw[-1] ^= 0xFF
    npy.write_bytes(bytes(raw))
    third = load_dataset(str(root), progress=False)
    assert calls and torch.equal(first.train.images, third.train.images)  # damaged: decoded again
    calls.clear()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / "cat" / "000.png")
    os.utime(root / "cat" / "000.png", ns=(1, 1))
    load_dataset(str(root), progress=False)
    assert calls  # a changed file is a new key


def test_worker_processes_and_streaming_give_the_same_images(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "f", per_class=6)
    scan = imf.scan_folder(root)
    here, _, _ = imf.decode_folder(scan, workers=0, progress=False, use_cache=False)
    workers, _, _ = imf.decode_folder(scan, workers=2, progress=False, use_cache=False)
    assert np.array_equal(here, workers)
    memory = imf.load_image_folder(root, val_fraction=0.25, progress=False, stream=False)
    streamed = imf.load_image_folder(root, val_fraction=0.25, progress=False, stream=True)
    assert isinstance(streamed.train.images, imf.LazyImages)
    from cnnlab.data import BatchLoader

    a = [x for x, _ in BatchLoader(memory.train, 4, shuffle=True, seed=1)]
    b = [x for x, _ in BatchLoader(streamed.train, 4, shuffle=True, seed=1)]
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == len(b) == 2
    a = [x for x, _ in BatchLoader(memory.test, 1)]  # unshuffled: slices of the split
    b = [x for x, _ in BatchLoader(streamed.test, 1)]
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == len(b) == len(memory.test) == 2


def test_bad_images_error_naming_the_file_or_are_skipped_and_counted(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "f")
    good = (root / "dog" / "001.png").read_bytes()
    (root / "dog" / "002.png").write_bytes(good[: len(good) // 2])  # truncated
    (root / "dog" / "readme.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"dog/002\.png: .*--bad-images skip"):
        load_dataset(str(root), progress=False)
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        data = load_dataset(str(root), bad_images="skip", progress=False)
    assert len(data.train) + len(data.test) == 7
    assert data.manifest["ignored_files"] == 1 and data.manifest["skipped_images"][0].endswith("002.png")
    with pytest.raises(DataError, match=r"002\.png"):  # the cache remembers it: error policy still refuses
        load_dataset(str(root), progress=False)
    with pytest.raises(UsageError, match="unknown --bad-images value"):
        load_dataset(str(root), bad_images="ignore", progress=False)
    # a class left with no image once its unreadable ones are skipped: refused as an empty class folder
    (root / "owl").mkdir()
    (root / "owl" / "001.png").write_bytes(good[:40])
    with pytest.raises(DataError, match="class owl has no readable image"), pytest.warns(UserWarning):
        load_dataset(str(root), bad_images="skip", progress=False)


def test_a_decompression_bomb_is_refused_naming_the_file(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "f")
    with pytest.raises(
        DataError, match=r"cat/000\.png: 8x8 pixels, over the limit of 10 .*decompression bomb"
    ):
        imf.load_image_folder(root, max_pixels=10, progress=False)


def test_empty_class_no_images_symlink_loops_are_one_line_errors(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "f")
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="empty: empty class folder"):
        load_dataset(str(root), progress=False)
    (tmp_path / "none" / "a").mkdir(parents=True)
    (tmp_path / "none" / "a" / "x.txt").write_text("x")
    with pytest.raises(DataError, match="no images found"):
        load_dataset(str(tmp_path / "none"), progress=False)
    loop = write_folder(tmp_path / "loop")
    (loop / "cat" / "again").symlink_to(loop / "cat")
    with pytest.raises(DataError, match="symbolic-link loop"):
        load_dataset(str(loop), progress=False)
    selfloop = write_folder(tmp_path / "selflink")
    (selfloop / "cat" / "x.png").symlink_to(selfloop / "cat" / "x.png")
    with pytest.raises(DataError, match="symbolic-link loop"):
        load_dataset(str(selfloop), progress=False)
    with pytest.raises(UsageError, match="does not exist"):
        load_dataset(str(tmp_path / "missing"), progress=False)


def test_cli_trains_and_evaluates_from_a_folder_and_saves_the_manifest(
    tmp_path: Path, no_curves, capsys
) -> None:
    root = write_folder(tmp_path / "f", per_class=12, size=16, mode="L")
    Image.new("L", (20, 24), 9).save(root / "cat" / "big.png")
    args = ["train", "lecture-simple", "--data", f"imagefolder:{root}", "--image-size", "16", "--epochs", "1",
            "--out", str(tmp_path / "runs"), "--quiet", "--batch-size", "8"]  # fmt: skip
    assert main(args) == 0
    run = tmp_path / "runs" / "lecture-simple"
    manifest = json.loads((run / "data_manifest.json").read_text())
    assert manifest["classes"] == ["cat", "dog"] and len(manifest["files"]) == 25
    assert {row[2] for row in manifest["files"]} == {"train", "val", "test"}
    assert json.loads((run / "config.json").read_text())["image_size"] == 16
    assert main(["evaluate", str(run)]) == 0
    assert "accuracy" in capsys.readouterr().out
    # the run's checkpoint says how it prepared the folder's images (mean, std, size): it predicts, shows
    # and exports without a registry entry for its data
    image = str(root / "dog" / "000.png")
    assert main(["predict", str(run), image, "--format", "json", "--topk", "2"]) == 0
    from_run = json.loads(capsys.readouterr().out)[0]["top"]
    assert {c["class"] for c in from_run} == {"cat", "dog"}
    assert main(["show", "cam", str(run), image, "--out", str(tmp_path / "views")]) == 0
    exported = tmp_path / "m.safetensors"
    assert main(["export", str(run), "--format", "safetensors", "-o", str(exported)]) == 0
    capsys.readouterr()
    assert main(["predict", str(exported), image, "--format", "json", "--topk", "2"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"] == from_run
    assert main(["data", "stats", str(root), "--image-size", "16", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "stored as 1x16x16" in out and "16x16 (24), 20x24 (1)" in out
    assert (
        main(["train", "lecture-simple", "--data", str(root), "--out", str(tmp_path / "r2"), "--quiet"]) == 2
    )
    assert "--image-size" in capsys.readouterr().err


def test_a_random_crop_smaller_than_the_image_takes_a_window_of_it() -> None:
    from cnnlab.data import Augment, BatchLoader
    from cnnlab.data.load import Split

    images = torch.arange(4 * 36, dtype=torch.uint8).view(4, 1, 6, 6)
    loader = BatchLoader(Split("t", images, torch.zeros(4, dtype=torch.int64)), 4,
                         augment=Augment(pipeline="alexnet", input_size=4, pca_std=0), std=(1 / 255,))  # fmt: skip
    windows = set()
    for _ in range(6):
        ((x, _),) = list(loader)
        assert x.shape == (4, 1, 4, 4)
        for i in range(4):
            found = [(r, c, f) for r in range(3) for c in range(3) for f in (False, True)
                     if torch.equal(x[i, 0], (images[i, 0, r:r + 4, c:c + 4].flip(-1) if f else
                                              images[i, 0, r:r + 4, c:c + 4]).float())]  # fmt: skip
            assert len(found) == 1
            windows.add(found[0])
    assert len(windows) > 6  # offsets and flips vary
    with pytest.raises(UsageError, match="input_size 7 is larger"):
        BatchLoader(Split("t", images, torch.zeros(4, dtype=torch.int64)), 4, augment=Augment(input_size=7))


def test_a_checkpoint_without_the_preparation_record_of_an_image_folder_says_so() -> None:
    """Image-folder runs of an older cnnlab did not record their mean, std and size; nothing else says them."""
    from cnnlab.data.catalog import run_dataset_info
    from cnnlab.errors import DataError

    recorded = {"mean": [0.5], "std": [0.25], "image_size": [16, 16], "image_chans": 1, "classes": ["a", "b"]}
    info = run_dataset_info("imagefolder:/x", recorded)
    assert (info.mean, info.std, info.image_size, info.in_chans, info.classes) == (
        (0.5,),
        (0.25,),
        (16, 16),
        1,
        ("a", "b"),
    )
    assert run_dataset_info("fashion-mnist", {}).name == "fashion-mnist"
    with pytest.raises(DataError, match="does not record how it prepared its images from imagefolder:/x"):
        run_dataset_info("imagefolder:/x", {"classes": ["a", "b"]})


def test_skipped_images_are_one_warning_with_their_count_and_pillow_says_nothing(tmp_path: Path) -> None:
    """A file that is no image and a TIFF cut inside its tags (Pillow warns "Corrupt EXIF data" reading them):
    the first load (headers read, then images decoded) gives one warning counting both, the cached load the
    same one, and none of Pillow's own."""
    import warnings

    root = write_folder(tmp_path / "f")
    (root / "dog" / "099.png").write_text("not an image")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "cat" / "098.tif")
    tiff = (root / "cat" / "098.tif").read_bytes()
    (root / "cat" / "098.tif").write_bytes(tiff[:20])
    for _ in range(2):  # decoded, then from the cache
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = load_dataset(str(root), bad_images="skip", progress=False)
        messages = [str(w.message) for w in caught]
        assert len(messages) == 1 and messages[0].startswith("skipped 2 unreadable images"), messages
        assert "cat/098.tif: not a readable image (" in messages[0]  # as the header pass words it
        assert len(data.train) + len(data.test) == 8
    # every reader goes through decode_image (predict, show): its BadImage, and no word from Pillow
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(imf.BadImage):
            imf.decode_image(root / "cat" / "098.tif", None, 3)
    assert caught == []


def test_evaluating_a_weight_file_on_a_folder_takes_the_bad_image_policy_its_error_names(
    tmp_path: Path, capsys
) -> None:
    """The decode error says "pass --bad-images skip": `evaluate MODEL --weights` must take that flag."""
    from safetensors.torch import save_file

    from cnnlab.models import create_model

    root = write_folder(tmp_path / "f", per_class=6, size=28)
    good = (root / "dog" / "001.png").read_bytes()
    (root / "dog" / "002.png").write_bytes(good[: len(good) // 2])  # truncated
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_file(create_model("lecture-simple", num_classes=2, in_chans=3).state_dict(), str(weights))
    argv = ["evaluate", "lecture-simple", "--weights", str(weights), "--data", str(root), "--in-chans", "3"]
    assert main([*argv, "--out", str(tmp_path / "e1")]) == 1
    assert "--bad-images skip" in capsys.readouterr().err
    assert main([*argv, "--bad-images", "skip", "--out", str(tmp_path / "e2")]) == 0
    out, err = capsys.readouterr()
    assert "(test split, 2 images)" in out and "accuracy" in out
    assert "skipped 1 unreadable image" in err and "dog/002.png" in err
    # a classifier of more classes than the folder has: no --classes can match it, fine-tuning can
    save_file(create_model("lecture-simple", num_classes=10, in_chans=3).state_dict(), str(weights))
    assert main([*argv, "--bad-images", "skip"]) == 2
    error = capsys.readouterr().err.splitlines()[-1]  # after the skipped image's warning
    assert (
        "has a 10-class classifier and the data has 2 classes: the data has only 2 classes, so fine" in error
    )
    assert "--classes" not in error
    # predict reads classes and statistics of a registry dataset only: a folder's would need decoding it
    predict_argv = ["predict", "lecture-simple", "--weights", str(weights), "--data", str(root)]
    assert main([*predict_argv, "--in-chans", "3", str(root / "cat" / "000.png")]) == 2
    assert "is an image folder; with --weights, --data names a registry dataset" in capsys.readouterr().err


def test_a_run_keeps_its_recorded_split_when_its_folder_changes(tmp_path: Path, no_curves, capsys) -> None:
    from cnnlab.train.evaluation import evaluate_checkpoint, load_saved_model

    root = write_folder(tmp_path / "f", per_class=10, size=16, mode="L")
    runs = tmp_path / "runs"
    train = ["train", "lecture-simple", "--data", str(root), "--image-size", "16", "--batch-size", "8",
             "--out", str(runs), "--quiet", "--no-report"]  # fmt: skip
    assert main([*train, "--epochs", "1"]) == 0
    run = runs / "lecture-simple"
    record = (run / "data_manifest.json").read_bytes()
    test_rows = sorted(r[0] for r in json.loads(record)["files"] if r[2] == "test")
    for c in ("cat", "dog"):  # "I collected more data"
        for i in range(10, 16):
            Image.new("L", (16, 16), i).save(root / c / f"{i:03d}.png")
    # evaluate, resume and a script's load give the run's own files and splits, warning of the new ones
    with pytest.warns(UserWarning, match="12 images added since the run was trained"):
        saved = load_saved_model(run, device="cpu")
    assert len(saved.data.test) == len(test_rows)
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    captured = capsys.readouterr()
    assert f"test split, {len(test_rows)} images" in captured.out and "added since" in captured.err
    assert main([*train, "--epochs", "2", "--resume"]) == 0
    assert "added since" in capsys.readouterr().err
    assert (run / "data_manifest.json").read_bytes() == record  # the record of the split is kept
    # data loaded as the folder now is (a different split) is refused when handed in
    with pytest.raises(DataError, match="12 added, 0 removed"):
        evaluate_checkpoint(run, data=load_dataset(str(root), image_size=16, progress=False), plot=False)
    # a recorded file gone: the split cannot be rebuilt, so evaluate, report and resume refuse (exit 1)
    (root / test_rows[0]).unlink()
    assert main(["evaluate", str(run)]) == 1
    err = capsys.readouterr().err
    assert f"changed since the run was trained: 12 added, 1 removed (first: {test_rows[0]})" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["report", str(run), "-o", str(tmp_path / "r.html")]) == 1
    assert main([*train, "--epochs", "3", "--resume"]) == 1
    assert "changed since the run was trained" in capsys.readouterr().err
    assert (run / "data_manifest.json").read_bytes() == record
    (run / "data_manifest.json").write_text("{")
    assert main(["evaluate", str(run)]) == 1
    assert "data_manifest.json is damaged" in capsys.readouterr().err
