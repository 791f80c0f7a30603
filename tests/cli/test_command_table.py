"""The command table in cli/main.py (litgpt's PARSER_DATA) says which module owns each `zpctl` command and group;
this keeps it in sync with what the app really has, in the order `--help` lists them."""
import sys

import typer

from zeropoint.cli import main


def _owner_of_group(instance) -> str:
    return next(name for name, mod in sys.modules.items() if name.startswith("zeropoint.cli.")
                and any(v is instance for v in vars(mod).values()))


def _app_commands() -> list[tuple[str, str]]:
    """(command name, module) of every top-level command, every group, and every subcommand a module adds to a
    group another module owns."""
    out = [(c.name or c.callback.__name__, c.callback.__module__) for c in main.app.registered_commands]
    for g in main.app.registered_groups:
        owner = _owner_of_group(g.typer_instance)
        out.append((g.name, owner))
        out += [(f"{g.name} {c.name or c.callback.__name__}", c.callback.__module__)
                for c in g.typer_instance.registered_commands if c.callback.__module__ != owner]
    return out


def test_the_command_table_is_the_app():
    table = [(name, mod.__name__) for mod, names in main.COMMANDS for name in names]
    assert sorted(table) == sorted(_app_commands())
    assert len(table) == len(set(n for n, _ in table))


def test_every_cli_module_is_in_the_table():
    import pkgutil
    import zeropoint.cli as cli
    cmds = {m.name for m in pkgutil.iter_modules(cli.__path__) if m.name.endswith("_cmds")}
    assert cmds == {mod.__name__.rsplit(".", 1)[1] for mod, _ in main.COMMANDS[1:]}
    assert isinstance(main.app, typer.Typer)
