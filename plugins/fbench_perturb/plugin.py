"""Entry point of the built-in perturbations. Each is a :class:`fbench.TransformSpec` whose
module maps a float batch in [0, 1], ``[B, 3, H, W]``, to a degraded batch of the same shape,
so ``fbench robustness`` can put it in front of any run's own transform.

A perturbation's *level* is its factory's first option (``jpeg:95,75`` sets ``quality``);
every factory also takes ``seed``. torch and OpenCV are imported inside the factories, so
``fbench list`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fbench import FbenchError, TransformSpec, hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from fbench_perturb.modules import CentreCrop, GaussianBlur, GaussianNoise, Jpeg, ResizeDownUp


def _number(name: str, option: str, value: Any, low: float, high: float,
            low_open: bool = False, integer: bool = False) -> float:
    """An option value checked at the boundary: ``--perturb`` values arrive as text or TOML
    literals, and a wrong one must fail here with the accepted range, not deep in torch."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    ok = (number == number and (number > low if low_open else number >= low) and number <= high
          and (not integer or number.is_integer()))
    if not ok:
        bracket = "(" if low_open else "["
        kind = "an integer" if integer else "a number"
        raise FbenchError(f"perturbation {name!r}: {option}={value!r} is not {kind} in "
                          f"{bracket}{low:g}, {high:g}].",
                          f"e.g. --perturb {name}:{_EXAMPLES[name]}")
    return int(number) if integer else number


_EXAMPLES = {"jpeg": "95,75,50", "blur": "0.5,1,2", "noise": "0.02,0.05,0.1",
             "resize": "0.75,0.5,0.25", "crop": "0.9,0.8,0.7"}


def make_jpeg(quality: int = 75, seed: int = 0) -> Jpeg:
    """JPEG compression at ``quality`` (1-100, lower is stronger; 4:2:0 chroma as libjpeg
    defaults), encoded and decoded per image with OpenCV. Deterministic; ``seed`` is accepted
    for a uniform interface."""
    from fbench_perturb.modules import Jpeg

    return Jpeg(_number("jpeg", "quality", quality, 1, 100, integer=True), int(seed))


def make_blur(sigma: float = 1.0, seed: int = 0) -> GaussianBlur:
    """Gaussian blur with standard deviation ``sigma`` in pixels of the (resized) input
    (0 = none); kernel of 2·ceil(3σ)+1 taps, edges replicated. Deterministic."""
    from fbench_perturb.modules import GaussianBlur

    return GaussianBlur(_number("blur", "sigma", sigma, 0, 100), int(seed))


def make_noise(sigma: float = 0.05, seed: int = 0) -> GaussianNoise:
    """Additive Gaussian noise of standard deviation ``sigma`` on the [0, 1] scale
    (0.02 is about 5 grey levels), clipped to [0, 1]; drawn from a generator seeded by
    ``seed``, so the same batches get the same noise."""
    from fbench_perturb.modules import GaussianNoise

    return GaussianNoise(_number("noise", "sigma", sigma, 0, 1), int(seed))


def make_resize(factor: float = 0.5, seed: int = 0) -> ResizeDownUp:
    """Down-sample by ``factor`` (0-1], area-averaged, then back up to the input size
    bilinearly: the detail a low-resolution upload loses. Deterministic."""
    from fbench_perturb.modules import ResizeDownUp

    return ResizeDownUp(_number("resize", "factor", factor, 0, 1, low_open=True), int(seed))


def make_crop(fraction: float = 0.8, seed: int = 0) -> CentreCrop:
    """Keep the centre ``fraction`` (0-1] of each side and resize it back to the input size
    (a zoom); forgery masks and landmarks are mapped the same way. Deterministic."""
    from fbench_perturb.modules import CentreCrop

    return CentreCrop(_number("crop", "fraction", fraction, 0, 1, low_open=True), int(seed))


@hookimpl
def register_transforms(register: Callable[[TransformSpec], Any]) -> None:
    register(TransformSpec(name="jpeg", factory=make_jpeg,
                           summary="perturbation: JPEG compression at quality (1-100)"))
    register(TransformSpec(name="blur", factory=make_blur,
                           summary="perturbation: Gaussian blur of sigma pixels"))
    register(TransformSpec(name="noise", factory=make_noise,
                           summary="perturbation: additive Gaussian noise of sigma (0-1 scale), "
                                   "seeded"))
    register(TransformSpec(name="resize", factory=make_resize,
                           summary="perturbation: down-sample by factor, then up again"))
    register(TransformSpec(name="crop", factory=make_crop, geometric=True,
                           summary="perturbation: centre crop of fraction of each side, "
                                   "resized back"))
