"""F3Net's two frequency heads (Qian et al., ECCV 2020), shared by every detector that taps
frequency content (F3Net, GraftNet):

- FAD, frequency-aware decomposition (§3.2): the image's full DCT is split into four bands by
  fixed binary masks plus learnable offsets, each band is transformed back to the pixel domain,
  and the four images are stacked (3 channels → 12);
- LFS, local frequency statistics (§3.3): a sliding-window DCT of the grayscale image, and per
  window ``M`` band statistics through fixed + learnable frequency filters, giving an
  ``M``-channel map at (about) half resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fbench_blocks.dct import dct_2d, dct_basis_2d, idct_2d, sliding_dct_2d

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


# ------------------------------------------------------------------------------------------ LFS

LFS_ORDERS = ("paper", "log-first")
_LUMA = (0.299, 0.587, 0.114)


def lfs_band_masks(window: int, bands: int) -> torch.Tensor:
    """``[M, S, S]`` binary masks splitting ``i + j ∈ [0, 2S]`` into ``M`` equal, inclusive
    ranges ``[2S·m/M, 2S·(m+1)/M]`` (as the public F3Net code does)."""
    i = torch.arange(window, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(window, dtype=torch.float64).unsqueeze(0)
    s = i + j
    step = 2.0 * window / bands
    return torch.stack([((s >= step * m) & (s <= step * (m + 1))) for m in range(bands)]).float()


class LFSHead(nn.Module):
    """``[B, 3, H, W]`` (normalised RGB) → ``[B, M, H', W']`` with ``H' = (H + 2p − S) // s + 1``
    (112 at 224 px with the defaults ``S = 10``, ``s = 2``, ``p = 4``).

    Per window ``P`` and band ``m``, with ``h_m = base_m + (2·sigmoid(w_m) − 1)`` and ``n_m`` the
    size of ``base_m``:

    - ``order="paper"``: ``log10(Σ |DCT(P) ⊙ h_m| / n_m)`` — the paper's "L1 norm, then log";
    - ``order="log-first"``: ``Σ (log10 |DCT(P)| ⊙ h_m) / n_m`` — the public re-implementation
      the thesis trained.

    ``rescale`` maps the grayscale value from the [-1, 1] range the public code assumed to
    [0, 255] (``(g + 1) · 122.5``); it applies the same affine map to ImageNet-normalised input,
    as the thesis did. Runs in float32 even under autocast.
    """

    # `fbench bench` times modules that declare a group: their share of a training step
    bench_group = "frequency: LFS"

    def __init__(self, window: int = 10, stride: int = 2, padding: int = 4, bands: int = 6,
                 order: str = "paper", learnable: bool = True, init_std: float = 0.1,
                 rescale: bool = True, eps: float = 1e-15) -> None:
        super().__init__()
        if order not in LFS_ORDERS:
            raise ValueError(f"LFS order must be one of {LFS_ORDERS}, got {order!r}")
        self.window, self.stride, self.padding, self.bands = window, stride, padding, bands
        self.order = order
        self.rescale = rescale
        self.eps = eps
        masks = lfs_band_masks(window, bands)
        if bool((masks.sum(dim=(1, 2)) == 0).any()):
            raise ValueError(f"{bands} bands leave an empty band for a {window}-px window")
        # Constants derived from the options: kept out of checkpoints.
        self.register_buffer("basis", dct_basis_2d(window), persistent=False)
        self.register_buffer("base", masks, persistent=False)
        self.register_buffer("band_size", masks.sum(dim=(1, 2)), persistent=False)
        self.register_buffer("luma", torch.tensor(_LUMA).view(1, 3, 1, 1), persistent=False)
        if learnable:
            self.learnable = nn.Parameter(torch.randn(bands, window, window) * init_std)
        else:
            self.register_parameter("learnable", None)

    def output_size(self, size: int) -> int:
        return (size + 2 * self.padding - self.window) // self.stride + 1

    def filters(self) -> torch.Tensor:
        """The effective band filters ``[M, S, S]``."""
        if self.learnable is None:
            return self.base
        return self.base + (2.0 * torch.sigmoid(self.learnable.float()) - 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            gray = (x.float() * self.luma).sum(dim=1, keepdim=True)
            if self.rescale:
                gray = (gray + 1.0) * 122.5
            coeffs = sliding_dct_2d(gray, self.window, self.stride, self.padding,
                                    basis=self.basis)                # [B, S², H', W']
            # The weighted sum over a window's S² coefficients is a 1×1 convolution.
            weight = (self.filters() / self.band_size.view(-1, 1, 1)).reshape(
                self.bands, self.window * self.window, 1, 1)
            if self.order == "log-first":
                return F.conv2d(torch.log10(coeffs.abs() + self.eps), weight)
            return torch.log10(F.conv2d(coeffs.abs(), weight.abs()) + self.eps)

    def extra_repr(self) -> str:
        return (f"window={self.window}, stride={self.stride}, padding={self.padding}, "
                f"bands={self.bands}, order={self.order!r}")
