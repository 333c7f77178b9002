"""The augmentation study of Chatfield et al. 2014 (slide 004, "Return of the Devil in the Details").

Three nets of one model trained with: no augmentation, flips only ("almost no improvement" in the
paper), random crops and flips ("about 3%"). Crops are TrainConfig's ``crop_padding`` (pad, then a
random crop of the original size) and flips its ``flip``. The experiment sets ``flip`` itself and
trains with the custom pipeline (``augment="none"``); a config that asks for another (``--flip``,
``--augment cifar``) is refused, as it would make the three variants alike. ``crop_padding`` stays a
knob: the crops variant's padding (4 when 0); the other two variants train without crops.

Evaluation, both on each run's selected checkpoint and the test split: centre (the run's own final
report: the image as trained, or the centre crop of ``input_size``) and 10 crops (centre and 4 corners
of the input size in the stored, padded image, and their flips, softmax outputs averaged:
:mod:`cnnlab.train.tta`). With images stored at the input size the 10 crops coincide (5 times the
image and 5 times its mirror); give ``pad_to``/``input_size`` (e.g. 32 and 28) for the paper's setting.

    >>> from cnnlab.experiments.augmentation import augmentation
    >>> result = augmentation(TrainConfig(model="lecture-simple", epochs=5), "runs/augmentation")
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from cnnlab.cells import percent
from cnnlab.experiments.runner import refuse_set_fields, run_members
from cnnlab.fileio import atomic_write_text
from cnnlab.train.config import TrainConfig
from cnnlab.train.engine import RunResult
from cnnlab.train.recipes import EXPERIMENT_SETS

#: (name, settings) of the training-time variants (Chatfield et al. 2014 section 3.1 / slide 004).
VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("no-aug", {"crop_padding": 0, "flip": False}),
    ("flip", {"crop_padding": 0, "flip": True}),
    ("crops+flip", {"flip": True}),  # crop_padding: the config's (default 4, see augmentation())
)

#: What the experiment sets itself, and how (refused when a config asks for another value).
SETS = EXPERIMENT_SETS["augmentation"]

#: Test-time views (Chatfield et al. 2014 section 3.1): the centre, and 10 crops.
TEST_VIEWS = ("centre", "10crop")


def view_accuracy(run: RunResult, view: str) -> float | None:
    """Test accuracy of ``run``'s selected checkpoint under test-time ``view`` (:data:`TEST_VIEWS`).

    "centre" is the run's own final report; "10crop" evaluates the same checkpoint on the 10 crops,
    softmax outputs averaged (:func:`cnnlab.train.evaluation.evaluate_tta_checkpoint`)."""
    if view == "centre":
        return run.test_acc
    if view == "10crop":
        if run.test_acc is None:  # not finished: no selected checkpoint reported yet
            return None
        from cnnlab.train.evaluation import evaluate_tta_checkpoint

        (row,) = evaluate_tta_checkpoint(run.run_dir, ["10crop"], device=run.config.device).rows
        return row.result.accuracy
    raise ValueError(f"unknown test view {view!r}; one of {', '.join(TEST_VIEWS)}")


@dataclasses.dataclass
class AugmentationResult:
    """The runs by variant and where the figure and table went."""

    runs: dict[str, RunResult]
    figure: Path
    table: Path
    status: str = "completed"
    measured: list[dict[str, Any]] | None = None  # rows() computed once: 10-crop evaluation is not free

    def rows(self) -> list[dict[str, Any]]:
        """One row per variant: its settings, best validation accuracy and test accuracy per view."""
        if self.measured is not None:
            return self.measured
        rows = []
        for name, run in self.runs.items():
            row = {
                "variant": name,
                "crop_padding": run.config.crop_padding,
                "flip": run.config.flip,
                "val_acc": run.results.get("val_acc"),
            }
            row.update({f"test_acc_{view}": view_accuracy(run, view) for view in TEST_VIEWS})
            rows.append(row)
        self.measured = rows
        return rows

    def markdown(self) -> str:
        """The table in Markdown."""
        views = " | ".join(f"test acc ({v})" for v in TEST_VIEWS)
        lines = [f"| training augmentation | val acc | {views} |", "|---|---|" + "---|" * len(TEST_VIEWS)]
        for r in self.rows():
            cells = " | ".join(percent(r[f"test_acc_{v}"]) for v in TEST_VIEWS)
            lines.append(f"| {r['variant']} | {percent(r['val_acc'])} | {cells} |")
        return "\n".join(lines)


def augmentation(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> AugmentationResult:
    """Train the three variants of ``cfg`` (crops use ``cfg.crop_padding``, 4 when it is 0) and write
    ``augmentation.png``, ``augmentation.md`` and ``augmentation.json``.

    A ``cfg`` that sets what the experiment sets itself (:data:`SETS`) is refused (:class:`UsageError`)."""
    refuse_set_fields("augmentation", cfg, TrainConfig(), SETS)
    padding = cfg.crop_padding or 4
    members = []
    for name, settings in VARIANTS:
        settings = {**settings, "crop_padding": settings.get("crop_padding", padding)}
        members.append((name, dataclasses.replace(cfg, **settings)))
    out = Path(out_dir)
    experiment = run_members(
        out, members, table="augmentation.json", overwrite=overwrite, resume=resume, progress=progress
    )
    runs = {name: run for name, run in experiment.runs.items() if run.history}
    result = AugmentationResult(runs, out / "augmentation.png", out / "augmentation.md", experiment.status)
    from cnnlab.train.plots import plot_comparison

    plot_comparison(
        {name: [100 * r["val_acc"] for r in run.history if "val_acc" in r] for name, run in runs.items()},
        result.figure,
        ylabel="validation accuracy (%)",
        title=f"{cfg.model} on {cfg.data}: training augmentation (Chatfield et al. 2014)",
    )
    atomic_write_text(result.table, result.markdown() + "\n")
    atomic_write_text(
        out / "augmentation.json",
        json.dumps(
            {"config": cfg.to_dict(), "test_views": list(TEST_VIEWS), "rows": result.rows()}, indent=2
        ),
    )
    return result
