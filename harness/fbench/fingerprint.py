"""A run's dataset fingerprint: the manifest's hash and every image's SHA-256, written by the
engine when a run starts (``dataset.parquet`` and ``config["dataset_fingerprint"]``), so
``fbench reproduce`` can tell whether the data changed since."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pandas as pd

from fbench.audit import file_sha256

DATASET_FILE = "dataset.parquet"
FINGERPRINT_KEY = "dataset_fingerprint"


def resolved_paths(manifest: pd.DataFrame) -> list[str]:
    from fbench.manifest import resolve_path

    return [resolve_path(manifest, p) for p in manifest["path"]]


def manifest_sha256(manifest: pd.DataFrame) -> str:
    """SHA-256 of the rows that define a run's data (path as written in the manifest, label,
    split, group, source, mask), order-free: the same dataset moved to another root hashes
    the same."""
    cols = ["path", "label", "split", "group", "source", "mask"]
    lines = sorted("\t".join(str(v) for v in row)
                   for row in manifest.reindex(columns=cols).fillna("").itertuples(index=False))
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def image_hashes(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per image: ``path`` (as in the manifest), ``bytes``, ``sha256``."""
    paths = resolved_paths(manifest)
    return pd.DataFrame({"path": manifest["path"].to_numpy(),
                         "bytes": [os.path.getsize(p) for p in paths],
                         "sha256": [file_sha256(p) for p in paths]})


def record_dataset(run_dir: str | Path, manifest: pd.DataFrame) -> dict[str, Any]:
    """Write ``dataset.parquet`` (every image's hash) into a run directory and return the
    fingerprint to store as ``config["dataset_fingerprint"]``: what ``fbench reproduce`` checks
    the data against. Meant to be called by the engine when a run starts."""
    from fbench.store import write_parquet

    hashes = image_hashes(manifest)
    write_parquet(Path(run_dir) / DATASET_FILE, hashes)
    combined = hashlib.sha256("\n".join(sorted(hashes["path"] + "\t" + hashes["sha256"]))
                              .encode("utf-8", "surrogateescape")).hexdigest()
    return {"manifest_sha256": manifest_sha256(manifest), "images_sha256": combined,
            "n_images": len(hashes), "file": DATASET_FILE}
