"""What every benchmark shares: where its JSON goes, its verdict lines, and the machine it ran on.

A run writes ``benchmarks/results/NAME-YYYYMMDDTHHMMSSZ.json`` (UTC), a new file each time, so a
trial run never replaces the committed ``benchmarks/results/NAME.json``; ``--save`` writes that
committed file instead (after a run worth keeping). Timestamped files are git-ignored.

Each benchmark prints its verdict, one line per target, in the form
``verdict: WHAT: target >= 2.00x, measured 3.49x: met`` (or ``NOT met``), and stores the same in
the JSON under ``"verdicts"``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ISA_FLAGS = ("avx2", "avx512f", "amx_bf16")


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """``--save`` and ``--results-dir``."""
    parser.add_argument(
        "--save",
        action="store_true",
        help="write the committed results file (results/NAME.json) instead of a new timestamped one",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help="folder of the JSON (default: benchmarks/results)",
    )


def results_path(name: str, save: bool, folder: Path = RESULTS_DIR) -> Path:
    """``folder/NAME.json`` with ``save``, else a new ``folder/NAME-<UTC timestamp>.json``."""
    if save:
        return folder / f"{name}.json"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path, n = folder / f"{name}-{stamp}.json", 1
    while path.exists():  # two runs in one second
        n += 1
        path = folder / f"{name}-{stamp}-{n}.json"
    return path


def write_results(
    name: str, result: dict[str, Any], args: argparse.Namespace, path: Path | None = None
) -> Path:
    """Write ``result`` as JSON where ``args`` say (see :func:`results_path`; or at ``path``, one
    :func:`results_path` gave already) and print the path."""
    path = path or results_path(name, args.save, args.results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}" + ("" if args.save else " (--save writes the committed file)"), flush=True)
    return path


def verdict(what: str, target: str, measured: str, met: bool) -> dict[str, Any]:
    """Print one verdict line and return it as a record for the JSON."""
    print(f"verdict: {what}: target {target}, measured {measured}: {'met' if met else 'NOT met'}", flush=True)
    return {"what": what, "target": target, "measured": measured, "met": met}


def cpu_info() -> dict[str, Any]:
    """The CPU's model name and whether it has the ISA extensions the engine's speed depends on."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.machine(), platform.processor()):
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu_model": name, "isa": {flag: flag in flags for flag in ISA_FLAGS}}
