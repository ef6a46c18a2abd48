"""The thesis's segmentation decoder (F3Net's Mix + Seg), reused by the multi-task detectors
(GraftNet-Seg, LRL): forgery-mask logits from a feature map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
