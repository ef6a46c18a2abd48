"""Commands that come from outside the core: plugins add theirs through the
``register_commands`` hook, and a board's preparation step runs a command line in-process."""

from __future__ import annotations

import shlex

import click

from fbench.errors import FbenchError


def add_plugin_commands(group: click.Group) -> None:
    """Let plugins add commands to ``group`` (e.g. ``fbench data prepare ...``). Plugin modules
    are light (no torch at import), so this keeps ``fbench --help`` fast."""
    from fbench.cli.output import console
    from fbench.plugins.registry import get_registry

    try:
        get_registry().call_each("register_commands", cli=group)
    except FbenchError as exc:  # a broken plugin must not take the whole CLI down
        console(stderr=True).print(f"[yellow]warning:[/] {exc.format_message()}")


def run_command_line(group: click.Group, command: str) -> None:
    """Run one ``fbench ...`` command line through ``group`` in this process (a board's
    preparation step)."""
    add_plugin_commands(group)  # plugin commands (e.g. `data landmarks`); adding twice is harmless
    args = shlex.split(command)
    if not args or args[0] != "fbench":
        raise FbenchError(f"board preparation {command!r} is not an fbench command.")
    try:
        group.main(args[1:], prog_name="fbench", standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            raise FbenchError(f"board preparation {command!r} failed (exit {exc.code}).") \
                from None
