"""``load_weights`` / ``load_model``: the one reader of weight files. Names and shapes checked, the class-count
fix, pickles that carry code refused (nothing runs), truncated files a clear error, sources pluggable."""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import cnnlab
from cnnlab.cli import main
from cnnlab.errors import CheckpointError, UsageError
from cnnlab.models import create_model
from cnnlab.weights import (
    SOURCES,
    card_for_model,
    list_sources,
    load_model,
    load_weights,
    register_source,
    save_model_file,
)


def same_outputs(a: torch.nn.Module, b: torch.nn.Module, chans: int = 1, size: int = 28) -> bool:
    x = torch.randn(3, chans, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".pt"])
def test_round_trip_through_each_file_kind(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(0)
    source = create_model("lecture-residual")
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)
    target = create_model("lecture-residual")
    assert not same_outputs(source, target)
    report = load_weights(target, path)
    assert report.loaded == len(source.state_dict()) and not report.dropped and not report.messages
    assert same_outputs(source, target)


def test_a_training_script_checkpoint_wrapping_the_state_dict_loads(tmp_path: Path) -> None:
    source = create_model("lecture-simple")
    torch.save({"epoch": 3, "state_dict": source.state_dict()}, tmp_path / "ckpt.pth")
    target = create_model("lecture-simple")
    load_weights(target, tmp_path / "ckpt.pth")
    assert same_outputs(source, target)


def test_another_architecture_names_the_first_mismatching_key_with_both_shapes(tmp_path: Path) -> None:
    save_file(create_model("lecture-simple", in_chans=3).state_dict(), str(tmp_path / "rgb.safetensors"))
    with pytest.raises(UsageError) as err:
        load_weights(create_model("lecture-simple"), tmp_path / "rgb.safetensors")
    assert "features.conv1.weight is 10x3x5x5 in the file and 10x1x5x5 in the model" in str(err.value)
    state = create_model("lecture-simple").state_dict()
    del state["features.conv2.bias"]
    save_file(state, str(tmp_path / "short.safetensors"))
    with pytest.raises(
        UsageError, match="does not fit lecture-simple: it has no 'features.conv2.bias' \\(20\\)"
    ):
        load_weights(create_model("lecture-simple"), tmp_path / "short.safetensors")


def test_extra_tensors_in_the_file_are_refused(tmp_path: Path) -> None:
    state = create_model("lecture-simple").state_dict()
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "extra.safetensors"))
    with pytest.raises(UsageError, match="it has 'extra.weight' \\(2\\), which the model does not"):
        load_weights(create_model("lecture-simple"), tmp_path / "extra.safetensors")


def test_class_count_mismatch_names_the_fix_and_num_classes_drops_the_classifier(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_model("lecture-residual")  # 10 classes
    save_file(source.state_dict(), str(tmp_path / "ten.safetensors"))
    five = create_model("lecture-residual", num_classes=5)
    with pytest.raises(UsageError) as err:
        load_weights(five, tmp_path / "ten.safetensors")
    assert "10-class classifier (head.fc.weight)" in str(err.value)
    assert "num_classes=10" in str(err.value) and "num_classes=5" in str(err.value)

    fresh_fc = five.head.fc.weight.clone()
    report = load_weights(five, tmp_path / "ten.safetensors", num_classes=5)
    assert set(report.dropped) == {"head.fc.weight", "head.fc.bias"}
    assert report.messages == (
        "dropped the file's classifier head.fc (10 classes): newly initialised for 5 classes",
    )
    assert torch.equal(five.head.fc.weight, fresh_fc)  # the model's own new classifier stays
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():  # every other layer is the file's: the embeddings agree
        torch.testing.assert_close(
            five.eval().forward_head(five.forward_features(x), pre_logits=True),
            source.eval().forward_head(source.forward_features(x), pre_logits=True),
        )

    # asking for num_classes on a model of another class count resets its classifier first
    ten = create_model("lecture-residual")
    load_weights(ten, tmp_path / "ten.safetensors", num_classes=3)
    assert ten.num_classes == 3 and ten(x).shape == (2, 3)


class RunsCode:
    """A pickle payload that would create a file if it were ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_carrying_code_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({"conv.weight": torch.zeros(1), "payload": RunsCode(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError) as err:
        load_weights(create_model("lecture-simple"), tmp_path / "evil.pth")
    message = str(err.value)
    assert (
        "refused" in message
        and "nothing was unpickled" in message
        and re.search(r"GLOBAL \w+\.system", message)
    )
    assert "\n" not in message
    assert not marker.exists()


def test_a_raw_pickle_carrying_code_is_refused_without_torchs_protocol_warning(tmp_path: Path) -> None:
    """Not torch's zip format but a bare pickle (protocol 4): refused in one line, and torch's multi-line
    warning about the protocol is not printed before it."""
    marker = tmp_path / "ran"
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"conv.weight": torch.zeros(1), "payload": RunsCode(marker)}, f, protocol=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match="refused"):
            load_weights(create_model("lecture-simple"), tmp_path / "evil.pth")
    assert [str(w.message) for w in caught] == []
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_truncated_file_is_a_clear_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"w{suffix}"
    state = create_model("lecture-simple").state_dict()
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"weight file {path} is truncated or damaged"):
        load_weights(create_model("lecture-simple"), path)


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"hello\n", "it starts with b'hello\\n'"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n", "Git LFS pointer"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "HTML or XML page"),
        (b"", "it is empty"),
    ],
    ids=["text", "lfs-pointer", "html", "empty"],
)
def test_a_file_torch_did_not_write_is_named_in_one_line_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: bytes, said: str
) -> None:
    """A .pth that is not torch.save's zip or pickle (a saved error page, say) is said to be so, before
    torch.load sees it: that used to end in a KeyError traceback from the unpickler."""
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))} is not a PyTorch weight file") as err:
        load_weights(create_model("lecture-simple"), path)
    assert said in str(err.value) and "\n" not in str(err.value)
    code = main(["export", "lecture-simple", "--weights", str(path), "--format", "safetensors",
                 "-o", str(tmp_path / "out.safetensors")])  # fmt: skip
    out = capsys.readouterr()
    assert code == 1 and out.err.startswith("cnnlab: error: ") and out.err.count("\n") == 1, out.err
    # named as the model itself (a bare state dict would be a usage error), it is still said for what it is
    with pytest.raises(CheckpointError, match="is not a PyTorch weight file"):
        load_model(path)
    image = tmp_path / "x.png"
    Image.new("L", (28, 28)).save(image)
    for argv in (["predict", str(path), str(image)], ["evaluate", str(path)],
                 ["export", str(path), "--format", "onnx", "-o", str(tmp_path / "x.onnx")]):  # fmt: skip
        assert main(argv) == 1, argv
        assert f"{path} is not a PyTorch weight file: " in capsys.readouterr().err


def test_missing_file_unknown_type_and_unknown_source_are_usage_errors(tmp_path: Path) -> None:
    model = create_model("lecture-simple")
    with pytest.raises(UsageError, match="no weight file"):
        load_weights(model, tmp_path / "nope.safetensors")
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(UsageError, match="unknown weight file type '.h5'"):
        load_weights(model, tmp_path / "w.h5")
    with pytest.raises(UsageError, match="unknown weight source 'torchvisoin'"):
        load_weights(model, tmp_path / "w.h5", source="torchvisoin")


def test_a_registered_source_maps_names_and_is_checked_like_cnnlab_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cnnlab.weights.SOURCES", dict(SOURCES))
    register_source("toy", lambda tensors, model: {k.removeprefix("net."): v for k, v in tensors.items()})
    assert list_sources() == ["cnnlab", "timm", "torchvision", "toy"]  # the reference maps: cnnlab.references
    with pytest.raises(ValueError, match="already registered"):
        register_source("toy", lambda tensors, model: tensors)
    source = create_model("lecture-simple")
    save_file({f"net.{k}": v for k, v in source.state_dict().items()}, str(tmp_path / "toy.safetensors"))
    target = create_model("lecture-simple")
    with pytest.raises(UsageError, match="it has no 'features.conv1.weight'"):
        load_weights(target, tmp_path / "toy.safetensors")  # cnnlab's identity map: names differ
    load_weights(target, tmp_path / "toy.safetensors", source="toy")
    assert same_outputs(source, target)


def test_a_model_file_rebuilds_its_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_model("lecture-inception", num_classes=4, in_chans=3)
    card = card_for_model(source)
    assert card.input_size == (3, 28, 28) and card.classes == ["0", "1", "2", "3"]
    path = save_model_file(source, card, tmp_path / "m.safetensors")
    with pytest.raises(UsageError, match="exists; pass --overwrite"):
        save_model_file(source, card, path)
    rebuilt = cnnlab.load_model(path)
    assert rebuilt.model_card == card and not rebuilt.training
    assert same_outputs(source, rebuilt, chans=3)
    target = create_model("lecture-inception", num_classes=4, in_chans=3)
    assert cnnlab.load_weights(target, path).header["model"] == "lecture-inception"
    assert same_outputs(source, target, chans=3)
    torch.save(source.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(UsageError, match="bare state dict"):
        load_model(tmp_path / "bare.pth")


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        ({"mean": [0.5]}, None),  # one value for every channel: what card_for_model writes
        ({"mean": [0.5, 0.5]}, "mean has 2 values for 3-channel images"),
        ({"std": [0.0, 1.0, 1.0]}, "std must be positive"),
        ({"image_size": [-5, -5]}, "sizes must be positive"),
        (
            {"config": {"model": "lecture-residual"}},
            "it names model 'lecture-simple' and its recipe 'lecture-residual'",
        ),
    ],
)
def test_a_model_header_that_contradicts_itself_is_a_damaged_file(
    tmp_path: Path, edit: dict, said: str | None
) -> None:
    """A hand-edited or damaged header must not change predictions silently: exit 1, naming the fault."""
    import dataclasses
    import json

    from safetensors import safe_open

    card = dataclasses.replace(
        card_for_model(create_model("lecture-simple", in_chans=3)), mean=(0.5, 0.5, 0.5)
    )
    path = save_model_file(create_model("lecture-simple", in_chans=3), card, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    key = next(k for k, v in metadata.items() if v.startswith("{"))
    header = json.loads(metadata[key])
    header.update(edit)
    save_file(tensors, str(path), metadata={**metadata, key: json.dumps(header)})
    if said is None:
        assert load_model(path).model_card.mean == (0.5,)
        return
    with pytest.raises(CheckpointError, match=re.escape(said)):
        load_model(path)


def test_a_features_only_backbone_loads_its_networks_file(tmp_path: Path) -> None:
    source = create_model("resnet20-cifar")
    save_file(source.state_dict(), str(tmp_path / "r.safetensors"))
    backbone = create_model("resnet20-cifar", features_only=True)
    load_weights(backbone, tmp_path / "r.safetensors")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone.eval()(x)[-1], source.eval().forward_features(x))
