"""The ``cnnlab`` entry point itself: command modules, exit statuses, start-up cost."""

from __future__ import annotations

import pytest

import cnnlab.cli


def test_a_command_module_that_fails_to_import_is_an_error_not_a_missing_command(monkeypatch) -> None:
    monkeypatch.setattr(
        cnnlab.cli, "COMMAND_MODULES", (*cnnlab.cli.COMMAND_MODULES, "cnnlab.cli.no_such_cmd")
    )
    with pytest.raises(ModuleNotFoundError, match="cnnlab.cli.no_such_cmd"):
        cnnlab.cli.build_parser()
