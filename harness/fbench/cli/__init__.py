"""The ``fbench`` command line: one click group whose commands live, by theme, in the modules
of this package. Nothing heavy is imported at start: a command's module loads when the
command runs or is listed in help, and torch, timm and the detectors load only inside the
commands that need them.

run.py        run (train, select, evaluate, store; --resume), show
catalog.py    list, plugins
report.py     ablate, leaderboard, regenerate
bench.py      bench
plot.py       plot confusion | curves | spectrum | gradcam
data.py       data build | recipes | audit, with probe.py's data probe
use.py        predict, robustness, reproduce (what uses a stored run)
options.py    options several commands share; command_line()
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

import click

from fbench import __version__
from fbench.cli.data import data_group
from fbench.cli.lazy import LazyGroup
from fbench.cli.options import command_line
from fbench.cli.plugin_commands import add_plugin_commands as _add_plugin_commands
from fbench.cli.plugin_commands import run_command_line

__all__ = ["add_plugin_commands", "cli", "command_line", "data_group", "main", "run_fbench"]

# name -> "module:command"; `data` is attached eagerly below because plugins extend it
COMMANDS = {
    "run": "fbench.cli.run:run_cmd",
    "show": "fbench.cli.run:show_cmd",
    "list": "fbench.cli.catalog:list_cmd",
    "plugins": "fbench.cli.catalog:plugins_cmd",
    "ablate": "fbench.cli.report:ablate_cmd",
    "leaderboard": "fbench.cli.report:leaderboard_cmd",
    "regenerate": "fbench.cli.report:regenerate_cmd",
    "bench": "fbench.cli.bench:bench_cmd",
    "plot": "fbench.cli.plot:plot_group",
    "predict": "fbench.cli.use:predict_cmd",
    "robustness": "fbench.cli.use:robustness_cmd",
    "reproduce": "fbench.cli.use:reproduce_cmd",
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fbench")
def cli() -> None:
    """fbench: benchmark image-forgery detectors on real, generated (1) and edited (2) faces.

    \b
    Quick start (offline, CPU):
      fbench run --detector resnet18 --dataset synthetic
      fbench list detectors
      fbench show runs/<run-id>
    """


cli.add_command(data_group)


def add_plugin_commands() -> None:
    """Let plugins add commands (e.g. ``fbench data prepare ...``). Plugin modules are light
    (no torch at import), so this keeps ``fbench --help`` fast."""
    _add_plugin_commands(cli)


def run_fbench(command: str) -> None:
    """Run one ``fbench ...`` command line in this process (a board's preparation step)."""
    run_command_line(cli, command)


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, SLURM, docker stop), raised where the program is, as Ctrl-C
    raises KeyboardInterrupt: a run then unwinds the same way (status ``interrupted``,
    temporary files removed, its lock released) instead of vanishing mid-write."""

    signum = signal.SIGTERM


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    # a second SIGTERM ends the process at once (the default), should the unwinding hang
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated("terminated by SIGTERM")


def main() -> None:
    # only the program's entry point installs it: a library must not take over the signal
    # handlers of a program that embeds it (nor one its caller already chose)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)
    add_plugin_commands()
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt as exc:  # outside a command (click handles those inside)
        sys.exit(128 + int(getattr(exc, "signum", signal.SIGINT)))


if __name__ == "__main__":
    main()
