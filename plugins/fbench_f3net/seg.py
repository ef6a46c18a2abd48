"""The thesis's segmentation decoder (Mix + Seg) and the mask losses that train it."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DICE_REDUCTIONS = ("image", "batch")


class SegDecoder(nn.Module):
    """Forgery-mask logits from a feature map: 1×1 conv ``in_channels → mid_channels``, one
    stride-2 2×2 transposed conv per entry of ``widths`` (each doubles the resolution: 14 →
    224 with the default four), 1×1 conv → 1.

    ``activation=None`` is the thesis's decoder, which has no non-linearity between the
    layers (the whole decoder is affine before the sigmoid); ``"relu"`` inserts ReLUs.
    ``forward(x, size)`` resizes the logits bilinearly to ``size`` when the input size is not
    16 × the feature size. Apply ``sigmoid`` for the mask.
    """

    def __init__(self, in_channels: int = 1456, mid_channels: int = 728,
                 widths: tuple[int, ...] = (256, 128, 64, 32),
                 activation: str | None = None) -> None:
        super().__init__()
        if activation not in (None, "none", "relu"):
            raise ValueError(f"decoder activation must be None or 'relu', got {activation!r}")
        act = activation == "relu"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, mid_channels, 1)]
        prev = mid_channels
        for width in widths:
            if act:
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.ConvTranspose2d(prev, width, 2, stride=2))
            prev = width
        if act:
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(prev, 1, 1))
        self.layers = nn.Sequential(*layers)
        self.upsampling = 2 ** len(widths)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        logits = self.layers(x)
        if size is not None and tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits


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
