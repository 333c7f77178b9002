"""One home for each idea: shared machinery lives in layers.py / residual.py, not in a family file.

Read from the source (no imports run), so these checks cost milliseconds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "cnnlab"
SHARED = {"layers", "registry", "residual", "__init__"}
FAMILIES = sorted(p.stem for p in (SRC / "models").glob("*.py") if p.stem not in SHARED)
#: a family that names another paper's table (ZFNet is AlexNet with Fig. 3's first layers), not machinery
CONFIGURATION_IMPORTS = {
    ("zfnet", "alexnet"): {"ALEXNET_FC", "OVERLAPPING_POOL"},
    ("inception_v4", "inception_v3"): {"ModuleA"},  # Inception-ResNet-v2's stem ends in a v3 module
    ("preact_resnet", "resnet"): {"imagenet_stages"},
    ("preact_resnet", "resnet_cifar"): {"CIFAR_INFO", "CIFAR_RESNETS", "cifar_resnet"},
    ("resnet_cifar", "resnet"): {"RESNET_PAPER"},
    ("wide_resnet", "resnet"): {"WRN_PAPER"},
}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text())
    return [
        (node.module, [a.name for a in node.names])
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnnlab")
    ]


def _sources() -> list[Path]:
    return sorted(
        [*(SRC / "models").glob("*.py"), *(SRC / "analysis").glob("*.py"), SRC / "cli" / "models.py"]
    )


@pytest.mark.parametrize("path", _sources(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_private_name_crosses_a_module(path: Path) -> None:
    private = [(module, n) for module, names in _imports(path) for n in names if n.startswith("_")]
    assert not private, f"{path.name} imports private names: {private}"


@pytest.mark.parametrize("family", FAMILIES)
def test_family_files_take_machinery_from_the_shared_modules_only(family: str) -> None:
    for module, names in _imports(SRC / "models" / f"{family}.py"):
        other = module.rsplit(".", 1)[-1]
        if module.startswith("cnnlab.models.") and other in FAMILIES:
            allowed = CONFIGURATION_IMPORTS.get((family, other), set())
            assert set(names) <= allowed, f"{family} imports {set(names) - allowed} from {other}"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_module_swaps_a_class(path: Path) -> None:
    # thop and ptflops look modules up by exact class: a swapped __class__ hides them
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign):
            assert not any(isinstance(t, ast.Attribute) and t.attr == "__class__" for t in node.targets)
