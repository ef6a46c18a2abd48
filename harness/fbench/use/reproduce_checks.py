"""What must hold before a stored run's rerun can be called a reproduction: the same data and
the same environment (:func:`fbench.use.reproduce.reproduce` checks both first).

Data: the re-resolved manifest must give the stored split counts and the stored val/eval
rows; where the run stored a dataset fingerprint (``config["dataset_fingerprint"]`` and
``dataset.parquet``, written by :func:`fbench.data.fingerprint.record_dataset`) the manifest
hash and every image's SHA-256 must match. A run without per-image hashes is checked by file
times instead: an image modified after the run started is named.

Environment: fbench, torch and timm versions and the device; a rerun is expected identical
only on CPU with the same versions and data, else within :data:`DEFAULT_TOLERANCE`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pandas as pd

from fbench.data.audit import file_sha256
from fbench.data.fingerprint import (
    DATASET_FILE,
    FINGERPRINT_KEY,
    manifest_sha256,
    resolved_paths,
)

if TYPE_CHECKING:  # pragma: no cover
    from fbench.runs.store import Run

EXACT_PACKAGES = ("fbench", "torch", "timm")
SHOWN_PACKAGES = ("fbench", "torch", "timm", "torchvision", "numpy", "opencv-contrib-python")
DEFAULT_TOLERANCE = 0.01
"""Absolute tolerance on metrics (in [0, 1]) and losses when the rerun cannot be expected to be
identical (another device or versions, or forced past a data mismatch)."""
NAMED = 5
"""Offending images named in a message."""


# -- dataset fingerprints: fbench.data.fingerprint writes them, reproduce checks them --------

def _split_counts(manifest: pd.DataFrame) -> dict[str, dict[str, int]]:
    counts = manifest.groupby(["split", "label"]).size().unstack(fill_value=0)
    return {str(s): {str(k): int(v) for k, v in row.items()}
            for s, row in counts.to_dict(orient="index").items()}


def dataset_differences(run: Run, manifest: pd.DataFrame) -> pd.DataFrame:
    """What differs between the data ``run`` used and ``manifest`` (re-resolved now): one
    row per difference, columns ``check``, ``item``, ``stored``, ``now``. Empty: the same."""
    diffs: list[dict[str, Any]] = []

    def add(check: str, item: str, stored: Any, now: Any) -> None:
        diffs.append({"check": check, "item": item, "stored": str(stored), "now": str(now)})

    stored_counts = run.config.get("split_counts")
    if stored_counts is not None:
        now_counts = _split_counts(manifest)
        for split in sorted(set(stored_counts) | set(now_counts)):
            a, b = stored_counts.get(split, {}), now_counts.get(split, {})
            for label in sorted(set(a) | set(b)):
                if int(a.get(label, 0)) != int(b.get(label, 0)):
                    add("split counts", f"{split}, label {label}", a.get(label, 0),
                        b.get(label, 0))

    if run.predictions is not None:
        cols = ["path", "label", "split"]
        stored_rows = set(map(tuple, run.predictions[cols].astype(str).to_numpy()))
        now = manifest[manifest["split"].isin(["val", "eval"])]
        now_rows = set(map(tuple, now[cols].astype(str).to_numpy()))
        for p, label, split in sorted(stored_rows - now_rows)[:NAMED]:
            add("val/eval rows", p, f"{split}, label {label}", "absent")
        for p, label, split in sorted(now_rows - stored_rows)[:NAMED]:
            add("val/eval rows", p, "absent", f"{split}, label {label}")

    fingerprint = run.config.get(FINGERPRINT_KEY) or {}
    if fingerprint.get("manifest_sha256") and \
            fingerprint["manifest_sha256"] != manifest_sha256(manifest):
        add("manifest hash", "manifest rows", fingerprint["manifest_sha256"][:16],
            manifest_sha256(manifest)[:16])
    stored_images = run.path / fingerprint.get("file", DATASET_FILE)
    if stored_images.is_file():
        diffs += _image_hash_differences(pd.read_parquet(stored_images), manifest)
    else:
        diffs += _image_time_differences(run, manifest)
    return pd.DataFrame(diffs, columns=["check", "item", "stored", "now"])


def _image_hash_differences(stored: pd.DataFrame, manifest: pd.DataFrame) -> list[dict]:
    stored_hash = dict(zip(stored["path"], stored["sha256"], strict=True))
    out = []
    for rel, full in zip(manifest["path"], resolved_paths(manifest), strict=True):
        before = stored_hash.get(rel)
        if before is None:
            out.append({"check": "image hash", "item": full, "stored": "absent",
                        "now": "present"})
            continue
        now = file_sha256(full)
        if now != before:
            out.append({"check": "image hash", "item": full, "stored": before[:16],
                        "now": now[:16]})
    return out


def _image_time_differences(run: Run, manifest: pd.DataFrame) -> list[dict]:
    """Without stored hashes, the file times tell what changed after the run started."""
    import datetime as dt

    started = run.status.get("started")
    if started is None:
        return []
    out = []
    for full in resolved_paths(manifest):
        mtime = os.path.getmtime(full)
        if mtime > float(started):
            when = dt.datetime.fromtimestamp(mtime).isoformat(timespec="seconds")
            out.append({"check": "image modified after the run started", "item": full,
                        "stored": "–", "now": when})
    return out


# -- environment -----------------------------------------------------------------------------

def environment_differences(run: Run, device: str) -> pd.DataFrame:
    """The stored environment beside the current one: ``what``, ``stored``, ``now``,
    ``same``, ``exact`` (whether an identical result depends on it)."""
    from fbench.runs.environment import describe_environment

    now = describe_environment(device)
    stored = run.environment or {}
    rows = []
    for name in SHOWN_PACKAGES:
        rows.append((name, (stored.get("packages") or {}).get(name),
                     now["packages"].get(name), name in EXACT_PACKAGES))
    rows += [("device", run.config.get("device", stored.get("device")), device, True),
             ("python", stored.get("python"), now["python"], False),
             ("git commit", stored.get("git_commit"), now["git_commit"], False)]
    return pd.DataFrame([{"what": w, "stored": str(a), "now": str(b), "same": a == b,
                          "exact": e} for w, a, b, e in rows])


def expected_agreement(env: pd.DataFrame, device: str, same_data: bool,
                       tolerance: float | None = None) -> tuple[bool, float]:
    """Whether the rerun must be identical, and the tolerance it is held to: identical (0)
    on CPU with the same fbench, torch and timm and the same data; otherwise
    :data:`DEFAULT_TOLERANCE`. A given ``tolerance`` wins."""
    exact = bool(env.loc[env["exact"], "same"].all()) and device == "cpu" and same_data
    tol = float(tolerance) if tolerance is not None else (0.0 if exact else DEFAULT_TOLERANCE)
    return exact, tol
