"""Built datasets: a recipe applied to a sources root, stored as a directory holding
``manifest.parquet`` (one row per image, with its split, SHA-256 and perceptual hash) and
``recipe.json`` (what was asked, what was found, what was built, the audit's verdict).

``fbench data build`` writes one; a dataset plugin's factory reads it back with
:func:`load_built_dataset`, and ``fbench run`` audits it before training.

Candidates may say more than the recipe builder reads: a group shared by several sources (the
same people in two FaceForensics++ methods) makes those sources split together, so the group
lands on one side for all of them; a ``fixed_split`` column (``train``/``eval``, "" for none)
pins groups to a side (official split files); ``attrs["fixed_splits"]`` and
``attrs["groups"]`` (how the groups were made) are recorded in the card.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from fbench import files as store
from fbench.data.recipes import Recipe
from fbench.errors import FbenchError

MANIFEST = "manifest.parquet"
CARD = "recipe.json"
CANDIDATE_COLUMNS = ("path", "label", "source", "group")
FIXED_SPLIT = "fixed_split"
# what a collect() may record in its candidates' attrs, copied into the card as is
CARD_ATTRS = ("fixed_splits", "groups")


def build_dataset(recipe: Recipe, root: str | Path, out: str | Path, seed: int = 0,
                  scale: float | None = None, val_fraction: float = 0.1,
                  progress: Callable[[str, int], Any] | None = None) -> dict[str, Any]:
    """Build ``recipe`` from the sources under ``root`` into ``out``; returns the card.

    Nothing is written unless the whole build succeeds (both files are renamed into place)."""
    from fbench import __version__
    from fbench.data.audit import audit, difference_hash, file_sha256
    from fbench.data.manifest import validate_manifest
    from fbench.data.splits import carve_validation

    root = Path(root).resolve()
    if not root.is_dir():
        raise FbenchError(f"sources root {root} does not exist.",
                          "point --root at the directory holding the prepared sources.")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FbenchError(f"--out {out} is a file.", "give a directory.")
    if recipe.collect is None:
        raise FbenchError(f"recipe {recipe.name!r} cannot collect sources (a plugin bug).")
    asked = recipe if scale is None else recipe.scaled(scale)
    candidates = recipe.collect(str(root))
    lacking = [c for c in CANDIDATE_COLUMNS if c not in candidates.columns]
    if lacking:
        raise FbenchError(f"recipe {recipe.name!r}: candidates lack {lacking} (a plugin bug).")
    found = candidates["source"].value_counts().to_dict()
    manifest = select_rows(asked, candidates, seed).drop(columns=[FIXED_SPLIT],
                                                         errors="ignore")
    manifest = carve_validation(manifest, val_fraction, seed)
    manifest["path"] = [p if os.path.isabs(p) else str(root / p) for p in manifest["path"]]
    if "mask" in manifest.columns:
        manifest["mask"] = [m if not m or os.path.isabs(m) else str(root / m)
                            for m in manifest["mask"].fillna("")]
    sha, dh = [], []
    for i, p in enumerate(manifest["path"]):
        try:
            sha.append(file_sha256(p))
            dh.append(difference_hash(p))
        except (OSError, ValueError, FbenchError) as exc:
            why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise FbenchError(f"image {p} cannot be read ({why}).",
                              "replace or remove it and build again.") from None
        if progress:
            progress("hashing", i + 1)
    manifest["sha256"] = sha
    manifest["dhash"] = pd.array(dh, dtype="uint64")
    manifest.attrs["name"] = recipe.name
    manifest = validate_manifest(manifest)
    report = audit(manifest, asked.expected_balance(), balance_tolerance=0.02)
    counts = manifest.groupby(["split", "source"]).size()
    card = {
        "recipe": recipe.name, "summary": recipe.summary, "seed": seed, "scale": scale,
        "val_fraction": val_fraction, "sources_root": str(root), "fbench": __version__,
        "asked": asked.counts, "found": {k: int(v) for k, v in found.items()},
        "built": {s: {src: int(n) for src, n in counts[s].items()}
                  for s in counts.index.get_level_values(0).unique()},
        "with_masks": recipe.with_masks, "legacy_order": recipe.legacy_order,
        "expected_balance": {s: {str(k): v for k, v in b.items()}
                             for s, b in asked.expected_balance().items()},
        "audit": {"ok": report.ok, **report.summary()},
        "split_together": sorted(_joint_sources(candidates)) if not asked.legacy_order else [],
        **{k: candidates.attrs[k] for k in CARD_ATTRS if candidates.attrs.get(k)},
    }
    out.mkdir(parents=True, exist_ok=True)
    store.write_parquet(out / MANIFEST, manifest)
    store.write_json(out / CARD, card)
    return card


def load_built_dataset(root: str | Path | None, recipe: str) -> pd.DataFrame:
    """Read a built dataset for a dataset factory; refuses a directory built from another
    recipe. The manifest carries ``attrs["audit"]`` so ``fbench run`` audits it."""
    if root is None:
        raise FbenchError(f"dataset {recipe!r} needs --data-root: the directory that "
                          f"`fbench data build {recipe} --out DIR` wrote.")
    root = Path(root)
    card_file, manifest_file = root / CARD, root / MANIFEST
    if not card_file.is_file() or not manifest_file.is_file():
        raise FbenchError(f"{root} holds no built dataset ({CARD} and {MANIFEST} missing).",
                          f"build it first: fbench data build {recipe} --root SOURCES "
                          f"--out {root}")
    card = store.read_json(card_file)
    if card.get("recipe") != recipe:
        raise FbenchError(f"{root} was built from recipe {card.get('recipe')!r}, not "
                          f"{recipe!r}.", f"use --dataset {card.get('recipe')} or rebuild.")
    manifest = pd.read_parquet(manifest_file)
    manifest.attrs.update({"name": recipe, "root": str(root), "card": card,
                           "audit": True,
                           "expected_balance": {s: {int(k): v for k, v in b.items()}
                                                for s, b in card["expected_balance"].items()}})
    if card.get("groups"):  # how the groups were made (inferred, unknown), for run warnings
        manifest.attrs["groups"] = card["groups"]
    return manifest


def select_rows(recipe: Recipe, candidates: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The recipe's rows with their split. Sources that share a group, or carry fixed splits,
    are split together (each group decided once for all of them); the others go through the
    recipe builder source by source. A legacy-order recipe is built as listed."""
    from fbench.data.recipes import build

    joint = _joint_sources(candidates)
    if recipe.legacy_order or not joint:
        return build(recipe, candidates, seed)
    together = candidates["source"].isin(joint)
    parts = []
    alone = _only_sources(recipe, set(candidates.loc[~together, "source"]))
    if alone.counts:
        parts.append(build(alone, candidates[~together], seed))
    rows = candidates[together]
    sides = _decide_sides(recipe, rows, seed)
    side_of_row = rows["group"].map(sides)
    for split in ("eval", "train"):
        part = _only_sources(recipe, joint, split)
        if part.counts:
            parts.append(build(part, rows[side_of_row == split], seed))
    return pd.concat(parts, ignore_index=True)


def _fixed(candidates: pd.DataFrame) -> pd.Series:
    if FIXED_SPLIT not in candidates.columns:
        return pd.Series("", index=candidates.index)
    return candidates[FIXED_SPLIT].fillna("").astype(str)


def _joint_sources(candidates: pd.DataFrame) -> set[str]:
    """Sources whose groups must be decided together: those sharing a group with another
    source, and those with fixed splits."""
    per_group = candidates.groupby("group")["source"].nunique()
    shared = candidates["group"].isin(per_group[per_group > 1].index)
    return set(candidates.loc[shared | (_fixed(candidates) != ""), "source"])


def _only_sources(recipe: Recipe, sources: set[str], split: str | None = None) -> Recipe:
    """``recipe`` restricted to ``sources`` (and to one split), named so a shortfall says
    which side of a joint split ran short."""
    import dataclasses

    counts = {s: {src: n for src, n in per.items() if src in sources}
              for s, per in recipe.counts.items() if split in (None, s)}
    counts = {s: per for s, per in counts.items() if per}
    together = "/".join(sorted(sources))
    name = recipe.name if split is None else f"{recipe.name} ({split} side of {together})"
    return dataclasses.replace(recipe, name=name, counts=counts)


def _decide_sides(recipe: Recipe, rows: pd.DataFrame, seed: int) -> dict[str, str]:
    """``{group: "train" | "eval"}`` for every group of ``rows``: fixed ones as given; the
    others walked in a seeded order, each going to eval while it still fills an eval count of
    one of its sources (eval first, as the recipe builder does), then to train."""
    import zlib

    import numpy as np

    fixed = _fixed(rows)
    bad = sorted(set(fixed) - {"", "train", "eval"})
    if bad:
        raise FbenchError(f"recipe {recipe.name!r}: fixed split {bad[0]!r} is not train or "
                          "eval (a plugin bug).")
    sides: dict[str, str] = {}
    pinned = fixed[fixed != ""]
    for group, values in pinned.groupby(rows.loc[pinned.index, "group"]):
        if values.nunique() > 1:
            raise FbenchError(f"recipe {recipe.name!r}: group {group!r} is fixed to several "
                              f"splits ({sorted(values.unique())}) (a plugin bug).")
        sides[group] = values.iloc[0]
    need = dict(recipe.counts.get("eval", {}))
    for src, n in rows[fixed == "eval"]["source"].value_counts().items():
        need[src] = need.get(src, 0) - int(n)
    free = rows[~rows["group"].isin(sides)]
    order = np.array(sorted(free["group"].unique()), dtype=object)
    np.random.default_rng([seed, zlib.crc32(b"joint-groups")]).shuffle(order)
    sizes = {g: df["source"].value_counts().to_dict() for g, df in free.groupby("group")}
    for group in order:
        useful = {src: min(max(need.get(src, 0), 0), n) for src, n in sizes[group].items()}
        sides[group] = "eval" if any(useful.values()) else "train"
        for src, n in useful.items():
            need[src] = need.get(src, 0) - n
    return sides
