"""Data a script holds in memory (cnnlab.data.tensor_splits): trained on, recorded under its own name, and
never silently swapped for the dataset a config names by default."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cnnlab.data import tensor_splits
from cnnlab.errors import UsageError
from cnnlab.train import TrainConfig, train
from cnnlab.train.evaluation import evaluate_checkpoint


def stripes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 28x28 uint8 images of 3 classes: a bright band at the top, middle or bottom."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randint(0, 60, (n, 28, 28), generator=g, dtype=torch.uint8)
    for k in range(3):
        images[labels == k, 9 * k : 9 * k + 9] += 150
    return images, labels


@pytest.fixture(scope="module")
def bands():
    return tensor_splits("bands", stripes(96, 0), stripes(30, 1), classes=["top", "middle", "bottom"])


def config(**given) -> TrainConfig:
    return TrainConfig(
        model="lecture-simple", data="memory:bands", epochs=1, batch_size=32, threads=1, **given
    )


def test_a_run_on_data_in_memory_records_it_and_evaluation_needs_it_again(bands, tmp_path, no_curves) -> None:
    result = train(config(), tmp_path / "run", data=bands, progress=False)
    assert result.config.data == "memory:bands" and result.results["test_acc"] is not None
    with pytest.raises(UsageError, match="memory:bands is data a script handed in"):
        evaluate_checkpoint(tmp_path / "run", plot=False)
    again = evaluate_checkpoint(tmp_path / "run", plot=False, data=bands)
    assert again.result.accuracy == pytest.approx(result.results["test_acc"])
    assert again.result.confusion.shape == (3, 3)


def test_data_that_is_not_the_configs_is_refused(bands, tmp_path) -> None:
    """Left as it was, the run would be recorded as Fashion-MNIST (the config's default data), and
    its evaluation and resume would quietly read Fashion-MNIST."""
    with pytest.raises(UsageError, match=r"set TrainConfig\(data='memory:bands'\)"):
        train(TrainConfig(model="lecture-simple", epochs=1, threads=1), tmp_path / "run", data=bands)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("train_pair", "message"),
    [
        ((stripes(8, 0)[0].float(), stripes(8, 0)[1]), "must be uint8"),
        ((stripes(8, 0)[0], stripes(8, 0)[1][:4]), "of the same N"),
        ((stripes(8, 0)[0], stripes(8, 0)[1].float()), "class indices"),
        (stripes(8, 0)[0], "a pair"),
    ],
)
def test_tensors_that_are_not_images_and_labels_are_refused_saying_why(train_pair, message) -> None:
    with pytest.raises(UsageError, match=message):
        tensor_splits("x", train_pair, stripes(4, 1))


def test_a_run_of_a_model_this_process_has_not_registered_says_to_register_it(
    bands, tmp_path, monkeypatch, no_curves
) -> None:
    """A model of the user's own is registered by their code; a new process loading its run is told so,
    not "unknown model 'my-net'. Did you mean 'zfnet'?"."""
    import cnnlab
    from cnnlab.models import registry

    monkeypatch.setattr(
        registry, "_REGISTRY", dict(registry._REGISTRY)
    )  # the registration ends with the test

    @cnnlab.register_model(
        "test-own-net", family="mine", paper="a test", input_size=(1, 28, 28), num_classes=3
    )
    def own_net(num_classes: int = 3, in_chans: int = 1, drop_rate: float = 0.0) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(in_chans, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten(), torch.nn.Linear(4, num_classes))  # fmt: skip

    config_ = TrainConfig(model="test-own-net", data="memory:bands", epochs=1, batch_size=32, threads=1)
    train(config_, tmp_path / "run", data=bands, progress=False)
    del registry._REGISTRY["test-own-net"]  # a new process: the code that registers it has not run
    with pytest.raises(
        UsageError, match="holds the model 'test-own-net', which is not registered in this process"
    ):
        cnnlab.load_model(tmp_path / "run")
    with pytest.raises(UsageError, match="register it"):
        evaluate_checkpoint(tmp_path / "run", data=bands, plot=False)


def test_data_of_one_class_is_refused_before_training(tmp_path) -> None:
    images, _ = stripes(40, 0)
    one = tensor_splits(
        "one", (images, torch.zeros(40, dtype=torch.long)), (images[:8], torch.zeros(8, dtype=torch.long))
    )
    with pytest.raises(
        UsageError, match=r"memory:one gives one class \(0\); a classifier needs at least two"
    ):
        train(TrainConfig(model="lecture-simple", data="memory:one", epochs=1), tmp_path / "run", data=one)


def test_a_single_class_index_is_checked_against_the_data_first(tmp_path, bands) -> None:
    """``classes=(11,)`` of three classes is an index outside them, not a "name two classes" mistake; an
    index inside them gives the one-class refusal, naming the class."""
    cfg = TrainConfig(model="lecture-simple", data="memory:bands", epochs=1)
    with pytest.raises(UsageError, match=r"class indices \[11\] are outside memory:bands's 0\.\.2"):
        train(dataclasses.replace(cfg, classes=(11,)), tmp_path / "a", data=bands)
    with pytest.raises(UsageError, match=r"gives one class \(middle\); a classifier needs at least two"):
        train(dataclasses.replace(cfg, classes=(1,)), tmp_path / "b", data=bands)
