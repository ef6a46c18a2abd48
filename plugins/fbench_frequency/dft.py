"""2-D discrete Fourier transforms for image forensics: the centred log-magnitude spectrum, and
OpenCV's packed real DFT (the "CCS" layout of ``cv2.dft`` on a single-channel float image),
which is what the thesis code actually fed its "DCT" ResNet."""

from __future__ import annotations

import torch

__all__ = ["log_magnitude_dft", "ccs_packed_dft"]


def _float(x: torch.Tensor) -> torch.Tensor:
    # torch.fft has no bf16 kernels, and half precision loses the small high-frequency terms.
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def log_magnitude_dft(x: torch.Tensor, eps: float = 1e-12, centred: bool = True) -> torch.Tensor:
    """``log(|F(x)| + eps)`` of the orthonormal 2-D DFT over the last two dimensions; with
    ``centred`` the zero frequency is moved to the middle (``fftshift``), as spectra are usually
    shown. Orthonormal scaling keeps values comparable across input sizes."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        spectrum = torch.fft.fft2(_float(x), norm="ortho")
        out = torch.log(spectrum.abs() + eps)
        return torch.fft.fftshift(out, dim=(-2, -1)) if centred else out


def _pack_real_column(col: torch.Tensor) -> torch.Tensor:
    """Hermitian-symmetric complex spectra ``[..., M]`` (DFTs of real signals) as ``M`` reals:
    ``Re c0, Re c1, Im c1, …, Re c_{M/2}`` (the last only for even ``M``), OpenCV's 1-D CCS."""
    m = col.shape[-1]
    half = (m - 1) // 2
    pairs = torch.stack((col[..., 1:half + 1].real, col[..., 1:half + 1].imag), dim=-1)
    parts = [col[..., :1].real, pairs.flatten(-2)]
    if m % 2 == 0:
        parts.append(col[..., m // 2:m // 2 + 1].real)
    return torch.cat(parts, dim=-1)


def ccs_packed_dft(x: torch.Tensor) -> torch.Tensor:
    """The unscaled forward DFT of real images ``[..., M, N]`` packed into ``[..., M, N]`` reals
    exactly as ``cv2.dft(x)`` (default flags) lays it out for a 2-D single-channel array:

    - columns ``2k - 1, 2k`` (``k = 1 … ⌈N/2⌉ - 1``): real and imaginary part of ``Y[m, k]``
      for every row ``m``;
    - column 0, and column ``N - 1`` when ``N`` is even (frequencies ``k = 0`` and ``N/2``,
      whose column spectra are Hermitian): packed as ``Re Y0, Re Y1, Im Y1, …`` down the rows.

    No magnitude, no log: the thesis passed these raw packed coefficients to its network.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = _float(x)
        n = x.shape[-1]
        spectrum = torch.fft.rfft2(x)  # [..., M, N // 2 + 1]: full along rows, half along columns
        inner = (n - 1) // 2
        middle = torch.stack((spectrum[..., 1:inner + 1].real,
                              spectrum[..., 1:inner + 1].imag), dim=-1).flatten(-2)
        parts = [_pack_real_column(spectrum[..., 0]).unsqueeze(-1), middle]
        if n % 2 == 0:
            parts.append(_pack_real_column(spectrum[..., n // 2]).unsqueeze(-1))
        return torch.cat(parts, dim=-1)
