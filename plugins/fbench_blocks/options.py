"""Option parsing shared by detector plugins (F3Net, LRL, ...)."""

from __future__ import annotations

from typing import Any


def parse_int_list(value: Any) -> tuple[int, ...]:
    """``"8,11"``, ``[8, 11]`` or ``8`` as a tuple of ints (``--set`` gives strings or TOML
    lists). Raises ``ValueError``/``TypeError`` on anything else, for the caller to explain
    in its own terms."""
    if isinstance(value, str):
        return tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)
