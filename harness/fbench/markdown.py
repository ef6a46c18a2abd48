"""GitHub-flavoured markdown tables: fbench's own output format for every table it writes."""

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
