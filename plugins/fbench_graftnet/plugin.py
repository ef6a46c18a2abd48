"""Entry point of the GraftNet family (the thesis's "multi-model graft attention"): two
detectors and their ablation group. torch and timm are imported inside the factories, so
``fbench list`` stays fast.

Shared options: ``input_size`` (side of the learnable FAD filters; the harness passes the run's
size), ``token_grid`` (side of the attention's token grid, 28 as the thesis at any input size),
``heads``, ``residual`` (``false``, the default: the classifier sees the attention's output
alone, as the thesis's published code, the model behind its table; ``true``: the attention is
added to the FAD map, as the thesis's figure), ``lfs_order`` and ``dropout``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fbench import AblationSpec, DetectorSpec, hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from fbench_graftnet.model import GraftNet, GraftNetSeg

# The thesis trained both GraftNets as its F3Nets: Adam, lr 0.002, weight decay 1e-4, betas
# (0.9, 0.999), 30 epochs, 224 px, with `batch_size = 64 * gpu_nums`, gpu_nums = 3: one
# DataLoader batch of 192 that DataParallel splits (shenjiyuan123/Graduate_thesis,
# deepfake/configs/graftnet.py and graftnet_seg.py). fbench's defaults carry lr and batch;
# `--protocol thesis` the whole recipe.
_LR = 2e-3
_BATCH = 192
# measured: docs/lr-sweep.md (the rate with the best validation macro-F1; 200 images per
# class, 64 px, batch 32, fbench's convergence defaults): fbench's default rate.
_DEFAULT_LR = 3e-3


def thesis_protocol(needs_masks: bool) -> dict[str, Any]:
    """The run settings (and factory options) of the thesis's recipe."""
    recipe: dict[str, Any] = {"optimizer": "adam", "lr": _LR, "weight_decay": 1e-4,
                              "epochs": 30, "input_size": 224, "batch_size": _BATCH}
    if needs_masks:
        # deepfake/utilis.py dice_loss: one Dice over the whole flattened batch
        recipe["options"] = {"dice_reduction": "batch"}
    return recipe



def make_graftnet(num_classes: int = 3, input_size: int = 224, token_grid: int = 28,
                  heads: int = 8, residual: bool = False, lfs_order: str = "log-first",
                  dropout: float = 0.2) -> GraftNet:
    """FAD, LFS and RGB streams joined by graft attention (queries RGB, keys LFS, values
    FAD); its output (plus the FAD map if ``residual``), then Xception blocks → pool →
    dropout → FC."""
    from fbench_graftnet.model import GraftNet

    return GraftNet(num_classes=num_classes, input_size=input_size, token_grid=token_grid,
                    heads=heads, residual=residual, lfs_order=lfs_order, dropout=dropout)


def make_graftnet_seg(num_classes: int = 3, input_size: int = 224, token_grid: int = 28,
                      heads: int = 8, residual: bool = False, lfs_order: str = "log-first",
                      dropout: float = 0.2, ce_weight: float = 1.0, bce_weight: float = 1.0,
                      dice_weight: float = 1.0, dice_reduction: str = "image",
                      decoder_activation: str = "none") -> GraftNetSeg:
    """GraftNet plus a U-Net-like decoder to a forgery mask; loss = CE + BCE + Dice
    (weighted; mask terms on rows with a known mask)."""
    from fbench_graftnet.model import GraftNetSeg

    return GraftNetSeg(num_classes=num_classes, input_size=input_size, token_grid=token_grid,
                       heads=heads, residual=residual, lfs_order=lfs_order, dropout=dropout,
                       ce_weight=ce_weight, bce_weight=bce_weight, dice_weight=dice_weight,
                       dice_reduction=dice_reduction, decoder_activation=decoder_activation)


_DETECTORS = {
    # name: (factory, summary, needs masks)
    "graftnet": (make_graftnet, "GraftNet (thesis): FAD + LFS + RGB streams fused by graft "
                 "attention, 3.14 M params", False),
    "graftnet-seg": (make_graftnet_seg, "GraftNet + U-Net-like mask decoder (the thesis's "
                     "best multi-task model)", True),
}

# The thesis's final table (eval split of seg_2, its own protocol): a reference, not a result.
_THESIS_TABLE = {
    "graftnet": {"accuracy": 99.42, "macro_f1": 98.92, "params_m": 3.14},
    "graftnet-seg": {"accuracy": 99.76, "macro_f1": 99.69, "dice": 99.27, "params_m": 3.14},
}


@hookimpl
def register_detectors(register: Callable[[DetectorSpec], Any]) -> None:
    for name, (factory, summary, needs_masks) in _DETECTORS.items():
        register(DetectorSpec(
            name=name,
            summary=summary,
            factory=factory,
            family="graftnet",
            input_size=224,
            transform="raw",
            needs_masks=needs_masks,
            defaults={"lr": _DEFAULT_LR, "batch_size": _BATCH},
            traits={"backbone": "Xception blocks ×3", "head": "FAD + LFS + RGB",
                    "fusion": "graft attention",
                    "multi_task": "yes (mask)" if needs_masks else "no"},
            references={"thesis, seg_2": _THESIS_TABLE[name]},
            protocols={"thesis": thesis_protocol(needs_masks)},
            bench_groups=("frequency: FAD", "frequency: LFS"),
        ))


@hookimpl
def register_ablations(register: Callable[[AblationSpec], Any]) -> None:
    register(AblationSpec(
        family="graftnet",
        variants={"graft": "graftnet", "graft-seg": "graftnet-seg"},
        summary="the thesis's GraftNet, without and with the mask decoder",
    ))
