"""Model averaging: the mean (or weighted mean) of several runs' softmax outputs.

AlexNet's 7-CNN ensemble took top-5 error from 18.2% to 15.4% (slide 003); Clarifai's averaged nets
improved on one (slide 004, Zeiler & Fergus 2014 table 2).

    >>> from cnnlab.train.ensemble import ensemble
    >>> result = ensemble(["runs/a", "runs/b", "runs/c"])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.errors import UsageError
from cnnlab.train.evaluation import load_saved_model, runs_in


@dataclass
class EnsembleResult:
    """Each member's accuracy and the ensemble's, on one split."""

    members: list[str]
    weights: list[float]
    member_accuracy: list[float]
    accuracy: float
    split: str
    images: int

    def report(self) -> str:
        """One line per member and one for the ensemble."""
        width = max(len(m) for m in self.members)
        lines = [f"{self.split} split, {self.images:,} images; softmax outputs averaged with weights shown"]
        for name, weight, acc in zip(self.members, self.weights, self.member_accuracy):
            lines.append(f"  {name:<{width}}  weight {weight:.3f}  accuracy {100 * acc:.2f}%")
        lines.append(f"  {'ensemble':<{width}}  {'':12}  accuracy {100 * self.accuracy:.2f}%")
        return "\n".join(lines)


def parse_weights(text: str | None, count: int) -> list[float]:
    """``"1,2,1"`` -> weights normalised to sum 1 (equal weights when None); one per member, none negative."""
    if text is None:
        return [1.0 / count] * count
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise UsageError(f"--weights takes numbers separated by commas, e.g. 1,2,1; got {text!r}") from None
    if len(values) != count:
        raise UsageError(f"--weights gives {len(values)} weights for {count} runs; give one per run")
    if any(not v >= 0 for v in values) or sum(values) <= 0:
        raise UsageError(f"--weights must be at least 0 and not all 0, got {text!r}")
    return [v / sum(values) for v in values]


@torch.no_grad()
def ensemble_members(paths: Sequence[str | Path]) -> list[Path]:
    """The runs ``paths`` name: one folder that is not a run but holds runs (a comparison's ``--out``)
    stands for those runs, in name order. Such a folder beside other paths, or a run named twice (by any
    path to it), is refused: the ensemble would not be of the runs the user meant."""
    paths = [Path(p) for p in paths]
    if len(paths) == 1 and paths[0].is_dir() and not (paths[0] / "checkpoints").is_dir():
        return runs_in(paths[0]) or paths
    seen: dict[Path, Path] = {}
    for path in paths:
        if path.is_dir() and not (path / "checkpoints").is_dir() and (runs := runs_in(path)):
            raise UsageError(
                f"{path} is a folder of runs, not a run; give it alone to ensemble all its runs, or name the "
                f"runs to ensemble: {', '.join(map(str, runs))}"
            )
        first = seen.setdefault(path.resolve(), path)  # ./a, a and a/ are one run
        if first is not path:
            again = "" if str(first) == str(path) else f" (again as {path})"
            raise UsageError(
                f"run {first} is named twice{again}; an ensemble averages different runs, so name each once"
            )
    return paths


def ensemble(
    paths: Sequence[str | Path],
    weights: Sequence[float] | None = None,
    *,
    split: str = "test",
    data_dir: str | None = None,
    device: str = "auto",
) -> EnsembleResult:
    """Average the softmax outputs of the runs at ``paths`` (weighted by ``weights``, equal by default)
    on ``split``; the runs must have been trained on the same data and classes (:func:`ensemble_members`:
    one folder of runs stands for every run in it)."""
    paths = ensemble_members(paths)
    if len(paths) < 2:
        raise UsageError(
            f"an ensemble needs at least two runs, got {', '.join(map(str, paths)) or 'none'}: name two or more "
            "run directories, or a folder that holds them (a comparison's --out)"
        )
    weights = list(weights) if weights is not None else [1.0 / len(paths)] * len(paths)
    saved = [load_saved_model(p, data_dir=data_dir, device=device) for p in paths]
    first = saved[0]
    for path, s in zip(paths, saved):
        same = (s.cfg.data, s.cfg.classes, s.header["num_classes"]) == (
            first.cfg.data, first.cfg.classes, first.header["num_classes"],
        )  # fmt: skip
        if split != "test":
            same = same and (s.cfg.val_fraction, s.cfg.seed) == (first.cfg.val_fraction, first.cfg.seed)
        if not same:
            raise UsageError(
                f"{path} was trained on other data or classes than {paths[0]}; ensemble runs of one task"
            )
    labels, accuracies, mixed = None, [], None
    for s, weight in zip(saved, weights):
        chosen = {"test": s.data.test, "val": s.data.val, "train": s.data.train}[split]
        if chosen is None:
            raise UsageError(f"the runs have no {split} split (trained with val_fraction 0)")
        probs, ys = [], []
        for x, y in s.loader(chosen):
            probs.append(torch.softmax(s.model(x).float(), dim=1).cpu())
            ys.append(y.cpu())
        p, y = torch.cat(probs), torch.cat(ys)
        labels = y if labels is None else labels
        accuracies.append(float((p.argmax(1) == y).float().mean()))
        mixed = weight * p if mixed is None else mixed + weight * p
    accuracy = float((mixed.argmax(1) == labels).float().mean())
    return EnsembleResult([str(p) for p in paths], weights, accuracies, accuracy, split, len(labels))
