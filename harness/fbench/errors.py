"""One exception class for mistakes a user can fix.

The CLI prints an :class:`FbenchError` as one line and exits non-zero; any other exception is
a bug in fbench or a plugin and keeps its traceback.
"""

from __future__ import annotations

import click


class FbenchError(click.ClickException):
    """A user-facing error: what went wrong, and (optionally) how to fix it."""

    exit_code = 2

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.problem = message
        self.fix = fix
        full = message if not fix else f"{message} Fix: {fix}"
        super().__init__(full)


class UnknownNameError(FbenchError, KeyError):
    """A detector, dataset or transform name that no plugin registered."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        import difflib

        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        if close:
            fix = "did you mean " + ", ".join(repr(c) for c in close) + "?"
        else:
            fix = f"`fbench list {kind}s` shows the {len(known)} known {kind}s."
        self.close_matches = close
        super().__init__(f"unknown {kind} {name!r}.", fix)

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.format_message()
