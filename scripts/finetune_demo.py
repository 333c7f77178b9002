"""Fine-tuning through the Python API: lecture-residual trained on Fashion-MNIST classes 0-4, its weights
loaded into a 5-class model for classes 5-9 (``load_weights(..., num_classes=5)`` drops the old classifier),
fine-tuned with all layers or with the features frozen, against the same budget from scratch.

Budget (CPU, minutes): ``--pretrain-images`` of classes 0-4 for ``--pretrain-epochs``, then
``--finetune-images`` of classes 5-9 for ``--finetune-epochs``; accuracy on every test image of classes
5-9. Training selects nothing (no validation split): each condition's last epoch is its result.

    PYTHONPATH=src python scripts/finetune_demo.py [--pretrain-images 10000] [--finetune-images 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnlab.data import BatchLoader, Split, load_dataset
from cnnlab.models import create_model
from cnnlab.weights import card_for_model, load_weights, save_model_file


def classes(split: Split, wanted: range, limit: int | None, seed: int) -> Split:
    """The images of ``wanted`` classes (relabelled from 0), a seeded sample of ``limit`` of them."""
    index = torch.nonzero((split.labels >= wanted.start) & (split.labels < wanted.stop)).flatten()
    if limit is not None and limit < len(index):
        index = index[torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))[:limit]]
    subset = split.subset(index)
    return Split(subset.name, subset.images, subset.labels - wanted.start)


def fit(model: torch.nn.Module, split: Split, epochs: int, lr: float, mean, std, seed: int) -> None:
    """SGD with momentum, cosine-free constant lr: only the parameters that require gradients move."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
    loader = BatchLoader(split, batch_size=64, shuffle=True, seed=seed, mean=mean, std=std)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()


def accuracy(model: torch.nn.Module, split: Split, mean, std) -> float:
    """Top-1 accuracy on ``split``."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in BatchLoader(split, batch_size=500, mean=mean, std=std):
            correct += int((model(x).argmax(1) == y).sum())
    return correct / len(split)


def main(argv: list[str] | None = None) -> int:
    """Pretrain on classes 0-4, fine-tune on 5-9 three ways; print the accuracies."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrain-images", type=int, default=10000)
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--finetune-images", type=int, default=1000)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist")
    mean, std = data.info.mean, data.info.std
    first, second = range(0, 5), range(5, 10)
    print(f"classes 0-4: {', '.join(data.info.classes[:5])}; classes 5-9: {', '.join(data.info.classes[5:])}")

    torch.manual_seed(args.seed)
    start = time.perf_counter()
    pretrained = create_model("lecture-residual", num_classes=5)
    fit(pretrained, classes(data.train, first, args.pretrain_images, args.seed), args.pretrain_epochs, 0.05,
        mean, std, args.seed)  # fmt: skip
    print(
        f"pretrained on {args.pretrain_images} images of classes 0-4, {args.pretrain_epochs} epochs "
        f"({time.perf_counter() - start:.0f} s): test accuracy on classes 0-4 "
        f"{100 * accuracy(pretrained, classes(data.test, first, None, 0), mean, std):.2f}%"
    )
    finetune = classes(data.train, second, args.finetune_images, args.seed + 1)
    test = classes(data.test, second, None, 0)
    with tempfile.TemporaryDirectory() as folder:
        weights = save_model_file(
            pretrained, card_for_model(pretrained), Path(folder) / "pretrained.safetensors"
        )
        rows = []
        for condition in ("scratch", "pretrained, all layers", "pretrained, features frozen"):
            torch.manual_seed(args.seed + 2)
            model = create_model("lecture-residual", num_classes=5)
            if condition != "scratch":
                report = load_weights(model, weights)  # every name and shape checked
                # same class count, other classes: a new classifier for classes 5-9
                model.reset_classifier(5)
                print(f"{condition}: loaded {report.loaded} tensors from {weights.name}, new classifier")
            if condition.endswith("frozen"):
                for p in model.parameters():
                    p.requires_grad = False
                for p in model.get_classifier().parameters():
                    p.requires_grad = True
            start = time.perf_counter()
            fit(
                model,
                finetune,
                args.finetune_epochs,
                0.05 if condition == "scratch" else 0.01,
                mean,
                std,
                args.seed,
            )
            rows.append((condition, accuracy(model, test, mean, std), time.perf_counter() - start))
    print(f"\nfine-tuned on {args.finetune_images} images of classes 5-9, {args.finetune_epochs} epochs; "
          f"test accuracy on all {len(test)} test images of classes 5-9:")  # fmt: skip
    for condition, acc, seconds in rows:
        print(f"  {condition:<30} {100 * acc:6.2f}%   ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
