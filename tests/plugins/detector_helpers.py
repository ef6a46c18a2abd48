"""Shared by the detector plugins' tests: trainable parameter counts, a random batch with
labels of every class and binary masks, PyTorch's default-initialisation bound, and the
thesis's training recipe as a detector declares it."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from fbench import Batch

# The part of the thesis's recipe every thesis detector shares (deepfake/train.py and its
# configs): Adam, weight decay 1e-4, 30 epochs, images resized to 224.
THESIS_SHARED = {"optimizer": "adam", "weight_decay": 1e-4, "epochs": 30, "input_size": 224}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make_batch(size: int, n: int = 2, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(images=torch.randn(n, 3, size, size, generator=g),
                 labels=torch.arange(n) % 3,
                 masks=(torch.rand(n, 1, size, size, generator=g) > 0.5).float(),
                 has_mask=torch.ones(n, dtype=torch.bool))


def default_init_bound(weight: torch.Tensor) -> float:
    """The half-width of the uniform range PyTorch's default initialisation of a conv or
    linear weight draws from (Kaiming uniform, a = sqrt(5)): ``1 / sqrt(fan_in)``."""
    fan_in = weight[0].numel()
    return 1.0 / math.sqrt(fan_in)


def thesis_recipe(name: str) -> dict[str, Any]:
    """The detector's ``thesis`` protocol, checked as ``fbench run --protocol thesis`` uses
    it: every key a run setting, every option one the factory takes, the shared part as the
    thesis's code has it."""
    from fbench.plugins.registry import get_registry
    from fbench.train.config import RunConfig, check_options

    spec = get_registry().get("detector", name)
    recipe = spec.protocols["thesis"]
    settings = {f.name for f in dataclasses.fields(RunConfig)} - {"detector", "protocol"}
    assert set(recipe) - {"options"} <= settings, set(recipe) - settings
    check_options("detector", name, spec.factory, recipe.get("options", {}),
                  reserved=("num_classes",))
    assert {k: recipe[k] for k in THESIS_SHARED} == THESIS_SHARED
    return recipe
