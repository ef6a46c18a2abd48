"""The plugin contract, checked on every registered detector and transform (the built-ins, as
the registry loads them with FBENCH_LOAD_PLUGINS=""), so a new plugin gets these checks for
free and its own tests keep to what is specific to it.

A detector: every factory option is accepted by ``fbench.create_detector`` with its default;
built at the run's input size (64 px here, the family's native size in the slow tests), it
takes a batch of two with its default transform, masks and landmarks, returns ``[B, 3]``
logits and an optional ``[B, 1, H, W]`` mask in [0, 1], finite named losses whose sum
back-propagates to its parameters, and declares in ``bench_groups`` exactly the parts
``fbench bench`` times. A transform: shape, dtype and device kept; ``fit`` when
``fit_on_train``; ``map_masks``/``map_points`` when ``geometric``. A plugin module: importing
it imports nothing heavy.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest
import torch

import fbench
from fbench.plugins.detector import as_detector
from fbench.plugins.protocols import (
    FittedTransform,
    GeometricTransform,
    bench_group_of,
)
from fbench.plugins.registry import get_registry, reset_registry
from fbench.plugins.specs import factory_options
from fbench.use.sample_batch import random_batch
from fbench_landmarks.heatmaps import MESH_POINTS


def _registered(kind: str) -> list[str]:
    # Collected at import, under the same isolation the conftest gives every test.
    assert os.environ.get("FBENCH_LOAD_PLUGINS") == ""
    reset_registry()
    names = get_registry().names(kind)
    reset_registry()
    return names


DETECTORS = _registered("detector")
TRANSFORMS = _registered("transform")


def _one_per_family() -> list[str]:
    """A detector per family, the one that exercises most (a mask output first)."""
    chosen: dict[str, str] = {}
    reg = get_registry()
    for name in DETECTORS:
        spec = reg.get("detector", name)
        best = chosen.get(spec.family)
        if best is None or (spec.needs_masks and not reg.get("detector", best).needs_masks):
            chosen[spec.family] = name
    reset_registry()
    return sorted(chosen.values())


FAMILY_REPRESENTATIVES = _one_per_family()


def _defaults(factory) -> dict:
    """Every option the factory takes, at its default, as a user would pass it by name."""
    return {k: v for k, v in factory_options(factory).items()
            if k not in ("num_classes", "**") and v is not inspect.Parameter.empty}


def _build(name: str, size: int):
    spec = get_registry().get("detector", name)
    options = _defaults(spec.factory)
    if "input_size" in options:  # what a run at this size passes (fbench.train.resolve)
        options["input_size"] = size
    model = as_detector(fbench.create_detector(name, **options))
    return spec, model


def _check_detector(name: str, size: int) -> None:
    torch.manual_seed(0)
    spec, model = _build(name, size)
    model.train()
    batch = random_batch(spec, size, landmark_points=MESH_POINTS)
    out = model(batch)
    assert out.logits.shape == (2, 3) and out.logits.is_floating_point()
    assert bool(torch.isfinite(out.logits).all())
    if out.mask is not None:
        assert out.mask.shape == (2, 1, size, size)
        mask = out.mask.detach()
        assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
    losses = model.loss(out, batch)
    assert losses and all(isinstance(k, str) for k in losses)
    for key, value in losses.items():
        assert value.ndim == 0 and bool(torch.isfinite(value)), key
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    declared = {bench_group_of(m) for m in model.modules()} - {None}
    assert declared == set(spec.bench_groups), "DetectorSpec.bench_groups"


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_contract_at_64_px(name):
    _check_detector(name, 64)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY_REPRESENTATIVES)
def test_detector_contract_at_the_native_size(name):
    _check_detector(name, get_registry().get("detector", name).input_size)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_transform_contract(name):
    spec = get_registry().get("transform", name)
    transform = fbench.create_transform(name, **_defaults(spec.factory))
    assert isinstance(transform, torch.nn.Module)
    x = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    assert isinstance(transform, FittedTransform) == spec.fit_on_train, "fit_on_train"
    assert isinstance(transform, GeometricTransform) == spec.geometric, "geometric"
    if spec.fit_on_train:
        transform.fit(iter([x, x.flip(-1)]))
    y = transform(x)
    assert y.shape[0] == 2 and y.shape[-2:] == x.shape[-2:] and y.ndim == 4
    assert y.dtype == x.dtype and y.device == x.device
    assert bool(torch.isfinite(y).all())
    if spec.geometric:
        masks = (torch.rand(2, 1, 64, 48) > 0.5).float()
        assert transform.map_masks(masks).shape == masks.shape
        points = torch.rand(2, 5, 2)
        assert transform.map_points(points, (64, 48)).shape == points.shape


def test_builtin_plugin_modules_import_nothing_heavy():
    # Every fbench start imports every plugin module: torch, timm, mediapipe and OpenCV must
    # wait for the factory or command that needs them.
    code = ("import importlib, sys\n"
            "from importlib import metadata\n"
            "for ep in metadata.entry_points(group='fbench'):\n"
            "    if ep.dist.metadata['Name'] == 'fbench':\n"
            "        importlib.import_module(ep.value)\n"
            "heavy = [m for m in ('torch', 'timm', 'mediapipe', 'cv2') if m in sys.modules]\n"
            "sys.exit(', '.join(heavy) or None)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
