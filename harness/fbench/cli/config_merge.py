"""What ``fbench run`` trains: its flags, a TOML file and the ``--set`` style assignments merged
into one :class:`~fbench.train.config.RunConfig`. Precedence, lowest first: RunConfig's
defaults, the TOML file, the flags; the assignments add to (and override keys of) the file's
option tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fbench.errors import FbenchError

if TYPE_CHECKING:
    from fbench.train.config import RunConfig

# (flag, RunConfig field) of the repeatable KEY=VALUE options
ASSIGNMENTS = (("--set", "options"), ("--dataset-option", "dataset_options"),
               ("--transform-option", "transform_options"))
# switches that turn a RunConfig default around when given
SWITCHES = {"skip_audit": ("audit", False), "skip_bad": ("skip_bad", True),
            "tf32": ("tf32", True), "keep_last": ("keep_last", True),
            "compile": ("compile", True)}


def merge_run_config(config_file: Path | None, flags: dict[str, Any],
                     assignments: dict[str, tuple[str, ...]],
                     switches: dict[str, bool]) -> RunConfig:
    """``flags``: the valued options (``None``: not given); ``assignments``: the KEY=VALUE
    options by flag (``--set``, ``--dataset-option``, ``--transform-option``); ``switches``:
    ``skip_audit``, ``skip_bad``, ``tf32``, ``keep_last``, ``compile``."""
    from fbench.train.config import RunConfig, load_config_file, parse_assignments

    data: dict[str, Any] = RunConfig().to_dict()
    if config_file is not None:
        data.update(RunConfig.from_dict(load_config_file(config_file),
                                        source=str(config_file)).to_dict())
    for key, value in flags.items():
        if value is not None:
            data[key] = str(value) if isinstance(value, Path) else value
    for name, given in switches.items():
        if given:
            field, value = SWITCHES[name]
            data[field] = value
    for flag, field in ASSIGNMENTS:
        data[field] = {**data[field], **parse_assignments(assignments.get(flag, ()), flag)}
    return RunConfig.from_dict(data)


def refuse_changes_on_resume(config_file: Path | None, flags: dict[str, Any],
                             assignments: dict[str, tuple[str, ...]],
                             switches: dict[str, bool]) -> None:
    """``--resume`` continues a run with its stored settings: any other setting is an error,
    not silently ignored."""
    given = [k for k, v in flags.items() if v is not None] + [
        flag for flag, _ in ASSIGNMENTS if assignments.get(flag)]
    if config_file is not None:
        given.append("--config")
    given += [f"--{name}" for name in ("tf32", "compile") if switches.get(name)]
    if given:
        raise FbenchError(f"--resume continues a run with its stored settings; "
                          f"{', '.join(given)} cannot change them.",
                          "drop those options (or start a new run).")
