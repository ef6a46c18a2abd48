"""The attention-based layer of Dang et al. (CVPR 2020), "direct regression" variant, and the
three ways its map is trained (full, weak, none).

The layer regresses a one-channel map from a feature map, squashes it with a sigmoid, and
multiplies the features by it, so the rest of the network sees the regions the map selects.
The map is also a forgery-mask estimate, which is why fbench scores it with Dice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SUPERVISIONS = ("full", "weak", "none")
WEAK_FAKE_TARGET = 0.75
"""Target of a forged image's map maximum under weak supervision: high, short of 1 so that a
sigmoid need not saturate (our reading of the paper's weak constraint)."""


class RegressionMap(nn.Module):
    """Direct regression of the attention map: a 3×3 depthwise-separable convolution (the
    Xception layer type it sits among) from ``channels`` to 1, then a sigmoid.

    ``forward(x)`` returns ``(x · map, map)`` with ``map`` ``[B, 1, h, w]`` in (0, 1).
    The bias starts at 0, so the map starts near 0.5 everywhere: every region passes, at half
    strength, until the map learns to choose.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, 1, 1, bias=True)
        nn.init.zeros_(self.pointwise.bias)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attention = torch.sigmoid(self.pointwise(self.depthwise(x)))
        return x * attention, attention

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def full_map_loss(attention: torch.Tensor, masks: torch.Tensor,
                  has_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean L1 distance between the map, resized bilinearly to the masks' size, and the
    forgery masks, over the rows whose mask is known. Zero (still attached to the graph)
    when no row has one."""
    zero = attention.float().sum() * 0.0
    rows = has_mask if has_mask is not None else torch.ones(
        masks.shape[0], dtype=torch.bool, device=masks.device)
    if not bool(rows.any()):
        return zero
    att = attention[rows].float()
    target = masks[rows].float()
    if att.shape[-2:] != target.shape[-2:]:
        att = F.interpolate(att, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return (att - target).abs().mean()


def weak_map_loss(attention: torch.Tensor, labels: torch.Tensor,
                  fake_target: float = WEAK_FAKE_TARGET) -> torch.Tensor:
    """Image-level constraints only: the map's maximum is pulled (L1) to 0 for real images
    (label 0: nothing anywhere is forged) and to ``fake_target`` for forged ones (labels 1, 2:
    something somewhere is), averaged over the batch."""
    peak = attention.float().flatten(1).amax(dim=1)
    target = torch.where(labels == 0, torch.zeros_like(peak), torch.full_like(peak, fake_target))
    return (peak - target).abs().mean()


__all__ = ["RegressionMap", "SUPERVISIONS", "WEAK_FAKE_TARGET", "full_map_loss",
           "weak_map_loss"]
