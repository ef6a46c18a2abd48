"""What a detector receives and returns."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


@dataclass
class Batch:
    """A batch on the model's device.

    ``images``: model input after the transform, ``[B, C, H, W]`` float.
    ``labels``: ``[B]`` long, 0 real, 1 generated, 2 edited (absent when predicting).
    ``masks``: ``[B, 1, H, W]`` float in [0, 1], 1 where forged; present when the dataset has
    masks. ``has_mask``: ``[B]`` bool, False for rows whose mask is unknown.
    ``landmarks``: ``[B, K, 2]`` float in [0, 1] image coordinates (x, y), when the run has
    them (see :mod:`fbench.data.landmarks`); ``landmarks_found``: ``[B]`` bool, False for images
    where no face was found (their points are 0).
    ``rgb``: the resized image in [0, 1] before the transform, for detectors that need both.
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    has_mask: torch.Tensor | None = None
    landmarks: torch.Tensor | None = None
    rgb: torch.Tensor | None = None
    index: torch.Tensor | None = None
    landmarks_found: torch.Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        moved = {
            k: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v)
            for k, v in self.__dict__.items()
        }
        return replace(self, **moved)

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class DetectorOutput:
    """``logits``: ``[B, num_classes]``; ``mask``: optional ``[B, 1, H, W]`` probabilities in
    [0, 1]; ``aux``: named auxiliary tensors a detector's own loss may use."""

    logits: torch.Tensor
    mask: torch.Tensor | None = None
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
