"""A manifest is a pandas DataFrame, one row per image, validated once when loaded so the
engine never meets a bad row.

Columns: ``path`` (image file), ``label`` (0 real, 1 generated, 2 edited), ``source`` (where the
image came from, e.g. ``ffhq``), ``group`` (what must never straddle splits: a video, an
identity), ``split`` (``train``, ``val`` or ``eval``), ``mask`` (a mask image path, or empty),
optionally ``identities`` (ids a row shows, joined by ``;``: the audit fails when an id is on
both sides). ``attrs["groups"]`` says how groups were made when they are not recorded facts.
Relative paths are relative to ``manifest.attrs["root"]``.
"""

from __future__ import annotations

import os

import pandas as pd

from fbench.errors import FbenchError

REQUIRED_COLUMNS = ("path", "label", "source", "group", "split")
SPLITS = ("train", "val", "eval")
VALID_LABELS = (0, 1, 2)


def make_manifest(rows: list[dict] | pd.DataFrame, root: str | os.PathLike | None = None,
                  name: str = "dataset", image_size: int | None = None) -> pd.DataFrame:
    """Build and validate a manifest from rows (dicts with the columns above).

    ``image_size``: the side of every image, when they all share one; fbench then does not
    up-sample past it by default."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    if root is not None:
        df.attrs["root"] = str(root)
    if image_size is not None:
        df.attrs["image_size"] = int(image_size)
    df.attrs.setdefault("name", name)
    return validate_manifest(df)


def resolve_path(manifest: pd.DataFrame, path: str) -> str:
    if not path or os.path.isabs(path):
        return path
    root = manifest.attrs.get("root")
    return os.path.join(root, path) if root else path


def validate_manifest(df: pd.DataFrame, check_files: bool = True) -> pd.DataFrame:
    """Check columns, labels, splits and (optionally) that every file exists.

    Returns a normalised copy (label as int, mask as str, index 0..n-1). Raises
    :class:`FbenchError` naming the first offending rows and what to do.
    """
    name = df.attrs.get("name", "dataset")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise FbenchError(
            f"{name}: manifest lacks column(s) {', '.join(missing)} "
            f"(has: {', '.join(map(str, df.columns))}).",
            f"a manifest needs {', '.join(REQUIRED_COLUMNS)} (and optionally mask).",
        )
    if len(df) == 0:
        raise FbenchError(f"{name}: the manifest has no rows.", "check the dataset root.")
    out = df.reset_index(drop=True).copy()
    out.attrs = dict(df.attrs)

    labels = pd.to_numeric(out["label"].map(_label_value), errors="coerce")
    bad = out[labels.isna() | ~labels.isin(VALID_LABELS)]
    if len(bad):
        examples = ", ".join(f"{p} (label {lbl!r})" for p, lbl in
                             zip(bad["path"].head(3), bad["label"].head(3), strict=False))
        raise FbenchError(
            f"{name}: {len(bad)} row(s) have a label outside 0..2, e.g. {examples}.",
            "labels are 0 real, 1 generated, 2 edited (numbers, or those names).",
        )
    out["label"] = labels.astype("int64")

    bad_split = out[~out["split"].isin(SPLITS)]
    if len(bad_split):
        raise FbenchError(
            f"{name}: {len(bad_split)} row(s) have an unknown split, e.g. "
            f"{bad_split['split'].iloc[0]!r} for {bad_split['path'].iloc[0]}.",
            f"splits are {', '.join(SPLITS)}.",
        )
    for split in ("train", "eval"):
        if not (out["split"] == split).any():
            raise FbenchError(
                f"{name}: the {split!r} split is empty.",
                "a dataset needs train and eval rows (val is carved from train if absent).",
            )

    if "mask" not in out.columns:
        out["mask"] = ""
    out["mask"] = out["mask"].fillna("").astype(str)
    for col in ("path", "source", "group"):
        out[col] = out[col].astype(str)

    _check_inside_root(out, name)
    if check_files:
        for col in ("path", "mask"):
            paths = [resolve_path(out, p) for p in out[col]]
            absent = [p for p in paths if p and not os.path.isfile(p)]
            if absent:
                raise FbenchError(
                    f"{name}: {len(absent)} {col} file(s) do not exist, e.g. {absent[0]}.",
                    "point --data-root at the directory the manifest was built from.",
                )
    return out


_LABEL_NAMES = {"real": 0, "generated": 1, "edited": 2}


def _label_value(value: object) -> object:
    """Labels may be numbers, numeric strings ("1") or the label names ("edited")."""
    if isinstance(value, str):
        text = value.strip().lower()
        return _LABEL_NAMES.get(text, text)
    return value


def _check_inside_root(df: pd.DataFrame, name: str) -> None:
    """A relative path must stay inside the dataset root: ``../`` that climbs out of it is a
    manifest error (or a hostile one), never a file fbench reads. Checked lexically, so a
    dataset may still symlink its files from elsewhere."""
    root = df.attrs.get("root")
    if not root:
        return
    base = os.path.normpath(os.path.abspath(root))
    for col in ("path", "mask"):
        for p in df[col]:
            if not p or os.path.isabs(p):
                continue
            full = os.path.normpath(os.path.join(base, p))
            if os.path.commonpath([base, full]) != base:
                raise FbenchError(
                    f"{name}: {col} {p!r} points outside the dataset root {root}.",
                    "manifest paths are relative to the root and must stay inside it; "
                    "fix or rebuild the manifest.",
                )
