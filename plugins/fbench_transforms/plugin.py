"""Entry point of the built-in transforms. Heavy imports happen inside the factories."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fbench import TransformSpec, hookimpl

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def make_raw(mean: tuple[float, float, float] = IMAGENET_MEAN,
             std: tuple[float, float, float] = IMAGENET_STD):
    from fbench_transforms.raw import Normalize

    return Normalize(mean, std)


@hookimpl
def register_transforms(register: Callable[[TransformSpec], Any]) -> None:
    register(TransformSpec(
        name="raw",
        summary="RGB pixels, resized to the detector's input size and normalised "
                "(ImageNet mean/std)",
        factory=make_raw,
    ))
