"""GraftNet-Seg's U-Net-like mask decoder: up from the fused map, one skip connection per
doubling, taken from the streams at that resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("none", "relu")


class GraftDecoder(nn.Module):
    """Mask logits from the fused ``[B, in_channels, h, w]`` map and ``skips``, the deepest
    first.

    Per entry of ``widths`` (one per skip): a 2 × 2 stride-2 transposed conv to ``width``
    channels (doubling the resolution), the skip map through a 1 × 1 conv to ``width``
    channels, the two concatenated (skip first) and fused by a 1 × 1 conv ``2·width → width``
    and a 3 × 3 conv ``width → width``. A final 1 × 1 conv gives one channel of logits.

    The thesis's skips at 224 px are the FAD stream after its first Xception block (32 × 56²),
    the LFS head's output (6 × 112²) and the input image (3 × 224²), with widths 16, 8, 4
    (about 7 k parameters). ``activation="none"`` is the thesis's decoder, which has no
    non-linearity between its layers; ``"relu"`` adds one after each up-sampling and fusion.
    Where an up-sampled map and its skip differ by rounding (odd input sizes) the up-sampled
    map is resized to the skip; the logits are resized to ``size`` if given.
    """

    def __init__(self, in_channels: int = 32, skip_channels: tuple[int, ...] = (32, 6, 3),
                 widths: tuple[int, ...] = (16, 8, 4), activation: str = "none") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"decoder activation must be one of {ACTIVATIONS}, "
                             f"got {activation!r}")
        if len(skip_channels) != len(widths):
            raise ValueError("one width per skip connection")
        self.activation = activation
        self.up = nn.ModuleList()
        self.skip = nn.ModuleList()
        self.fuse = nn.ModuleList()
        prev = in_channels
        for skip, width in zip(skip_channels, widths, strict=True):
            self.up.append(nn.ConvTranspose2d(prev, width, 2, stride=2))
            self.skip.append(nn.Conv2d(skip, width, 1))
            self.fuse.append(nn.Sequential(nn.Conv2d(2 * width, width, 1),
                                           nn.Conv2d(width, width, 3, padding=1)))
            prev = width
        self.final = nn.Conv2d(prev, 1, 1)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) if self.activation == "relu" else x

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor],
                size: tuple[int, int] | None = None) -> torch.Tensor:
        if len(skips) != len(self.up):
            raise ValueError(f"the decoder takes {len(self.up)} skip maps, got {len(skips)}")
        for up, proj, fuse, skip in zip(self.up, self.skip, self.fuse, skips, strict=True):
            x = self._act(up(x))
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self._act(fuse(torch.cat([proj(skip), x], dim=1)))
        logits = self.final(x)
        if size is not None and tuple(logits.shape[-2:]) != tuple(size):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits
