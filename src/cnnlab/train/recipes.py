"""Named training recipes: each paper's settings as data, every value beside its source.

Torch-free, so that ``--help`` can show a recipe's values as its defaults without importing torch.

A recipe sets some :class:`TrainConfig` fields; the rest keep TrainConfig's defaults. Explicit flags
override a recipe's values (``cnnlab train alexnet --lr 0.005``), and the run's ``config.json``
records the recipe's name (``recipe``) and which fields came from it (``recipe_fields``).

Sources: the survey slides in ``shared/seeds`` (003: the AlexNet and ResNet "training in practice"
lists; 004: BN-Inception's learning rates) and the papers' own sections. Where a paper's schedule
is counted in iterations or over 100+ epochs and cannot shrink to a short run, the value says it
is a cnnlab deviation and why.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cnnlab.errors import unknown_choice
from cnnlab.train.config import TrainConfig

#: ``--recipe none``: TrainConfig's defaults, whatever the model's own recipe is.
NO_RECIPE = "none"


@dataclass(frozen=True)
class Recipe:
    """A paper's training settings: ``values`` maps a TrainConfig field to ``(value, source)``."""

    name: str
    paper: str
    values: dict[str, tuple[Any, str]]

    def settings(self) -> dict[str, Any]:
        """``{field: value}`` without the sources."""
        return {key: value for key, (value, _) in self.values.items()}


def _recipe(name: str, paper: str, **values: tuple[Any, str]) -> Recipe:
    return Recipe(name, paper, values)


_SLIDE_ALEXNET = "slide 003 (AlexNet details)"
_SPEEDRUN = "cnnlab: measured (docs/training.md, Speedrun)"
#: the speedrun recipe's epochs (benchmarks/speedrun.py also runs a longer schedule for the 94% mark)
SPEEDRUN_EPOCHS = 6
_SLIDE_RESNET = "slide 003 (Training ResNet in practice)"
_STEPS_NOTE = (
    "cnnlab: cosine with 1 warm-up epoch in place of the paper's steps, so short budgets end annealed"
)

# AlexNet's settings as the slides and section 5 print them (the recipes alexnet and alexnet-paper).
_ALEXNET: dict[str, tuple[Any, str]] = {
    "optimizer": ("sgd", f"{_SLIDE_ALEXNET}: SGD Momentum 0.9; paper section 5"),
    "momentum": (0.9, f"{_SLIDE_ALEXNET}; paper section 5"),
    "nesterov": (False, "paper section 5: plain momentum update"),
    "lr": (0.01, f"{_SLIDE_ALEXNET}: learning rate 1e-2; paper section 5"),
    "schedule": ("plateau", f"{_SLIDE_ALEXNET}: reduced by 10 manually when val accuracy plateaus"),
    "gamma": (0.1, f"{_SLIDE_ALEXNET}: reduced by 10"),
    "weight_decay": (5e-4, f"{_SLIDE_ALEXNET}: L2 weight decay 5e-4; paper section 5"),
    "batch_size": (128, f"{_SLIDE_ALEXNET}: batch size 128; paper section 5"),
    "drop_rate": (0.5, f"{_SLIDE_ALEXNET}: dropout 0.5; paper section 4.2"),
}
# Measured on Fashion-MNIST at alexnet's smallest input (67, 1 channel), docs/training.md: with section 5's
# N(0, 0.01) weights and biases 1 the first steps at lr 1e-2 blow the loss up (mean 11.7 over 10 steps) and
# the net ends at chance (10%); a linear warm-up to 1e-2 blows up too (at lr ~4e-3), and with biases 0 the
# signal dies in the 8 layers (loss stays ln 10). He-normal weights learn at the paper's lr 1e-2 (61% after
# 60 steps).
_ALEXNET_HE = (
    "cnnlab deviation: He et al. 2015 (section 2.2) normal weights, biases 0, in place of paper section 5's "
    "N(0, 0.01) with biases 1, which stays at chance in a short run here (recipe alexnet-paper keeps it)"
)

# ZFNet's settings as section 3 prints them (the recipes zfnet and zfnet-paper).
_ZFNET: dict[str, tuple[Any, str]] = {
    "optimizer": ("sgd", "paper section 3: stochastic gradient descent"),
    "momentum": (0.9, "paper section 3: momentum 0.9"),
    "nesterov": (False, "paper section 3: plain momentum"),
    "lr": (0.01, "paper section 3: learning rate 1e-2"),
    "schedule": ("plateau", "paper section 3: annealed manually when the validation error plateaus"),
    "gamma": (0.1, "cnnlab: a factor of 10, as AlexNet's (the paper does not give it)"),
    "weight_decay": (5e-4, "cnnlab: AlexNet's (the paper does not give it)"),
    "batch_size": (128, "paper section 3: mini-batch 128"),
    "drop_rate": (0.5, "paper section 3: dropout 0.5 in the fully connected layers"),
}
# Measured (docs/training.md): with section 3's N(0, 0.01) weights and zero biases the signal shrinks 2-7x
# per layer (logit std 4e-6 for inputs of std 1 at 47x47), the loss sits at ln 2 over the 6 steps of
# tests/test_recipes.py and at ln 10 for a 1-epoch Fashion-MNIST run (10%). He-normal weights learn at
# the paper's lr 1e-2: 74.04% after 1 epoch of 10,000 images at 47x47.
_ZFNET_HE = (
    "cnnlab deviation: He et al. 2015 (section 2.2) normal weights, biases 0, in place of paper section 3's "
    "N(0, 0.01), whose signal vanishes in the 8 layers (recipe zfnet-paper keeps it), as recipe alexnet"
)

# Measured (tests/test_recipes.py, every model on one batch of 8 at its smallest input, 8x8): at lr 0.1 from
# the first step the ImageNet ResNets blow up (resnet18 0.87 -> 1.73, resnet50 0.87 -> 67.5 after 4 steps;
# resnet50 does at batch 256 too). A warm-up alone leaves resnet50 at 28.6 and resnet101 at 44.9; zero-gamma
# alone leaves wide-resnet50-2 at 1.52 (from 0.90); with both all six fall below 0.002. Goyal et al. use both.
_RESNET_WARMUP = (
    "cnnlab deviation: one linear warm-up epoch, Goyal et al. 2017 section 2.2 (gradual warm-up; the paper "
    "starts at 0.1, which blows these nets up on their first steps in tests/test_recipes.py)"
)
_RESNET_ZERO_GAMMA = (
    "cnnlab deviation: Goyal et al. 2017 section 5.1 (the last BN of each residual branch starts at gamma 0, "
    "so every block starts as the identity); with the warm-up, the paper's lr 0.1 learns"
)
# The CIFAR ResNets (tests/test_recipes.py, 8x8): at the gradients of their first steps (norm 25,000 for
# resnet164-cifar at init, 78 for resnet110-cifar-relu-before-add) even the papers' warm-up at 0.01 throws
# resnet164-cifar and relu-before-add up (1.63 -> 10.1, 2.27 -> 80.5 in 4 steps); a branch that starts at
# zero (a pre-activation branch's last convolution, as timm's zero_init_last) learns in every one of them.
_CIFAR_ZERO_INIT = (
    "cnnlab deviation: every residual branch whose shortcut carries the signal at full strength starts at "
    "zero (Goyal et al. 2017 section 5.1; in a pre-activation branch its last convolution); plain nets and "
    "the scaling and dropout shortcuts keep theirs"
)

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        _recipe(
            "lecture",
            "cnnlab's own recipe (README: measured on Fashion-MNIST)",
            # nothing overridden: TrainConfig's defaults are the lecture recipe
        ),
        _recipe(
            "alexnet",
            "Krizhevsky, Sutskever & Hinton 2012, with He et al. 2015 initialisation (cnnlab)",
            **_ALEXNET,
            weight_init=("he", _ALEXNET_HE),
        ),
        _recipe(
            "alexnet-paper",
            "Krizhevsky, Sutskever & Hinton 2012, as printed (its section 5 initialisation)",
            **_ALEXNET,
            weight_init=(
                "model",
                "paper section 5: weights N(0, 0.01), biases 1 in conv2, conv4, conv5, fc6, fc7, 0 elsewhere",
            ),
        ),
        _recipe(
            "zfnet",
            "Zeiler & Fergus 2014, with He et al. 2015 initialisation (cnnlab)",
            **_ZFNET,
            weight_init=("he", _ZFNET_HE),
        ),
        _recipe(
            "zfnet-paper",
            "Zeiler & Fergus 2014, as printed (its section 3 initialisation)",
            **_ZFNET,
            weight_init=("model", "paper section 3: weights 1e-2 (read as N(0, 0.01)), biases 0"),
        ),
        _recipe(
            "vgg",
            "Simonyan & Zisserman 2015",
            optimizer=("sgd", "paper section 3.1: mini-batch gradient descent with momentum"),
            momentum=(0.9, "paper section 3.1: momentum 0.9"),
            nesterov=(False, "paper section 3.1: plain momentum"),
            lr=(0.01, "paper section 3.1: learning rate 1e-2"),
            schedule=(
                "plateau",
                "paper section 3.1: decreased by 10 when validation accuracy stopped improving",
            ),
            gamma=(0.1, "paper section 3.1: decreased by a factor of 10"),
            weight_decay=(5e-4, "paper section 3.1: L2 penalty 5e-4"),
            batch_size=(256, "paper section 3.1: batch size 256"),
            drop_rate=(0.5, "paper section 3.1: dropout ratio 0.5 on the first two FC layers"),
            weight_init=(
                "glorot",
                "paper section 3.1: after submission, the random initialisation procedure of Glorot & "
                "Bengio 2010 trains the nets without pre-training (its N(0, 0.01) leaves net A's loss "
                "at ln 2 in tests/test_recipes.py and at 10% after 1 epoch here; see docs/training.md)",
            ),
        ),
        _recipe(
            "nin",
            "Lin, Chen & Yan 2014",
            optimizer=(
                "sgd",
                "paper section 4.1: the protocol of Krizhevsky et al. (mini-batch SGD, momentum)",
            ),
            momentum=(0.9, "paper section 4.1: as Krizhevsky et al."),
            nesterov=(False, "paper section 4.1: as Krizhevsky et al."),
            lr=(
                0.1,
                "cnnlab: 0.1 (paper section 4.1 sets it by hand and does not print it); measured: with "
                "the model's Glorot init, 1e-2 sits at ln 10 over the first 45 steps, 0.1 leaves it",
            ),
            schedule=("plateau", "paper section 4.1: lr lowered by 10 when the accuracy stops improving"),
            gamma=(0.1, "paper section 4.1: a scale of 10"),
            weight_decay=(5e-4, "paper section 4.1: weight decay as Krizhevsky et al."),
            batch_size=(128, "paper section 4.1: mini-batches of 128"),
        ),
        _recipe(
            "googlenet",
            "Szegedy et al. 2015",
            optimizer=("sgd", "paper section 6: asynchronous SGD with momentum"),
            momentum=(0.9, "paper section 6: momentum 0.9"),
            nesterov=(False, "paper section 6: plain momentum"),
            lr=(
                0.01,
                "cnnlab: 1e-2, the reference Caffe model's (bvlc_googlenet solver.prototxt base_lr; the "
                "paper does not print its base rate)",
            ),
            schedule=("step", "paper section 6: fixed schedule, lr decreased by 4% every 8 epochs"),
            step_size=(8, "paper section 6: every 8 epochs"),
            gamma=(0.96, "paper section 6: decreased by 4%"),
            weight_decay=(
                2e-4,
                "cnnlab: 2e-4, bvlc_googlenet solver.prototxt's weight_decay (the paper does not print it)",
            ),
            batch_size=(
                32,
                "cnnlab: 32, bvlc_googlenet train_val.prototxt's, with its lr 1e-2 (the paper's asynchronous "
                "training has no single batch size); measured: 1 epoch of 10,000 Fashion-MNIST images at "
                "batch 128 (78 steps) ends at 30.88%, at 32 (313 steps) at 63.99% (docs/training.md)",
            ),
            drop_rate=(0.4, "paper table 1 and slide 004: dropout (40%) before the classifier"),
        ),
        _recipe(
            "bn-inception",
            "Ioffe & Szegedy 2015",
            optimizer=("sgd", "paper section 4.2: SGD with momentum"),
            momentum=(0.9, "paper section 4.2: momentum 0.9"),
            nesterov=(False, "paper section 4.2: plain momentum"),
            lr=(0.0075, "slide 004 and paper section 4.2.2: BN-x5, 5 x Inception's 0.0015 = 0.0075"),
            schedule=("step", "paper section 4.2.1: 'accelerate the learning rate decay' (6x Inception's)"),
            step_size=(1, "cnnlab: Inception's 4% per 8 epochs sped up 6x is about 4% every 1.3 epochs"),
            gamma=(0.96, "paper section 4.2.1 with GoogLeNet's 4% decay"),
            weight_decay=(4e-5, "paper section 4.2.1: L2 weight regularisation reduced by a factor of 5"),
            batch_size=(32, "paper section 4.2: mini-batches of 32 per replica"),
            drop_rate=(0.0, "paper section 4.2.1 and slide 004: remove dropout"),
        ),
        _recipe(
            "inception-v3",
            "Szegedy et al. 2016 (Rethinking the Inception Architecture)",
            optimizer=(
                "sgd",
                "paper section 8: momentum 0.9 SGD (their best used RMSProp, which cnnlab does not have)",
            ),
            momentum=(0.9, "paper section 8: momentum decay 0.9"),
            nesterov=(False, "paper section 8: plain momentum"),
            lr=(0.045, "paper section 8: learning rate 0.045"),
            schedule=("step", "paper section 8: decayed every two epochs"),
            step_size=(2, "paper section 8: every two epochs"),
            gamma=(0.94, "paper section 8: exponential rate 0.94"),
            weight_decay=(4e-5, "cnnlab: 4e-5, BN-Inception's (the paper does not print it)"),
            batch_size=(32, "paper section 8: batch size 32 per replica"),
            grad_clip=(2.0, "paper section 8: gradient clipping with threshold 2.0"),
            label_smoothing=(0.1, "paper section 7: label smoothing, epsilon 0.1"),
        ),
        _recipe(
            "resnet",
            "He et al. 2016 (Deep Residual Learning), ImageNet, with a warm-up and zero-init residual branches (cnnlab)",
            optimizer=("sgd", f"{_SLIDE_RESNET}: SGD + Momentum; paper section 3.4"),
            momentum=(0.9, f"{_SLIDE_RESNET}: momentum 0.9; paper section 3.4"),
            nesterov=(False, "paper section 3.4: plain momentum"),
            lr=(0.1, f"{_SLIDE_RESNET}: learning rate 0.1; paper section 3.4"),
            schedule=("plateau", f"{_SLIDE_RESNET}: divided by 10 when validation error plateaus"),
            gamma=(0.1, f"{_SLIDE_RESNET}: divided by 10"),
            weight_decay=(1e-4, "paper section 3.4: 0.0001 (the slide prints 1e-5)"),
            batch_size=(256, f"{_SLIDE_RESNET}: mini-batch size 256; paper section 3.4"),
            drop_rate=(0.0, f"{_SLIDE_RESNET}: no dropout; paper section 3.4"),
            warmup_epochs=(1.0, _RESNET_WARMUP),
            zero_init_residual=(True, _RESNET_ZERO_GAMMA),
        ),
        _recipe(
            "resnet-cifar",
            "He et al. 2016 (Deep Residual Learning), CIFAR-10, with zero-init residual branches (cnnlab)",
            lr=(0.1, "paper section 4.2: learning rate 0.1"),
            momentum=(0.9, "paper section 4.2: momentum 0.9"),
            nesterov=(False, "paper section 4.2: plain momentum"),
            weight_decay=(1e-4, "paper section 4.2: weight decay 0.0001"),
            batch_size=(128, "paper section 4.2: mini-batch size 128"),
            schedule=("cosine", f"{_STEPS_NOTE} (paper section 4.2: /10 at 32k and 48k iterations)"),
            warmup_epochs=(
                1.0,
                "paper section 4.2: ResNet-110 warms up at 0.01 until the training error is below 80% (about "
                "400 iterations); cnnlab: one epoch, every depth",
            ),
            warmup_mode=("constant", "paper section 4.2: 0.01, then back to 0.1"),
            zero_init_residual=(True, _CIFAR_ZERO_INIT),
        ),
        _recipe(
            "preact",
            "He et al. 2016 (Identity Mappings in Deep Residual Networks), with zero-init residual branches (cnnlab)",
            lr=(0.1, "paper section 4 / appendix: as He et al. 2016a section 4.2, lr 0.1"),
            momentum=(0.9, "paper appendix: momentum 0.9"),
            nesterov=(False, "paper appendix: plain momentum"),
            weight_decay=(1e-4, "paper appendix: weight decay 0.0001"),
            batch_size=(128, "paper appendix: mini-batch 128 on CIFAR"),
            schedule=("cosine", f"{_STEPS_NOTE} (paper: /10 at 32k and 48k iterations)"),
            warmup_epochs=(1.0, "paper appendix: warm-up for the first 400 iterations (cnnlab: one epoch)"),
            warmup_mode=("constant", "paper appendix: 0.01, then back to 0.1"),
            zero_init_residual=(True, _CIFAR_ZERO_INIT),
        ),
        _recipe(
            "wrn",
            "Zagoruyko & Komodakis 2016",
            optimizer=("sgd", "paper section 4: SGD with Nesterov momentum"),
            momentum=(0.9, "paper section 4: momentum 0.9"),
            nesterov=(True, "paper section 4: Nesterov momentum"),
            lr=(0.1, "paper section 4: learning rate 0.1"),
            schedule=("step", "paper section 4: lr x 0.2 at epochs 60, 120, 160 (200 in all)"),
            step_size=(
                60,
                "paper section 4: every 60 epochs (cnnlab: step, the paper's 160 is a 3rd step at 40)",
            ),
            gamma=(0.2, "paper section 4: dropped by 0.2"),
            weight_decay=(5e-4, "paper section 4: weight decay 0.0005"),
            batch_size=(128, "paper section 4: mini-batch size 128"),
        ),
        _recipe(
            "densenet",
            "Huang et al. 2017, with a warm-up epoch (cnnlab)",
            optimizer=("sgd", "paper section 4.2: SGD"),
            momentum=(0.9, "paper section 4.2: Nesterov momentum 0.9"),
            nesterov=(True, "paper section 4.2: Nesterov momentum without dampening"),
            lr=(0.1, "paper section 4.2: learning rate 0.1"),
            schedule=("cosine", f"{_STEPS_NOTE} (paper section 4.2: /10 at 50% and 75% of the epochs)"),
            warmup_epochs=(1.0, "cnnlab: one warm-up epoch (see schedule)"),
            warmup_mode=(
                "constant",
                "cnnlab: at 0.01 as He et al. 2016 (a ramp to 0.1 in the first steps throws densenet169 up in "
                "tests/test_recipes.py)",
            ),
            weight_decay=(1e-4, "paper section 4.2: weight decay 1e-4"),
            batch_size=(64, "paper section 4.2: batch size 64 on CIFAR"),
            drop_rate=(
                0.0,
                "paper section 4.2: dropout 0.2 only without augmentation, in the blocks; none at the head",
            ),
        ),
        _recipe(
            "overfeat",
            "Sermanet et al. 2014, with He et al. 2015 initialisation and a warm-up (cnnlab)",
            optimizer=("sgd", "paper section 3.1: stochastic gradient descent"),
            momentum=(0.6, "paper section 3.1: momentum term 0.6"),
            nesterov=(False, "paper section 3.1: plain momentum"),
            lr=(0.05, "paper section 3.1: initial learning rate 5e-2"),
            schedule=("step", "paper section 3.1: lr x 0.5 after 30, 50, 60, 70, 80 epochs"),
            step_size=(
                10,
                "cnnlab: every 10 epochs (the paper's steps at 30, 50, 60, 70, 80 are mostly 10 apart)",
            ),
            gamma=(0.5, "paper section 3.1: a factor of 0.5"),
            weight_decay=(1e-5, "paper section 3.1: L2 weight decay 1e-5"),
            batch_size=(128, "paper section 3.1: mini-batch 128"),
            drop_rate=(0.5, "paper section 3.1: dropout 0.5 in the fully connected layers"),
            weight_init=(
                "he",
                "cnnlab deviation: He et al. 2015 normal weights, biases 0, in place of paper section 3.1's "
                "N(0, 0.01), with which overfeat-fast stays at 10.00% after one epoch of 10,000 Fashion-MNIST "
                "images (71x71)",
            ),
            warmup_epochs=(
                1.0,
                "cnnlab deviation: one warm-up epoch; He weights at lr 5e-2 from the first step blow up on "
                "tests/test_recipes.py's batch (0.73 -> NaN in 4 steps)",
            ),
            warmup_mode=(
                "constant",
                "cnnlab: at lr/10, as He et al. 2016; with both, 64.03% after that epoch",
            ),
        ),
        _recipe(
            "cnn-fms",
            "Chatfield et al. 2014 (Return of the Devil in the Details), with He et al. 2015 initialisation (cnnlab)",
            optimizer=("sgd", "paper section 3: the protocol of Krizhevsky et al."),
            momentum=(0.9, "paper section 3: momentum 0.9"),
            nesterov=(False, "paper section 3: as Krizhevsky et al."),
            lr=(0.01, "paper section 3: initial learning rate 1e-2"),
            schedule=(
                "plateau",
                "paper section 3: decreased by 10 when the validation error stops decreasing",
            ),
            gamma=(0.1, "paper section 3: a factor of 10"),
            weight_decay=(5e-4, "paper section 3: weight decay 5e-4"),
            batch_size=(256, "paper section 3: batch size 256"),
            drop_rate=(0.5, "paper section 3: dropout on the fully connected layers 6 and 7"),
            weight_init=(
                "he",
                "cnnlab deviation: He et al. 2015 normal weights, biases 0, in place of the model's N(0, 0.01) "
                "(Krizhevsky et al.'s, which the paper follows): cnn-s stays at 10.00% after one epoch of "
                "10,000 Fashion-MNIST images with it and reaches 51.88% with these (as recipe alexnet)",
            ),
        ),
        _recipe(
            "speedrun",
            "cnnlab speedrun (time to accuracy on a CPU; measured on Fashion-MNIST, docs/training.md)",
            epochs=(
                SPEEDRUN_EPOCHS,
                f"{_SPEEDRUN}: the fewest pruned epochs whose mean test accuracy passed 93% in fp32 and bf16 "
                "(with the test's six views)",
            ),
            batch_size=(
                256,
                f"{_SPEEDRUN}: as fast per image as 512 on a 2-core Xeon, more accurate per epoch",
            ),
            prune=(
                0.5,
                f"{_SPEEDRUN}: after a full first epoch, the half of the images with the highest loss (selective "
                "backprop, Jiang et al. 2019): the 6 epochs cost 3.5 epochs of images",
            ),
            optimizer=("sgd", "airbench (Jordan 2024): SGD with Nesterov momentum"),
            momentum=(0.9, "airbench (Jordan 2024): momentum 0.9"),
            nesterov=(True, "airbench (Jordan 2024): Nesterov"),
            lr=(0.1, f"{_SPEEDRUN}: peak learning rate at batch 256 (0.2 at 512)"),
            schedule=("onecycle", f"{_SPEEDRUN}: warm-up then annealing to ~0 in the last epoch"),
            weight_decay=(5e-4, f"{_SPEEDRUN}: on conv and linear weights"),
            label_smoothing=(0.1, "airbench (Jordan 2024); Szegedy et al. 2016 section 7"),
            flip=(True, f"{_SPEEDRUN}: random horizontal flips (garments are left-right symmetric)"),
            crop_padding=(2, f"{_SPEEDRUN}: random crops after 2-pixel padding"),
            eval_tta=(
                "center",
                f"{_SPEEDRUN}: validation every epoch on the centre crop alone, half the cost of flip views",
            ),
            test_tta=(
                "flip-shift",
                f"{_SPEEDRUN}: the test once on six views, the image and its mirror, each also moved one pixel "
                "(airbench's flip and translation, Jordan 2024): +0.18 points of validation accuracy over flip, "
                "the mean of six checkpoints (+0.03 to +0.28)",
            ),
        ),
    )
}

#: The recipe each model family trains with unless told otherwise (registry metadata ``recipe``).
FAMILY_RECIPES: dict[str, str] = {
    "lecture": "lecture",
    "alexnet": "alexnet",
    "zfnet": "zfnet",
    "overfeat": "overfeat",
    "cnn-fms": "cnn-fms",
    "vgg": "vgg",
    "nin": "nin",
    "googlenet": "googlenet",
    "bn-inception": "bn-inception",
    "inception-v3": "inception-v3",
    "inception-v4": "inception-v3",  # Szegedy et al. 2017 section 3.3: v3's RMSProp, lr 0.045, x0.94 per 2 epochs
    "resnet": "resnet",
    "resnet-cifar": "resnet-cifar",
    "preact-resnet": "preact",
    "wide-resnet": "wrn",
    "densenet": "densenet",
    "speedrun": "speedrun",
}


@dataclass(frozen=True)
class Speedrun:
    """What ``cnnlab speedrun DATASET`` trains, and the validation accuracy marks (%) it times."""

    model: str
    recipe: str
    marks: tuple[float, ...]


#: dataset -> its speedrun (the net's rationale: cnnlab.models.speedrun; the recipe: ``speedrun`` above)
SPEEDRUNS: dict[str, Speedrun] = {
    "fashion-mnist": Speedrun("speedrun-fmnist", "speedrun", (90.0, 91.0, 92.0, 93.0, 94.0)),
}


def speedrun_for(dataset: str) -> Speedrun:
    """The speedrun of ``dataset`` (a usage error naming the datasets that have one)."""
    try:
        return SPEEDRUNS[dataset]
    except KeyError:
        raise unknown_choice("speedrun dataset", dataset, SPEEDRUNS) from None


#: The batch-norm experiment's defaults (cnnlab.experiments.batchnorm): slide 004's Inception base lr
#: 0.0015 (BN-x5 0.0075, BN-x30 0.045), SGD with momentum 0.9 (Ioffe & Szegedy 2015 section 4.2), a
#: constant rate so that the curves compare the rates themselves, mini-batches of 32 (section 4.2).
BATCHNORM: dict[str, Any] = {
    "model": "lecture-inception",
    "lr": 0.0015,
    "momentum": 0.9,
    "nesterov": False,
    "schedule": "constant",
    "batch_size": 32,
}

#: What each experiment sets itself (TrainConfig field -> how): a config that asks for another value is
#: refused (cnnlab.experiments.runner.refuse_set_fields), and the experiment's --help says so at the flag.
EXPERIMENT_SETS: dict[str, dict[str, str]] = {
    # per variant (Chatfield et al. 2014 section 3.1)
    "augmentation": {
        "flip": "per variant",
        "augment": "the custom pipeline, none, whose crops and flips are the variants",
        "eval_tta": "the test views: centre and 10 crops",
        "test_tta": "the test views: centre and 10 crops",
    },
    # the epochs are steps / eval_every, each of eval_every steps; lr stays the base lr the variants multiply
    "batchnorm": {
        "epochs": "from --steps and --eval-every",
        "max_steps_per_epoch": "--eval-every: one evaluation each",
    },
    # per member (Yosinski et al. 2014 section 2)
    "transfer": {
        "classes": "the halves A and B of the split",
        "init": "baseA's or baseB's weights",
        "init_from": "its own runs",
        "freeze": "the first n layers of BnB and AnB",
        "reinit_above": "n",
    },
}

# He et al. 2016 section 4.2 (CIFAR-10): the degradation experiment's defaults. Without the recipe's
# zero-init of the residual branches, which the paper did not use: plain and residual nets start alike.
DEGRADATION: dict[str, Any] = {**RECIPES["resnet-cifar"].settings(), "zero_init_residual": False}


def recipe(name: str) -> Recipe:
    """The recipe called ``name``; an unknown name is a :class:`UsageError` listing the valid ones."""
    if name not in RECIPES:
        raise unknown_choice("recipe", name, [*RECIPES, NO_RECIPE])
    return RECIPES[name]


def family_recipe(family: str) -> str:
    """The recipe a model family trains with (``lecture``'s defaults for a family without one)."""
    return FAMILY_RECIPES.get(family, "lecture")


def recipe_config(settings: dict[str, Any]) -> TrainConfig:
    """TrainConfig's defaults with ``settings`` (a recipe's :meth:`Recipe.settings`) applied."""
    return dataclasses.replace(TrainConfig(), **settings)


def config_with_recipe(name: str | None, given: dict[str, Any], **fixed: Any) -> TrainConfig:
    """TrainConfig's defaults, then recipe ``name``'s values, then ``given`` (explicit settings win).

    The result records ``recipe`` (None for ``none``) and ``recipe_fields``: the fields whose value
    came from the recipe (those ``given`` did not override). ``fixed`` are set last (``model``).
    """
    if name is None or name == NO_RECIPE:
        return dataclasses.replace(TrainConfig(), **given, **fixed, recipe=None, recipe_fields=())
    settings = recipe(name).settings()
    taken = tuple(sorted(k for k in settings if k not in given))
    return dataclasses.replace(recipe_config(settings), **given, **fixed, recipe=name, recipe_fields=taken)


def describe_recipe(name: str) -> str:
    """A recipe's values and their sources, one per line (``cnnlab recipes NAME``)."""
    r = recipe(name)
    lines = [f"{r.name}: {r.paper}"]
    if not r.values:
        lines.append("  (TrainConfig's defaults: nothing overridden)")
    width = max((len(k) for k in r.values), default=0)
    for key, (value, source) in r.values.items():
        lines.append(f"  {key:<{width}} = {value!r:<10} {source}")
    return "\n".join(lines)
