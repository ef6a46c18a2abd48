"""The detector contract on the torch side.

A detector owns its loss: the engine sums whatever named losses ``loss`` returns, so a
multi-task model (classification + mask) trains without the engine knowing it is one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fbench.plugins.batch import Batch, DetectorOutput


class Detector(nn.Module):
    """Base class for detectors: override ``forward(batch)``; override ``loss`` for more than
    cross-entropy on the logits."""

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
