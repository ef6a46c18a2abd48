"""The perturbation modules. Each maps a float batch in [0, 1], ``[B, 3, H, W]``, to a
perturbed batch of the same shape, dtype and device, in [0, 1].

A perturbation that moves pixels (``CentreCrop``) also offers ``map_masks`` and
``map_points``, so a robustness evaluation keeps forgery masks and landmarks aligned with the
image; the photometric ones leave geometry alone and do not define them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Perturbation(nn.Module):
    """Common shape: one ``level`` (the strength, in the unit of the subclass's option) and a
    ``seed``. No parameters and no buffers: nothing of it is stored in a checkpoint."""

    option = "level"

    def __init__(self, level: float, seed: int = 0) -> None:
        super().__init__()
        self.level = level
        self.seed = int(seed)

    def extra_repr(self) -> str:
        return f"{self.option}={self.level}, seed={self.seed}"

    @staticmethod
    def _check(x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"a perturbation takes a [B, 3, H, W] batch, got {tuple(x.shape)}")


class Jpeg(Perturbation):
    """Encode each image as JPEG at ``quality`` and decode it again: torchvision's batched
    ``jpeg`` (libjpeg, 4:2:0 chroma), whose pixels equal OpenCV's ``imencode``/``imdecode`` of
    the same batch (a test holds it to that)."""

    option = "quality"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        self._check(x)
        # JPEG works on 8-bit pixels: quantise as a saved image would be.
        pixels = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        out = TF.jpeg(pixels.cpu(), quality=int(self.level))
        return out.to(x.device, x.dtype) / 255.0


def gaussian_kernel(sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A normalised 1-D Gaussian of ``2·ceil(3σ)+1`` taps (99.7% of the mass)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype)


class GaussianBlur(Perturbation):
    """Separable Gaussian blur of standard deviation ``sigma`` pixels, edges replicated."""

    option = "sigma"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        if self.level <= 0:
            return x
        k = gaussian_kernel(float(self.level), torch.float32).to(x.device)
        r = (len(k) - 1) // 2
        # replicate (not reflect) padding: it accepts a kernel wider than a small image
        y = F.pad(x.float(), (r, r, r, r), mode="replicate")
        y = F.conv2d(y, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        y = F.conv2d(y, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
        return y.clamp(0, 1).to(x.dtype)


class GaussianNoise(Perturbation):
    """Additive Gaussian noise of standard deviation ``sigma`` (on [0, 1]), clipped.

    Drawn from a CPU generator seeded at construction, so one module fed the same batches in
    the same order adds the same noise on any device; ``reset()`` starts the sequence again."""

    option = "sigma"

    def __init__(self, level: float, seed: int = 0) -> None:
        super().__init__(level, seed)
        self.reset()

    def reset(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        if self.level <= 0:
            return x
        noise = torch.randn(x.shape, generator=self.generator, dtype=torch.float32)
        return (x.float() + float(self.level) * noise.to(x.device)).clamp(0, 1).to(x.dtype)


class ResizeDownUp(Perturbation):
    """Area down-sampling by ``factor`` then bilinear up-sampling to the original size."""

    option = "factor"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        h, w = x.shape[-2:]
        small = (max(1, round(h * self.level)), max(1, round(w * self.level)))
        if small == (h, w):
            return x
        y = F.interpolate(x.float(), size=small, mode="area")
        y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        return y.clamp(0, 1).to(x.dtype)


class CentreCrop(Perturbation):
    """Keep the centre ``fraction`` of each side, resized back to the original size."""

    option = "fraction"

    def _box(self, h: int, w: int) -> tuple[int, int, int, int]:
        ch, cw = max(1, round(h * self.level)), max(1, round(w * self.level))
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def _crop(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        h, w = x.shape[-2:]
        top, left, ch, cw = self._box(h, w)
        if (ch, cw) == (h, w):
            return x
        y = x[..., top:top + ch, left:left + cw].float()
        kwargs = {"align_corners": False} if mode == "bilinear" else {}
        return F.interpolate(y, size=(h, w), mode=mode, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self._crop(x, "bilinear").clamp(0, 1).to(x.dtype)

    def map_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` masks in {0, 1}, cropped like the images (kept binary)."""
        return (self._crop(masks, "bilinear") >= 0.5).to(masks.dtype)

    def map_points(self, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``[B, K, 2]`` (x, y) in [0, 1] of an image of ``size`` (H, W), as they lie in the
        cropped, resized image (points cropped away fall outside [0, 1])."""
        h, w = size
        top, left, ch, cw = self._box(h, w)
        out = points.clone()
        out[..., 0] = (points[..., 0] * w - left) / cw
        out[..., 1] = (points[..., 1] * h - top) / ch
        return out
