"""FAD, frequency-aware decomposition (F3Net §3.2): the image's full DCT is split into four
bands by fixed binary masks plus learnable offsets, each band is transformed back to the pixel
domain, and the four images are stacked (3 channels → 12)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fbench_frequency.dct import dct_2d, idct_2d

BANDS = ("low", "middle", "high", "all")

# The paper's low band is the first 1/16 of the spectrum (the triangle i + j <= N/sqrt(8)),
# the middle band reaches 1/8 (i + j <= N/2); 2.82 is the public code's sqrt(8).
_LOW_DIVISOR = 2.82


def band_edges(n: int) -> list[tuple[float, float]]:
    """Inclusive ``(start, end)`` limits on ``i + j`` of the four bands for an ``n × n`` DCT:
    low ``[0, ⌊n/2.82⌋]``, middle ``[⌊n/2.82⌋, ⌊n/2⌋]``, high ``[⌊n/2⌋, 2n]``, all ``[0, 2n]``.
    Neighbouring bands share their boundary diagonal, as in the thesis's code."""
    low = float(n // _LOW_DIVISOR)
    half = float(n // 2)
    return [(0.0, low), (low, half), (half, 2.0 * n), (0.0, 2.0 * n)]


def band_masks(height: int, width: int, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> torch.Tensor:
    """The four fixed binary masks ``[4, H, W]`` over DCT coefficients ``(i, j)``. For a
    non-square input the column index is scaled by ``H / W`` so the bands keep their share of
    the spectrum."""
    i = torch.arange(height, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(width, dtype=torch.float64).unsqueeze(0) * (height / width)
    s = i + j
    masks = [(s >= lo) & (s <= hi) for lo, hi in band_edges(height)]
    return torch.stack(masks).to(dtype=dtype, device=device)


class FADHead(nn.Module):
    """``[B, C, H, W]`` → ``[B, 4C, H, W]`` (band-major: low RGB, middle RGB, high RGB, all RGB).

    Each band's filter is ``base + (2·sigmoid(w) − 1)`` with ``w ~ N(0, init_std)`` learnable,
    one ``size × size`` map per band (4 · 224² = 200,704 parameters at the thesis's 224 px). At
    any other input size the fixed masks are rebuilt for that size and the learnable maps are
    resampled bilinearly, so one model runs at every size.

    The DCT runs in float32 even under autocast: the high band holds small coefficients.
    """

    # `fbench bench` times modules that declare a group: their share of a training step
    bench_group = "frequency: FAD"

    def __init__(self, size: int = 224, learnable: bool = True, init_std: float = 0.1) -> None:
        super().__init__()
        if size < 2:
            raise ValueError(f"FAD size must be >= 2, got {size}")
        self.size = int(size)
        # Derived from size: not stored in checkpoints.
        self.register_buffer("base", band_masks(self.size, self.size), persistent=False)
        if learnable:
            self.learnable = nn.Parameter(torch.randn(len(BANDS), self.size, self.size) * init_std)
        else:
            self.register_parameter("learnable", None)

    def filters(self, height: int, width: int) -> torch.Tensor:
        """The four effective filters ``[4, H, W]`` at a given input size."""
        if (height, width) == (self.size, self.size):
            base = self.base
        else:
            base = band_masks(height, width, dtype=self.base.dtype, device=self.base.device)
        if self.learnable is None:
            return base
        learnable = self.learnable.float()
        if learnable.shape[-2:] != (height, width):
            learnable = F.interpolate(learnable.unsqueeze(0), size=(height, width),
                                      mode="bilinear", align_corners=False).squeeze(0)
        return base + (2.0 * torch.sigmoid(learnable) - 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            freq = dct_2d(x.float())                        # [B, C, H, W]
            filt = self.filters(h, w)                       # [4, H, W]
            bands = freq.unsqueeze(1) * filt[None, :, None]  # [B, 4, C, H, W]
            return idct_2d(bands).reshape(b, len(BANDS) * c, h, w)

    def extra_repr(self) -> str:
        return f"size={self.size}, learnable={self.learnable is not None}"
