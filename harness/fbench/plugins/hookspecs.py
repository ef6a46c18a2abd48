"""The whole plugin contract on one page.

A plugin is a module (or object) with functions marked ``@fbench.hookimpl`` whose names match
the specs below, made known through the ``fbench`` entry-point group:

    [project.entry-points.fbench]
    my_plugin = "my_package.plugin"

Registration hooks receive a ``register`` callback; call it once per thing you provide.
Event hooks observe a run; their return values are ignored. What the core may call on the
objects a factory returns, beyond ``forward``, is declared by spec fields and typed in
:mod:`fbench.plugins.protocols` (``fit``, ``map_masks``/``map_points``, ``bench_group``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

from fbench.plugins import specs

if TYPE_CHECKING:  # pragma: no cover
    import click

hookspec = pluggy.HookspecMarker("fbench")
hookimpl = pluggy.HookimplMarker("fbench")

# What each ``register`` callback takes: one spec per call (a wrong type is refused by name).
RegisterDataset = Callable[[specs.DatasetSpec], None]
RegisterTransform = Callable[[specs.TransformSpec], None]
RegisterDetector = Callable[[specs.DetectorSpec], None]
RegisterAblation = Callable[[specs.AblationSpec], None]
RegisterRecipe = Callable[[specs.Recipe], None]
RegisterProbeFeature = Callable[[specs.ProbeFeatureSpec], None]


@hookspec
def register_datasets(register: RegisterDataset) -> None:
    """Register datasets: ``register(DatasetSpec(...))``."""


@hookspec
def register_transforms(register: RegisterTransform) -> None:
    """Register preprocessing transforms and perturbations: ``register(TransformSpec(...))``."""


@hookspec
def register_detectors(register: RegisterDetector) -> None:
    """Register detectors: ``register(DetectorSpec(...))``."""


@hookspec
def register_ablations(register: RegisterAblation) -> None:
    """Register ablation groups for ``fbench ablate``: ``register(AblationSpec(...))``."""


@hookspec
def register_recipes(register: RegisterRecipe) -> None:
    """Register dataset recipes for ``fbench data build``: ``register(Recipe(...))``."""


@hookspec
def register_probe_features(register: RegisterProbeFeature) -> None:
    """Register feature families for the shortcut probe (``fbench data probe``):
    ``register(ProbeFeatureSpec(...))``."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the ``fbench`` CLI (``cli`` is the root group; its ``data``
    group takes dataset preparation commands)."""


@hookspec
def on_run_start(run_dir: str, config: dict[str, Any]) -> None:
    """A run begins; ``config`` is the resolved configuration stored with it."""


@hookspec
def on_epoch_end(run_dir: str, epoch: int, metrics: dict[str, Any]) -> None:
    """An epoch ended; ``metrics`` holds train loss and validation metrics of that epoch."""


@hookspec
def on_run_end(run_dir: str, summary: dict[str, Any]) -> None:
    """A run finished and its summary (eval metrics of the selected checkpoint) is stored; a
    plugin may add to ``summary.json`` here (the run is marked completed, and its files sealed
    with their digests, right after)."""
