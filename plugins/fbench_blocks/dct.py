"""The orthonormal 2-D DCT-II as matrix products, ``D · X · Dᵀ``, batched on the device.

Matrix products rather than an FFT-based DCT: torch has no native DCT, the sizes fbench uses
(up to ~300 px) make a dense ``n × n`` product cheap on any accelerator, and the same code is
differentiable, so detectors (F3Net's FAD head, its sliding-window LFS head, GraftNet) reuse it
inside their forward pass.

Conventions match ``scipy.fft.dctn(x, type=2, norm="ortho")`` over the last two axes; the
inverse is the orthonormal DCT-III, ``Dᵀ · Y · D``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = [
    "dct_matrix", "dct_2d", "idct_2d", "dct_basis_2d", "sliding_dct_2d",
]


def dct_matrix(n: int, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``D`` (``n × n``): ``D[k, i] = a_k cos(π (2i + 1) k / 2n)``
    with ``a_0 = √(1/n)`` and ``a_k = √(2/n)``, so ``D⁻¹ = Dᵀ``.

    Returns a new tensor (safe to register as a buffer or modify)."""
    if n < 1:
        raise ValueError(f"DCT size must be >= 1, got {n}")
    # Built in float64 and cast: float32 cosines drift by ~1e-7 per entry, which shows up in
    # round-trip tests at 300 px.
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    d = torch.cos(math.pi * (2.0 * i + 1.0) * k / (2.0 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=32)
def _cached_matrix(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # Shared, read-only: a transform applied to every batch should not rebuild (or re-upload)
    # its matrices each call. Never an inference tensor, or a first call under
    # torch.inference_mode would break every later backward pass.
    with torch.inference_mode(False):
        return dct_matrix(n, dtype=dtype, device=device)


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    # Half precision loses the small high-frequency coefficients forensics looks for.
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _no_autocast(x: torch.Tensor) -> torch.autocast:
    return torch.autocast(device_type=x.device.type, enabled=False)


def dct_2d(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two dimensions of ``x`` (``[..., H, W]``).

    Equals ``scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1))``. Runs in float32 (or
    float64) even under autocast; differentiable."""
    h, w = x.shape[-2:]
    with _no_autocast(x):
        work = x.to(_work_dtype(x))
        dh = _cached_matrix(h, work.dtype, work.device)
        dw = dh if w == h else _cached_matrix(w, work.dtype, work.device)
        return dh @ work @ dw.transpose(0, 1)


def idct_2d(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct_2d` (orthonormal 2-D DCT-III) over the last two dimensions."""
    h, w = y.shape[-2:]
    with _no_autocast(y):
        work = y.to(_work_dtype(y))
        dh = _cached_matrix(h, work.dtype, work.device)
        dw = dh if w == h else _cached_matrix(w, work.dtype, work.device)
        return dh.transpose(0, 1) @ work @ dw


def dct_basis_2d(n: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """The ``n²`` DCT-II basis images as a conv2d weight ``[n², 1, n, n]``: output channel
    ``k · n + l`` of a correlation with this weight is coefficient ``(k, l)`` of the window's
    DCT (``D · P · Dᵀ`` for a window ``P``)."""
    d = dct_matrix(n, dtype=torch.float64)
    basis = torch.einsum("ki,lj->klij", d, d).reshape(n * n, 1, n, n)
    return basis.to(dtype=dtype, device=device)


def sliding_dct_2d(x: torch.Tensor, window: int, stride: int = 1, padding: int = 0,
                   basis: torch.Tensor | None = None) -> torch.Tensor:
    """DCT of every ``window × window`` patch of ``x`` (``[B, C, H, W]``), zero-padded by
    ``padding``: returns ``[B, C · window², H', W']`` with the ``window²`` coefficients of
    channel ``c`` at channels ``c · window² …`` (row-major ``(k, l)`` order), ``H' = (H + 2p -
    window) // stride + 1``.

    One strided convolution with the basis images instead of unfold + two matrix products: the
    same numbers without materialising the overlapping patches (stride 2 on a 10-px window
    would copy every pixel 25 times). Pass ``basis`` (from :func:`dct_basis_2d`) to reuse a
    buffer; it must match ``window``."""
    c = x.shape[1]
    with _no_autocast(x):
        work = x.to(_work_dtype(x))
        if basis is None:
            basis = dct_basis_2d(window, dtype=work.dtype, device=work.device)
        basis = basis.to(dtype=work.dtype)
        if basis.shape != (window * window, 1, window, window):
            raise ValueError(f"basis of shape {tuple(basis.shape)} does not match window {window}")
        weight = basis.repeat(c, 1, 1, 1) if c > 1 else basis
        return F.conv2d(work, weight, stride=stride, padding=padding, groups=c)
