"""What the core calls on a plugin's objects besides ``forward``: each optional method or
attribute as a typing ``Protocol``, so that a plugin author's editor and the contract test
(``tests/plugins/test_contract.py``) know it. A spec field says which one an object offers:

- ``TransformSpec(fit_on_train=True)``: the module is a :class:`FittedTransform`;
- ``TransformSpec(geometric=True)``: the module is a :class:`GeometricTransform`;
- ``DetectorSpec(bench_groups=(...))``: those submodules are :class:`BenchTimed`;
- a ``ProbeFeatureSpec`` factory returns a :class:`ProbeExtractor`.

Nothing here imports torch: the types are for annotations only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

BENCH_GROUP = "bench_group"
"""The class attribute a :class:`BenchTimed` submodule declares."""


@runtime_checkable
class FittedTransform(Protocol):
    """A transform fitted on training data (``fit_on_train=True``, e.g. DCT statistics).

    The engine calls ``fit`` once before training with an iterable of training batches (float
    ``[B, 3, H, W]`` in [0, 1] on the model's device, decoded lazily: stop iterating when you
    have enough). Keep what ``fit`` learns in buffers: the state dict is the transform's part of
    the run's checkpoint, and a resumed or reloaded run loads it instead of fitting again."""

    def fit(self, batches: Iterable[torch.Tensor]) -> Any: ...


@runtime_checkable
class GeometricTransform(Protocol):
    """A transform that moves pixels (``geometric=True``: a crop, a warp). ``fbench
    robustness`` maps forgery masks and landmarks the way the images moved, so Dice and a
    landmark detector stay aligned with the perturbed image."""

    def map_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` masks in {0, 1} → the same shape, moved like the images."""
        ...

    def map_points(self, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``[B, K, 2]`` (x, y) in [0, 1] of an image of ``size`` (H, W) → where they lie in
        the moved image (points moved out of it fall outside [0, 1])."""
        ...


@runtime_checkable
class BenchTimed(Protocol):
    """A submodule of a detector that ``fbench bench`` times on its own: its share of a
    training step is reported under ``bench_group`` (e.g. ``"frequency: FAD"``). Declare it as
    a class attribute; list the groups a detector's default build holds in its spec's
    ``bench_groups``."""

    bench_group: str


@runtime_checkable
class ProbeExtractor(Protocol):
    """What a :class:`fbench.ProbeFeatureSpec` factory returns: ``extract(row, image, path)``
    with ``row`` the manifest index, ``image`` the decoded uint8 RGB ``[H, W, 3]``, ``path`` the
    resolved file, returning one vector of floats of the same length for every image.

    Optional, read with a default when absent: ``close()`` (called when the probe ends) and
    ``note`` (a line shown with the result, e.g. where the values came from)."""

    def __call__(self, row: Any, image: np.ndarray, path: str) -> Sequence[float]: ...


def bench_group_of(module: Any) -> str | None:
    """The ``bench_group`` a module declares, or ``None`` (the one place that reads it)."""
    group = getattr(module, BENCH_GROUP, None)
    return group if isinstance(group, str) and group else None
