"""LFS, local frequency statistics (F3Net §3.3): a sliding-window DCT of the grayscale image,
and per window ``M`` band statistics through fixed + learnable frequency filters, giving an
``M``-channel map at (about) half resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fbench_frequency.dct import dct_basis_2d, sliding_dct_2d

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
