"""Resumable preparation: an append-only journal of finished work items plus the settings they
were made with, in the output directory.

A work item (an FFHQ image, a FaceForensics++ video) counts as finished only once its files
are in place *and* its journal line is written, so a killed run redoes at most the item it was
working on. A run with other settings into the same directory is refused: mixing two samplings
in one index would make the sampling irreproducible."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fbench import FbenchError, read_json, write_json

JOURNAL = ".journal.jsonl"
SETTINGS = "settings.json"


def read_journal(out: Path) -> dict[str, dict[str, Any]]:
    """The last record of each finished item in ``out`` (empty when nothing was done)."""
    done: dict[str, dict[str, Any]] = {}
    path = out / JOURNAL
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the torn last line of a killed run: that item is redone
            done[record["key"]] = record
    return done


class Journal:
    """``done``: the last record written for each key."""

    def __init__(self, out: Path, settings: dict[str, Any], command: str) -> None:
        self.out = out
        self.path = out / JOURNAL
        settings_file = out / SETTINGS
        out.mkdir(parents=True, exist_ok=True)
        if settings_file.is_file():
            before = read_json(settings_file)
            if before != settings:
                changed = sorted(k for k in set(before) | set(settings)
                                 if before.get(k) != settings.get(k))
                detail = ", ".join(f"{k}: {before.get(k)!r} -> {settings.get(k)!r}"
                                   for k in changed)
                raise FbenchError(
                    f"{out} was prepared with other settings ({detail}).",
                    f"re-run with the same settings to resume, or give another --out "
                    f"(`{command}` never mixes two samplings in one directory).")
        else:
            write_json(settings_file, settings)
        self.done = read_journal(out)
        self._fh = open(self.path, "a")  # closed in close()

    def record(self, key: str, **fields: Any) -> dict[str, Any]:
        entry = {"key": key, **fields}
        self._fh.write(json.dumps(entry) + "\n")
        self._fh.flush()
        self.done[key] = entry
        return entry

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
