"""Progress bars for the preparation commands (rich, on stderr, so stdout keeps the summary)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(description: str, total: int,
                 enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, note=None)``; a no-op when ``enabled`` is false (tests, logs)."""
    if not enabled:
        yield lambda n=1, note=None: None
        return
    from fbench import make_progress

    with make_progress() as bar:  # fbench's one bar: same columns as every other command
        task = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, note: str | None = None) -> None:
            bar.update(task, advance=n, **({"info": note} if note is not None else {}))

        yield advance
