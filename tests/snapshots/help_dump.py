"""Print `zpctl <command> --help` for every command and group, in a fixed width, for the snapshot test:

    TERMINAL_WIDTH=100 _TYPER_FORCE_DISABLE_TERMINAL=1 python -m tests.snapshots.help_dump
"""
from __future__ import annotations

import typer.main
from typer.testing import CliRunner

from zeropoint.cli.main import app


def command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    out: list[list[str]] = []

    def walk(cmd, path):
        out.append(path)
        for name in sorted(getattr(cmd, "commands", {}) or {}):
            walk(cmd.commands[name], path + [name])
    walk(root, [])
    return out


def dump() -> str:
    runner = CliRunner()
    parts = []
    for path in command_paths():
        r = runner.invoke(app, [*path, "--help"], prog_name="zpctl")
        text = "\n".join(line.rstrip() for line in r.output.splitlines())
        parts.append(f"===== zpctl {' '.join(path)} --help (exit {r.exit_code})\n{text}\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(dump(), end="")
