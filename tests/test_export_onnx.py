"""ONNX export of every registered model at its smallest valid input: onnxruntime's logits match PyTorch's.

Tolerance: max |onnxruntime - PyTorch| <= 1e-5 x max(1, max |logit|). Float32 sums in another order differ by
about 1e-7 of the values summed; untrained deep nets at tiny inputs reach logits of 1e7 (DenseNet-264 at
29x29), so the bound is relative to the logits' scale.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnlab.export import export_onnx, onnx_card, onnx_session
from cnnlab.models import create_model, list_models
from cnnlab.weights import card_for_model
from test_models_registry import smallest_model

RELATIVE_TOLERANCE = 1e-5


@pytest.mark.parametrize("name", list_models())
def test_onnx_export_matches_pytorch(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, size = smallest_model(name, num_classes=7, in_chans=1)
    result = export_onnx(model, tmp_path / "m.onnx", card_for_model(model, (1, size, size)))
    assert result.max_abs_diff <= RELATIVE_TOLERANCE * max(1.0, result.logit_scale), result


def test_dynamic_batch_and_the_card_in_the_metadata(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("lecture-inception", num_classes=3).eval()
    card = card_for_model(model)
    path = export_onnx(model, tmp_path / "d.onnx", card, dynamic_batch=True).path
    session = onnx_session(path)
    assert onnx_card(session, path) == card
    for batch in (1, 5):
        x = torch.randn(batch, 1, 28, 28)
        got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        with torch.no_grad():
            torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-5)
    fixed = onnx_session(export_onnx(model, tmp_path / "f.onnx", card).path)
    assert fixed.get_inputs()[0].shape == [1, 1, 28, 28]
