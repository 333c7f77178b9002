"""``cnnlab speedrun DATASET``: the fastest path on a CPU to a given test accuracy, and the time to each mark.

    >>> from cnnlab.experiments.speedrun import speedrun, speedrun_config
    >>> result = speedrun(speedrun_config("fashion-mnist"), "runs/speedrun", seeds=3)

A speedrun is a registered net and a named recipe (:data:`cnnlab.train.recipes.SPEEDRUNS`: ``speedrun-fmnist`` under the
recipe ``speedrun`` for Fashion-MNIST), trained with :func:`cnnlab.experiments.compare.compare` (one run
per seed, the shared experiment rules: resumable, Ctrl-C safe). Every epoch is measured on the
validation split; the time to each accuracy mark is the run's wall time (training, validation and
checkpoints: metrics.csv's ``elapsed_s``) at the end of the first epoch whose validation accuracy
reaches it. The test split is touched once per run, at its end, on the checkpoint the validation
accuracy selected. ``speedrun.md``/``.json`` hold the table, ``speedrun.png`` validation accuracy
against wall time.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

from cnnlab.cells import figure, percent
from cnnlab.data.views import views_said
from cnnlab.experiments.compare import compare
from cnnlab.fileio import atomic_write_text
from cnnlab.train import distributed
from cnnlab.train.config import TrainConfig
from cnnlab.train.engine import RunResult
from cnnlab.train.recipes import SPEEDRUNS, config_with_recipe, speedrun_for


def speedrun_config(dataset: str, **given: Any) -> TrainConfig:
    """The speedrun recipe for ``dataset``'s net, with ``given`` settings over it."""
    run = speedrun_for(dataset)
    return config_with_recipe(run.recipe, {"data": dataset, **given}, model=run.model).validate()


def time_to_marks(history: list[dict[str, Any]], marks: tuple[float, ...]) -> dict[str, float | None]:
    """``{"90.0": seconds, ...}``: the run's wall time at the end of the first epoch whose validation
    accuracy reached each mark (%), None where no epoch did."""
    reached: dict[str, float | None] = {}
    for mark in marks:
        row = next((r for r in history if r.get("val_acc") is not None and 100 * r["val_acc"] >= mark), None)
        reached[f"{mark:g}"] = None if row is None else row.get("elapsed_s")
    return reached


@dataclasses.dataclass
class SpeedrunResult:
    """The runs (one per seed) and where the table and figure went."""

    runs: list[RunResult]
    marks: tuple[float, ...]
    table: Path
    figure: Path
    status: str = "completed"
    #: the seeds' shared recipe (their seed aside), said above the table
    config: TrainConfig | None = None

    def rows(self) -> list[dict[str, Any]]:
        """One row per seed: epochs, wall time, the selected checkpoint's validation and test accuracy,
        and the time to each mark."""
        rows = []
        for run in self.runs:
            rows.append(
                {
                    "seed": run.config.seed,
                    "epochs": len(run.history),
                    "processes": run.results.get("processes"),  # data-parallel ranks: wall time depends on it
                    "wall_s": run.history[-1].get("elapsed_s") if run.history else None,
                    "val_acc": run.results.get("val_acc"),
                    "test_acc": run.results.get("test_acc"),
                    "time_to_val_acc": time_to_marks(run.history, self.marks),
                    "status": run.status,
                }
            )
        return rows

    def summary(self) -> dict[str, Any]:
        """Mean and sample standard deviation over the finished seeds of test accuracy and wall time."""
        done = [r for r in self.rows() if r["test_acc"] is not None]
        counts = sorted({r["processes"] for r in self.rows() if r["processes"] is not None})
        summary: dict[str, Any] = {"runs": len(done), "processes": counts}
        for key in ("test_acc", "wall_s"):
            values = [r[key] for r in done if r[key] is not None]
            if key == "wall_s" and len(counts) > 1:  # seeds on other process counts: no mean of unlike times
                values = []
            summary[f"{key}_mean"] = statistics.fmean(values) if values else None
            summary[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        return summary

    def caption(self) -> str:
        """What was trained: the net, data, recipe, precision, schedule length and model options, so that two
        tables of other settings never look alike."""
        cfg = self.config
        if cfg is None:
            return ""
        options = ", ".join(
            f"{k}={','.join(map(str, v)) if isinstance(v, list | tuple) else v}"
            for k, v in cfg.model_options.items()
        )
        # a budget cut short (a subset, capped epochs) must not read like the full recipe in a table of times
        budget = (f", {cfg.train_subset:,} training images" if cfg.train_subset else "") + (
            f", at most {cfg.max_steps_per_epoch} steps per epoch" if cfg.max_steps_per_epoch else ""
        )
        if (
            cfg.prunes and cfg.epochs > 1
        ):  # what the run pays for: pruned epochs train on a share of the images
            budget += f", pruned to {100 * cfg.prune:g}% after the first epoch ({100 * cfg.prune_random:g}% of it random)"
        # " on flip-shift views": the test figures are not the centre crop's
        tested = views_said(cfg.views_of("test"))
        return (
            f"{cfg.model} on {cfg.data}: recipe {cfg.recipe or 'none'}, {cfg.amp}, {cfg.epochs} epoch{'s' * (cfg.epochs != 1)} of batch "
            f"{cfg.batch_size}{budget}" + (f", model options {options}" if options else "")
            + (f", tested{tested}" if tested else "")
        )  # fmt: skip

    def markdown(self) -> str:
        """The table in Markdown under its caption: a row per seed, then the mean."""
        caption = self.caption() + "\n\n" if self.config is not None else ""
        if not self.runs:
            return caption + "No epoch of any seed has finished yet: nothing to tabulate."
        sec = lambda v: figure(v, ".0f", " s")  # noqa: E731
        marks = " | ".join(f"to {m:g}% val" for m in self.marks)
        lines = [
            f"| seed | epochs | processes | wall time | val acc | test acc | {marks} |",
            "|---|---|---|---|---|---|" + "---|" * len(self.marks),
        ]
        for r in self.rows():
            times = " | ".join(sec(t) for t in r["time_to_val_acc"].values())
            lines.append(
                f"| {r['seed']} | {r['epochs']} | {figure(r['processes'], 'd')} | {sec(r['wall_s'])} | {percent(r['val_acc'])} | {percent(r['test_acc'])} "
                f"| {times} |"
            )
        s = self.summary()
        if s["runs"] > 1:
            spread = lambda m, d, f: "-" if m is None else f(m) + ("" if d is None else f" ± {f(d)}")  # noqa: E731
            lines.append(
                f"| mean of {s['runs']} | | | {spread(s['wall_s_mean'], s['wall_s_std'], sec)} | | "
                f"{spread(s['test_acc_mean'], s['test_acc_std'], percent)} |" + " |" * len(self.marks)
            )
        if len(s["processes"]) > 1:  # a resume with another --nproc: say so, and average no wall times
            counts = " and ".join(map(str, s["processes"]))
            lines += ["", f"The seeds ran on {counts} processes: their wall times do not compare."]
        return caption + "\n".join(lines)


def speedrun(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    seeds: int = 1,
    marks: tuple[float, ...] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> SpeedrunResult:
    """Train ``cfg`` with ``seeds`` seeds (``cfg.seed`` upwards) into ``out_dir`` and write the speedrun's
    table (``speedrun.md``, ``speedrun.json``) and figure (``speedrun.png``).

    ``marks`` (validation accuracy in %) default to the dataset's speedrun's, else 90-94."""
    if marks is None:
        marks = SPEEDRUNS[cfg.data].marks if cfg.data in SPEEDRUNS else (90.0, 91.0, 92.0, 93.0, 94.0)
    out = Path(out_dir)
    comparison = compare(
        [cfg.model], cfg, out, overwrite=overwrite, resume=resume, progress=progress, seeds=seeds,
        tables=["speedrun.json"],
    )  # fmt: skip
    runs = [run for run in comparison.runs if run.history]
    result = SpeedrunResult(
        runs, tuple(marks), out / "speedrun.md", out / "speedrun.png", comparison.status, config=cfg
    )
    if not distributed.current().is_main:  # data-parallel: rank 0 alone writes
        return result
    from cnnlab.train.plots import plot_time_to_accuracy

    plot_time_to_accuracy(
        {
            f"seed {run.config.seed}": [
                (row["elapsed_s"], 100 * row["val_acc"])
                for row in run.history
                if row.get("val_acc") is not None
            ]
            for run in runs
        },
        result.figure,
        marks=result.marks,
        title=f"{cfg.model} on {cfg.data}: validation accuracy against wall time",
    )
    atomic_write_text(result.table, result.markdown() + "\n")
    atomic_write_text(
        out / "speedrun.json",
        json.dumps(
            {
                "config": cfg.to_dict(),
                "marks": list(result.marks),
                "rows": result.rows(),
                "summary": result.summary(),
            },
            indent=2,
        ),
    )
    return result
