"""``cnnlab summary``, ``cost``, ``rf`` and ``paper-tables`` in-process (return code, stdout, one-line stderr)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab.cli import main

USER_FILE = """
import torch
from torch import nn
import torch.nn.functional as F


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1).flatten(1))


def make_tiny():
    return TinyNet()
"""


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "mynet.py"
    path.write_text(USER_FILE)
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_of_a_registry_model(capsys) -> None:
    code, out, err = run(capsys, "summary", "lecture-simple")
    assert code == 0 and not err
    assert "features.conv1" in out and "MACs (multiply-accumulates, conv + linear): 467,200" in out
    assert "FLOPs (= 2 x MACs): 934,400" in out


def test_summary_json_depth_and_options(capsys) -> None:
    code, out, _ = run(capsys, "summary", "lecture-inception", "--depth", "2", "--format", "json")
    data = json.loads(out)
    assert code == 0 and "features.incep1" in [r["name"] for r in data["rows"]]
    code, out, _ = run(
        capsys, "summary", "lecture-simple", "--input", "1x32x32", "--opt", "img_size=32", "--format", "csv"
    )
    assert code == 0 and out.splitlines()[0].startswith("name,type,kind,output_shape")


@pytest.mark.parametrize("target", ["TinyNet", "make_tiny"])
def test_summary_of_a_users_file(capsys, user_file: Path, target: str) -> None:
    code, out, err = run(
        capsys, "summary", f"{user_file}:{target}", "--input", "3x16x16", "--format", "markdown"
    )
    assert code == 0, err
    # conv 3*3*3*4*16*16 + fc 4*2
    assert "27,656" in out and "| relu |" in out


def test_cost_conv_prints_the_arithmetic(capsys) -> None:
    code, out, _ = run(
        capsys,
        "cost",
        "conv",
        "--in",
        "192",
        "--out",
        "32",
        "--kernel",
        "5",
        "--size",
        "28",
        "--reduce",
        "16",
    )
    assert code == 0
    assert "5^2 x 28^2 x 192 x 32 = 120,422,400" in out and "total: 12,443,648" in out and "9.68x" in out


def test_rf_layer_list_and_model(capsys) -> None:
    code, out, _ = run(capsys, "rf", "conv3s2p1,conv3s2p1", "--size", "224")
    assert code == 0 and out.splitlines()[-1].split() == ["conv3s2p1", "56", "4", "7"]
    code, out, _ = run(capsys, "rf", "lecture-simple")
    last = out.splitlines()[-1].split()
    assert code == 0 and last[0] == "head.fc" and last[-1] == "28"


def test_paper_tables_small_ones(capsys) -> None:
    code, out, _ = run(capsys, "paper-tables", "1x1", "rf")
    assert code == 0 and "slide typo: 12,433,648" in out and "MISMATCH" not in out


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["summary", "lecture-simple", "--input", "1x28"], 2, "--input must be CxHxW"),
        (["summary", "lecture-simple", "--input", "axbxc"], 2, "--input must be CxHxW"),
        (["summary", "lecture-simple", "--input", "1x0x28"], 2, "at least 1"),
        (["summary", "lecture-simple", "--input", "1x8x8"], 2, "smallest input that works is 1x28x28"),
        (["summary", "lecture-simple", "--input", "1x32x32"], 2, "built for 1x28x28 input and got 1x32x32"),
        (["summary", "lecture-simple", "--input", "99999999999999999999x28x28"], 2, "is too large: a batch"),
        (
            ["summary", "lecture-simple", "--input", "3x1000000000x1000000000"],
            2,
            "more than one tensor can hold",
        ),
        (
            ["summary", "lecture-simple", "--input", "1x1000000000x1000000000"],
            2,
            "too large for lecture-simple",
        ),
        (
            ["summary", "resnet20-cifar", "--input", "3x200000x200000", "--device", "cpu"],
            2,
            "too large to run",
        ),
        (["summary", "lecture-simpel"], 2, "Did you mean 'lecture-simple'"),
        (["summary", "no/such/file.py:Net", "--input", "3x8x8"], 2, "no such Python file"),
        (["summary", "lecture-simple", "--depth", "-2"], 2, "--depth must be at least 1"),
        (["summary", "lecture-simple", "--aux"], 2, "lecture-simple has no auxiliary heads for --aux"),
        (["summary", "googlenet", "--aux"], 2, "add --model-option aux_logits=True to trace them"),
        (
            ["summary", "lecture-simple", "--optimizer-states", "-1"],
            2,
            "(--optimizer-states) must be at least 0",
        ),
        (["summary", "lecture-simple", "--format", "yaml"], 2, "unknown format 'yaml'"),
        (["rf", "conv3q2"], 2, "cannot read layer 'conv3q2'"),
        (["rf", "conv3s2p1p2"], 2, "layer 'conv3s2p1p2' gives p twice"),
        (["rf", "pool3s2p5"], 2, "a pooling's padding can be at most half its kernel (1 here)"),
        (["rf", "foo3", "--size", "8"], 2, "cannot read layer 'foo3'"),
        (["rf", "foo3,conv3"], 2, "cannot read layer 'foo3'"),
        (
            ["rf", "lecture-simple", "--size", "32"],
            2,
            "--size is for layer lists; give a model its input with --input CxHxW",
        ),
        (
            ["cost", "conv", "--in", "0", "--out", "32", "--kernel", "5", "--size", "28"],
            2,
            "--in must be greater than 0",
        ),
        (["paper-tables", "vgg"], 2, "unknown paper table 'vgg'"),
        (["models", "nothing*"], 2, "no model matches 'nothing*'"),
        (
            ["models", "resnet8*"],
            2,
            "families such as resnet74-cifar are built at any valid size by exact name",
        ),
        (["models", "plain9*"], 2, "(cnnlab models resnet74-cifar)"),
        (["models", "vgg17"], 2, "no model matches 'vgg17'; close matches: vgg19, vgg16, vgg13"),
        (["models", "wrn-27-10"], 2, "depth must be 6n+4"),
    ],
)
def test_bad_input_is_one_line_with_status(capsys, argv, code, message) -> None:
    got, out, err = run(capsys, *argv)
    assert got == code
    assert err.startswith("cnnlab: error: ") and message in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_users_file_without_the_named_module(capsys, user_file: Path) -> None:
    got, _, err = run(capsys, "summary", f"{user_file}:Missing", "--input", "3x8x8")
    assert got == 2 and "defines no 'Missing'" in err and "TinyNet, make_tiny" in err
    got, _, err = run(capsys, "summary", f"{user_file}:TinyNet")
    assert got == 2 and "--input CxHxW" in err


def test_console_script_end_to_end() -> None:
    script = Path(sys.executable).with_name("cnnlab")
    bad = subprocess.run(
        [str(script), "summary", "lecture-simple", "--input", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("cnnlab: error: --input must be CxHxW")
    assert "Traceback" not in bad.stderr and not bad.stdout


def test_models_lists_traced_macs(capsys) -> None:
    code, out, _ = run(capsys, "models", "lecture-*", "--format", "json")
    rows = {r["name"]: r for r in json.loads(out)}
    # lecture-simple: conv1 5*5*1*10*24*24 + conv2 5*5*10*20*8*8 + fc 320*10
    assert code == 0 and rows["lecture-simple"]["macs"] == 144_000 + 320_000 + 3_200


BROKEN_FILE = """
import sys
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        raise RuntimeError("no weights file")


def make():
    sys.exit(3)


def needs(width):
    return nn.Linear(width, 2)


class Raises(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        raise RuntimeError("boom in forward")
"""


def test_users_file_that_fails_is_one_line_naming_the_file(capsys, tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text(BROKEN_FILE)
    exits = tmp_path / "exits.py"
    exits.write_text("import sys\nsys.exit('no GPU here')\n")
    for target, code, message in [
        (f"{exits}:Net", 1, f"importing '{exits}' failed: it called sys.exit('no GPU here')"),
        (f"{broken}:Net", 1, f"Net() in '{broken}' failed: RuntimeError: no weights file"),
        (f"{broken}:make", 1, f"make() in '{broken}' failed: it called sys.exit(3)"),
        (f"{broken}:needs", 2, "needs must be constructible without arguments"),
        # its forward raises at any size: the model's code (exit 1), not the input (exit 2)
        (
            f"{broken}:Raises",
            1,
            f"Raises's forward raised RuntimeError at {broken}:26 on input 3x8x8, and on every other size",
        ),
    ]:
        got, _, err = run(capsys, "summary", target, "--input", "3x8x8")
        assert (got, err.count("\n")) == (code, 1) and err.startswith("cnnlab: error: ") and message in err


@pytest.mark.parametrize("name", ["lecture-simple", "resnet20-cifar"])
def test_summary_on_cpu_runs_a_registry_model_and_agrees_with_meta(capsys, name: str) -> None:
    code, out, err = run(capsys, "summary", name, "--device", "cpu", "--format", "json")
    assert code == 0, err
    on_cpu = json.loads(out)
    code, out, _ = run(capsys, "summary", name, "--format", "json")
    on_meta = json.loads(out)
    assert on_cpu["device"] == "cpu" and on_cpu["totals"] == on_meta["totals"]
    code, out, err = run(capsys, "summary", name, "--device", "cpu", "--dtype", "bfloat16", "--depth", "1")
    assert code == 0, err


def test_models_shows_a_family_name_and_names_a_model_that_fails_to_trace(capsys, monkeypatch) -> None:
    code, out, _ = run(capsys, "models", "wrn-34-2", "--format", "json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["wrn-34-2"]
    import cnnlab.analysis.summary

    real = cnnlab.analysis.summary.summarize

    def broken_for_lecture_simple(model, *args, **kwargs):
        if getattr(model, "model_name", "") == "lecture-simple":
            raise RuntimeError("unsupported operation 'foo'\nsecond line")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(cnnlab.analysis.summary, "summarize", broken_for_lecture_simple)
    code, out, err = run(capsys, "models", "lecture-*", "--trace")
    assert code == 1 and "trace failed" in out and "467,200" not in out and "6,019,200" in out
    assert err == "cnnlab: error: cannot trace lecture-simple: RuntimeError: unsupported operation 'foo'\n"


@pytest.mark.parametrize(
    "text, key, value",
    [
        ("img_size=32", "img_size", 32),
        ("bn_eps=0.001", "bn_eps", 0.001),
        ("aux_logits=True", "aux_logits", True),
        ("stride_in=3x3", "stride_in", "3x3"),
        ("widths=(16, 32)", "widths", (16, 32)),
    ],
)
def test_model_option_means_the_same_in_train_compare_and_summary(
    text: str, key: str, value: object, monkeypatch
) -> None:
    """One parser behind ``--model-option`` in every command (``--opt``, its old name, still works)."""
    import cnnlab.analysis.loading as loading
    from cnnlab.cli import build_parser
    from cnnlab.cli.train import config_from_args

    parser = build_parser()
    for argv in (["train", "lecture-simple"], ["compare", "lecture-simple", "lecture-residual"]):
        args = parser.parse_args([*argv, "--model-option", text])
        assert config_from_args(args, "lecture-simple").model_options == {key: value}

    seen = []

    def load_model(spec, options=None, device="meta"):
        seen.append(options)
        raise SystemExit(0)  # stop before any tracing: only the options matter here

    monkeypatch.setattr(loading, "load_model", load_model)
    for flag in ("--model-option", "--opt"):
        with pytest.raises(SystemExit):
            main(["summary", "lecture-simple", flag, text])
    assert seen == [{key: value}, {key: value}]


@pytest.mark.parametrize(
    "argv", [["train", "lecture-simple"], ["compare", "lecture-simple"], ["summary", "lecture-simple"]]
)
def test_a_model_option_without_equals_is_a_one_line_usage_error(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--model-option", "img_size32"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "model options are KEY=VALUE, got 'img_size32'" in err


@pytest.mark.parametrize("key", ["num_classes", "in_chans", "drop_rate"])
def test_a_training_setting_given_as_a_model_option_is_refused_naming_its_flag(key: str, capsys) -> None:
    assert main(["train", "lecture-simple", "--model-option", f"{key}=1", "--out", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"cnnlab: error: {key} is set by the training settings (--") and err.count("\n") == 1
    )


RAISING_FILE = """
from torch import nn


class Typo(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.convv(x)


class ExtraArgument(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x, 3)


class BadIndex(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)[0, 99]


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x, y):
        return self.conv(x) + y
"""


@pytest.mark.parametrize("command", ["summary", "rf"])
@pytest.mark.parametrize(
    "target, message",
    [
        ("Typo", "Typo's forward raised AttributeError at {file}:11: 'Typo' object has no attribute 'convv'"),
        ("ExtraArgument", "ExtraArgument's forward raised TypeError at {file}:20: "),
        ("BadIndex", "BadIndex's forward raised IndexError at {file}:29 on input 3x8x8, and on every other"),
        ("TwoInputs", "TwoInputs's forward(x, y) needs more than one input"),
    ],
)
def test_a_users_forward_that_raises_anything_is_one_line_exit_1(
    capsys, tmp_path: Path, command: str, target: str, message: str
) -> None:
    path = tmp_path / "raising.py"
    path.write_text(RAISING_FILE)
    got, _, err = run(capsys, command, f"{path}:{target}", "--input", "3x8x8")
    assert (got, err.count("\n")) == (1, 1), err
    assert err.startswith("cnnlab: error: ") and message.format(file=path) in err


@pytest.mark.parametrize(
    "name, option, size",
    [("lecture-simple", "img_size=32", [1, 32, 32]), ("plain20-cifar", "in_chans=1", [1, 32, 32])],
)
def test_the_default_input_follows_img_size_and_in_chans(
    capsys, name: str, option: str, size: list[int]
) -> None:
    code, out, err = run(capsys, "summary", name, "--model-option", option, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["input_size"] == size


def test_a_users_file_imports_the_modules_beside_it(capsys, tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "cnnlab_test_helper.py").write_text(
        "from torch import nn\n\n\ndef block():\n    return nn.Conv2d(3, 8, 3)\n"
    )
    (folder / "model.py").write_text(
        "from torch import nn\nfrom cnnlab_test_helper import block\n\n\n"
        "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.b = block()\n\n"
        "    def forward(self, x):\n        return self.b(x)\n"
    )
    before = list(sys.path)
    code, out, err = run(capsys, "summary", f"{folder / 'model.py'}:M", "--input", "3x8x8")
    assert code == 0, err
    assert "Conv2d" in out and sys.path == before  # the folder is on the path only while the file is imported
    sys.modules.pop("cnnlab_test_helper", None)


def test_rf_builds_a_registry_model_with_its_options(capsys) -> None:
    """The size-mismatch advice ("build it with img_size=32") can be followed in rf as in summary."""
    code, out, err = run(
        capsys, "rf", "lecture-simple", "--input", "1x32x32", "--model-option", "img_size=32"
    )
    assert code == 0, err
    assert out.splitlines()[-1].split()[0] == "head.fc" and out.splitlines()[-1].split()[-1] == "32"
    code, _, err = run(capsys, "rf", "conv3", "--model-option", "img_size=32")
    assert code == 2 and "--model-option is for registry models" in err


@pytest.mark.parametrize(
    "states, shown", [("0", "0 optimizer states"), ("1", "1 optimizer state)"), ("2", "2 optimizer states")]
)
def test_training_estimate_counts_optimizer_states_in_words(capsys, states: str, shown: str) -> None:
    code, out, err = run(capsys, "summary", "lecture-simple", "--optimizer-states", states)
    assert code == 0 and shown in out, err
