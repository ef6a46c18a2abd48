"""A manifest is a pandas DataFrame, one row per image, validated once when loaded so the
engine never meets a bad row.

Columns: ``path`` (image file), ``label`` (0 real, 1 generated, 2 edited), ``source`` (where the
image came from, e.g. ``ffhq``), ``group`` (what must never straddle splits: a video, an
identity), ``split`` (``train``, ``val`` or ``eval``), ``mask`` (a mask image path, or empty),
optionally ``identities`` (ids a row shows, joined by ``;``: the audit fails when an id is on
both sides). ``attrs["groups"]`` says how groups were made when they are not recorded facts.
Relative paths are relative to ``manifest.attrs["root"]``; every path, relative or absolute,
must lie inside the dataset's roots (:func:`dataset_roots`) unless the manifest was made with
``allow_outside_root``.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings

import pandas as pd

from fbench.errors import FbenchError

REQUIRED_COLUMNS = ("path", "label", "source", "group", "split")
SPLITS = ("train", "val", "eval")
VALID_LABELS = (0, 1, 2)
LABEL_NAMES = {"real": 0, "generated": 1, "edited": 2}


def make_manifest(rows: list[dict] | pd.DataFrame, root: str | os.PathLike | None = None,
                  name: str = "dataset", image_size: int | None = None, *,
                  roots: list[str | os.PathLike] | None = None,
                  allow_outside_root: bool = False) -> pd.DataFrame:
    """Build and validate a manifest from rows (dicts with the columns above).

    ``image_size``: the side of every image, when they all share one; fbench then does not
    up-sample past it by default. ``roots``: further directories the files lie in, besides
    ``root`` (a dataset whose files live beside its root, not under it); recorded in
    ``attrs["roots"]``. ``allow_outside_root``: accept files anywhere (see
    :func:`validate_manifest`)."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    if root is not None:
        df.attrs["root"] = str(root)
    if roots:
        df.attrs["roots"] = [os.path.abspath(r) for r in roots]
    if image_size is not None:
        df.attrs["image_size"] = int(image_size)
    df.attrs.setdefault("name", name)
    return validate_manifest(df, allow_outside_root=allow_outside_root)


def resolve_path(manifest: pd.DataFrame, path: str) -> str:
    if not path or os.path.isabs(path):
        return path
    root = manifest.attrs.get("root")
    return os.path.join(root, path) if root else path


def parse_label(value: object) -> int | None:
    """A label as 0, 1 or 2, or None when ``value`` is none of them. Accepted: integers,
    whole floats (``1.0``), numeric strings (``"1"``) and the names ``real``, ``generated``,
    ``edited`` (any case, surrounding spaces ignored). A boolean is not a label (``True``
    would otherwise read as 1). The one label parser of manifests and imported lists."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in LABEL_NAMES:
            return LABEL_NAMES[text]
        try:
            value = float(text)
        except ValueError:
            return None
    # numpy's bool is no numbers.Real; Python's is, and is refused by name
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if not isinstance(value, numbers.Integral) and not (
            math.isfinite(value) and float(value).is_integer()):
        return None
    return int(value) if int(value) in VALID_LABELS else None


def dataset_roots(manifest: pd.DataFrame) -> list[str]:
    """The directories a manifest's files may lie in (absolute, normalised): its root, the
    ``attrs["roots"]`` its maker recorded, and for a dataset read back from a built directory
    the folders its card says the files were found in (``sources_root`` of ``fbench data
    build``, the targets of an import's ``prefix_map``). Empty when the manifest names none:
    then there is nothing to hold its paths to."""
    attrs = manifest.attrs
    found = [attrs.get("root"), *(attrs.get("roots") or [])]
    card = attrs.get("card")
    if isinstance(card, dict):
        found.append(card.get("sources_root"))
        found += [m[1] for m in card.get("prefix_map") or []
                  if isinstance(m, list | tuple) and len(m) == 2]
    roots: list[str] = []
    for r in found:
        if isinstance(r, str | os.PathLike) and str(r):
            full = os.path.normpath(os.path.abspath(r))
            if full not in roots:
                roots.append(full)
    return roots


def validate_manifest(df: pd.DataFrame, check_files: bool = True,
                      allow_outside_root: bool = False) -> pd.DataFrame:
    """Check columns, labels, splits, that paths stay inside the dataset's roots and
    (optionally) that every file exists.

    Returns a normalised copy (label as int, mask as str, index 0..n-1). Raises
    :class:`FbenchError` naming the first offending rows and what to do.

    Paths: every ``path`` and ``mask``, relative or absolute, must resolve (lexically, so a
    dataset may still symlink its files from elsewhere) inside one of :func:`dataset_roots`;
    a ``../`` that climbs out or an absolute path elsewhere is a broken or hostile manifest,
    never a file fbench reads. ``allow_outside_root=True`` accepts them and is recorded in
    ``attrs["allow_outside_root"]``, so the manifest passes when validated again.

    Duplicates: rows with the same path in the same split are dropped (the first kept) with a
    warning naming the count and the first examples, and counted in
    ``attrs["duplicates_dropped"]``; training on one image twice weighs it double and counts
    it twice in the eval metrics. Duplicates that disagree on the label are refused. The same
    path in two splits is kept: that is a leak, for the audit to report.
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

    out["label"] = _labels(out, name)

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

    if allow_outside_root:
        out.attrs["allow_outside_root"] = True
    full = _full_paths(out, "path")
    if not out.attrs.get("allow_outside_root"):
        _check_inside_roots(out, name, {"path": full, "mask": _full_paths(out, "mask")})
    out = _drop_duplicates(out, name, full)
    if check_files:
        _check_files(out, name)
    return out


def _labels(df: pd.DataFrame, name: str) -> pd.Series:
    values = df["label"]
    if pd.api.types.is_integer_dtype(values) and not pd.api.types.is_bool_dtype(values):
        labels = values.where(values.isin(VALID_LABELS))  # the common case, vectorised
    else:
        labels = pd.Series([parse_label(v) for v in values.tolist()], index=df.index,
                           dtype="object")
    bad = df[labels.isna()]
    if len(bad):
        examples = ", ".join(f"{p} (label {lbl!r})" for p, lbl in
                             zip(bad["path"].head(3), bad["label"].head(3), strict=False))
        raise FbenchError(
            f"{name}: {len(bad)} row(s) have a label outside 0..2, e.g. {examples}.",
            "labels are 0 real, 1 generated, 2 edited (numbers, or those names).",
        )
    return labels.astype("int64")


def _check_files(df: pd.DataFrame, name: str) -> None:
    for col in ("path", "mask"):
        paths = [resolve_path(df, p) for p in df[col]]
        absent = [p for p in paths if p and not os.path.isfile(p)]
        if absent:
            raise FbenchError(
                f"{name}: {len(absent)} {col} file(s) do not exist, e.g. {absent[0]}.",
                "point --data-root at the directory the manifest was built from.",
            )


def _full_paths(df: pd.DataFrame, col: str) -> list[str]:
    """``col`` as absolute, normalised paths ("" stays ""); relative ones are relative to the
    root. Normalising only the paths that need it keeps 100k rows fast."""
    base = os.path.abspath(df.attrs.get("root") or ".")
    out = []
    for p in df[col].tolist():  # a list: iterating an Arrow-backed column is slow
        full = p if not p or os.path.isabs(p) else os.path.join(base, p)
        out.append(os.path.normpath(full) if "/." in full or "//" in full else full)
    return out


def _check_inside_roots(df: pd.DataFrame, name: str, full: dict[str, list[str]]) -> None:
    """Every path, relative (to the root) or absolute, inside one of the dataset's roots."""
    roots = dataset_roots(df)
    if not roots:
        return
    prefixes = tuple(r.rstrip(os.sep) + os.sep for r in roots)
    for col in ("path", "mask"):
        outside = [p for p, f in zip(df[col].tolist(), full[col], strict=True)
                   if p and not f.startswith(prefixes)]
        if outside:
            raise FbenchError(
                f"{name}: {len(outside)} {col}(s) point outside the dataset root "
                f"{' or '.join(roots)}, e.g. {outside[0]!r}.",
                "manifest paths must stay inside the dataset root; fix or rebuild the "
                "manifest (or, if these files are meant, make it with "
                "allow_outside_root=True).",
            )


def _drop_duplicates(df: pd.DataFrame, name: str, full: list[str]) -> pd.DataFrame:
    """Rows with the same file (resolved) in the same split: refused when their labels
    disagree, else all but the first dropped, warned about and counted."""
    rows = pd.DataFrame({"key": full, "split": df["split"].to_numpy(),
                         "label": df["label"].to_numpy()})
    extra = rows.duplicated(["key", "split"], keep="first").to_numpy()
    if not extra.any():
        return df
    twice = rows[rows.duplicated(["key", "split"], keep=False)]
    labels = twice.groupby(["key", "split"])["label"].agg(["nunique", "size"])
    conflict = labels[labels["nunique"] > 1]
    if len(conflict):
        (path, split), size = conflict.index[0], int(conflict["size"].iloc[0])
        raise FbenchError(f"{name}: {path} is listed {size} times in the {split!r} split with "
                          "different labels.", "an image has one label: fix or remove the "
                          "wrong rows.")
    n = int(extra.sum())
    firsts = list(dict.fromkeys(zip(df["path"][extra], df["split"][extra], strict=True)))[:3]
    warnings.warn(f"{name}: {n} duplicate row(s) dropped (the same file twice in one split), "
                  f"e.g. {', '.join(f'{p} ({s})' for p, s in firsts)}.", stacklevel=4)
    out = df[~extra].reset_index(drop=True)
    out.attrs = dict(df.attrs)
    out.attrs["duplicates_dropped"] = int(df.attrs.get("duplicates_dropped", 0)) + n
    return out
