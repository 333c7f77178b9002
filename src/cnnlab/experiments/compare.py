"""Train several models with one recipe and compare them: the lectures' "which net is better" experiment.

    >>> from cnnlab.experiments.compare import compare
    >>> table = compare(["lecture-simple", "lecture-inception", "lecture-residual"], TrainConfig(epochs=10), "runs/compare")

Each model trains into ``<out>/<model>/`` (a full run directory); the comparison writes
``comparison.md``, ``comparison.json`` and ``comparison.png`` (validation accuracy per epoch, or
training accuracy without a validation split) in ``<out>``. Each model's test accuracy is that of
its selected checkpoint (best validation accuracy, or the last epoch without a validation split),
measured once at the end of its run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnlab.cells import figure, percent
from cnnlab.errors import UsageError
from cnnlab.experiments.runner import run_members, started_members
from cnnlab.fileio import atomic_write_text
from cnnlab.models import model_info
from cnnlab.train import distributed
from cnnlab.train.config import TrainConfig
from cnnlab.train.engine import RunResult
from cnnlab.train.plots import plot_comparison

COLUMNS = ("model", "params", "val acc", "test acc", "checkpoint", "s/epoch", "images/s")


@dataclasses.dataclass
class Comparison:
    """Runs of several models with one recipe, and where their table and plot were written."""

    runs: list[RunResult]
    table_path: Path
    plot_path: Path
    #: "interrupted" when a run was stopped: the table holds the runs so far (continue with resume=True)
    status: str = "completed"
    seeds: int = 1  # runs per model (seeds cfg.seed, cfg.seed + 1, ...)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per model: parameters, the selected checkpoint's validation and test accuracy, mean
        seconds per epoch, images/s (None for a run interrupted in its first epoch)."""
        rows = []
        for run in self.runs:
            rows.append(
                {
                    "model": run.config.model,
                    "seed": run.config.seed,
                    "params": run.num_params,
                    "val_acc": run.results.get("val_acc"),
                    "test_acc": run.results.get("test_acc"),
                    "checkpoint": run.results.get("checkpoint"),
                    "checkpoint_epoch": run.results.get("epoch"),
                    "seconds_per_epoch": run.epoch_mean("epoch_seconds"),
                    "images_per_s": run.epoch_mean("train_images_per_s"),
                    "epochs": len(run.history),
                    "status": run.status,
                }
            )
        return rows

    def seed_rows(self) -> list[dict[str, Any]]:
        """Per model over its seeds: the number of finished runs and the mean and (sample) standard
        deviation of their validation and test accuracy."""
        import statistics

        rows = []
        for model in dict.fromkeys(r.config.model for r in self.runs):
            finished = [r for r in self.runs if r.config.model == model and r.test_acc is not None]
            row: dict[str, Any] = {"model": model, "runs": len(finished)}
            for key in ("val_acc", "test_acc"):
                values = [r.results.get(key) for r in finished if r.results.get(key) is not None]
                row[f"{key}_mean"] = statistics.fmean(values) if values else None
                row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
            rows.append(row)
        return rows

    def seeds_markdown(self) -> str:
        """Mean ± standard deviation over seeds, one row per model."""
        pm = lambda m, s: percent(m) + ("" if m is None or s is None else f" ± {percent(s)}")  # noqa: E731
        lines = ["| model | runs | val acc (mean ± std) | test acc (mean ± std) |", "|---|---|---|---|"]
        for r in self.seed_rows():
            lines.append(
                f"| {r['model']} | {r['runs']} | {pm(r['val_acc_mean'], r['val_acc_std'])} | "
                f"{pm(r['test_acc_mean'], r['test_acc_std'])} |"
            )
        return "\n".join(lines)

    def markdown(self) -> str:
        """The comparison table in Markdown (after it, with several seeds, their mean ± std per model)."""
        if self.seeds > 1:
            return self.run_markdown() + "\n\n" + self.seeds_markdown()
        return self.run_markdown()

    def run_markdown(self) -> str:
        """The table of every run in Markdown."""
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for r in self.rows():
            checkpoint = (
                "-" if r["checkpoint"] is None else f"{r['checkpoint']} (epoch {r['checkpoint_epoch']})"
            )
            name = r["model"] if self.seeds == 1 else f"{r['model']} (seed {r['seed']})"
            lines.append(
                f"| {name} | {r['params']:,} | {percent(r['val_acc'])} | {percent(r['test_acc'])} | {checkpoint} "
                f"| {figure(r['seconds_per_epoch'], '.1f')} | {figure(r['images_per_s'], '.0f')} |"
            )
        return "\n".join(lines)


def compare(
    models: Sequence[str],
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    seeds: int = 1,
    tables: Sequence[str] = (),
) -> Comparison:
    """Train each of ``models`` with ``cfg`` (its ``model`` field replaced) and write the comparison.

    Training follows :func:`cnnlab.experiments.runner.run_members`; after an interruption the comparison
    of the runs so far is written and its status is ``interrupted``. ``tables``: the result files of an
    experiment built on this one, which also mark ``out_dir`` as taken."""
    models = [models] if isinstance(models, str) else list(models)  # one name, not its characters
    for name in models:
        model_info(name)  # unknown names fail before any training starts
    twice = next((name for name in models if models.count(name) > 1), None)
    if twice is not None:
        raise UsageError(f"model {twice} is named twice; name each model once (--seeds trains it again)")
    out = Path(out_dir)
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    if seeds == 1:
        members = [(name, dataclasses.replace(cfg, model=name)) for name in models]
    else:  # <model>-seed<S>/ for seeds cfg.seed .. cfg.seed + seeds - 1
        # A comparison started with one seed holds that seed's run in <model>/: resuming it with more
        # seeds continues that run there (its config says which seed it is) and adds the others.
        single = set(started_members(out)) & set(models) if resume else set()
        members = [
            (
                name if name in single and k == 0 else f"{name}-seed{cfg.seed + k}",
                dataclasses.replace(cfg, model=name, seed=cfg.seed + k),
            )
            for name in models
            for k in range(seeds)
        ]
    experiment = run_members(
        out,
        members,
        table=["comparison.json", *tables],
        overwrite=overwrite,
        resume=resume,
        progress=progress,
        members_hint="with --seeds 2 or more, each model's runs are <model>-seed<S>, one per seed from --seed, "
        "so resume with the --seeds and --seed it started with (more seeds add runs)",
    )
    runs = list(experiment.runs.values())
    split = "val" if cfg.val_fraction > 0 else "train"
    if not distributed.current().is_main:  # data-parallel: rank 0 alone writes
        return Comparison(runs, out / "comparison.md", out / "comparison.png", experiment.status)
    plot = plot_comparison(
        {
            (r.config.model if seeds == 1 else f"{r.config.model} seed {r.config.seed}"): [
                100 * row[f"{split}_acc"] for row in r.history
            ]
            for r in runs
        },
        out / "comparison.png",
        ylabel=f"{'validation' if split == 'val' else 'training'} accuracy (%)",
        title=f"{'validation' if split == 'val' else 'training'} accuracy on {cfg.data}",
    )
    comparison = Comparison(runs, out / "comparison.md", plot, experiment.status, seeds)
    atomic_write_text(comparison.table_path, comparison.markdown() + "\n")
    atomic_write_text(
        out / "comparison.json",
        json.dumps(
            {"config": cfg.to_dict(), "rows": comparison.rows()}
            | ({"seeds": seeds, "seed_rows": comparison.seed_rows()} if seeds > 1 else {}),
            indent=2,
        ),
    )
    return comparison
