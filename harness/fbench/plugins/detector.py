"""The detector contract on the torch side.

A detector owns its loss: the engine sums whatever named losses ``loss`` returns, so a
multi-task model (classification + mask) trains without the engine knowing it is one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fbench.errors import FbenchError
from fbench.plugins.batch import Batch, DetectorOutput


class Detector(nn.Module):
    """Base class for detectors: override ``forward(batch)``; override ``loss`` for more than
    cross-entropy on the logits.

    Called timm-style on a plain image tensor ``[B, C, H, W]`` (float, the model's input: the
    transform already applied, e.g. ``create_detector("graftnet")(torch.randn(2, 3, 224,
    224))``), a detector wraps it as ``Batch(images=x)`` and returns what it returns for a
    batch: a :class:`fbench.DetectorOutput` (``.logits`` ``[B, num_classes]``, ``.mask`` where
    it predicts one), not a bare logits tensor. A detector whose forward reads more of the
    batch than the images names those fields in ``batch_inputs`` (e.g. ``("landmarks",)``);
    a plain tensor then gets one clear error instead of a failure deep inside it. (Masks are
    what the loss trains on, never a forward input.)"""

    batch_inputs: tuple[str, ...] = ()
    """Fields of :class:`fbench.Batch` besides ``images`` that ``forward`` needs."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # only the first argument (or ``batch=``) may be the image tensor; hooks still run,
        # since the Batch goes through nn.Module's own call
        if args and isinstance(args[0], torch.Tensor):
            args = (self._tensor_batch(args[0]), *args[1:])
        elif isinstance(kwargs.get("batch"), torch.Tensor):
            kwargs["batch"] = self._tensor_batch(kwargs["batch"])
        return super().__call__(*args, **kwargs)

    def _tensor_batch(self, images: torch.Tensor) -> Batch:
        """A plain image tensor as the batch ``forward`` takes, or one line saying why not."""
        name = type(self).__name__
        if self.batch_inputs:
            raise FbenchError(
                f"{name} reads {', '.join(self.batch_inputs)} besides the images, so it cannot "
                "be called on a plain image tensor.",
                f"call it on fbench.Batch(images=x, {self.batch_inputs[0]}=...), or score "
                "image files with a stored run's predict().")
        if images.dim() != 4 or not images.is_floating_point():
            raise FbenchError(
                f"{name} takes a float image tensor [B, C, H, W], got "
                f"{images.dtype} of shape {list(images.shape)}.",
                "pass the transformed batch, e.g. torch.randn(2, 3, 224, 224); uint8 images "
                "go through x.float() / 255 and the detector's transform first.")
        return Batch(images=images)

    def forward(self, batch: Batch) -> DetectorOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, output: DetectorOutput, batch: Batch) -> dict[str, torch.Tensor]:
        """Named loss terms; the engine optimises their sum and logs each."""
        assert batch.labels is not None
        return {"ce": F.cross_entropy(output.logits.float(), batch.labels)}


class ClassifierDetector(Detector):
    """Wraps a plain image classifier (tensor in, logits out) as a :class:`Detector`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> DetectorOutput:
        return DetectorOutput(logits=self.model(batch.images))


def as_detector(module: nn.Module) -> Detector:
    """A detector as the engine needs it, wrapping plain classifiers."""
    if isinstance(module, Detector):
        return module
    if not isinstance(module, nn.Module):
        raise TypeError(f"a detector factory must return a torch.nn.Module, got {type(module)!r}")
    return ClassifierDetector(module)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
