"""Entry point of the thesis datasets: recipes ``1``-``4`` and ``seg_2`` for `fbench data
build`, the datasets that load what was built (``thesis-1`` ... ``thesis-4``, ``seg_2``,
``thesis-lists``), and the preparation commands under `fbench data`.

Nothing heavy here (every fbench start imports this module): pandas, OpenCV and mediapipe load
inside the commands and factories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fbench import DatasetSpec, FbenchError, Recipe, hookimpl

if TYPE_CHECKING:  # pragma: no cover
    import click
    import pandas as pd

# dataset name -> the recipe its directory must have been built from
BUILT_DATASETS = {"thesis-1": "1", "thesis-2": "2", "thesis-3": "3", "thesis-4": "4",
                  "seg_2": "seg_2"}
LISTS_DATASET = "thesis-lists"


def _built_loader(dataset: str, recipe: str) -> Callable[..., pd.DataFrame]:
    def load(root: str | None = None) -> pd.DataFrame:
        """Read a directory written by `fbench data build <recipe> --out DIR`."""
        from fbench import load_built_dataset, read_json

        # The core names a mismatched directory by its recipe; say which *dataset* fits.
        card = Path(root) / "recipe.json" if root is not None else None
        if card is not None and card.is_file():
            built = read_json(card).get("recipe")
            if built != recipe:
                names = {r: d for d, r in BUILT_DATASETS.items()} | {LISTS_DATASET: LISTS_DATASET}
                fits = names.get(built)
                raise FbenchError(
                    f"{root} was built from recipe {built!r}, not {recipe!r} (dataset "
                    f"{dataset!r}).",
                    f"use --dataset {fits}" if fits else
                    f"build it: fbench data build {recipe} --root SOURCES --out {root}")
        return load_built_dataset(root, recipe=recipe)

    load.__name__ = f"load_{dataset.replace('-', '_')}"
    return load


def load_thesis_lists(root: str | None = None) -> pd.DataFrame:
    """Read a directory written by `fbench data import-lists`."""
    from fbench import load_built_dataset

    how = "`fbench data import-lists TRAIN EVAL --out DIR`"
    if root is None:
        raise FbenchError(f"dataset {LISTS_DATASET!r} needs --data-root: the directory that "
                          f"{how} wrote.")
    if not (Path(root) / "recipe.json").is_file():  # the core's hint would say `data build`
        raise FbenchError(f"{root} holds no imported split lists (no recipe.json).",
                          f"import them first: {how.replace('DIR', str(root))}.")
    return load_built_dataset(root, recipe=LISTS_DATASET)


@hookimpl
def register_recipes(register: Callable[[Recipe], Any]) -> None:
    from fbench_thesis.recipes import RECIPES

    for recipe in RECIPES:
        register(recipe)


@hookimpl
def register_datasets(register: Callable[[DatasetSpec], Any]) -> None:
    for dataset, recipe in BUILT_DATASETS.items():
        masks = recipe == "seg_2"
        register(DatasetSpec(
            name=dataset,
            summary=f"thesis recipe {recipe}, built with `fbench data build {recipe}`"
                    + (" (with forgery masks)" if masks else "")
                    + (" - leaky on purpose" if recipe == "3" else ""),
            factory=_built_loader(dataset, recipe), labels=(0, 1, 2), has_masks=masks))
    register(DatasetSpec(
        name=LISTS_DATASET,
        summary="the thesis's own split lists, via `fbench data import-lists` (masks when the "
                "lists have them)",
        factory=load_thesis_lists, labels=(0, 1, 2), has_masks=True))


@hookimpl
def register_commands(cli: click.Group) -> None:
    from fbench_thesis.commands import add_commands

    add_commands(cli)
