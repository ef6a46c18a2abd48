"""Shared by the detector plugins' tests: trainable parameter counts and a random batch with
labels of every class and binary masks."""

from __future__ import annotations

import torch

from fbench import Batch


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make_batch(size: int, n: int = 2, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(images=torch.randn(n, 3, size, size, generator=g),
                 labels=torch.arange(n) % 3,
                 masks=(torch.rand(n, 1, size, size, generator=g) > 0.5).float(),
                 has_mask=torch.ones(n, dtype=torch.bool))
