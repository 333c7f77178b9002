"""The documentation speaks to users of the repository: every link and path it gives exists for them,
and every table renders.

Rules, checked on README.md and every ``docs/**/*.md``:

* **Links.** A Markdown link or image target (``[text](target)``, ``<https://...>``) is either
  - a relative path that, with its ``#anchor`` removed, resolves from the linking file to a file or
    folder inside the repository, or
  - an ``https://`` (or ``http://``) URL whose host is a well-known public reference:
    :data:`PUBLIC_HOSTS` (the papers' archives, PyTorch, the datasets' publishers, GitHub, Python's
    documentation) or the reserved example domains (``example.org`` and friends, RFC 2606).
  Nothing else: no ``file:`` URLs, no absolute filesystem paths, no ``..`` that leaves the repository.
* **Paths.** Text (prose or code) never names a place that exists only on a developer's machine:
  no ``/tmp/``, ``/home/``, ``/root/``, ``/work/``, ``/Users/``, no ``../shared`` or ``shared/``
  folder. A repository path written out in text (``docs/...``, ``src/...``, ``tests/...``,
  ``benchmarks/...``, ``scripts/...`` with a file extension) must exist. System paths a user's
  machine has (``/usr/share/datasets``, ``/proc/self/statm``) are allowed.
* **Internal references.** No "issue N" or "the issue's": a reader has no access to the project's
  tracker.
* **Tables.** Every row of a Markdown table, the ``|---|`` separator row included, has as many cells
  as its header. Cells are split on ``|`` not escaped as ``\\|`` (GFM escapes pipes that way, also
  inside code spans); leading and trailing pipes are optional. Fenced code blocks are skipped.
* **Python snippets.** Every ```python block parses, imports only names cnnlab has, and defines every
  name it uses: each runs as written, given the files it names.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

PUBLIC_HOSTS = {
    "arxiv.org",
    "doi.org",
    "papers.nips.cc",
    "proceedings.neurips.cc",
    "openaccess.thecvf.com",
    "pytorch.org",
    "docs.pytorch.org",
    "github.com",
    "docs.python.org",
    "yann.lecun.com",
    "www.cs.toronto.edu",
    "image-net.org",
    "www.image-net.org",
    "example.org",
    "example.com",
    "example.net",
}
LOCAL_PATH = re.compile(r"(?<![\w.])(?:/tmp/|/home/|/root/|/work/|/Users/|\.\./shared|(?<![\w/-])shared/)")
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:docs|src|tests|benchmarks|scripts)/[\w./-]*\w\.(?:md|py|json|sh|toml))"
)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)|<(https?://[^>\s]+)>")
INTERNAL = re.compile(r"\bissue \d+|\bthe issue's\b", re.IGNORECASE)


def prose(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def cells(row: str) -> int:
    """Cells in a table row: split on unescaped pipes, outer pipes optional."""
    parts = re.split(r"(?<!\\)\|", row.strip())
    if parts and parts[0].strip() == "":
        parts = parts[1:]
    if parts and parts[-1].strip() == "":
        parts = parts[:-1]
    return len(parts)


def tables(text: str) -> list[list[tuple[int, str]]]:
    """Each table as its rows: a header row followed by a ``|---|`` separator row, up to the first non-row."""
    found, rows = [], prose(text)
    separator = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(?:(?<!\\)\|\s*:?-{3,}:?\s*)*\|?\s*$")
    i = 0
    while i < len(rows) - 1:
        (n0, head), (n1, sep) = rows[i], rows[i + 1]
        if "|" in head and separator.match(sep) and n1 == n0 + 1:
            table, j = [(n0, head), (n1, sep)], i + 2
            while j < len(rows) and rows[j][0] == table[-1][0] + 1 and "|" in rows[j][1]:
                table.append(rows[j])
                j += 1
            found.append(table)
            i = j
        else:
            i += 1
    return found


def ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


@pytest.mark.parametrize("doc", DOCS, ids=ids(DOCS))
def test_links_resolve_inside_the_repository_or_to_public_references(doc: Path) -> None:
    bad = []
    for number, line in prose(doc.read_text()):
        for match in LINK.finditer(line):
            target = match.group(1) or match.group(2)
            url = urlparse(target)
            if url.scheme in ("http", "https"):
                if url.hostname not in PUBLIC_HOSTS:
                    bad.append(f"{number}: {target} (not a well-known public host)")
            elif url.scheme or target.startswith(("/", "~")):
                bad.append(f"{number}: {target} (absolute path or non-web URL)")
            elif target.startswith("#"):
                continue
            else:
                resolved = (doc.parent / target.split("#")[0]).resolve()
                if not resolved.is_relative_to(ROOT) or not resolved.exists():
                    bad.append(f"{number}: {target} (no such file in the repository)")
    assert not bad, f"{doc.relative_to(ROOT)}:\n" + "\n".join(bad)


@pytest.mark.parametrize("doc", DOCS, ids=ids(DOCS))
def test_no_paths_outside_the_repository_and_no_internal_references(doc: Path) -> None:
    bad = []
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        bad += [f"{number}: {m.group(0)!r} (a developer's local path)" for m in LOCAL_PATH.finditer(line)]
        bad += [f"{number}: {m.group(0)!r} (internal reference)" for m in INTERNAL.finditer(line)]
        for m in REPO_PATH.finditer(line):
            if not (ROOT / m.group(1)).exists():
                bad.append(f"{number}: {m.group(1)} (not in the repository)")
    assert not bad, f"{doc.relative_to(ROOT)}:\n" + "\n".join(bad)


@pytest.mark.parametrize("doc", DOCS, ids=ids(DOCS))
def test_every_table_row_has_the_header_s_column_count(doc: Path) -> None:
    bad = []
    for table in tables(doc.read_text()):
        width = cells(table[0][1])
        bad += [
            f"{n}: {cells(row)} cells, header has {width}: {row}" for n, row in table if cells(row) != width
        ]
    assert not bad, f"{doc.relative_to(ROOT)}:\n" + "\n".join(bad)


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """The cell counter and the table finder on the cases that matter."""
    assert cells("| `(resnet\\|plain)(\\d+)-cifar` | `resnet74-cifar` |") == 2
    assert cells("| `(resnet|plain)(\\d+)-cifar` | `resnet74-cifar` |") == 3
    assert cells("|---|---|") == 2 and cells("a | b") == 2
    text = "intro\n\n| a | b |\n|---|---|\n| 1 | 2 | 3 |\n\n```\n| x |\n|---|\n```\n"
    (table,) = tables(text)
    assert [cells(row) for _, row in table] == [2, 2, 3]
    assert LOCAL_PATH.search("see `shared/seeds/000_x.txt`") and LOCAL_PATH.search("in /tmp/run")
    assert not LOCAL_PATH.search("`/usr/share/datasets/fashion-mnist/`")
    assert INTERNAL.search("the issue's figure") and INTERNAL.search("issue 5 / torchvision")


PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


WITH_PYTHON = [d for d in DOCS if PYTHON_BLOCK.search(d.read_text())]


@pytest.mark.parametrize("doc", WITH_PYTHON, ids=ids(WITH_PYTHON))
def test_python_snippets_parse_import_what_exists_and_define_every_name_they_use(doc: Path) -> None:
    """Each ```python block, read top to bottom on its own: it parses, every name it imports from cnnlab
    exists, and it uses no name it has not defined or imported."""
    import ast
    import builtins
    import importlib
    import importlib.util
    import symtable

    for block in PYTHON_BLOCK.findall(doc.read_text()):
        tree = ast.parse(block)  # a SyntaxError names the block's line
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "cnnlab":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    submodule = hasattr(module, "__path__") and importlib.util.find_spec(
                        f"{node.module}.{alias.name}"
                    )
                    assert hasattr(module, alias.name) or submodule, (
                        f"{doc.name}: {node.module} has no {alias.name}"
                    )
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "cnnlab":
                        importlib.import_module(alias.name)
        table = symtable.symtable(block, doc.name, "exec")
        undefined = [
            s.get_name()
            for s in table.get_symbols()
            if s.is_referenced()
            and not (s.is_assigned() or s.is_imported())
            and not hasattr(builtins, s.get_name())
        ]
        assert not undefined, f"{doc.name} snippet uses undefined names: {undefined}"


ANALYSIS = ROOT / "docs" / "analysis.md"
INSPECT = ROOT / "docs" / "inspect.md"


def test_the_sample_failure_in_the_analysis_doc_is_what_the_command_prints(capsys) -> None:
    """A ``$ cnnlab ...`` line in a fenced block followed by ``cnnlab: error:`` (wrapped over lines)."""
    from cnnlab.cli import main

    text = ANALYSIS.read_text()
    samples = re.findall(r"^\$ cnnlab (.+)\n(cnnlab: error: (?:.+\n)+?)```", text, re.MULTILINE)
    assert samples, "docs/analysis.md shows no failing command"
    for command, shown in samples:
        assert main(command.split()) != 0
        assert capsys.readouterr().err.strip() == " ".join(shown.split())


def test_the_layer_names_the_inspect_doc_shows_exist() -> None:
    import torch

    from cnnlab.models import create_model

    shown = re.findall(r"cnnlab show filters ([\w-]+) --layer ([\w.]+)", INSPECT.read_text())
    assert shown, "docs/inspect.md shows no --layer of a model name"
    for model, layer in shown:
        with torch.device("meta"):
            names = dict(create_model(model).named_modules())
        assert layer in names, f"docs/inspect.md: {model} has no layer {layer!r}"
