"""``RunWriter``: every file of one run directory, written atomically and in an order that
keeps the directory honest at any moment (status first and small, the big files after).

The engine says what happened (settings resolved, an epoch ended, the run finished or failed);
the writer decides where it goes. Under torchrun only rank 0 writes: the other ranks hold a
writer with ``enabled=False``, whose calls do nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fbench.files import atomic_path, read_json, write_json, write_parquet
from fbench.runs.store import LAST_PREDICTIONS, PREDICTIONS, new_run_dir

CONFIG, ENVIRONMENT, STATUS, EPOCHS, SUMMARY = (
    "config.json", "environment.json", "status.json", "epochs.json", "summary.json")
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class RunWriter:
    """The files of the run directory at ``path``."""

    path: Path
    enabled: bool = True

    @classmethod
    def create(cls, out: str | Path, detector: str, dataset: str,
               name: str | None = None) -> RunWriter:
        """A fresh, uniquely named run directory under ``out``."""
        return cls(new_run_dir(out, detector, dataset, name))

    def _json(self, name: str, data: Any) -> None:
        if self.enabled:
            write_json(self.path / name, data)

    def config(self, config: dict[str, Any]) -> None:
        self._json(CONFIG, config)

    def environment(self, environment: dict[str, Any]) -> None:
        self._json(ENVIRONMENT, environment)

    def dataset(self, manifest: pd.DataFrame, hashes: pd.DataFrame) -> dict[str, Any]:
        """Every image's hash beside the run (``dataset.parquet``); returns the fingerprint
        that goes into the config."""
        from fbench.data.fingerprint import record_dataset

        if not self.enabled:
            return {}
        return record_dataset(self.path, manifest, hashes)

    def status(self, state: str, **fields: Any) -> None:
        self._json(STATUS, {"state": state, **fields})

    def read_status(self) -> dict[str, Any]:
        file = self.path / STATUS
        return read_json(file) if file.is_file() else {}

    def running(self, started: float, resumed_after: int | None = None) -> None:
        self.status("running", started=started,
                    **({"resumed_after_epoch": resumed_after} if resumed_after else {}))

    def completed(self, started: float) -> None:
        self.status("completed", started=started, finished=time.time())

    def stopped(self, state: str, started: float, error: str) -> None:
        """``failed`` or ``interrupted``, with the error in one line."""
        self.status(state, started=started, finished=time.time(), error=error)

    def epochs(self, rows: list[dict[str, Any]]) -> None:
        self._json(EPOCHS, rows)

    def checkpoint(self, name: str, state: dict[str, Any]) -> None:
        """``checkpoints/<name>.pt`` (model, transform, optimizer, epoch, ...)."""
        if not self.enabled:
            return
        import torch

        with atomic_path(self.checkpoint_path(name)) as tmp:
            torch.save(state, tmp)

    def checkpoint_path(self, name: str) -> Path:
        return self.path / CHECKPOINTS / f"{name}.pt"

    def predictions(self, selected: pd.DataFrame, last: pd.DataFrame) -> None:
        """The selected checkpoint's and the last epoch's predictions on val and eval."""
        if self.enabled:
            write_parquet(self.path / PREDICTIONS, selected)
            write_parquet(self.path / LAST_PREDICTIONS, last)

    def summary(self, summary: dict[str, Any]) -> None:
        self._json(SUMMARY, summary)


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint as data: ``weights_only`` never unpickles arbitrary objects."""
    import torch

    return torch.load(path, map_location=map_location, weights_only=True)
