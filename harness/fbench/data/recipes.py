"""Recipes: a dataset's composition (how many images of each source in each split), built
deterministically from a seed, whole groups at a time.

A dataset plugin gathers *candidates* (one row per available image, with its source, label and
group) and a recipe says how many of each source go to each split. The builder never splits a
group across splits: it walks each source's groups in a seeded order, giving eval its share
first, then train; the last group a split takes may be cut short, and its remaining rows are
dropped rather than given to the other split.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fbench.errors import FbenchError
from fbench.plugins.specs import Recipe

if TYPE_CHECKING:
    import pandas as pd

# numpy and pandas are imported inside the functions: plugins import Recipe at module level,
# and `fbench list` must not pay for pandas.

SPLIT_ORDER = ("eval", "train")


def shortfall(recipe: Recipe, candidates: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Sources with fewer candidates than the recipe asks: ``{source: (asked, available)}``."""
    available = candidates["source"].value_counts()
    out = {}
    for src in recipe.sources():
        asked = sum(recipe.counts.get(split, {}).get(src, 0) for split in recipe.counts)
        have = int(available.get(src, 0))
        if have < asked:
            out[src] = (asked, have)
    return out


def build(recipe: Recipe, candidates: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Select and split ``candidates`` (columns: path, label, source, group; optional mask and
    others, kept) per ``recipe``. Deterministic for a seed. Raises when a source is short,
    naming it and suggesting ``--scale``."""
    import numpy as np
    import pandas as pd

    missing = shortfall(recipe, candidates)
    if missing:
        worst = min(have / asked for asked, have in missing.values())
        detail = "; ".join(f"{s}: asked {a}, found {h} (short by {a - h})"
                           for s, (a, h) in sorted(missing.items()))
        raise FbenchError(
            f"recipe {recipe.name!r} needs more images than the sources hold: {detail}.",
            f"add the missing images, or build a proportionally smaller version with "
            f"--scale {math.floor(worst * 1000) / 1000:g}.",
        )
    parts = []
    for src in recipe.sources():
        rows = candidates[candidates["source"] == src]
        rng = np.random.default_rng([seed, _stable_hash(src)])
        if recipe.legacy_order:
            ordered = rows  # as listed: the leak is the point
            take = [recipe.counts.get(split, {}).get(src, 0) for split in ("train", "eval")]
            parts.append(ordered.iloc[:take[0]].assign(split="train"))
            parts.append(ordered.iloc[take[0]:take[0] + take[1]].assign(split="eval"))
            continue
        groups = np.array(sorted(rows["group"].unique()), dtype=object)
        rng.shuffle(groups)
        by_group = {g: df for g, df in rows.groupby("group", sort=False)}
        queue = list(groups)
        for split in SPLIT_ORDER:
            need = recipe.counts.get(split, {}).get(src, 0)
            while need > 0:
                if not queue:
                    raise FbenchError(
                        f"recipe {recipe.name!r}: source {src!r} runs out of whole groups "
                        f"for {split} ({need} more images needed; frames of a group cut for "
                        "the other split cannot be reused without a leak).",
                        "add images, or build with a smaller --scale.")
                g = queue.pop(0)
                frames = by_group[g]
                if len(frames) > need:  # cut the group short; its other frames go nowhere
                    frames = frames.iloc[np.sort(rng.choice(len(frames), need, replace=False))]
                parts.append(frames.assign(split=split))
                need -= len(frames)
    out = pd.concat(parts, ignore_index=True)
    if not recipe.with_masks and "mask" in out.columns:
        out["mask"] = ""
    return out


def _stable_hash(text: str) -> int:
    # Python's hash() is salted per process; a seed must not be.
    import zlib

    return zlib.crc32(text.encode())
