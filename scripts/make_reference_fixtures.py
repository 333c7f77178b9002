"""Write the golden-output fixtures of tests/test_references.py from torchvision and timm themselves.

Developer-only: neither library is a dependency of cnnlab, and this script is not run by the tests or
CI. For every reference model cnnlab imports (``cnnlab.list_references()``) it builds the reference
model, fills its state dict with :func:`cnnlab.references.fill_reference_weights` (deterministic from
a seed and each tensor's position in the reference's own state dict), runs a fixed input in
evaluation mode and writes ``tests/fixtures/references/<source>_<name>.json``: the state dict's key
names, shapes and dtypes in the reference's order, the seed, the input's shape and seed, the
reference's constructor arguments and library versions, and its logits. No weights are written: the
tests regenerate them from the names and the seed, load them through cnnlab's key map
(``cnnlab.from_reference``) and compare logits.

Set up once, in a virtual environment of its own outside the repository (never the project's: the
reference libraries must not become cnnlab dependencies), with the project's Python::

    python -m venv ~/refvenv
    ~/refvenv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    ~/refvenv/bin/pip install --no-deps "torchvision==0.28.*" timm   # --no-deps: keep the CPU torch
    ~/refvenv/bin/pip install numpy pillow pyyaml huggingface_hub safetensors

then, from the repository root::

    PYTHONPATH=src ~/refvenv/bin/python scripts/make_reference_fixtures.py [--only NAME ...] [--overwrite]

The fixtures of this repository were written with torch 2.13.0+cpu, torchvision 0.28.0 and timm
1.0.31 (each fixture records its versions); about 6 minutes on 2 cores.

torchvision's PyPI wheel links its C++ ops against the CUDA build of torch; beside the CPU build its
import fails while registering fake kernels for ``torchvision::nms`` and friends. The classification
models are pure Python, so :func:`import_torchvision` skips those registrations during the import.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from cnnlab.references import fill_reference_weights, list_references, reference_input

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "references"
SEED = 14
INPUT_SEED = 1
BATCH = 2
NUM_CLASSES = 10  # a reduced classifier keeps the fixtures small; the maps do not depend on it

# The smallest input each reference takes (fast tests), and its constructor arguments
INPUT_SIZE = {
    "alexnet": 64,  # conv1 11x11/4 then three 3x3/2 pools: 63 is the least
    "googlenet": 64,
    "inception_v3": 75,  # torchvision's documented minimum
    "inception_v4": 75,
    "inception_resnet_v2": 75,
}
KWARGS = {
    # as torchvision builds them for their published weights (transform_input=True), aux heads kept so
    # the fixture's names hold them (the maps drop or map them)
    "googlenet": {"aux_logits": True, "transform_input": True, "init_weights": False},
    "inception_v3": {"aux_logits": True, "transform_input": True, "init_weights": False},
}


def import_torchvision():
    """``torchvision.models``, imported with its ``torchvision::`` fake-kernel registrations skipped."""
    import torch.library

    original = torch.library.register_fake

    def skip_torchvision_ops(op, *args, **kwargs):
        if isinstance(op, str) and op.startswith("torchvision::"):
            return (lambda fn: fn) if not args else None
        return original(op, *args, **kwargs)

    torch.library.register_fake = skip_torchvision_ops
    try:
        import torchvision
        import torchvision.models as models
    finally:
        torch.library.register_fake = original
    return models, torchvision.__version__


def build(source: str, name: str) -> tuple[torch.nn.Module, dict, str]:
    """The reference model (10 classes), its constructor arguments and the library's version."""
    kwargs = {"num_classes": NUM_CLASSES, **KWARGS.get(name, {})}
    if source == "torchvision":
        models, version = import_torchvision()
        return getattr(models, name)(weights=None, **kwargs), kwargs, f"torchvision {version}"
    import_torchvision()  # timm imports torchvision
    import timm

    return timm.create_model(name, pretrained=False, **kwargs), kwargs, f"timm {timm.__version__}"


def fixture(source: str, name: str) -> dict:
    """Fill, run and describe one reference model."""
    model, kwargs, version = build(source, name)
    keys = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    model.load_state_dict(fill_reference_weights(keys, SEED), strict=True)
    model.eval()
    size = INPUT_SIZE.get(name, 32)
    shape = [BATCH, 3, size, size]
    with torch.no_grad():
        logits = model(reference_input(shape, INPUT_SEED))
    return {
        "source": source,
        "name": name,
        "library": version,
        "torch": torch.__version__,
        "constructor": kwargs,
        "seed": SEED,
        "input": {"shape": shape, "seed": INPUT_SEED, "distribution": "standard normal"},
        "keys": keys,
        "logits": [[round(float(v), 7) for v in row] for row in logits],
    }


def main(argv: list[str] | None = None) -> int:
    """Write the fixtures (all, or ``--only`` some names); refuse to overwrite without ``--overwrite``."""
    from cnnlab.fileio import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="reference names to write (default: all)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing fixtures")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for source, name in list_references():
        if args.only is not None and name not in args.only:
            continue
        out = FIXTURES / f"{source}_{name}.json"
        if out.exists() and not args.overwrite:
            print(f"{out} exists; --overwrite replaces it", file=sys.stderr)
            continue
        start = time.perf_counter()
        data = fixture(source, name)
        # one key per line: small diffs when a library renames a tensor
        text = json.dumps({k: v for k, v in data.items() if k != "keys"}, indent=1)[:-2]
        text += ',\n "keys": [\n' + ",\n".join(json.dumps(k) for k in data["keys"]) + "\n ]\n}\n"
        atomic_write_text(out, text)
        print(f"{out.name}: {len(data['keys'])} tensors, {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
