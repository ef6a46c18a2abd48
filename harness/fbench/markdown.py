"""GitHub-flavoured markdown tables (fbench's own output format for every table it writes),
and the small text rules its messages share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def to_markdown(header: Sequence[str], rows: Sequence[Sequence[Any]],
                align_right: Sequence[bool] | None = None) -> str:
    """A GitHub-flavoured markdown table."""
    align_right = align_right or [False] * len(header)
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---:" if r else "---" for r in align_right) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def count(n: int | float, noun: str) -> str:
    """``1 epoch``, ``3 epochs``: a number and its noun, in the right number."""
    return f"{n:g} {noun}" if n == 1 else f"{n:g} {noun}s"


def rate(images_per_s: float) -> str:
    """A throughput that never reads as ``0 img/s``: whole numbers from 10, two significant
    digits below."""
    return f"{images_per_s:.0f}" if images_per_s >= 10 else f"{images_per_s:.2g}"
