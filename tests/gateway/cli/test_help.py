"""Every command's --help: a description, an example and its exit status."""

from __future__ import annotations

import pytest

from gateway.cli import COMMANDS, main, parser_of_commands

NAMES = ["serve", "check", "build", "logs", "predict", "list", "openapi", "upload", "apply", "delete"]


def test_every_command_is_listed() -> None:
    text = parser_of_commands().format_help()
    commands = text.split("  COMMAND\n", 1)[1].split("\n\n", 1)[0]
    listed = [line.split()[0] for line in commands.splitlines() if not line.startswith("     ")]
    assert listed == NAMES
    assert len(COMMANDS) == len(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_help_has_an_example_and_the_exit_status(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: gateway {name}")
    assert "example" in text
    assert f"gateway {name} " in text.split("example", 1)[1]  # an example of this very command
    assert "exit status" in text
