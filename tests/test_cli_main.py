"""The ``cnnlab`` entry point itself: command modules, exit statuses, start-up cost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import cnnlab.cli
import cnnlab.errors


def test_a_command_module_that_fails_to_import_is_an_error_not_a_missing_command(monkeypatch) -> None:
    monkeypatch.setattr(
        cnnlab.cli, "COMMAND_MODULES", (*cnnlab.cli.COMMAND_MODULES, "cnnlab.cli.no_such_cmd")
    )
    with pytest.raises(ModuleNotFoundError, match="cnnlab.cli.no_such_cmd"):
        cnnlab.cli.build_parser()


def _imports_torch(code: str) -> bool:
    """Run ``code`` in a fresh interpreter; whether torch ended up imported."""
    src = str(Path(cnnlab.cli.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1] == "True"


def test_the_package_and_the_commands_of_models_and_analysis_do_not_import_torch_to_start() -> None:
    code = """
import argparse
import cnnlab, cnnlab.train, cnnlab.cli.models, cnnlab.cli.analysis, cnnlab.cli.train
sub = argparse.ArgumentParser().add_subparsers()
for module in (cnnlab.cli.models, cnnlab.cli.analysis, cnnlab.cli.train):
    module.register(sub)
"""
    assert not _imports_torch(code)
    assert _imports_torch("import cnnlab\ncnnlab.create_model('lecture-simple')")  # the lazy names still work


def test_listing_the_built_in_models_reads_the_stored_table_without_torch() -> None:
    """``cnnlab models`` is instant: the built-in rows are data (src/cnnlab/zoo_table.py), not traced."""
    code = "from cnnlab.cli import main\ntry:\n    main(['models', 'resnet*'])\nexcept SystemExit:\n    pass"
    assert not _imports_torch(code)
    assert _imports_torch(
        "from cnnlab.analysis.zoo import model_rows\nmodel_rows('wrn-34-2')"
    )  # resolved: traced


def test_building_the_parser_does_not_import_torch() -> None:
    assert not _imports_torch("from cnnlab.cli import build_parser\nbuild_parser()")


@pytest.mark.parametrize(
    "raised, status",
    [
        (cnnlab.errors.UsageError("bad --foo"), 2),
        (cnnlab.errors.DataError("corrupt file"), 1),
        (cnnlab.errors.CheckpointError("damaged checkpoint"), 1),
        (cnnlab.errors.TrainingDiverged("loss is NaN"), 1),
        (cnnlab.errors.Interrupted("stopped; saved"), 130),
        (KeyboardInterrupt(), 130),
    ],
)
def test_exit_status_rule(monkeypatch, capsys, raised: BaseException, status: int) -> None:
    import argparse

    def fail(args: argparse.Namespace) -> int:
        raise raised

    parser = argparse.ArgumentParser()
    parser.set_defaults(func=fail)
    monkeypatch.setattr(cnnlab.cli, "build_parser", lambda: parser)
    assert cnnlab.cli.main([]) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (err.startswith("cnnlab: error: ") or status == 130)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["evaluate", "runs/x", "--threads", "1"], "cnnlab evaluate: error: unrecognized arguments: --threads 1 "
         "(see 'cnnlab evaluate --help')"),
        (["data", "list", "--bogus"], "cnnlab data list: error: unrecognized arguments: --bogus "
         "(see 'cnnlab data list --help')"),
        (["train", "lecture-simple", "--epochs", "x"], "cnnlab train: error: argument --epochs: invalid int value"),
        # a prefix of a flag is a typo, not the flag (`--epoch 1` trained the default epochs' worth before)
        (["train", "lecture-simple", "--epoch", "1"], "cnnlab train: error: unrecognized arguments: --epoch 1; "
         "--epoch is not short for --epochs: flags are never abbreviated (see 'cnnlab train --help')"),
        (["data", "stats", "x/", "--image-s", "8"], "cnnlab data stats: error: unrecognized arguments: --image-s"),
        (["data", "export", "fashion-mnist", "--form", "imagefolder", "xx"], "cnnlab data export: error: "
         "unrecognized arguments: --form xx; --form is not short for --format: flags are never abbreviated"),
    ],
)  # fmt: skip
def test_an_option_a_command_does_not_take_is_named_by_that_command(
    capsys, argv: list[str], said: str
) -> None:
    """argparse leaves arguments no subcommand took to the top parser, whose error would say `cnnlab:` and
    point to `cnnlab --help`; the command that was given names them and its own help."""
    with pytest.raises(SystemExit) as stop:
        cnnlab.cli.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(said) and err.count("\n") == 1, err


def test_a_class_list_with_a_gap_or_nothing_in_it_is_refused() -> None:
    """ "0,,1" (a class left out by mistake?) and "" were read as (0, 1) and as no subset at all."""
    import argparse

    from cnnlab.cli.common import class_list

    assert class_list("0,1,2") == class_list("0 1 2") == class_list("0, 1, 2") == (0, 1, 2)
    for text in ("0,,1", "", " ", "0,1,"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected class indices"):
            class_list(text)


def test_an_error_names_settings_by_the_commands_flags_but_leaves_paths_and_model_option_keys() -> None:
    import argparse

    from cnnlab.cli import build_parser
    from cnnlab.cli.common import named_as_flags

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    args = argparse.Namespace(command_parser=train)
    assert named_as_flags("pad_to=20 is too small; or pad them with pad_to.", args) == (
        "--pad-to=20 is too small; or pad them with --pad-to."
    )
    assert named_as_flags("no file /srv/data_dir/pad_to here", args) == "no file /srv/data_dir/pad_to here"
    assert named_as_flags("not_a_flag stays", args) == "not_a_flag stays"
    kept = "in_chans is set by the training settings (--in-chans), not as a model option"
    assert named_as_flags(kept, args) == kept
