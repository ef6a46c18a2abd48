"""LRL's RGB-frequency attention module (RFAM): per-pixel attention that decides, at one
depth, how much of the fused feature comes from the RGB stream and how much from the
frequency stream, and hands the fused feature back to both streams."""

from __future__ import annotations

import torch
from torch import nn


class RGBFrequencyAttention(nn.Module):
    """``(rgb, freq)`` (each ``[B, C, h, w]``) → ``(rgb + fused, freq + fused, fused)``.

    The two maps are concatenated, a 1×1 conv (``2C → C``), batch norm, ReLU and a 3×3 conv
    (``C → 2``) give two logits per pixel; their softmax ``(a_rgb, a_freq)`` sums to one, so
    ``fused = a_rgb·rgb + a_freq·freq`` chooses between the modalities pixel by pixel. Adding it
    back (residual) lets each stream continue with what the other saw.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, 2, 3, padding=1),
        )
        self.channels = channels

    def forward(self, rgb: torch.Tensor,
                freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        weights = torch.softmax(self.attention(torch.cat([rgb, freq], dim=1)), dim=1)
        fused = weights[:, :1] * rgb + weights[:, 1:] * freq
        return rgb + fused, freq + fused, fused

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


__all__ = ["RGBFrequencyAttention"]
