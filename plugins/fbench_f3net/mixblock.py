"""MixBlock (F3Net §3.4): cross attention between the FAD and LFS streams at the same depth."""

from __future__ import annotations

import torch
from torch import nn


class MixBlock(nn.Module):
    """Exchange information between two ``[B, C, S, S]`` feature maps ``a`` (FAD) and ``b``
    (LFS).

    Per channel, 1×1-conv queries and keys of both streams give one ``S × S`` energy map
    ``Q_a K_aᵀ + Q_b K_bᵀ`` (the streams concatenated along a spatial axis before the product);
    its row-softmax is the attention map shared by both directions. Each stream then receives
    the other stream weighted by the attention map, scaled by ``2·sigmoid(γ) − 1`` (``γ``
    initialised to 0, so the block starts as the identity), through a depthwise 1×1 conv and
    batch norm, as a residual. (The public code's depthwise conv also has a bias, redundant
    before batch norm: 2 · C parameters fewer here.)

    The attention map multiplies the feature map element-wise, so maps must be square (fbench
    always feeds square images).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.query_a = nn.Conv2d(channels, channels, 1)
        self.query_b = nn.Conv2d(channels, channels, 1)
        self.key_a = nn.Conv2d(channels, channels, 1)
        self.key_b = nn.Conv2d(channels, channels, 1)
        # b → a and a → b mixing: per-channel (depthwise) 1×1 conv + BN on the attended input.
        # No conv bias: BN follows, and without it a zero scale makes the block the identity
        # in eval mode too.
        self.into_a = nn.Sequential(nn.Conv2d(channels, channels, 1, groups=channels, bias=False),
                                    nn.BatchNorm2d(channels))
        self.into_b = nn.Sequential(nn.Conv2d(channels, channels, 1, groups=channels, bias=False),
                                    nn.BatchNorm2d(channels))
        self.gamma_into_a = nn.Parameter(torch.zeros(1))
        self.gamma_into_b = nn.Parameter(torch.zeros(1))

    def attention(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The per-channel attention map ``[B, C, S, S]``."""
        n, c, h, w = a.shape
        queries = torch.cat([self.query_a(a).reshape(n * c, h, w),
                             self.query_b(b).reshape(n * c, h, w)], dim=2)      # [BC, S, 2S]
        keys = torch.cat([self.key_a(a).reshape(n * c, h, w).transpose(1, 2),
                          self.key_b(b).reshape(n * c, h, w).transpose(1, 2)], dim=1)  # [BC, 2S, S]
        energy = torch.bmm(queries, keys)                                          # [BC, S, S]
        return torch.softmax(energy.float(), dim=-1).to(a.dtype).reshape(n, c, h, h)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if a.shape != b.shape:
            raise ValueError(f"MixBlock needs equal shapes, got {tuple(a.shape)} and "
                             f"{tuple(b.shape)}")
        if a.shape[-1] != a.shape[-2]:
            raise ValueError(f"MixBlock needs square feature maps, got {tuple(a.shape[-2:])}")
        att = self.attention(a, b)
        scale_a = 2.0 * torch.sigmoid(self.gamma_into_a) - 1.0
        scale_b = 2.0 * torch.sigmoid(self.gamma_into_b) - 1.0
        out_a = a + self.into_a(b * att * scale_a)
        out_b = b + self.into_b(a * att * scale_b)
        return out_a, out_b
