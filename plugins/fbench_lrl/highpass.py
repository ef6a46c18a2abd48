"""LRL's frequency-stream input: the high frequencies of the grayscale image, back in the pixel
domain (DCT, zero the low coefficients, inverse DCT), as batched matrix products on the device.
"""

from __future__ import annotations

import torch
from torch import nn

from fbench import FbenchError

DEFAULT_CUTOFF = 0.355
"""Coefficients with ``i/H + j/W < cutoff`` are zeroed. 0.355 ≈ 1/2.82 is the upper edge of
F3Net's low band: the lowest 1/16 of the spectrum (the triangle ``i + j < 0.355·N`` holds
0.355²/2 ≈ 6.3 % of the coefficients)."""

# BT.601 luma weights, applied to the channels the model receives.
_LUMA = (0.299, 0.587, 0.114)


def highpass_mask(height: int, width: int, cutoff: float,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """``[height, width]`` float mask: 0 where ``i/height + j/width < cutoff``, 1 elsewhere
    (for a square image, the anti-diagonal band ``i + j < cutoff·N`` is removed)."""
    i = torch.arange(height, device=device, dtype=torch.float32).unsqueeze(1) / height
    j = torch.arange(width, device=device, dtype=torch.float32).unsqueeze(0) / width
    return ((i + j) >= cutoff).float()


class HighPassDCT(nn.Module):
    """``[B, C, H, W]`` → ``[B, 1, H, W]``: grayscale (BT.601 weights for 3 channels, the mean
    otherwise), orthonormal 2-D DCT-II ``D·X·Dᵀ``, coefficients below ``cutoff`` zeroed,
    inverse DCT ``Dᵀ·Y·D``. Runs in float32 under autocast (the small high-frequency
    coefficients are the signal); nothing in it is learned. Any input size; the DCT matrices
    are cached per size and device (:mod:`fbench_blocks.dct`)."""

    def __init__(self, cutoff: float = DEFAULT_CUTOFF) -> None:
        super().__init__()
        if not 0.0 <= cutoff < 2.0:
            raise FbenchError(f"highpass_cutoff must lie in [0, 2), got {cutoff}.",
                              "0 keeps every frequency; 0.355 removes F3Net's low band.")
        self.cutoff = float(cutoff)
        self.register_buffer("luma", torch.tensor(_LUMA).view(1, 3, 1, 1), persistent=False)

    def gray(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[1] == 3:
            return (x * self.luma.to(x.device)).sum(dim=1, keepdim=True)
        return x.mean(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from fbench_blocks.dct import dct_2d, idct_2d

        gray = self.gray(x)
        mask = highpass_mask(gray.shape[-2], gray.shape[-1], self.cutoff, gray.device)
        return idct_2d(dct_2d(gray) * mask)

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}"


__all__ = ["DEFAULT_CUTOFF", "HighPassDCT", "highpass_mask"]
