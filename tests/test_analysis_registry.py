"""Every registered model through the summary engine, and FlopCounterMode cross-checks on the zoo.

On the meta device: the per-row parameters add up to the model's, every parameter is reached by the
forward (or by forward_aux for networks with auxiliary heads), MACs are positive and the receptive field
is tracked to the logits.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.analysis import summarize
from cnnlab.errors import UsageError
from cnnlab.models import count_params, create_model, list_models, model_info
from cnnlab.models.layers import ShapeOnlyNorm, SkipFillsOnMeta, meta_call

ALL_MODELS = list_models()


def _two_per_family() -> list[str]:
    """The first and last name of each family (sorted), and every model with auxiliary heads.

    Variants within a family share their builder; two per family keep the suite fast on 2 cores
    (the registry-wide test already builds every model).
    """
    families: dict[str, list[str]] = {}
    for name in ALL_MODELS:
        families.setdefault(model_info(name).family, []).append(name)
    chosen = {n for names in families.values() for n in (names[0], names[-1])}
    chosen |= {n for n in ALL_MODELS if model_info(n).aux_loss_weights}
    return sorted(chosen)


SUMMARISED = _two_per_family()


def meta_model(name: str, **options) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, **options)


@pytest.mark.parametrize("name", SUMMARISED)
def test_every_model_summarises_consistently(name: str) -> None:
    info = model_info(name)
    model = meta_model(name)
    method = "forward_aux" if info.aux_loss_weights else "forward"
    s = summarize(model, info.input_size, method=method)
    assert s.totals.params == count_params(model) == sum(r.params for r in s.rows)
    assert s.totals.unused_params == 0
    assert s.totals.macs > 0 and s.rows[-1].output_shape == (1, info.num_classes)
    assert s.rows[-1].receptive_field is not None, [r.name for r in s.rows if r.receptive_field is None][:3]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_stored_row_of_the_models_table_equals_a_fresh_trace(name: str) -> None:
    """``cnnlab models`` reads src/cnnlab/zoo_table.py; each row must be what tracing the model gives now.
    The built model's parameter count is also the figure pinned in its registration (docs/models.md)."""
    from cnnlab.analysis.zoo import table_row, traced_row

    # one build for the pinned count, the row and the side (a deep net's build takes seconds)
    model = meta_model(name)
    pinned = model_info(name).num_params
    assert pinned is not None, f"{name} has no pinned parameter count"
    assert count_params(model) == pinned, f"{name} has {count_params(model):,} parameters, pinned {pinned:,}"
    fresh = traced_row(name, probe_side=False, model=model)
    assert "macs_error" not in fresh, fresh.get("macs_error")  # a model that fails to trace is a failure
    stored = table_row(name)
    side = stored.pop("min_side")
    assert stored == fresh, "the models table is stale: run python scripts/gen_zoo_table.py"
    # min_side without the bisection: the features run on it and not on one pixel less. Batch norm
    # shape-only, as the bisection runs it (meta batch norm is slow in deep nets); it keeps the one
    # size error batch norm raises.
    features = meta_call(model, model.forward_features)
    channels = model_info(name).input_size[0]
    with ShapeOnlyNorm():
        assert features(torch.empty(2, channels, side, side, device="meta")).shape[0] == 2
        if side > 1:
            with pytest.raises((RuntimeError, ValueError)):
                features(torch.empty(2, channels, side - 1, side - 1, device="meta"))


def test_the_models_table_holds_exactly_the_registry() -> None:
    from cnnlab.zoo_table import ZOO_TABLE

    assert sorted(ZOO_TABLE) == ALL_MODELS, "the models table is stale: run python scripts/gen_zoo_table.py"


# a grouped network (AlexNet's two towers), residual additions, asymmetric-kernel branches, dense concatenation
CROSS_CHECKED = [
    ("alexnet", {"two_tower": True}),
    ("resnet50", {}),
    ("inception-v3", {}),
    ("densenet-40-12", {}),
]


@pytest.mark.parametrize("name, options", CROSS_CHECKED, ids=[n for n, _ in CROSS_CHECKED])
def test_macs_agree_with_flop_counter_on_the_zoo(name: str, options: dict) -> None:
    info = model_info(name)
    model = meta_model(name, **options).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_call(model)(torch.empty(1, *info.input_size, device="meta"))
    assert summarize(model, info.input_size).totals.macs == counter.get_total_flops() // 2


def test_model_rows_are_library_data_the_cli_only_prints() -> None:
    """``cnnlab models``' table comes from :func:`cnnlab.analysis.zoo.model_rows`: the registry's pinned figures."""
    from cnnlab.analysis.zoo import model_rows

    (row,) = model_rows("alexnet")
    info = model_info("alexnet")
    assert row["params"] == info.num_params and row["macs"] == info.macs and row["input"] == "3x227x227"
    assert [r["name"] for r in model_rows("wrn-34-2")] == ["wrn-34-2"]  # a name a family resolves
    assert model_rows("alexnet", trace=True) == [row]  # counted again, the same
    with pytest.raises(UsageError, match="no model matches 'alexnt'.*close matches: alexnet"):
        model_rows("alexnt")


def test_a_meta_build_skips_the_fills_and_keeps_every_shape() -> None:
    """create_model on the meta device skips random and constant fills (SkipFillsOnMeta), which only meta
    tensors see: the meta build has the CPU build's parameter names, shapes and dtypes, and a CPU tensor
    filled under the mode gets its values."""
    torch.manual_seed(0)
    cpu = create_model("resnet20-cifar", depth=8)
    meta = meta_model("resnet20-cifar", depth=8)
    assert [(n, p.shape, p.dtype) for n, p in cpu.state_dict().items()] == [
        (n, p.shape, p.dtype) for n, p in meta.state_dict().items()
    ]
    assert all(p.is_meta for p in meta.state_dict().values())
    with SkipFillsOnMeta():
        values = torch.zeros(3).normal_()
        shape = torch.empty(2, 3, device="meta").uniform_()
    assert values.abs().sum() > 0 and shape.shape == (2, 3) and shape.is_meta
