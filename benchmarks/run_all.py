"""``make bench``: run every benchmark script in this folder, one after another.

Each script measures ratios against a baseline taken in the same run (never absolute times
compared across runs), prints its table and its verdict lines and writes its JSON to a new
timestamped file under benchmarks/results/; with ``--save``, to the committed
benchmarks/results/NAME.json instead. At the end, every verdict line is printed again.

    python benchmarks/run_all.py [--save] [NAME ...]     # NAME: train_throughput, summary_cost, ...
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts() -> list[Path]:
    """Every benchmark script: ``benchmarks/*.py`` except this one and helpers (``_*.py``)."""
    return sorted(
        p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_")
    )


def main(argv: list[str] | None = None) -> int:
    """Run each benchmark (or those named); the exit status is the first failure's."""
    available = {p.stem: p for p in scripts()}
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"one of {', '.join(available)} (default: all)"
    )
    parser.add_argument("--save", action="store_true", help="write the committed results files")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(available))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; valid: {', '.join(available)}")
    status, verdicts = 0, []
    for name, script in available.items():
        if args.names and name not in args.names:
            continue
        print(f"=== {script.name}", flush=True)
        with subprocess.Popen(
            [sys.executable, str(script), *(["--save"] if args.save else [])],
            stdout=subprocess.PIPE,
            text=True,
        ) as proc:
            for line in proc.stdout:
                print(line, end="", flush=True)
                if line.startswith("verdict: "):
                    verdicts.append(f"{name}: {line.removeprefix('verdict: ').rstrip()}")
        if proc.returncode:
            verdicts.append(f"{name}: failed with exit status {proc.returncode}")
        status = status or proc.returncode
    print("\n=== verdicts")
    for line in verdicts:
        print(line)
    return status


if __name__ == "__main__":
    sys.exit(main())
