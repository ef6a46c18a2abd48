"""Built datasets: a recipe applied to a sources root, stored as a directory holding
``manifest.parquet`` (one row per image, with its split, SHA-256 and perceptual hash) and
``recipe.json`` (what was asked, what was found, what was built, the audit's verdict).

``fbench data build`` writes one; a dataset plugin's factory reads it back with
:func:`load_built_dataset`, and ``fbench run`` audits it before training.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from fbench import store
from fbench.errors import FbenchError
from fbench.recipes import Recipe

MANIFEST = "manifest.parquet"
CARD = "recipe.json"
CANDIDATE_COLUMNS = ("path", "label", "source", "group")


def build_dataset(recipe: Recipe, root: str | Path, out: str | Path, seed: int = 0,
                  scale: float | None = None, val_fraction: float = 0.1,
                  progress: Callable[[str, int], Any] | None = None) -> dict[str, Any]:
    """Build ``recipe`` from the sources under ``root`` into ``out``; returns the card.

    Nothing is written unless the whole build succeeds (both files are renamed into place)."""
    from fbench import __version__
    from fbench.audit import audit, difference_hash, file_sha256
    from fbench.manifest import validate_manifest
    from fbench.recipes import build
    from fbench.splits import carve_validation

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
    manifest = build(asked, candidates, seed)
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
        except (OSError, ValueError):
            raise FbenchError(f"image {p} cannot be read.",
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
    return manifest
