"""The thesis's five dataset recipes (counts per source per split, from its lab notebook and
its published split lists; see THESIS.md). fbench builds them with grouped splits; recipe ``3``
keeps the thesis's leaky listing order on purpose, so the leak can be shown and audited."""

from __future__ import annotations

import functools

from fbench import Recipe
from fbench_thesis.sources import GANS, LABELS, collect


def _counts(ffhq: tuple[int, int], ffpp: dict[str, tuple[int, int]]) -> dict:
    """``{split: {source: n}}`` from ``(train, eval)`` pairs; every GAN is 8,000 / 2,000."""
    per = {"ffhq": ffhq, **dict.fromkeys(GANS, (8000, 2000)), **ffpp}
    return {split: {src: n[i] for src, n in per.items()}
            for i, split in enumerate(("train", "eval"))}


def _recipe(name: str, summary: str, counts: dict, notes: str, legacy_order: bool = False,
            with_masks: bool = False) -> Recipe:
    sources = tuple(sorted({s for per in counts.values() for s in per}))
    return Recipe(
        name=name, summary=summary, counts=counts,
        collect=functools.partial(collect, sources=sources, legacy_order=legacy_order),
        with_masks=with_masks, legacy_order=legacy_order, notes=notes,
        extra={"labels": {s: LABELS[s] for s in sources}})


_EVERY_20 = ("The thesis sampled every 20th frame of each FaceForensics++ video for this "
             "recipe (prepare ffpp --every 20). ")
_PER_30 = ("The thesis sampled 30 frames per FaceForensics++ video for this recipe "
           "(prepare ffpp --per-video 30). ")
_EVAL_TOTAL = ("The notebook's eval total ({total}) is 3 more than its per-source counts add "
               "up to; fbench builds the per-source counts.")

RECIPES: tuple[Recipe, ...] = (
    _recipe("1", "FFHQ 5k, 3 GANs 8k each, DFD/F2F/FS frames",
            _counts((5000, 2000), {"deepfakedetection": (100, 46), "face2face": (800, 183),
                                   "faceswap": (600, 184)}),
            _EVERY_20 + _EVAL_TOTAL.format(total="8,416")),
    _recipe("2", "FFHQ 15k, 3 GANs 8k each, DFD/F2F/FS frames",
            _counts((15000, 5000), {"deepfakedetection": (100, 46), "face2face": (800, 183),
                                    "faceswap": (600, 184)}),
            _EVERY_20 + _EVAL_TOTAL.format(total="11,416")),
    _recipe("3", "FFHQ 15k, 3 GANs, F2F/FS; LEAKY listing order, on purpose",
            _counts((15000, 5000), {"face2face": (800, 323), "faceswap": (800, 363)}),
            _PER_30 + "Built in the thesis's listing order (frames numbered by one counter, "
            "sorted as strings), so frames of one video land in train and eval: the build's "
            "audit fails it and `fbench run` refuses it (groups in several splits).",
            legacy_order=True),
    _recipe("4", "FFHQ 15k, 3 GANs, F2F/FS frames grouped by video",
            _counts((15000, 5000), {"face2face": (794, 329), "faceswap": (785, 378)}),
            _PER_30 + "The notebook says eval F2F 328 / FS 377; the published lists hold "
            "329 / 378, which fbench uses."),
    _recipe("seg_2", "recipe 4 with forgery masks (the thesis's final table)",
            _counts((15000, 5000), {"face2face": (794, 329), "faceswap": (785, 378)}),
            _PER_30 + "Masks: the per-frame mask for edited images; empty for real and "
            "generated images, which the loader reads as all-zero and all-one (the thesis's "
            "real.png / fake.png).", with_masks=True),
)
