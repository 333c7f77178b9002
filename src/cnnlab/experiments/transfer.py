"""Transfer and selffer networks (Yosinski et al. 2014, figure 2; slide 004 "How transferable are features").

The classes are split into two disjoint halves A and B. ``baseA`` and ``baseB`` train on their half.
For each n, four nets train on B with their first n conv/fc layers copied and the layers above
re-initialised: ``BnB`` (copied from baseB, frozen: the selffer control), ``BnB+`` (from baseB, all
layers learn), ``AnB`` (from baseA, frozen: the transfer net), ``AnB+`` (from baseA, all layers learn).

    >>> from cnnlab.experiments.transfer import transfer
    >>> result = transfer(TrainConfig(model="lecture-residual", epochs=2), "runs/transfer", split="dissimilar")

The paper's findings: BnB dips for middle n (co-adapted neighbouring layers cannot be relearned on
top of frozen ones), AnB falls with n (specificity of the higher layers), and AnB+ ends above baseB
(transferred features help generalisation even after fine-tuning).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cnnlab.cells import percent
from cnnlab.errors import UsageError
from cnnlab.experiments.runner import refuse_set_fields, run_members
from cnnlab.fileio import atomic_write_text
from cnnlab.models import create_model
from cnnlab.models.layers import paper_layers
from cnnlab.train.config import TrainConfig
from cnnlab.train.engine import RunResult
from cnnlab.train.recipes import EXPERIMENT_SETS

#: Named class splits (A, B), as the paper's man-made vs natural ImageNet halves (section 4.2).
SPLITS: dict[str, dict[str, tuple[tuple[int, ...], tuple[int, ...]]]] = {
    "fashion-mnist": {
        # A: footwear, bags and trousers (sandal, sneaker, ankle boot, bag, trouser);
        # B: upper-body garments and dresses (t-shirt/top, pullover, dress, coat, shirt)
        "dissimilar": ((5, 7, 9, 8, 1), (0, 2, 3, 4, 6)),
    },
}
KINDS = ("BnB", "BnB+", "AnB", "AnB+")
#: What the experiment sets itself per member (Yosinski et al. 2014 section 2): refused when a config asks for another.
SETS = EXPERIMENT_SETS["transfer"]


def class_halves(
    split: str, num_classes: int, data: str, seed: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Classes of A and B: ``random`` (a seeded permutation cut in two) or a named split of ``data``."""
    if split == "random":
        order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()
        half = num_classes // 2
        return tuple(sorted(order[:half])), tuple(sorted(order[half:]))
    named = SPLITS.get(data, {})
    if split not in named:
        valid = ", ".join(["random", *named]) or "random"
        raise UsageError(f"no split {split!r} for {data}; valid splits: {valid}")
    return named[split]


@dataclasses.dataclass
class TransferResult:
    """The runs of the experiment (by member name), the split and where the figure and table went."""

    runs: dict[str, RunResult]
    halves: tuple[tuple[int, ...], tuple[int, ...]]
    ns: list[int]
    figure: Path
    table: Path
    status: str = "completed"

    def accuracy(self, name: str) -> float | None:
        """Test accuracy of member ``name`` (its selected checkpoint), None if it has not finished."""
        run = self.runs.get(name)
        return None if run is None else run.test_acc

    def rows(self) -> list[dict[str, Any]]:
        """One row per n: baseB's and each kind's test accuracy on task B."""
        return [
            {
                "n": n,
                "baseB": self.accuracy("baseB"),
                **{kind: self.accuracy(f"{kind[:1]}{n}B{kind[3:]}") for kind in KINDS},
            }
            for n in self.ns
        ]

    def markdown(self) -> str:
        """The table: test accuracy on B for each n, with baseA on A for reference."""
        lines = [
            f"A = classes {list(self.halves[0])}, B = classes {list(self.halves[1])}; "
            f"baseA (on A) {percent(self.accuracy('baseA'))}, baseB (on B) {percent(self.accuracy('baseB'))}",
            "",
            "| n | " + " | ".join(KINDS) + " |",
            "|---" * (len(KINDS) + 1) + "|",
        ]
        for row in self.rows():
            lines.append(f"| {row['n']} | " + " | ".join(percent(row[k]) for k in KINDS) + " |")
        return "\n".join(lines)


def member_name(kind: str, n: int) -> str:
    """``BnB+`` at n=3 -> ``B3B+`` (the paper's names)."""
    return f"{kind[0]}{n}B{kind[3:]}"


def transfer(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    split: str = "random",
    ns: Sequence[int] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> TransferResult:
    """Train baseA, baseB and BnB, BnB+, AnB, AnB+ for each n of ``ns`` (default: 1 .. layers - 1) with
    ``cfg``; write ``transfer.png``, ``transfer.md`` and ``transfer.json`` in ``out_dir``.

    Training follows :func:`cnnlab.experiments.runner.run_members` (resumable; finished members are read).
    A ``cfg`` that sets what the experiment sets itself (:data:`SETS`) is refused (:class:`UsageError`)."""
    from cnnlab.data import dataset_info

    refuse_set_fields("transfer", cfg, TrainConfig(), SETS)
    info = dataset_info(cfg.data)
    halves = class_halves(split, info.num_classes, cfg.data, cfg.seed)
    with torch.device("meta"):
        layers = len(
            paper_layers(create_model(cfg.model, num_classes=len(halves[1]), **dict(cfg.model_options)))
        )
    ns = list(ns) if ns else list(range(1, layers))
    bad = [n for n in ns if not 1 <= n < layers]
    if bad:
        raise UsageError(
            f"n must be between 1 and {layers - 1} ({cfg.model} has {layers} conv and fc layers), got {bad}"
        )
    twice = next((n for n in ns if ns.count(n) > 1), None)
    if twice is not None:
        raise UsageError(f"--n lists {twice} twice; give each n once")
    out = Path(out_dir)
    members = [
        ("baseA", dataclasses.replace(cfg, classes=halves[0])),
        ("baseB", dataclasses.replace(cfg, classes=halves[1])),
    ]
    for n in ns:
        for kind in KINDS:
            members.append(
                (
                    member_name(kind, n),
                    dataclasses.replace(
                        cfg,
                        classes=halves[1],
                        init=str(out / f"base{kind[0]}"),
                        reinit_above=n,
                        freeze=() if kind.endswith("+") else (str(n),),
                    ),
                )
            )
    experiment = run_members(
        out, members, table="transfer.json", overwrite=overwrite, resume=resume, progress=progress
    )
    result = TransferResult(
        experiment.runs, halves, ns, out / "transfer.png", out / "transfer.md", experiment.status
    )
    plot_transfer(result, f"{cfg.model} on {cfg.data}: transfer A->B and selffer B->B")
    atomic_write_text(result.table, result.markdown() + "\n")
    atomic_write_text(
        out / "transfer.json",
        json.dumps(
            {"config": cfg.to_dict(), "split": split, "A": list(halves[0]), "B": list(halves[1]),
             "baseA": result.accuracy("baseA"), "baseB": result.accuracy("baseB"), "rows": result.rows()},
            indent=2,
        ),
    )  # fmt: skip
    return result


def plot_transfer(result: TransferResult, title: str) -> Path:
    """Test accuracy on B against n, in the style of Yosinski et al. figure 2: baseB at n=0, BnB white
    circles, BnB+ light blue, AnB dark blue diamonds, AnB+ red diamonds."""
    import matplotlib.pyplot as plt

    from cnnlab.train.plots import save_figure

    styles = {
        "BnB": dict(marker="o", mfc="white", mec="black", color="black"),
        "BnB+": dict(marker="o", mfc="lightskyblue", mec="steelblue", color="steelblue"),
        "AnB": dict(marker="D", mfc="navy", mec="navy", color="navy"),
        "AnB+": dict(marker="D", mfc="tomato", mec="firebrick", color="firebrick"),
    }
    fig, ax = plt.subplots(figsize=(7, 4.5))
    base_b = result.accuracy("baseB")
    if base_b is not None:
        ax.plot([0], [100 * base_b], marker="s", color="gray", linestyle="none", label="baseB")
        ax.axhline(100 * base_b, color="gray", alpha=0.4, linewidth=1)
    for kind, style in styles.items():
        points = [(r["n"], 100 * r[kind]) for r in result.rows() if r[kind] is not None]
        if points:
            ax.plot(*zip(*points), linestyle=":", label=kind, **style)
    ax.set(
        xlabel="layer n at which the network is chopped and retrained",
        ylabel="test accuracy on B (%)",
        title=title,
    )
    ax.set_xticks([0, *result.ns])
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, result.figure)
