"""Entry point of the frequency-domain transforms. Heavy imports happen inside the factories,
so ``fbench list`` never loads torch for them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fbench import TransformSpec, hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from fbench_frequency.transforms import LegacyDFT, LogDCT, LogDFT


def make_dct(grayscale: bool = False, eps: float = 1e-12, standardize: bool = True,
             fit_batches: int | None = None) -> LogDCT:
    """Frank et al. 2020: orthonormal DCT-II per channel (or of the luma with ``grayscale``,
    repeated to 3 channels), ``log(|x| + eps)``, standardised per coefficient with training
    statistics (``fit_batches`` limits how many training batches they are computed from)."""
    from fbench_frequency.transforms import LogDCT

    return LogDCT(grayscale=grayscale, eps=eps, standardize=standardize,
                  fit_batches=fit_batches)


def make_dft(grayscale: bool = False, eps: float = 1e-12) -> LogDFT:
    """Centred ``log(|DFT| + eps)`` (orthonormal) per channel, or of the luma."""
    from fbench_frequency.transforms import LogDFT

    return LogDFT(grayscale=grayscale, eps=eps)


def make_dft_legacy(normalize: bool = True) -> LegacyDFT:
    """The thesis's ``cv2.dft`` input: ImageNet-normalised RGB (unless ``normalize=false``),
    real DFT per channel in OpenCV's packed layout."""
    from fbench_frequency.transforms import LegacyDFT

    return LegacyDFT(normalize=normalize)


@hookimpl
def register_transforms(register: Callable[[TransformSpec], Any]) -> None:
    register(TransformSpec(
        name="dct",
        summary="log |DCT-II| per channel, standardised per coefficient on train "
                "(Frank et al. 2020)",
        factory=make_dct,
        fit_on_train=True,
    ))
    register(TransformSpec(
        name="dft",
        summary="centred log-magnitude 2-D DFT per channel",
        factory=make_dft,
    ))
    register(TransformSpec(
        name="dft-legacy",
        summary="the thesis's 'DCT' input: cv2.dft of ImageNet-normalised RGB, packed (CCS)",
        factory=make_dft_legacy,
    ))
