"""A random batch any registered detector can train on: for speed benchmarks, which time the
model and not the data, and for checks that a detector works at some input size."""

from __future__ import annotations

import torch

from fbench.plugins.batch import Batch
from fbench.plugins.specs import DetectorSpec


def random_batch(spec: DetectorSpec, size: int, n: int = 2, seed: int = 0, *,
                 landmark_points: int) -> Batch:
    """``n`` random ``size``² images through ``spec``'s default transform (fitted on them where
    the transform fits on train), with what any detector may need: labels of every class in
    turn, random masks, ``landmark_points`` landmarks inside the face. The core knows no
    landmark model: the caller says how many points its landmark detector reads (the built-in
    one: ``fbench_landmarks.heatmaps.MESH_POINTS``)."""
    from fbench.plugins.registry import get_registry

    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(n, 3, size, size, generator=g)
    transform_spec = get_registry().get("transform", spec.transform)
    transform = transform_spec.factory()  # its default options
    if transform_spec.fit_on_train:
        transform.fit([rgb])
    with torch.no_grad():
        images = transform(rgb)
    return Batch(images=images, rgb=rgb, labels=torch.arange(n) % 3,
                 masks=(torch.rand(n, 1, size, size, generator=g) > 0.5).float(),
                 has_mask=torch.ones(n, dtype=torch.bool),
                 landmarks=0.3 + 0.4 * torch.rand(n, landmark_points, 2, generator=g),
                 landmarks_found=torch.ones(n, dtype=torch.bool), index=torch.arange(n))


__all__ = ["random_batch"]
