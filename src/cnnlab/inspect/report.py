"""``write_report(runs, out)``: one self-contained HTML page showing one or several runs whole.

    >>> from cnnlab.inspect import write_report
    >>> write_report(["runs/compare/lecture-simple", "runs/compare/lecture-residual"], "report.html")

The page needs nothing but itself: every picture is a PNG inlined as base64, the style sheet is inline,
there is no script and no link to the network. For each run it shows the headline result, the loss and
accuracy curves (from ``metrics.csv``, the source of truth), the confusion matrix and per-class accuracy
of the selected checkpoint on the test split (:func:`cnnlab.train.evaluation.evaluate_checkpoint`), the
test images it gets wrong most confidently, the first layer's filters, the recipe and the model summary
(:func:`cnnlab.analysis.summarize`); for several runs, a side-by-side table and overlaid curves first.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.cells import figure, percent
from cnnlab.errors import UsageError
from cnnlab.fileio import atomic_write_text
from cnnlab.train.rundir import ensure_writable_dir, output_storage_errors, read_run_json

#: how many of the most confident mistakes a run's section shows
MISTAKES = 24
#: the summary table's columns (of :data:`cnnlab.analysis.report.COLUMNS`)
SUMMARY_COLUMNS = ("layer", "type", "output", "weights", "biases", "MACs", "RF")


@dataclass
class RunView:
    """What the report shows of one run, computed once (see :func:`collect_run`)."""

    run_dir: Path
    config: dict[str, Any]
    results: dict[str, Any]
    metrics: list[dict[str, Any]]
    classes: list[str]
    confusion: np.ndarray
    per_class_accuracy: list[float]
    mistakes: list[tuple[np.ndarray, str, str, float]]  # picture [C, H, W], true, predicted, confidence
    filters_png: bytes
    filters_layer: str
    filters_shape: tuple[int, ...]
    summary: Any  # cnnlab.analysis.Summary
    comparison_row: dict[str, Any]

    @property
    def title(self) -> str:
        """``model on data``."""
        return f"{self.config.get('model')} on {self.config.get('data')}"

    @property
    def anchor(self) -> str:
        """The id of the run's section."""
        return "run-" + "".join(c if c.isalnum() else "-" for c in self.run_dir.name)


def runs_of(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories named by ``paths``: a run directory itself, or a folder of runs (a comparison) for
    each of its runs. A path that holds no completed run is a one-line :class:`UsageError`."""
    from cnnlab.train.evaluation import runs_in

    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise UsageError(f"no run directory at {path}")
        if (path / "config.json").is_file() or (path / "checkpoints").is_dir():
            found.append(path)
        elif path.is_dir() and (members := runs_in(path)):
            found.extend(_in_training_order(path, members))
        else:
            raise UsageError(f"{path} is not a run directory (no config.json) nor a folder of runs")
    from cnnlab.experiments.runner import MEMBERS_FILE

    for run in found:
        if not (run / "results.json").is_file():
            finish = (  # a member of an experiment (compare, experiment NAME) is finished by the experiment
                f"the command that started the experiment in {run.parent}, plus --resume"
                if (run.parent / MEMBERS_FILE).is_file()
                else "`cnnlab train ... --resume`"
            )
            raise UsageError(f"{run} has not completed (no results.json): finish it with {finish} first")
    if len(set(map(Path.resolve, found))) != len(found):
        raise UsageError("a run is named twice; name each run once")
    return found


def _in_training_order(folder: Path, members: list[Path]) -> list[Path]:
    """A comparison's runs in the order it trained them (its comparison.json), the others after, by name."""
    try:
        order = [row["model"] for row in json.loads((folder / "comparison.json").read_text())["rows"]]
    except (OSError, ValueError, KeyError, TypeError):
        order = []
    rank = {name: i for i, name in enumerate(order)}
    return sorted(members, key=lambda run: (rank.get(run.name, len(rank)), run.name))


def collect_run(run_dir: str | Path, *, device: str = "auto", data_dir: str | None = None) -> RunView:
    """Read, evaluate and draw what the report shows of the completed run in ``run_dir``.

    One evaluation pass of the selected checkpoint over the test split gives the confusion matrix,
    per-class accuracy and the mistakes (the same figures as ``cnnlab evaluate``).
    """
    import torch

    from cnnlab.analysis import summarize
    from cnnlab.experiments.compare import Comparison
    from cnnlab.inspect.views import enlargement, filter_tiles, filters, png_bytes, tile_grid
    from cnnlab.train.engine import RunResult, saved_config
    from cnnlab.train.evaluation import evaluate_checkpoint
    from cnnlab.train.rundir import read_metrics

    run_dir = Path(run_dir)
    fix = "train the run again (cnnlab train ... --overwrite) or leave it out of the report"
    config = read_run_json(run_dir / "config.json", fix)
    results = read_run_json(run_dir / "results.json", fix)
    metrics = read_metrics(run_dir / "metrics.csv")
    evaluation = evaluate_checkpoint(run_dir, data_dir=data_dir, device=device, plot=False, keep_outputs=True)
    result = evaluation.result
    probabilities, labels = result.probabilities, result.labels
    confidence, predicted = probabilities.max(1)
    wrong = torch.nonzero(predicted != labels).flatten()
    order = wrong[confidence[wrong].argsort(descending=True)][:MISTAKES]
    images = evaluation.images if evaluation.images.dim() == 4 else evaluation.images.unsqueeze(1)
    mistakes = [
        (
            images[i].numpy(),
            evaluation.classes[int(labels[i])],
            evaluation.classes[int(predicted[i])],
            float(confidence[i]),
        )
        for i in order.tolist()
    ]
    layer, weights = filters(evaluation.network)
    tiles, columns = filter_tiles(weights)
    grid = tile_grid(tiles, columns)
    filters_png = png_bytes(grid, enlargement(grid.shape[1], 320))
    summary = summarize(evaluation.network, evaluation.input_shape)
    history = [{"epoch_seconds": 0.0, "train_images_per_s": 0.0} | row for row in metrics]
    run = RunResult(run_dir, saved_config(run_dir), history, summary.totals.params, results=results)
    row = Comparison([run], Path(), Path()).rows()[0]  # the columns of comparison.md
    return RunView(
        run_dir, config, results, metrics, evaluation.classes, result.confusion.numpy(),
        result.per_class_accuracy, mistakes, filters_png, layer, tuple(weights.shape), summary, row,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ HTML

STYLE = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #d9dee7; --accent: #1f5fbf; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--bg); }
main { max-width: 1100px; margin: 0 auto; padding: 16px; }
header h1 { font-size: 1.6rem; margin: 0.2em 0; }
h2 { font-size: 1.35rem; margin: 0 0 0.4em; }
h3 { font-size: 1.05rem; margin: 1.2em 0 0.4em; }
p.muted, .muted { color: var(--muted); font-size: 0.9rem; }
section.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px;
               margin: 16px 0; }
nav ul { padding-left: 1.2em; margin: 0.3em 0; }
a { color: var(--accent); }
img { max-width: 100%; height: auto; display: block; }
img.pixels { image-rendering: pixelated; }
.figure { margin: 8px 0; }
.stats { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 8px; margin: 8px 0; }
.stat { border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; }
.stat b { display: block; font-size: 1.3rem; }
.stat span { color: var(--muted); font-size: 0.85rem; }
.two { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 16px; align-items: start; }
.pair { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 16px; align-items: start; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; font-size: 0.9rem; width: 100%; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.bar { background: #e6ecf5; border-radius: 3px; height: 0.8em; min-width: 60px; }
.bar i { display: block; height: 100%; background: var(--accent); border-radius: 3px; }
.mistakes { display: grid; grid-template-columns: repeat(auto-fill, minmax(104px, 1fr)); gap: 10px; }
.mistakes figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 4px; background: #fff; }
.mistakes img { width: 100%; image-rendering: pixelated; }
.mistakes figcaption { font-size: 0.78rem; line-height: 1.3; margin-top: 3px; overflow-wrap: anywhere; }
.mistakes .wrong { color: #b3261e; }
table.confusion { width: auto; font-size: 0.85rem; }
table.confusion td { text-align: center; padding: 4px 2px; min-width: 2.2em; font-variant-numeric: tabular-nums; }
table.confusion th { padding: 4px; font-weight: 600; font-size: 0.8rem; }
table.confusion tbody th { white-space: normal; min-width: 5.5em; }
details summary { cursor: pointer; font-weight: 600; margin: 0.6em 0; }
@media (max-width: 700px) {
  main { padding: 8px; }
  .two, .pair { grid-template-columns: minmax(0, 1fr); }
  section.card { padding: 10px; }
  header h1 { font-size: 1.3rem; }
  /* ten classes in 370 pixels: narrower cells, class names wrap */
  table.confusion td { min-width: 1.6em; padding: 3px 1px; font-size: 0.75rem; }
  table.confusion th { padding: 3px 2px; font-size: 0.72rem; }
  table.confusion tbody th { min-width: 4.6em; }
}
"""


def _img(png: bytes, alt: str, pixels: bool = False) -> str:
    data = base64.b64encode(png).decode("ascii")
    cls = ' class="pixels"' if pixels else ""
    return f'<img{cls} src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _figure(fig: Any, alt: str) -> str:
    from cnnlab.train.plots import figure_png

    return f'<div class="figure">{_img(figure_png(fig, dpi=90), alt)}</div>'


def _table(heads: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    def cell(tag: str, text: str, num: bool) -> str:
        return f"<{tag}{' class=num' if num else ''}>{text}</{tag}>"

    head = "".join(cell("th", html.escape(h), n) for h, n in zip(heads, numeric))
    body = "".join("<tr>" + "".join(cell("td", c, n) for c, n in zip(row, numeric)) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _stat(value: str, label: str) -> str:
    return f'<div class="stat"><b>{html.escape(value)}</b><span>{html.escape(label)}</span></div>'


def _comparison_section(views: Sequence[RunView]) -> str:
    from cnnlab.train.plots import comparison_figure

    # the accuracies first: on a phone the columns after them scroll inside the table's box
    heads = ("run", "test acc", "val acc", "params", "epochs", "checkpoint", "s/epoch", "images/s", "model")
    rows = []
    for v in views:
        r = v.comparison_row
        rows.append(
            [
                f'<a href="#{v.anchor}">{html.escape(v.run_dir.name)}</a>',
                f"<b>{percent(v.results.get('test_acc'))}</b>",
                percent(v.results.get("val_acc")),
                f"{r.get('params', 0):,}",
                str(r.get("epochs", len(v.metrics))),
                f"{html.escape(str(v.results.get('checkpoint')))} (epoch {v.results.get('epoch')})",
                figure(r.get("seconds_per_epoch"), ".1f"),
                figure(r.get("images_per_s"), ",.0f"),
                html.escape(str(v.config.get("model"))),
            ]
        )
    table = _table(heads, rows, (False, True, True, True, True, False, True, True, False))
    figures = []
    for split, what in (("val", "validation"), ("train", "training")):
        for metric, label, factor in (("acc", "accuracy (%)", 100), ("loss", "loss", 1)):
            series = {
                v.run_dir.name: [factor * row[f"{split}_{metric}"] for row in v.metrics]
                for v in views
                if v.metrics and v.metrics[0].get(f"{split}_{metric}") is not None
            }
            if series:
                fig = comparison_figure(
                    series, ylabel=f"{what} {label}", title=f"{what} {label.split(' ')[0]}"
                )
                fig.set_size_inches(5, 4)  # as the runs' own curves: the same type size on a phone
                figures.append(_figure(fig, f"{what} {label} per epoch, one line per run"))
    return (
        '<section class="card" id="compare"><h2>Side by side</h2>'
        '<p class="muted">Test accuracy is that of each run\'s selected checkpoint (best validation accuracy), '
        "measured once on the test split.</p>"
        f"{table}<h3>Curves, overlaid</h3>"
        f'<div class="pair">{"".join(figures)}</div></section>'
    )


def _confusion_table(matrix: np.ndarray, classes: Sequence[str]) -> str:
    """The confusion matrix as a shaded HTML table: its counts stay legible at any width (a picture's
    would shrink to a few pixels on a phone)."""
    peak = max(int(matrix.max()), 1)
    head = "<th></th>" + "".join(
        f'<th class=num title="{html.escape(c)}">{j}</th>' for j, c in enumerate(classes)
    )
    rows = []
    for i, (name, counts) in enumerate(zip(classes, matrix.tolist())):
        cells = []
        for j, count in enumerate(counts):
            share = count / peak
            colour = (
                f"rgba({31 if i == j else 179}, {95 if i == j else 38}, {191 if i == j else 30}, {share:.2f})"
            )
            ink = "#fff" if share > 0.55 else "inherit"
            cells.append(f'<td style="background:{colour};color:{ink}">{count or ""}</td>')
        rows.append(f"<tr><th>{i} {html.escape(name)}</th>{''.join(cells)}</tr>")
    return (
        '<div><div class="scroll"><table class="confusion">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        '<p class="muted">Rows: the true class; columns: the class predicted (numbered as the rows). '
        "Blue: right, red: wrong; darker is more images.</p></div>"
    )


def _run_section(v: RunView) -> str:
    from cnnlab.analysis.report import COLUMNS
    from cnnlab.train.plots import curves_figure

    r = v.results
    params = v.summary.totals.params
    stats = "".join(
        [
            _stat(percent(r.get("test_acc")), f"test accuracy ({r.get('test_images', '?')} images)"),
            _stat(percent(r.get("val_acc")), "validation accuracy"),
            _stat(f"{r.get('checkpoint')} @ {r.get('epoch')}", "selected checkpoint (epoch)"),
            _stat(f"{params:,}", "parameters"),
        ]
    )
    curves = "".join(
        _figure(curves_figure(v.metrics, metrics=(metric,)), f"loss and accuracy per epoch: {metric}")
        for metric in ("acc", "loss")
    )
    confusion = _confusion_table(v.confusion, v.classes)
    per_class = _table(
        ("class", "accuracy", ""),
        [
            [
                html.escape(c),
                f"{100 * a:.1f}%",
                f'<div class="bar"><i style="width:{100 * a:.1f}%"></i></div>',
            ]
            for c, a in zip(v.classes, v.per_class_accuracy)
        ],
        (False, True, False),
    )
    from cnnlab.inspect.views import enlargement, png_bytes

    if v.mistakes:
        tiles = []
        for picture, true, predicted, confidence in v.mistakes:
            image = picture.transpose(1, 2, 0)
            png = png_bytes(image, enlargement(image.shape[1], 112))
            tiles.append(
                f"<figure>{_img(png, f'a {true} taken for a {predicted}', pixels=True)}"
                f"<figcaption>true: <b>{html.escape(true)}</b><br>"
                f'<span class="wrong">said: <b>{html.escape(predicted)}</b></span> ({100 * confidence:.0f}%)'
                "</figcaption></figure>"
            )
        mistakes = f'<div class="mistakes">{"".join(tiles)}</div>'
    else:
        mistakes = "<p>No test image is misclassified.</p>"
    out, chans, kh, kw = v.filters_shape
    shown = (
        "in colour"
        if chans == 3
        else "grey"
        if chans == 1
        else f"one row per filter, first {min(chans, 16)} inputs"
    )
    index = {h: i for i, (h, _) in enumerate(COLUMNS)}
    layer_rows = [
        [html.escape(COLUMNS[index[h]][1](row)) for h in SUMMARY_COLUMNS] for row in v.summary.at_depth(2)
    ]
    summary_table = _table(
        SUMMARY_COLUMNS, layer_rows, [h not in ("layer", "type", "output") for h in SUMMARY_COLUMNS]
    )
    totals = "".join(f"<li>{html.escape(line)}</li>" for line in v.summary.totals_lines())
    config_rows = [[html.escape(k), html.escape(json.dumps(val))] for k, val in v.config.items()]
    config_table = _table(("setting", "value"), config_rows, (False, False))
    results_rows = [[html.escape(k), html.escape(json.dumps(val))] for k, val in v.results.items()]
    results_table = _table(("result", "value"), results_rows, (False, False))
    return (
        f'<section class="card" id="{v.anchor}"><h2>{html.escape(v.title)}</h2>'
        f'<p class="muted">{html.escape(str(v.run_dir))}</p><div class="stats">{stats}</div>'
        f'<h3>Learning curves</h3><div class="pair">{curves}</div>'
        '<p class="muted">The test split is measured once, on the selected checkpoint: the red star.</p>'
        f'<h3>Which classes it confuses (test split)</h3><div class="two">{confusion}<div>{per_class}</div></div>'
        f"<h3>The test images it gets most confidently wrong</h3>{mistakes}"
        f"<h3>First-layer filters</h3>"
        f'<p class="muted">{html.escape(v.filters_layer)}: {out} filters of {chans}x{kh}x{kw}, {shown}; '
        "each scaled to its own range, mid-grey is zero weight.</p>"
        f'<div class="figure">{_img(v.filters_png, "first-layer filters", pixels=True)}</div>'
        f"<details><summary>Recipe and result files</summary>{config_table}{results_table}</details>"
        f"<details><summary>Model summary ({params:,} parameters)</summary>{summary_table}"
        f"<ul>{totals}</ul></details></section>"
    )


def render_report(views: Sequence[RunView], title: str | None = None) -> str:
    """The HTML page (a string) for ``views``."""
    title = title or (
        f"cnnlab report: {views[0].title}"
        if len(views) == 1
        else f"cnnlab report: {len(views)} runs compared"
    )
    nav = ""
    if len(views) > 1:
        links = "".join(
            f'<li><a href="#{v.anchor}">{html.escape(v.run_dir.name)}</a>: test {percent(v.results.get("test_acc"))}</li>'
            for v in views
        )
        nav = f'<nav><ul><li><a href="#compare">side by side</a></li>{links}</ul></nav>'
    import matplotlib

    # figures are shown at phone widths too: larger type than the run directory's PNGs
    with matplotlib.rc_context({"font.size": 13, "legend.fontsize": 11}):
        body = (_comparison_section(views) if len(views) > 1 else "") + "".join(
            _run_section(v) for v in views
        )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main><header><h1>{html.escape(title)}</h1>"
        '<p class="muted">Written by cnnlab from the run directories: metrics.csv, results.json and the selected '
        f"checkpoint.</p>{nav}</header>{body}</main></body></html>\n"
    )


def write_report(
    runs: Sequence[str | Path] | str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    device: str = "auto",
    data_dir: str | None = None,
) -> Path:
    """Write the report of ``runs`` (run directories, or folders of runs) to ``out``; return its path.

    An existing ``out`` is replaced only with ``overwrite``.
    """
    out = Path(out)
    # the runs first: a mistyped run is the mistake to hear of, not the report left from an earlier one
    run_dirs = runs_of([runs] if isinstance(runs, (str, Path)) else list(runs))
    if out.exists() and not overwrite:
        raise UsageError(f"{out} already exists; use --overwrite to replace it")
    if out.exists() and out.is_dir():
        raise UsageError(f"{out} is a directory; name the report's file, e.g. {out / 'report.html'}")
    ensure_writable_dir(out.parent)  # read-only storage: say so before evaluating every run
    views = [collect_run(run, device=device, data_dir=data_dir) for run in run_dirs]
    with output_storage_errors("the report", "-o"):
        atomic_write_text(out, render_report(views))
    return out
