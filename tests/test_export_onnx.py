"""ONNX export of every registered model at its smallest valid input: onnxruntime's logits match PyTorch's.

Tolerance: max |onnxruntime - PyTorch| <= 1e-5 x max |logit|. Float32 sums taken in another order (and batch
norm folded into the convolutions) differ by about 1e-7 of the values summed; untrained networks at tiny inputs
give logits from 1e-10 (VGG-19 at 32x32) to 1e7 (DenseNet-264 at 29x29), so the bound is relative to the
logits' scale (the largest ratio measured: 3e-6, resnet164-cifar).

Depth and width variants are exported through a stand-in (test_models_registry.STAND_INS): a model of the same
family with the same layer types, so every family and every layer type is exported; resnet1202-cifar alone took
over two minutes. The deep CIFAR nets are exported at the shallowest depth of their own unit
(test_models_registry.SHALLOW). The per-model export runs in test_models_registry.test_every_run_model_runs_exports_and_fine_tunes,
on the one build of each model that its other runtime checks use too.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cnnlab.export import export_onnx, onnx_card, onnx_session
from cnnlab.models import create_model
from cnnlab.weights import card_for_model

RELATIVE_TOLERANCE = 1e-5


def check_onnx_export_matches_pytorch(model: torch.nn.Module, size: int, folder: Path) -> None:
    """Run by test_models_registry.test_every_run_model_runs_exports_and_fine_tunes, on its one build of the
    model (as built, before it trains): onnxruntime's logits match PyTorch's."""
    result = export_onnx(model, folder / "m.onnx", card_for_model(model, (1, size, size)))
    assert result.logit_scale > 0
    assert result.max_abs_diff <= RELATIVE_TOLERANCE * result.logit_scale, result


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


def test_export_targets_and_opsets_are_checked_before_any_work(tmp_path: Path, capsys) -> None:
    """An opset the exporter cannot write, a folder, or a file named for the other format: one line, exit 2,
    nothing written; a missing parent folder is made (the exporter writes its temporary file there)."""
    from cnnlab.cli import main

    export = ["export", "lecture-simple", "--format", "onnx"]
    cases = [
        (["--opset", "3", "-o", str(tmp_path / "a.onnx")], "ONNX opset 3 is not one the exporter writes; choose 7 to 20"),
        (["-o", str(tmp_path)], f"{tmp_path} is a folder; name the ONNX file to write"),
        (["-o", str(tmp_path / "m.safetensors")], "names a .safetensors file but --format is onnx"),
    ]  # fmt: skip
    for args, said in cases:
        assert main([*export, *args, "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []
    nested = tmp_path / "new" / "folder" / "m.onnx"
    assert main([*export, "-o", str(nested)]) == 0
    assert onnx_card(onnx_session(nested), nested).model == "lecture-simple"


def test_export_leaves_the_callers_model_as_it_was(tmp_path: Path) -> None:
    """A fine-tuning script that exports between epochs goes on training with dropout and batch norm, in its
    own dtype: the export works on the model in evaluation mode, fp32, and gives it back as it came."""
    model = create_model("lecture-residual").train()
    export_onnx(model, tmp_path / "a.onnx")
    assert model.training
    double = create_model("lecture-residual").double().train()
    before = {k: v.clone() for k, v in double.state_dict().items()}
    result = export_onnx(double, tmp_path / "b.onnx")
    assert result.max_abs_diff is not None and double.training
    assert all(
        v.dtype == before[k].dtype and torch.equal(v, before[k]) for k, v in double.state_dict().items()
    )


def test_the_format_is_read_in_any_case(tmp_path: Path) -> None:
    from cnnlab.export import export_model

    assert (
        export_model("lecture-simple", "SafeTensors", out=tmp_path / "m.safetensors").format == "safetensors"
    )
