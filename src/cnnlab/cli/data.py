"""``cnnlab data list | fetch | check | export | stats``: where the datasets are, getting them, verifying
them, writing one out as an image folder, and the statistics of any dataset or folder."""

from __future__ import annotations

import argparse
import json
import sys

from cnnlab.cli.common import add_command, add_command_group
from cnnlab.data.catalog import DATASETS, candidate_dirs, check_explicit_root, dataset_files, dataset_info
from cnnlab.errors import DataError

# Reading, fetching and loading need numpy and torch: imported in the handlers, so that
# `cnnlab --help` starts without them.


def dataset_status(name: str, data_dir: str | None = None, verify: bool = True) -> dict:
    """Where ``name`` is found (first hit in lookup order) and whether its files verify: every byte is read
    and hashed (the decoded cache is not used: a listing must not vouch for a file it did not read)."""
    from cnnlab.data.load import read_verified

    info = dataset_info(name)
    for source, directory in candidate_dirs(name, data_dir):
        paths = dataset_files(directory, info)
        if paths is None:
            continue
        status = "not checked"
        if verify:
            try:
                if info.format == "cifar":
                    from cnnlab.data.cifar import unpacked_digests, verify_file

                    recorded = unpacked_digests(directory / info.archive.folder)  # type: ignore[union-attr]
                    checks = {verify_file(p, info.files[r], recorded) for r, p in paths.items()}
                else:
                    checks = {
                        read_verified(p, info.files[r], verify=True, use_cache=False)[1]
                        for r, p in paths.items()
                    }
                status = (
                    "verified"
                    if all(c.split(" (")[0].endswith("sha256") for c in checks)
                    else ", ".join(sorted(checks))
                )
            except DataError as err:
                status = f"FAILED: {err}"
        return {"name": name, "present": True, "where": str(directory), "source": source, "status": status}
    return {"name": name, "present": False, "where": None, "source": None, "status": "missing"}


def _list(args: argparse.Namespace) -> int:
    check_explicit_root(args.data_dir)
    rows = [dataset_status(n, args.data_dir, verify=not args.no_verify) for n in sorted(DATASETS)]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'dataset':<15} {'status':<12} where")
    for r in rows:
        where = (
            f"{r['where']} ({r['source']})" if r["present"] else f"-  (get it: cnnlab data fetch {r['name']})"
        )
        print(f"{r['name']:<15} {r['status']:<12} {where}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from cnnlab.data.fetch import fetch_dataset

    if not args.force:
        # Where loading would find it (the named place only, if one is named): every byte hashed.
        row = dataset_status(args.name, args.data_dir)
        if row["status"] == "verified":
            print(
                f"{args.name}: already present and verified in {row['where']} ({row['source']}); "
                "nothing downloaded (--force downloads it again)"
            )
            return 0
        if row["present"]:
            print(
                f"{args.name}: {row['where']} does not verify ({row['status']}); downloading", file=sys.stderr
            )
    directory = fetch_dataset(
        args.name, args.data_dir, args.mirror, progress=not args.quiet, force=args.force
    )
    print(f"{args.name}: verified files in {directory}")
    return 0


def _check(args: argparse.Namespace) -> int:
    import torch

    from cnnlab.data.load import load_dataset

    # Always verified (CNNLAB_NO_VERIFY does not apply), every byte hashed: no decoded cache.
    data = load_dataset(args.name, data_dir=args.data_dir, verify=True, use_cache=False)
    info = data.info
    print(f"{info.name}: {data.directory}")
    for role, how in data.checks.items():
        print(f"  {info.files[role].name:<26} {how}")
    from cnnlab.data.imagefolder import channel_stats

    mean, std = channel_stats(data.train.images)
    print(
        f"  train {len(data.train)}, test {len(data.test)}, {info.num_classes} classes, images {'x'.join(map(str, info.image_size))}"
    )
    print(
        f"  train pixel mean {' '.join(f'{v:.4f}' for v in mean)} std {' '.join(f'{v:.4f}' for v in std)} "
        f"(registry: {' '.join(f'{v:.4f}' for v in info.mean)}, {' '.join(f'{v:.4f}' for v in info.std)})"
    )
    counts = torch.bincount(data.train.labels, minlength=info.num_classes).tolist()
    print("  train labels per class: " + " ".join(map(str, counts)))
    return 0


def _export(args: argparse.Namespace) -> int:
    from cnnlab.data.export import export_imagefolder

    out = export_imagefolder(
        args.name, args.dir, data_dir=args.data_dir, overwrite=args.overwrite, progress=not args.quiet
    )
    print(f"{args.name}: written as an image folder in {out} (train/, test/, cnnlab-dataset.json)")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from cnnlab.data.export import dataset_stats

    stats = dataset_stats(
        args.data, data_dir=args.data_dir, image_size=args.image_size, in_chans=args.in_chans,
        bad_images=args.bad_images, progress=not args.quiet,
    )  # fmt: skip
    if args.format == "json":
        print(json.dumps(stats, indent=2))
        return 0
    h, w = stats["stored_size"]
    print(f"{stats['data']}: {len(stats['classes'])} classes, stored as {stats['channels']}x{h}x{w}")
    print("  train mean per channel: " + " ".join(f"{v:.4f}" for v in stats["mean"]))
    print("  train std per channel:  " + " ".join(f"{v:.4f}" for v in stats["std"]))
    width = max(len(c) for c in stats["classes"])
    splits = list(stats["counts"])
    print(f"  {'class':<{width}} " + " ".join(f"{s:>7}" for s in splits))
    for k, name in enumerate(stats["classes"]):
        print(f"  {name:<{width}} " + " ".join(f"{stats['counts'][s][k]:>7}" for s in splits))
    sizes = ", ".join(f"{size} ({n})" for size, n in list(stats["image_sizes"].items())[:10])
    more = len(stats["image_sizes"]) - 10
    print(f"  image sizes on disk (WxH, count): {sizes}" + (f", and {more} more" if more > 0 else ""))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``cnnlab data`` with ``list``, ``fetch`` and ``check``."""
    sub = add_command_group(
        subparsers,
        "data",
        help="list, fetch, verify, export and describe datasets and image folders",
        description="Datasets are looked for in --data-dir alone if given, else in $CNNLAB_DATA alone if set, "
        "else in the user cache ($XDG_CACHE_HOME/cnnlab or ~/.cache/cnnlab), then system locations "
        "(/usr/share/datasets). 'check' and 'list' hash every byte; see docs/data.md.",
        metavar="ACTION",
        dest="data_command",
    )
    names = sorted(DATASETS)

    q = add_command(sub, "list", _list, help="which datasets are present, where, and whether they verify")
    q.add_argument("--data-dir", help="the only directory searched (holding NAME/ or the four files)")
    q.add_argument("--no-verify", action="store_true", help="only look for the files, do not hash them")
    q.add_argument("--format", choices=("table", "json"), default="table")

    q = add_command(
        sub,
        "fetch",
        _fetch,
        help="download a dataset (SHA-256 checked, atomic) unless it is present and verified",
    )
    q.add_argument("name", metavar="NAME", help=f"one of {', '.join(names)}")
    q.add_argument(
        "--mirror",
        metavar="URL",
        help="base URL holding the four .gz files, or CIFAR's archive (default: known mirrors)",
    )
    q.add_argument(
        "--data-dir",
        help="target directory (default: $CNNLAB_DATA or the user cache); files go in <dir>/NAME/",
    )
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.add_argument(
        "--force",
        action="store_true",
        help="download even if the dataset is already present and verified, replacing files in the target",
    )

    q = add_command(sub, "check", _check, help="verify a dataset: checksums, IDX structure, counts, labels")
    q.add_argument("name", metavar="NAME", help=f"one of {', '.join(names)}")
    q.add_argument("--data-dir", help="the only directory searched (holding NAME/ or the four files)")

    q = add_command(
        sub,
        "export",
        _export,
        help="write a dataset as an image folder (a PNG per image, train/ and test/)",
        description="Write NAME's train and test splits as DIR/train/<k>_<class>/<index>.png and DIR/test/...; "
        "training from DIR gives the same samples in the same order as training from NAME.",
    )
    q.add_argument("name", metavar="NAME", help=f"one of {', '.join(names)}")
    q.add_argument("--format", choices=("imagefolder",), default="imagefolder", help="(default: imagefolder)")
    q.add_argument("dir", metavar="DIR", help="the folder to write")
    q.add_argument(
        "--overwrite",
        action="store_true",
        help="replace DIR if it holds an earlier export (any other non-empty folder is refused)",
    )
    q.add_argument("--data-dir", help="the only directory searched for NAME")
    q.add_argument("--quiet", action="store_true", help="no progress bar")

    q = add_command(
        sub,
        "stats",
        _stats,
        help="mean/std per channel, images per class and split, image sizes of a dataset or image folder",
    )
    q.add_argument(
        "data", metavar="DATA", help="a dataset name, or an image folder (PATH or imagefolder:PATH)"
    )
    q.add_argument("--data-dir", help="the only directory searched for a registry dataset")
    q.add_argument(
        "--image-size", type=int, help="image folders: the stored size S (shorter side, centre crop)"
    )
    q.add_argument("--in-chans", type=int, choices=(1, 3), help="image folders: decode to 1 or 3 channels")
    q.add_argument("--bad-images", choices=("error", "skip"), default="error", help="(default: error)")
    q.add_argument("--format", choices=("table", "json"), default="table")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
