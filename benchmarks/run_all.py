"""``make bench``: run every benchmark script in this folder, one after another.

Each script measures ratios against a baseline taken in the same run (never absolute times
compared across runs), prints its table and writes JSON under benchmarks/results/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Run each ``benchmarks/*.py`` except this one; the exit status is the first failure's."""
    status = 0
    scripts = sorted(
        p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_")
    )
    only = set(sys.argv[1:])
    for script in scripts:
        if only and script.stem not in only:
            continue
        print(f"=== {script.name}", flush=True)
        rc = subprocess.call([sys.executable, str(script)])
        status = status or rc
    return status


if __name__ == "__main__":
    sys.exit(main())
