"""A run's dataset fingerprint: the manifest's hash and every image's SHA-256, written by the
engine when a run starts (``dataset.parquet`` and ``config["dataset_fingerprint"]``), so
``fbench reproduce`` can tell whether the data changed since."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pandas as pd

from fbench.data.audit import file_sha256

DATASET_FILE = "dataset.parquet"
FINGERPRINT_KEY = "dataset_fingerprint"


def resolved_paths(manifest: pd.DataFrame) -> list[str]:
    from fbench.data.manifest import resolve_path

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


def images_sha256(hashes: pd.DataFrame) -> str:
    """One SHA-256 over every image's path and content hash, order-free."""
    return hashlib.sha256("\n".join(sorted(hashes["path"] + "\t" + hashes["sha256"]))
                          .encode("utf-8", "surrogateescape")).hexdigest()


def dataset_identity(manifest: pd.DataFrame, hashes: pd.DataFrame) -> dict[str, str]:
    """The data part of "the same configuration": every image's content and the manifest's
    rows with ``val`` counted as ``train`` (the validation carve moves with the seed, and
    seeds of one configuration must still aggregate)."""
    unsplit = manifest.assign(split=manifest["split"].replace({"val": "train"}))
    return {"images_sha256": images_sha256(hashes), "rows_sha256": manifest_sha256(unsplit)}


def record_dataset(run_dir: str | Path, manifest: pd.DataFrame,
                   hashes: pd.DataFrame | None = None) -> dict[str, Any]:
    """Write ``dataset.parquet`` (every image's hash) into a run directory and return the
    fingerprint to store as ``config["dataset_fingerprint"]``: what ``fbench reproduce`` checks
    the data against. Meant to be called by the engine when a run starts; ``hashes`` when
    already computed (:func:`image_hashes`)."""
    from fbench.files import write_parquet

    hashes = image_hashes(manifest) if hashes is None else hashes
    write_parquet(Path(run_dir) / DATASET_FILE, hashes)
    return {"manifest_sha256": manifest_sha256(manifest), "images_sha256": images_sha256(hashes),
            "n_images": len(hashes), "file": DATASET_FILE,
            **dataset_identity(manifest, hashes)}
