"""Batch normalisation's speed-up (Ioffe & Szegedy 2015 section 4.2, figure 2; slide 004 "BN-Inception").

Five nets of one Inception architecture (``lecture-inception``, whose named options ``batch_norm`` and
``activation`` give the variants): Inception (no BN, base lr), BN-Baseline (BN after every
convolution, base lr), BN-x5 and BN-x30 (BN, lr x5 and x30) and BN-x5-Sigmoid (BN-x5 with sigmoid
in place of ReLU). The slides' base lr is Inception's 0.0015 (BN-x5: 0.0075, BN-x30: 0.045).

Curves are over training steps: every ``eval_every`` steps the net is measured on the validation
split (held out of the training set), so the curve is validation accuracy; the test split is touched
once per net, on its selected checkpoint, for the table's last column. The table also gives the steps
each net needs to reach the no-BN net's best validation accuracy ("steps to match Inception").

    >>> from cnnlab.experiments.batchnorm import batchnorm
    >>> result = batchnorm(recipe_config(), "runs/batchnorm", steps=2000, eval_every=100)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from cnnlab.cells import percent
from cnnlab.errors import UsageError
from cnnlab.experiments.runner import refuse_set_fields, run_members
from cnnlab.fileio import atomic_write_text
from cnnlab.train.config import TrainConfig
from cnnlab.train.engine import RunResult
from cnnlab.train.recipes import BATCHNORM, EXPERIMENT_SETS

#: (name, lr multiplier, model options): Ioffe & Szegedy 2015 section 4.2.1 and figure 2.
VARIANTS: tuple[tuple[str, float, dict[str, Any]], ...] = (
    ("Inception", 1.0, {}),
    ("BN-Baseline", 1.0, {"batch_norm": True}),
    ("BN-x5", 5.0, {"batch_norm": True}),
    ("BN-x30", 30.0, {"batch_norm": True}),
    ("BN-x5-Sigmoid", 5.0, {"batch_norm": True, "activation": "sigmoid"}),
)

RECIPE = BATCHNORM  # the experiment's defaults (cnnlab.train.recipes)

#: What the experiment sets itself from ``steps`` and ``eval_every`` (refused when a config asks for another
#: value); ``lr`` stays the base lr that the variants multiply (section 4.2.1).
SETS = EXPERIMENT_SETS["batchnorm"]
#: The model options that make the variants (figure 2): refused when a config sets them.
SETS_OPTIONS = {"batch_norm": "per net", "activation": "per net"}


def recipe_config() -> TrainConfig:
    """TrainConfig's defaults with :data:`RECIPE` applied (what ``--help`` shows)."""
    return dataclasses.replace(TrainConfig(), **RECIPE)


@dataclasses.dataclass
class BatchNormResult:
    """The five runs, the evaluation interval, and where the figure and table went."""

    runs: dict[str, RunResult]
    eval_every: int
    figure: Path
    table: Path
    status: str = "completed"

    def curve(self, name: str) -> list[tuple[int, float]]:
        """(step, validation accuracy) of one net."""
        return [
            (int(r["epoch"]) * self.eval_every, r["val_acc"])
            for r in self.runs[name].history
            if "val_acc" in r
        ]

    def target(self) -> float | None:
        """The no-BN net's best validation accuracy: what the others must reach."""
        if "Inception" not in self.runs or not self.curve("Inception"):
            return None
        return max(acc for _, acc in self.curve("Inception"))

    def rows(self) -> list[dict[str, Any]]:
        """One row per net: lr, best validation accuracy, steps to reach Inception's best, test accuracy."""
        target = self.target()
        rows = []
        for name, run in self.runs.items():
            curve = self.curve(name)
            reached = next((step for step, acc in curve if target is not None and acc >= target), None)
            rows.append(
                {
                    "net": name,
                    "lr": run.config.lr,
                    "best_val_acc": max((acc for _, acc in curve), default=None),
                    "steps_to_match_inception": reached,
                    "steps": len(curve) * self.eval_every,
                    "test_acc": run.test_acc,
                }
            )
        return rows

    def markdown(self) -> str:
        """The table in Markdown."""
        target = self.target()
        lines = [
            f"Validation accuracy every {self.eval_every} steps; Inception's best: {percent(target)}. "
            "Test accuracy: the selected checkpoint (best validation accuracy), measured once.",
            "",
            "| net | lr | best val acc | steps to match Inception | test acc |",
            "|---|---|---|---|---|",
        ]
        for r in self.rows():
            steps = (
                "not reached"
                if r["steps_to_match_inception"] is None
                else f"{r['steps_to_match_inception']:,}"
            )
            lines.append(
                f"| {r['net']} | {r['lr']:g} | {percent(r['best_val_acc'])} | {steps} | {percent(r['test_acc'])} |"
            )
        return "\n".join(lines)


def batchnorm(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    steps: int = 2000,
    eval_every: int = 100,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> BatchNormResult:
    """Train the five variants of ``cfg.model`` for ``steps`` steps each (validation every ``eval_every``
    steps: one "epoch" of the run) and write ``batchnorm.png``, ``batchnorm.md`` and ``batchnorm.json``.

    ``steps`` must be a multiple of ``eval_every``, and an epoch of the training split must hold at least
    ``eval_every`` batches, so that every net trains exactly the steps its curve reports; a ``cfg`` that sets
    what the experiment sets itself (:data:`SETS`, :data:`SETS_OPTIONS`) is refused (:class:`UsageError`)."""
    if steps < 1 or eval_every < 1:
        raise UsageError(f"--steps and --eval-every must be at least 1, got {steps} and {eval_every}")
    if steps % eval_every:  # every net is measured after each eval_every steps: the curve's last point
        lower, upper = steps - steps % eval_every, steps - steps % eval_every + eval_every
        nearest = f"--steps {lower} or {upper}" if lower else f"--steps {upper}, or a smaller --eval-every"
        raise UsageError(
            f"--steps {steps} is not a multiple of --eval-every {eval_every} (a validation after every "
            f"{eval_every} steps); use {nearest}"
        )
    if cfg.val_fraction <= 0:
        raise UsageError("the curves are validation accuracy: --val-fraction must be above 0")
    refuse_set_fields("batchnorm", cfg, recipe_config(), SETS, SETS_OPTIONS)
    epochs = steps // eval_every
    members = [
        (
            name,
            dataclasses.replace(
                cfg,
                lr=cfg.lr * factor,
                epochs=epochs,
                max_steps_per_epoch=eval_every,
                model_options={**cfg.model_options, **options},
            ),
        )  # fmt: skip
        for name, factor, options in VARIANTS
    ]
    out = Path(out_dir)
    experiment = run_members(
        out, members, table="batchnorm.json", overwrite=overwrite, resume=resume, progress=progress,
        steps_per_epoch=(eval_every, "--eval-every"),
    )  # fmt: skip
    runs = {name: run for name, run in experiment.runs.items() if run.history}
    result = BatchNormResult(runs, eval_every, out / "batchnorm.png", out / "batchnorm.md", experiment.status)
    plot_batchnorm(result, f"{cfg.model} on {cfg.data}: batch norm and learning rate")
    atomic_write_text(result.table, result.markdown() + "\n")
    atomic_write_text(
        out / "batchnorm.json",
        json.dumps(
            {"config": cfg.to_dict(), "eval_every": eval_every, "target": result.target(), "rows": result.rows(),
             "curves": {name: result.curve(name) for name in runs}},
            indent=2,
        ),
    )  # fmt: skip
    return result


def plot_batchnorm(result: BatchNormResult, title: str) -> Path:
    """Validation accuracy against steps, in the style of Ioffe & Szegedy figure 2, with each BN net's
    "steps to match Inception" marked."""
    import matplotlib.pyplot as plt

    from cnnlab.train.plots import save_figure

    styles = {
        "Inception": "--",
        "BN-Baseline": "-.",
        "BN-x5": ":",
        "BN-x30": "-",
        "BN-x5-Sigmoid": (0, (1, 3)),
    }
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name in result.runs:
        steps, accs = zip(*result.curve(name)) if result.curve(name) else ((), ())
        ax.plot(steps, [100 * a for a in accs], linestyle=styles.get(name, "-"), label=name)
    target = result.target()
    if target is not None:
        ax.axhline(100 * target, color="gray", alpha=0.4, linewidth=1)
        for row in result.rows():
            if row["steps_to_match_inception"] is not None and row["net"] != "Inception":
                ax.plot(
                    [row["steps_to_match_inception"]],
                    [100 * target],
                    marker="*",
                    color="black",
                    linestyle="none",
                )
    ax.set(xlabel="training steps", ylabel="validation accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, result.figure)
