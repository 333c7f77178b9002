"""--init / --freeze / --reinit-above, the class-subset view, and `summary --layers`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.data import class_subset, load_dataset
from cnnlab.errors import UsageError
from cnnlab.fileio import sha256_file
from cnnlab.models import create_model
from cnnlab.models.layers import paper_layers
from cnnlab.references import reference_model_options
from cnnlab.train import TrainConfig
from cnnlab.train.checkpoint import load_weights
from cnnlab.train.engine import Trainer
from cnnlab.train.evaluation import resolve_weights
from cnnlab.train.transfer import freeze


def test_class_subset_keeps_only_those_classes_relabelled_in_order(tiny_dataset_dir: Path) -> None:
    data = load_dataset("fashion-mnist", data_dir=tiny_dataset_dir, verify=False, val_fraction=0.1, seed=0)
    view = class_subset(data, [7, 2, 5])
    assert view.info.classes == (data.info.classes[7], data.info.classes[2], data.info.classes[5])
    for whole, part in ((data.train, view.train), (data.val, view.val), (data.test, view.test)):
        assert len(part) == int(sum((whole.labels == c).sum() for c in (7, 2, 5)))
        assert set(part.labels.tolist()) == {0, 1, 2}
        assert torch.equal(part.images[part.labels == 1], whole.images[whole.labels == 2])
    with pytest.raises(UsageError, match="outside"):
        class_subset(data, [0, 10])
    # the recipe's check says which rule a list breaks: a class named twice
    with pytest.raises(UsageError, match=r"classes must name each class once, got \[1, 1, 2\]"):
        TrainConfig(classes=(1, 1, 2)).validate()


def test_paper_layers_count_conv_and_fc_in_order_without_aux_heads() -> None:
    with torch.device("meta"):
        alexnet = create_model("alexnet")
        googlenet = create_model("googlenet")
    assert len(paper_layers(alexnet)) == 8  # conv1-5, fc6-8 (Krizhevsky et al. 2012 figure 2)
    assert all("aux" not in name for name, _ in paper_layers(googlenet))


def test_summary_lists_the_layers_with_their_index(capsys) -> None:
    assert main(["summary", "alexnet", "--layers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and lines[0].split()[0] == "1" and "Conv2d" in lines[0] and "Linear" in lines[-1]


def test_freeze_by_count_includes_the_norm_after_the_layer_and_by_pattern() -> None:
    model = create_model("resnet8-cifar", num_classes=4, in_chans=1)
    frozen = freeze(model, ("1",))
    assert frozen == ["conv1.conv", "conv1.bn"], frozen
    assert not any(p.requires_grad for p in model.get_submodule(frozen[0]).parameters())
    other = create_model("resnet8-cifar", num_classes=4, in_chans=1)
    assert freeze(other, ("head*",)) and not any(p.requires_grad for p in other.head.parameters())
    with pytest.raises(UsageError, match="matches no layer"):
        freeze(other, ("nope*",))
    with pytest.raises(UsageError, match="has 8 conv and fc layers"):
        freeze(create_model("resnet8-cifar", num_classes=4, in_chans=1), ("9",))


def _cfg(tiny_dataset_dir: Path, **kwargs) -> TrainConfig:
    base = dict(model="resnet8-cifar", data_dir=str(tiny_dataset_dir), epochs=1, batch_size=50, lr=0.05,
                threads=1, max_steps_per_epoch=3, eval_batch_size=200, schedule="constant")  # fmt: skip
    return TrainConfig(**{**base, **kwargs})


def test_init_freeze_and_reinit_train_only_the_layers_above(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    Trainer(_cfg(tiny_dataset_dir, classes=(0, 1, 2, 3, 4)), tmp_path / "a", progress=False).fit()
    source, _ = load_weights(*resolve_weights(tmp_path / "a"))
    cfg = _cfg(
        tiny_dataset_dir, classes=(5, 6, 7, 8, 9), init=str(tmp_path / "a"), freeze=("2",), reinit_above=2
    )
    trainer = Trainer(cfg, tmp_path / "b", progress=False)
    frozen = trainer.frozen
    assert trainer.init_notes[0].startswith("init: ") and "re-initialised" in trainer.init_notes[-2]
    trainer.fit()
    after, _ = load_weights(*resolve_weights(tmp_path / "b", "last"))
    frozen_keys = [k for k in source if any(k.startswith(f + ".") for f in frozen)]
    assert any("running_mean" in k for k in frozen_keys)  # batch-norm statistics are part of what is frozen
    for key in frozen_keys:
        assert torch.equal(after[key], source[key]), key  # weights and BN statistics untouched
    top = paper_layers(create_model("resnet8-cifar", num_classes=5, in_chans=1))[-1][0] + ".weight"
    assert not torch.equal(after[top], source[top])
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["frozen"] == frozen and saved["freeze"] == ["2"] and saved["init"] == str(tmp_path / "a")
    assert TrainConfig.from_dict(saved, complete=True).freeze == ("2",)  # the record reads back as the recipe


def test_cli_init_from_a_run_with_another_class_count_drops_the_classifier(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    common = [
        "--data-dir",
        str(tiny_dataset_dir),
        "--epochs",
        "1",
        "--max-steps-per-epoch",
        "2",
        "--threads",
        "1",
    ]
    common += ["--out", str(tmp_path), "--batch-size", "50"]
    assert main(["train", "lecture-simple", "--name", "ten", "--quiet", *common]) == 0
    trainer = Trainer(
        _cfg(
            tiny_dataset_dir,
            model="lecture-simple",
            classes=(0, 1, 2),
            init=str(tmp_path / "ten"),
            freeze=("1",),
        ),
        tmp_path / "three",
    )
    notes = " ".join(trainer.init_notes)
    assert (
        "dropped the file's classifier" in notes and "(10 classes): newly initialised for 3 classes" in notes
    )
    assert "frozen: features.conv1" in notes
    assert (
        main(["train", "lecture-simple", "--name", "bad", "--init", str(tmp_path / "nothing"), *common]) == 2
    )
    assert "no weight file, run directory or checkpoint at" in capsys.readouterr().err


def test_cli_weights_from_a_torch_file_records_it_and_resumes(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    common = ["--data-dir", str(tiny_dataset_dir), "--max-steps-per-epoch", "2", "--threads", "1"]
    common += ["--out", str(tmp_path), "--batch-size", "50", "--quiet"]
    source = create_model("lecture-simple")  # a 10-class model's state dict, as a training script saves it
    torch.save({"state_dict": source.state_dict()}, tmp_path / "ten.pth")
    args = [
        "train",
        "lecture-simple",
        "--name",
        "b",
        "--classes",
        "5,6,7",
        "--weights",
        str(tmp_path / "ten.pth"),
    ]
    assert main([*args, "--freeze", "features.*", "--epochs", "1", *common]) == 0
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["init"] == str(tmp_path / "ten.pth") and saved["init_from"] == "cnnlab"
    assert saved["init_weights"] == {
        "file": str(tmp_path / "ten.pth"), "source": "cnnlab", "sha256": sha256_file(tmp_path / "ten.pth")
    }  # fmt: skip
    assert any("newly initialised for 3 classes" in n for n in saved["init_notes"])
    after, _ = load_weights(*resolve_weights(tmp_path / "b", "last"))
    assert torch.equal(after["features.conv1.weight"], source.state_dict()["features.conv1.weight"])  # frozen
    # resume continues from the checkpoint (not the file) and keeps the record
    assert main([*args, "--freeze", "features.*", "--epochs", "2", "--resume", *common]) == 0
    resumed = json.loads((tmp_path / "b" / "config.json").read_text())
    assert (
        resumed["init_weights"] == saved["init_weights"]
        and resumed["init_notes"][0] == saved["init_notes"][0]
    )
    # --weights-from without --weights, an unknown source, a reference of another model: one line, exit 2
    capsys.readouterr()
    assert main(["train", "lecture-simple", "--name", "c", "--weights-from", "timm", *common]) == 2
    assert "give --weights FILE too" in capsys.readouterr().err
    assert main([*args, "--weights-from", "torchvison", "--name", "e", *common]) == 2
    assert "unknown weight source 'torchvison'" in capsys.readouterr().err
    bad = [*args, "--weights-from", "torchvision:resnet18", "--name", "d", *common]
    assert main(bad) == 2
    assert "torchvision's resnet18 is cnnlab's resnet18, not lecture-simple" in capsys.readouterr().err


def test_weights_from_a_reference_completes_the_model_options() -> None:
    assert reference_model_options("torchvision:googlenet", "googlenet", {"aux_logits": False, "lrn": True}) == {
        "branch5x5_kernel": 3, "batch_norm": True, "lrn": True, "bn_eps": 1e-3, "pool4_kernel": 2,
        "transform_input": True, "aux_logits": False,
    }  # fmt: skip


def test_reinit_above_without_weights_names_the_flag_the_docs_teach(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch
) -> None:
    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    with pytest.raises(
        UsageError, match="--reinit-above applies to weights loaded with --weights; give --weights too"
    ):
        Trainer(_cfg(tiny_dataset_dir, reinit_above=2), tmp_path / "run", progress=False)


def test_a_kept_classifier_trained_on_other_classes_is_warned_of(
    tmp_path: Path, tiny_dataset_dir: Path, monkeypatch
) -> None:
    """Same count, other class names: output k would be read as the data's class k without a word."""
    import warnings

    monkeypatch.setenv("CNNLAB_NO_VERIFY", "1")
    Trainer(_cfg(tiny_dataset_dir, classes=(0, 1, 2, 3, 4)), tmp_path / "a", progress=False).fit()
    init = str(tmp_path / "a")
    with pytest.warns(
        UserWarning,
        match=r"trained on other classes \(its class 0 is 'T-shirt/top', the data's is 'Sandal'\).*--reinit-above 7",
    ):
        Trainer(_cfg(tiny_dataset_dir, classes=(5, 6, 7, 8, 9), init=init), tmp_path / "b", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same classes, or the classifier re-initialised: nothing to say
        Trainer(_cfg(tiny_dataset_dir, classes=(0, 1, 2, 3, 4), init=init), tmp_path / "c", progress=False)
        Trainer(
            _cfg(tiny_dataset_dir, classes=(5, 6, 7, 8, 9), init=init, reinit_above=4),
            tmp_path / "d",
            progress=False,
        )


def test_reinit_above_0_which_would_discard_every_loaded_weight_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        UsageError, match="reinit_above 0 re-initialises every layer, which discards all the loaded"
    ):
        TrainConfig(init=str(tmp_path / "a.safetensors"), reinit_above=0).validate()
