"""The leakage audit: what must never be shared between splits, checked on every manifest.

- a group (video, identity) in two splits;
- a person in two splits: the ids of the optional ``identities`` column (``;``-joined, e.g. the
  two people a FaceForensics++ video touches), so train/val against eval and train against val
  never share a face even when the groups were drawn too small;
- the same file content (SHA-256) in two splits;
- near-duplicates (perceptual difference hash within a Hamming distance) in two splits;
- a split whose class balance differs from what its recipe declared.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fbench.data.manifest import resolve_path

IDENTITY_LEAK_COLUMNS = ["path", "group", "split", "identity"]


@dataclass
class AuditReport:
    """Offending rows per check (empty frames when clean)."""

    group_leaks: pd.DataFrame
    duplicate_leaks: pd.DataFrame
    near_duplicate_leaks: pd.DataFrame
    balance: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    identity_leaks: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=IDENTITY_LEAK_COLUMNS))

    @property
    def ok(self) -> bool:
        return (self.group_leaks.empty and self.duplicate_leaks.empty
                and self.near_duplicate_leaks.empty and self.identity_leaks.empty
                and (self.balance.empty or bool(self.balance["ok"].all())))

    def summary(self) -> dict[str, int]:
        return {
            "groups_in_several_splits": int(self.group_leaks["group"].nunique())
            if len(self.group_leaks) else 0,
            "identities_in_several_splits": int(self.identity_leaks["identity"].nunique())
            if len(self.identity_leaks) else 0,
            "identical_files_across_splits": len(self.duplicate_leaks),
            "near_duplicates_across_splits": len(self.near_duplicate_leaks),
            "balance_mismatches": int((~self.balance["ok"]).sum()) if len(self.balance) else 0,
        }


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's content, hex."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def difference_hash(path: str | os.PathLike, size: int = 8) -> int:
    """A 64-bit dHash (is each pixel of a 9x8 grayscale thumbnail brighter than its left
    neighbour?): robust to re-encoding and resizing, so a recompressed copy of an eval image in
    train is still caught; two frames of one video a second apart differ in a few bits, two
    different faces in about half. Public (``fbench.difference_hash``) for dataset plugins."""
    import cv2

    from fbench.data.images import read_gray

    img = read_gray(path)  # raises UnreadableImage naming the file and why
    small = cv2.resize(img, (size + 1, size), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


def identities_in_several_splits(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per (row, id) for every id of the ``identities`` column that appears in more
    than one split (empty when the column is absent or the split is clean)."""
    if "identities" not in manifest.columns:
        return pd.DataFrame(columns=IDENTITY_LEAK_COLUMNS)
    ids = manifest["identities"].fillna("").astype(str).str.split(";")
    rows = manifest[["path", "group", "split"]].assign(identity=ids).explode("identity")
    rows = rows[rows["identity"].fillna("") != ""]
    n_splits = rows.groupby("identity")["split"].nunique()
    leaking = rows[rows["identity"].isin(n_splits[n_splits > 1].index)]
    return leaking[IDENTITY_LEAK_COLUMNS].reset_index(drop=True)


def _cross_split_pairs(keys: pd.Series, splits: pd.Series) -> pd.DataFrame:
    df = pd.DataFrame({"key": keys.to_numpy(), "split": splits.to_numpy()},
                      index=keys.index)
    n = df.groupby("key")["split"].nunique()
    return df[df["key"].isin(n[n > 1].index)]


def audit(manifest: pd.DataFrame, expected_balance: dict[str, dict[int, float]] | None = None,
          near_threshold: int | None = 4, hashes: bool = True, balance_tolerance: float = 0.01,
          progress: Callable[[int], None] | None = None) -> AuditReport:
    """Audit a manifest. ``expected_balance[split][label]`` is the share a recipe declared;
    ``near_threshold`` the Hamming distance under which two images count as near-duplicates
    (None skips the perceptual check). ``sha256``/``dhash`` columns are used when present."""
    from fbench.data.splits import groups_in_several_splits

    group_leaks = groups_in_several_splits(manifest)[["path", "group", "split"]]
    m = manifest
    dup = pd.DataFrame(columns=["path", "split", "key"])
    near = pd.DataFrame(columns=["path", "split", "other", "other_split", "distance"])
    notes = []
    if hashes:
        if "sha256" not in m.columns:
            m = m.assign(sha256=[file_sha256(resolve_path(m, p)) for p in m["path"]])
        pairs = _cross_split_pairs(m["sha256"], m["split"])
        dup = m.loc[pairs.index, ["path", "split", "sha256"]].rename(columns={"sha256": "key"})
        if near_threshold is not None:
            if "dhash" not in m.columns:
                m = m.assign(dhash=[difference_hash(resolve_path(m, p)) for p in m["path"]])
            near = _near_duplicates(m, near_threshold)
    else:
        notes.append("file hashes not checked")
    balance = _balance(manifest, expected_balance, balance_tolerance)
    return AuditReport(group_leaks.reset_index(drop=True), dup.reset_index(drop=True), near,
                       balance, notes, identities_in_several_splits(manifest))


def _near_duplicates(m: pd.DataFrame, threshold: int) -> pd.DataFrame:
    """Pairs in different splits whose dHash differ in at most ``threshold`` bits. Vectorised
    over one split against the others (popcount of XOR) so 50k images stay tractable."""
    hashes = m["dhash"].astype("uint64").to_numpy()
    splits = m["split"].to_numpy()
    cols = ["path", "split", "other", "other_split", "distance"]
    rows = []
    # Compare every non-train image with every image of another split; a val/eval pair is
    # reported once (from its lower index).
    for i in np.flatnonzero(splits != "train"):
        others = np.flatnonzero((splits != splits[i])
                                & ((splits == "train") | (np.arange(len(splits)) > i)))
        if len(others) == 0:
            continue
        x = np.bitwise_xor(hashes[others], hashes[i])
        dist = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(1)
        for j in np.flatnonzero(dist <= threshold):
            t = others[j]
            rows.append({"path": m["path"].iat[i], "split": splits[i],
                         "other": m["path"].iat[t], "other_split": splits[t],
                         "distance": int(dist[j])})
    return pd.DataFrame(rows, columns=cols)


def _balance(manifest: pd.DataFrame, expected: dict[str, dict[int, float]] | None,
             tolerance: float) -> pd.DataFrame:
    if not expected:
        return pd.DataFrame(columns=["split", "label", "expected", "actual", "ok"])
    rows = []
    for split, shares in expected.items():
        part = manifest[manifest["split"] == split]
        actual = part["label"].value_counts(normalize=True)
        for label, share in shares.items():
            got = float(actual.get(label, 0.0))
            rows.append({"split": split, "label": label, "expected": share, "actual": got,
                         "ok": abs(got - share) <= tolerance})
    return pd.DataFrame(rows)
