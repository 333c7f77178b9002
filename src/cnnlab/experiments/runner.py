"""One runner for every experiment: train a list of named members into ``<out>/<name>/``, one after another.

    >>> from cnnlab.experiments.runner import run_members
    >>> runs = run_members("runs/compare", [("a", cfg_a), ("b", cfg_b)], table="comparison.json")

The rules every experiment shares:

* an experiment folder that already holds its table or one of its members' runs is refused unless
  ``overwrite`` (retrain everything) or ``resume`` (continue) is given;
* with ``resume`` a member that finished is not trained again (its folder is only read), and an
  interrupted one continues from its last checkpoint;
* every member is checked on the data (its recipe, its model for the images' shape) before the first
  trains and before anything is written or replaced: a usage error leaves the folder as it was;
* ``resume`` where there is no experiment (no table, no member's run) is refused: a mistyped folder;
  so is ``resume`` that leaves out a member the experiment started with (:data:`MEMBERS_FILE`); one that
  adds a member trains it, with a warning;
* the dataset is loaded once and shared by every member, and the process-wide CPU settings are
  applied once, for the experiment (:func:`cnnlab.train.engine.process_settings`: the caller's back at its end);
* Ctrl-C stops the member after its batch and saves its checkpoint; the experiment stops there with
  status ``interrupted``, and the caller writes its partial table (:data:`RESUME_HINT` says how to go on).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from cnnlab.errors import UsageError, few
from cnnlab.fileio import atomic_write_text
from cnnlab.train import distributed
from cnnlab.train.config import TrainConfig, flag_for
from cnnlab.train.engine import (
    RunResult,
    Trainer,
    check_recipe_on_data,
    ensure_writable_dir,
    process_settings,
    recipe_changes,
    saved_config,
    select_device,
)
from cnnlab.train.rundata import load_config_data
from cnnlab.train.rundir import (
    RunFiles,
    check_run_dir,
    foreign_entries,
    holds_run,
    nothing_to_resume,
    read_metrics,
    read_run_json,
    refuse_file_in_the_way,
    refuse_overwrite_with_resume,
)

#: The experiment's member names in training order, written before the first member trains: ``--resume``
#: continues those members (and trains one the command adds, saying so); leaving one out is refused.
MEMBERS_FILE = "members.json"

#: What to tell the user after an interrupted experiment.
RESUME_HINT = "interrupted: checkpoint saved; continue with the same command and --resume"


def refuse_set_fields(
    experiment: str,
    cfg: TrainConfig,
    base: TrainConfig,
    fields: Mapping[str, str],
    options: Mapping[str, str] | None = None,
) -> None:
    """Refuse ``cfg`` where it differs from ``base`` in a setting the experiment sets itself.

    ``fields``: TrainConfig field -> how the experiment sets it (e.g. "per variant"); ``options``: the
    same for model options. Such a value would otherwise be silently replaced in every member, or leak
    into every member and make the variants that the table names alike (one :class:`UsageError` form)."""
    for name, how in fields.items():
        if getattr(cfg, name) != getattr(base, name):
            raise UsageError(f"the {experiment} experiment sets {name} itself ({how}); drop {flag_for(name)}")
    for key, how in (options or {}).items():
        if key in cfg.model_options and cfg.model_options[key] != base.model_options.get(key):
            raise UsageError(
                f"the {experiment} experiment sets the model option {key} itself ({how}); "
                f"drop {flag_for('model_options')} {key}={cfg.model_options[key]}"
            )


@dataclasses.dataclass
class ExperimentRuns:
    """The members' runs in training order (only those started), and how the experiment ended."""

    runs: dict[str, RunResult]
    status: str = "completed"  # or "interrupted"
    #: the shape (C, H, W) the members were trained on (None when no member got as far as its data)
    input_shape: tuple[int, ...] | None = None


def run_members(
    out_dir: str | Path,
    members: Sequence[tuple[str, TrainConfig]],
    *,
    table: str | Sequence[str],
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    steps_per_epoch: tuple[int, str] | None = None,
    members_hint: str = "",
) -> ExperimentRuns:
    """Train each ``(name, config)`` of ``members`` into ``<out_dir>/<name>/``, in order (see the module's rules).

    ``table`` is the file name of the experiment's own results in ``out_dir`` (or several names, for an
    experiment built on another); with one of them or any member's run there, the folder is refused
    unless ``overwrite`` or ``resume``. ``steps_per_epoch``: (N, the flag asking for it) where every epoch
    of every member must be exactly N steps (:class:`cnnlab.train.engine.Trainer`). ``members_hint``: how the
    experiment names its members (the flags that decide them), said when ``resume`` leaves one out.
    """
    refuse_overwrite_with_resume(overwrite, resume)
    names = [name for name, _ in members]
    if not names:
        raise UsageError("an experiment needs at least one member")
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:  # the experiments say it in their own words first; this guards their folders
        raise UsageError(f"member {twice} appears twice in the experiment; each member needs its own folder")
    out = Path(out_dir)
    refuse_file_in_the_way(out)  # before the data loads: the user's mistake, found without any work
    for _, cfg in members:  # every member's, a finished one's too: a resume that trains nothing writes tables
        select_device(cfg.device)
    tables = [table] if isinstance(table, str) else list(table)
    started = any((out / t).exists() for t in [*tables, MEMBERS_FILE]) or any(
        holds_run(out / n) for n in names
    )
    if started and not (overwrite or resume):
        raise UsageError(
            f"experiment folder {out} already exists; use --overwrite to replace it or --resume to continue it"
        )
    if resume and not started:  # a mistyped --out would otherwise start a fresh experiment unnoticed
        raise nothing_to_resume(out, "experiment")
    # what members.json will say: those the experiment started with, in their order, then any the command adds
    recorded_members = check_resumed_members(out, names, members_hint) if resume else list(names)
    started_with = started_members(out) if resume else []
    added = [name for name in recorded_members if name not in started_with] if started_with else []
    # an image folder, a mistyped --out: never written into (a member's folder gets the run's own check)
    others = [entry for entry in foreign_entries(out) if entry not in names]
    if not started and others:
        raise UsageError(
            f"{out} is not an experiment folder (it holds {few(others)}): an experiment goes into "
            "a new or empty folder, or over an earlier one of its kind with --overwrite; choose another --out"
        )
    progress = progress and distributed.current().is_main  # data-parallel: rank 0 alone reports and writes
    # an entry point: process-wide settings for every member, the caller's back at the end (process_settings)
    with process_settings(members[0][1].threads):
        result = ExperimentRuns({})
        if resume:  # one refusal of a changed recipe for every experiment, as `train --resume` has
            for name, cfg in members:
                if (out / name / "config.json").is_file():
                    saved = saved_config(out / name)
                    fields = [f.name for f in dataclasses.fields(TrainConfig)]
                    # the steps per epoch were asked for by the experiment's flag (batchnorm's --eval-every)
                    labels = {"max_steps_per_epoch": steps_per_epoch[1]} if steps_per_epoch else {}
                    changes = recipe_changes(saved, cfg, fields, labels)
                    if changes:
                        drop = "that flag" if len(changes) == 1 else "those flags"
                        raise UsageError(
                            f"--resume continues {out / name} with its saved recipe, but the experiment asks for "
                            f"another: {'; '.join(changes)}. Drop {drop}, or start again with --overwrite"
                        )
        finished = {name: finished_run(out / name, cfg) for name, cfg in members} if resume else {}
        to_train = [(name, cfg) for name, cfg in members if finished.get(name) is None]
        # Every member is checked before the first trains and before anything is written or replaced, so
        # that a usage error in a late member (a model too big for the images, an option it lacks) leaves
        # the folder as it was. The dataset is loaded once for that and shared by every member (class
        # subsets are views of it).
        # Resuming, the image folder's files and splits are those the started members recorded (each
        # member's own record is checked against them when it resumes).
        recorded = None
        for name, _ in to_train if resume else ():
            recorded = recorded or RunFiles(out / name).read_data_manifest()
        data = load_config_data(to_train[0][1], progress=progress, recorded=recorded) if to_train else None
        for name, cfg in to_train:
            can_resume = resume and (out / name / "checkpoints" / "last.json").is_file()
            if distributed.current().is_main:
                check_run_dir(out / name, overwrite=overwrite, resume=can_resume)
            check_recipe_on_data(cfg, data, steps_per_epoch)
        if added and distributed.current().is_main:  # once every check has passed, by rank 0 alone
            warnings.warn(
                f"adding {', '.join(added)} to the experiment in {out}, which started with {', '.join(started_with)}",
                stacklevel=2,
            )
        if distributed.current().is_main:
            ensure_writable_dir(out)
            atomic_write_text(out / MEMBERS_FILE, json.dumps({"members": recorded_members}, indent=2) + "\n")
        for name, cfg in members:
            run_dir = out / name
            if finished.get(name) is not None:
                result.runs[name], result.input_shape = finished[name]
                if progress:
                    print(f"== {name}: finished, read from {run_dir} (not trained again)", flush=True)
                continue
            if progress:
                print(f"== {name}", flush=True)
            can_resume = resume and (run_dir / "checkpoints" / "last.json").is_file()
            trainer = Trainer(
                cfg, run_dir, overwrite=overwrite, resume=can_resume, progress=progress, data=data,
                steps_per_epoch=steps_per_epoch,
            )  # fmt: skip
            result.input_shape = tuple(trainer.input_shape)
            result.runs[name] = run = trainer.fit()
            more_to_train = name != names[-1]
            if run.status != "completed" or (run.stop_requested and more_to_train):
                result.status = "interrupted"  # a stop in a member's last step ends the experiment after it
                break
        return result


def check_resumed_members(out: Path, names: Sequence[str], hint: str = "") -> list[str]:
    """Resuming the experiment in ``out`` (its :data:`MEMBERS_FILE`; one started before that file existed is not
    checked): a member it started with and the command leaves out is refused, since its table would lose that
    run unnoticed (the refusal names the members the command has instead, and then ``hint``: how the
    experiment names them); a member the command adds (another seed, another model) is trained, and
    :func:`run_members` says so once its checks have passed.
    Returns the members to record: those it started with, in their order, then those added."""
    started = started_members(out)
    if not started:
        return list(names)
    dropped = [n for n in started if n not in names]
    added = [n for n in names if n not in started]
    if dropped:
        instead = f" and has {', '.join(added)} instead" if added else ""
        raise UsageError(
            f"--resume continues the experiment in {out}, whose members are {', '.join(started)}, but the command "
            f"leaves out {', '.join(dropped)}{instead}; name every member it started with (a new one may be "
            f"added){'; ' + hint if hint and added else ''}"
        )
    return [*started, *added]


def started_members(out: Path) -> list[str]:
    """The members the experiment in ``out`` started with, in order (its :data:`MEMBERS_FILE`); empty where
    there is none (a new folder, or an experiment started before that file existed)."""
    if not (out / MEMBERS_FILE).is_file():
        return []
    started = read_run_json(
        out / MEMBERS_FILE,
        "delete it to resume without checking the members, or start again with --overwrite",
    ).get("members")
    return [str(name) for name in started] if isinstance(started, list) else []


def finished_run(run_dir: Path, cfg: TrainConfig) -> tuple[RunResult, tuple[int, ...]] | None:
    """The completed run in ``run_dir`` and its input shape, read from its files; None unless it completed
    ``cfg.epochs`` epochs (a longer ``--epochs`` on resume continues it instead)."""
    from cnnlab.train.checkpoint import read_manifest

    if not (run_dir / "results.json").is_file() or not (run_dir / "checkpoints" / "last.json").is_file():
        return None
    saved = saved_config(run_dir)
    manifest = read_manifest(run_dir / "checkpoints" / "last.json")
    if manifest.get("epoch") != cfg.epochs or saved.epochs != cfg.epochs:
        return None
    results = read_run_json(run_dir / "results.json", "start the experiment again with --overwrite")
    # as a live run's rows: no key for a split it lacks, whole epochs, the test columns always present
    history = [
        {"test_loss": None, "test_acc": None, "selected": None}
        | {k: v for k, v in row.items() if v is not None}
        | {"epoch": int(row["epoch"])}
        for row in read_metrics(run_dir / "metrics.csv")
    ]
    shape = tuple(manifest["input_shape"])
    run = RunResult(
        run_dir, saved, history, _num_params(saved, manifest["num_classes"], shape), results=results
    )
    run.best_accuracy = max((r["val_acc"] for r in history if "val_acc" in r), default=0.0)
    return run, shape


def _num_params(cfg: TrainConfig, num_classes: int, input_shape: tuple[int, ...]) -> int:
    """Parameters of the model a run trained, rebuilt on the meta device (no memory, no arithmetic)."""
    import torch

    from cnnlab.models.layers import count_params
    from cnnlab.train.engine import build_model_for_data

    with torch.device("meta"):
        return count_params(build_model_for_data(cfg, num_classes, input_shape))
