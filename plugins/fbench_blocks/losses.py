"""The mask losses of the multi-task detectors (F3Net's Mix + Seg, GraftNet-Seg, LRL, the
two-stream landmark model): soft Dice with its two reductions, BCE + Dice on the rows whose
mask is known, and the thesis's weighted multi-task loss."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

DICE_REDUCTIONS = ("image", "batch")


def dice_loss(probs: torch.Tensor, target: torch.Tensor, reduction: str = "image",
              smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss ``1 − (2|P∩T| + s) / (|P| + |T| + s)``.

    ``reduction="image"``: per image, then averaged (an all-zero mask of a real image counts
    as much as an edited face's mask); ``"batch"``: over the whole flattened batch, as the
    thesis computed it (``smooth`` 1e-4 there), which large all-one masks dominate."""
    if reduction not in DICE_REDUCTIONS:
        raise ValueError(f"dice reduction must be one of {DICE_REDUCTIONS}, got {reduction!r}")
    p, t = probs.float(), target.float()
    if reduction == "batch":
        p, t = p.reshape(1, -1), t.reshape(1, -1)
    else:
        p, t = p.flatten(1), t.flatten(1)
    inter = (p * t).sum(dim=1)
    dice = (2.0 * inter + smooth) / (p.sum(dim=1) + t.sum(dim=1) + smooth)
    return (1.0 - dice).mean()


def mask_losses(mask_logits: torch.Tensor, masks: torch.Tensor | None,
                has_mask: torch.Tensor | None, dice_reduction: str = "image",
                dice_smooth: float | None = None) -> dict[str, torch.Tensor]:
    """``{"bce": …, "dice": …}`` over the rows whose mask is known (``has_mask``); zeros (still
    attached to the graph) when no row has one. Logits are resized to the masks' size.
    ``dice_smooth`` defaults to 1 per image, and to the thesis's 1e-4 over the batch."""
    if dice_smooth is None:
        dice_smooth = 1e-4 if dice_reduction == "batch" else 1.0
    zero = mask_logits.float().sum() * 0.0
    if masks is None:
        return {"bce": zero, "dice": zero}
    rows = has_mask if has_mask is not None else torch.ones(
        masks.shape[0], dtype=torch.bool, device=masks.device)
    if not bool(rows.any()):
        return {"bce": zero, "dice": zero}
    logits = mask_logits[rows].float()
    target = masks[rows].float()
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear",
                               align_corners=False)
    # BCE from logits: stable, and allowed under autocast (plain BCE on probabilities is not).
    bce = F.binary_cross_entropy_with_logits(logits, target)
    dice = dice_loss(torch.sigmoid(logits), target, dice_reduction, dice_smooth)
    return {"bce": bce, "dice": dice}


def multitask_loss(output: Any, batch: Any, weights: dict[str, float],
                   dice_reduction: str = "image") -> dict[str, torch.Tensor]:
    """The thesis's multi-task loss, ``ce``, ``bce`` and ``dice`` each times its weight; the
    mask terms on the rows whose mask is known (``output.aux["mask_logits"]``)."""
    assert batch.labels is not None
    terms = {"ce": F.cross_entropy(output.logits.float(), batch.labels)}
    terms.update(mask_losses(output.aux["mask_logits"], batch.masks, batch.has_mask,
                             dice_reduction))
    return {k: v * weights[k] for k, v in terms.items()}
