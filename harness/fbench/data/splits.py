"""Grouped splitting: a group (a video, a source identity) never straddles two splits."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fbench.errors import FbenchError


def groups_in_several_splits(manifest: pd.DataFrame) -> pd.DataFrame:
    """Rows of groups that appear in more than one split (empty when the split is clean)."""
    n_splits = manifest.groupby("group")["split"].nunique()
    leaking = n_splits[n_splits > 1].index
    return manifest[manifest["group"].isin(leaking)]


def assert_grouped(manifest: pd.DataFrame) -> None:
    leak = groups_in_several_splits(manifest)
    if len(leak):
        groups = leak["group"].unique()
        example = sorted(leak[leak["group"] == groups[0]]["split"].unique())
        raise FbenchError(
            f"{manifest.attrs.get('name', 'dataset')}: {len(groups)} group(s) appear in more "
            f"than one split (e.g. {groups[0]!r}: {example}); "
            "frames of one video or one identity would leak between train and eval.",
            "rebuild the dataset with grouped splits.",
        )


def carve_validation(manifest: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """Move about ``fraction`` of the train rows of each label to ``val``, whole groups at a
    time, chosen deterministically from ``seed``. A manifest that already has ``val`` rows is
    returned unchanged. Model selection then never looks at ``eval``."""
    if (manifest["split"] == "val").any() or fraction <= 0:
        return manifest
    if not 0 < fraction < 1:
        raise FbenchError(f"validation fraction must be in (0, 1), got {fraction}.")
    out = manifest.copy()
    train = out[out["split"] == "train"]
    rng = np.random.default_rng(seed)
    # A group's label for stratification: its most common label.
    group_label = train.groupby("group")["label"].agg(lambda s: s.value_counts().index[0])
    group_size = train.groupby("group").size()
    val_groups: list[str] = []
    for label in sorted(group_label.unique()):
        groups = np.array(sorted(group_label[group_label == label].index))
        if len(groups) < 2:
            continue  # cannot carve from a single group without emptying train of it
        rng.shuffle(groups)
        target = fraction * group_size[groups].sum()
        taken = 0
        for g in groups[:-1]:  # keep at least one group of each label in train
            if taken >= target:
                break
            val_groups.append(g)
            taken += group_size[g]
    out.loc[(out["split"] == "train") & out["group"].isin(val_groups), "split"] = "val"
    if not (out["split"] == "val").any():
        raise FbenchError("could not carve a validation split: too few groups in train.",
                          "add data, or provide val rows in the manifest.")
    return out
