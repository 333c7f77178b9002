"""The degradation experiment (He et al. 2016, Fig. 1 and Fig. 6; lecture 11 "Go deeper"): plain vs residual.

Plain nets ``plainN-cifar`` and their residual twins ``resnetN-cifar`` (same layers, identity
shortcuts, He et al. section 4.2) train with one recipe; the figure puts the training and test
error per epoch of all of them side by side, as the slides do, and the table gives the final
errors. Degradation shows when the deeper plain net ends with a *higher training* error than the
shallower one: an optimisation difficulty, not overfitting.

    >>> from cnnlab.experiments.degradation import degradation
    >>> result = degradation([20, 56], TrainConfig(data="fashion-mnist", epochs=5), "runs/degradation")
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnlab.cells import figure, percent
from cnnlab.errors import UsageError
from cnnlab.experiments.runner import refuse_set_fields, run_members
from cnnlab.fileio import atomic_write_text
from cnnlab.models import model_info
from cnnlab.train import distributed, recipes
from cnnlab.train.config import TrainConfig
from cnnlab.train.engine import RunResult
from cnnlab.train.recipes import DEGRADATION

KINDS = {"plain": "plain{depth}-cifar", "residual": "resnet{depth}-cifar"}

#: He et al. 2016 section 4.2: SGD, momentum 0.9, weight decay 1e-4, lr 0.1, batch 128; for short
#: budgets a cosine decay with one warm-up epoch replaces the 32k/48k-iteration steps.
RECIPE = DEGRADATION  # the experiment's defaults (cnnlab.train.recipes)
#: The model options that name each net (``plainN-cifar``, ``resnetN-cifar``): refused when a config sets them.
SETS_OPTIONS = {"depth": "per net, from the depths", "plain": "per net: plain and residual twins"}


def recipe_config() -> TrainConfig:
    """TrainConfig's defaults with :data:`RECIPE` applied: what the experiment trains with unless told
    otherwise, and what ``cnnlab experiment degradation --help`` shows as the defaults."""
    return recipes.recipe_config(RECIPE)


@dataclasses.dataclass
class DegradationResult:
    """Every run of the experiment and where the figure and table were written."""

    runs: dict[tuple[str, int], RunResult]
    figure: Path
    table: Path
    #: the shape (C, H, W) the nets were built for and trained on: the parameter counts are for it
    input_shape: tuple[int, ...] | None = None
    #: "interrupted" when a run was stopped: the table holds the epochs so far (continue with resume=True)
    status: str = "completed"

    def has_validation(self) -> bool:
        """Whether every epoch of every run was evaluated on a validation split (then the per-epoch
        curves and the "best" column use it, and the test set is only reported, never selected on)."""
        return all(run.history and all("val_acc" in r for r in run.history) for run in self.runs.values())

    def rows(self) -> list[dict[str, Any]]:
        """One row per net: kind, depth, parameters, final training and validation error and the best
        validation error (when there is a split), the test error of the selected checkpoint (measured once,
        at the end), seconds per epoch. A figure the run did not produce is None."""
        with_val = self.has_validation()
        rows = []
        for (kind, depth), run in sorted(self.runs.items(), key=_order):
            last = run.final
            row = {
                "model": run.config.model,
                "kind": kind,
                "depth": depth,
                "params": run.num_params,
                "final_train_error": 1 - last["train_acc"],
            }
            if with_val:
                row["final_val_error"] = 1 - last["val_acc"]
                row["best_val_error"] = 1 - max(r["val_acc"] for r in run.history)
            # the test split is measured once, on the selected checkpoint (best validation accuracy)
            row["selected_test_error"] = None if run.test_acc is None else 1 - run.test_acc
            row["seconds_per_epoch"] = run.epoch_mean("epoch_seconds")
            rows.append(row)
        return rows

    def verdict(self) -> str:
        """Whether the deepest plain net ends with a higher training error than the shallowest."""
        plain = sorted((d, r) for (k, d), r in self.runs.items() if k == "plain")
        if len(plain) < 2:
            return "one plain depth only: nothing to compare"
        (d0, shallow), (d1, deep) = plain[0], plain[-1]
        e0, e1 = 1 - shallow.final["train_acc"], 1 - deep.final["train_acc"]
        worse = "higher" if e1 > e0 else "lower"
        seen = "degradation observed" if e1 > e0 else "no degradation at this budget"
        return f"plain-{d1} ends with a {worse} training error than plain-{d0} ({100 * e1:.2f}% vs {100 * e0:.2f}%): {seen}"

    def params_note(self) -> str:
        """Which input the parameter counts are for, and how they differ from the registry's (`cnnlab models`).

        The nets are built for the data they train on: on Fashion-MNIST (1x28x28) the first 3x3
        convolution has 1 input channel, not CIFAR's 3, so plain20-cifar has 269,434 parameters here
        and 269,722 in the registry (288 = 3x3x(3-1)x16 more). The input size itself changes nothing:
        global average pooling precedes the classifier."""
        if self.input_shape is None:
            return ""
        shape = "x".join(map(str, self.input_shape))
        data = next(iter(self.runs.values())).config.data if self.runs else "the data"
        registry = sorted({tuple(model_info(r.config.model).input_size) for r in self.runs.values()})
        differs = [
            f"{r.config.model} {info.num_params:,}"
            for r in sorted(self.runs.values(), key=lambda r: r.config.model)
            if (info := model_info(r.config.model)).num_params is not None and info.num_params != r.num_params
        ]
        note = f"Parameters are counted for the {shape} input trained on ({data})"
        if not differs:
            return note + "."
        sizes = ", ".join("x".join(map(str, s)) for s in registry)
        return f"{note}; the registry's counts (`cnnlab models`) are for {sizes}: {', '.join(differs)}."

    def markdown(self) -> str:
        """The table of final errors in Markdown, after a line naming the input the counts are for,
        followed by the verdict."""
        note = self.params_note()
        with_val = self.has_validation()
        columns = ["final_train_error"] + (["final_val_error", "best_val_error"] if with_val else [])
        columns += ["selected_test_error"]
        names = {"train": "train", "val": "validation", "test": "test"}
        titles = [f"{c.split('_')[0]} {names[c.split('_')[1]]} error" for c in columns]
        lines = [
            *([note, ""] if note else []),
            "| model | params | " + " | ".join(titles) + " | s/epoch |",
            "|---" * (len(columns) + 3) + "|",
        ]
        for r in self.rows():
            errors = [percent(r[c]) for c in columns]
            lines.append(
                f"| {r['model']} | {r['params']:,} | "
                + " | ".join(errors)
                + f" | {figure(r['seconds_per_epoch'], '.1f')} |"
            )
        return "\n".join(lines) + f"\n\n{self.verdict()}"


def _order(item: tuple[tuple[str, int], object]) -> tuple[int, str]:
    """Sort key of ``((kind, depth), value)`` pairs: by depth, then kind (plain before residual)."""
    (kind, depth), _ = item
    return depth, kind


def plot_degradation(runs: dict[tuple[str, int], RunResult], path: Path, title: str) -> Path:
    """Training error (left) and validation error (right; empty without a validation split: the test split
    is only measured on the selected checkpoint) per epoch; plain dashed, residual solid, one colour per depth."""
    import matplotlib.pyplot as plt

    from cnnlab.train.plots import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    with_val = all(run.history and all("val_acc" in r for r in run.history) for run in runs.values())
    depths = sorted({d for _, d in runs})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (kind, depth), run in sorted(runs.items()):
        epochs = [r["epoch"] for r in run.history]
        style = "--" if kind == "plain" else "-"
        colour = colours[depths.index(depth) % len(colours)]
        for ax, key in zip(axes, ("train_acc", "val_acc") if with_val else ("train_acc",)):
            ax.plot(
                epochs,
                [100 * (1 - r[key]) for r in run.history],
                style,
                color=colour,
                label=f"{kind}-{depth}",
            )
    for ax, what in zip(axes, ("training", "validation")):
        ax.set(xlabel="epoch", ylabel=f"{what} error (%)", title=f"{what} error")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return save_figure(fig, path)


def degradation(
    depths: Sequence[int],
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    kinds: Sequence[str] = ("plain", "residual"),
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> DegradationResult:
    """Train every (kind, depth) net with ``cfg`` into ``<out_dir>/<model>/``; write the figure and table.

    Training follows :func:`cnnlab.experiments.runner.run_members`; after an interruption the figure and
    table of the epochs so far are written and the result's status is ``interrupted``. ``cfg.model`` is
    replaced by each net's; a model option that names the net (:data:`SETS_OPTIONS`) is refused."""
    refuse_set_fields("degradation", cfg, recipe_config(), {}, SETS_OPTIONS)
    if not depths:
        raise UsageError("give at least one depth, e.g. --depths 20 56")
    twice = next((d for d in depths if list(depths).count(d) > 1), None)
    if twice is not None:  # as compare and transfer refuse theirs: a repeat is a slip, not a wish
        raise UsageError(f"--depths lists {twice} twice; give each depth once")
    names = {}
    for kind in kinds:
        if kind not in KINDS:
            raise UsageError(f"unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        for depth in depths:
            name = KINDS[kind].format(depth=depth)
            model_info(name)  # an impossible depth fails here, before any training
            names[(kind, depth)] = name
    out = Path(out_dir)
    members = [(name, dataclasses.replace(cfg, model=name)) for _, name in sorted(names.items(), key=_order)]
    experiment = run_members(
        out, members, table="degradation.json", overwrite=overwrite, resume=resume, progress=progress
    )
    # a net stopped before its first epoch ended has nothing to report yet: the partial table leaves it out
    runs = {key: run for key, name in names.items() if (run := experiment.runs.get(name)) and run.history}
    input_shape = experiment.input_shape
    result = DegradationResult(
        runs, out / "degradation.png", out / "degradation.md", input_shape, experiment.status
    )
    if not distributed.current().is_main:  # data-parallel: rank 0 alone writes
        return result
    plot_degradation(runs, result.figure, f"plain vs residual on {cfg.data}")
    atomic_write_text(result.table, result.markdown() + "\n")
    atomic_write_text(
        out / "degradation.json",
        json.dumps(
            {
                "config": cfg.to_dict(),
                "input_shape": list(input_shape) if input_shape else None,
                "params_note": result.params_note(),
                "rows": result.rows(),
                "verdict": result.verdict(),
            },
            indent=2,
        ),
    )
    return result
