"""The papers' figures reproduced (cnnlab paper-tables): every checked row within its tolerance."""

from __future__ import annotations

import functools

import pytest

from cnnlab.analysis.papers import GOOGLENET_INCONSISTENT, TABLES, paper_tables
from cnnlab.errors import UsageError


@functools.cache
def _table(name: str):
    """Each reproduction built once per session (the ResNet one traces eight networks)."""
    (table,) = paper_tables([name])
    return table


@pytest.mark.parametrize("name", list(TABLES))
def test_reproduction_within_tolerance(name: str) -> None:
    table = _table(name)
    assert table.figures
    bad = [(f.label, f.ours, f.paper) for f in table.figures if not f.ok]
    assert not bad, bad
    assert (
        name in ("1x1", "rf", "vgg16", "alexnet") or sum(f.tolerance is not None for f in table.figures) >= 5
    )


def test_googlenet_inception_rows_within_one_percent() -> None:
    table = _table("googlenet")
    rows = {f.label: f for f in table.figures}
    for block in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
        for what in ("params", "ops"):
            figure = rows[f"inception ({block}) {what}"]
            if (f"inception ({block})", what) in GOOGLENET_INCONSISTENT:
                assert figure.tolerance is None and "disagrees" in figure.note
            else:
                assert abs(figure.difference) <= 0.01, figure
    # 3a exactly from the widths: 192*64 + 192*96 + 9*96*128 + 192*16 + 25*16*32 + 192*32 weights
    assert rows["inception (3a) params"].ours == 163_328
    assert rows["inception (3a) ops"].ours == 163_328 * 28 * 28


def test_vgg16_exact_per_layer_parameters_and_totals() -> None:
    table = _table("vgg16")
    params = [f for f in table.figures if f.label.endswith("params")]
    assert [f.ours for f in params][:2] == [1_728, 36_864] and params[-1].ours == 4_096_000
    assert all(f.ours == f.paper for f in params)
    total = next(f for f in table.figures if f.label.startswith("total parameters"))
    assert total.ours == 138_357_544


def test_resnet_stride_placements() -> None:
    table = _table("resnet")
    rows = {f.label: f for f in table.figures}
    v1 = rows["resnet50 MACs (paper stride, 1x1)"].ours
    v15 = rows["resnet50 MACs (v1.5, stride on 3x3)"].ours
    assert v15 > v1 and abs(v15 / 4.1e9 - 1) < 0.01


def test_alexnet_first_layer_inconsistency_is_shown_not_hidden() -> None:
    table = _table("alexnet")
    conv1 = table.figures[0]
    assert conv1.ours == 55 * 55 * 96 == 290_400 and conv1.paper == 253_440 and conv1.tolerance is None
    assert [f.ours for f in table.figures[1:]] == [186_624, 64_896, 64_896, 43_264, 4_096, 4_096, 1_000]


def test_unknown_table_name() -> None:
    with pytest.raises(UsageError, match="unknown paper table 'googlenett'. Did you mean 'googlenet'"):
        paper_tables(["googlenett"])


def test_a_table_whose_model_is_missing_fails_instead_of_waiting(monkeypatch) -> None:
    import cnnlab.models
    from cnnlab.errors import unknown_choice

    def unregistered(name: str, *args, **kwargs):
        raise unknown_choice("model", name, [])

    for attr in ("create_model", "model_info"):
        monkeypatch.setattr(cnnlab.models, attr, unregistered)
    monkeypatch.setattr(cnnlab.models, "list_models", lambda *a, **k: [])
    with pytest.raises(UsageError, match="unknown model 'googlenet'"):
        paper_tables(["googlenet"])
