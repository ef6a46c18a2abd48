"""fbench: a plugin-based benchmark harness for image-forgery detectors.

The public names a plugin or a user needs. Light names are imported eagerly; anything that
needs torch is imported on first access, so ``fbench --help`` and ``fbench list`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fbench.errors import FbenchError, UnknownNameError
from fbench.hookspecs import hookimpl
from fbench.recipes import Recipe
from fbench.specs import (
    LABELS,
    AblationSpec,
    DatasetSpec,
    DetectorSpec,
    ProbeFeatureSpec,
    TransformSpec,
)

__version__ = "0.1.0"

_LAZY = {
    # torch-side contract
    "Batch": "fbench.batch",
    "DetectorOutput": "fbench.batch",
    "Detector": "fbench.detector",
    "ClassifierDetector": "fbench.detector",
    # python API
    "list_detectors": "fbench.api",
    "list_datasets": "fbench.api",
    "list_transforms": "fbench.api",
    "create_detector": "fbench.api",
    "create_transform": "fbench.api",
    "load_dataset": "fbench.api",
    "run": "fbench.api",
    "load_run": "fbench.api",
    "RunConfig": "fbench.config",
    "Run": "fbench.store",
    # helpers for plugins
    "make_manifest": "fbench.manifest",
    "validate_manifest": "fbench.manifest",
    "compute_metrics": "fbench.metrics",
    "registered": "fbench.registry",
    "load_built_dataset": "fbench.built",
    "difference_hash": "fbench.audit",
    "read_state_dict": "fbench.weights",
    # atomic writes for plugins that store files of their own
    "write_json": "fbench.store",
    "write_parquet": "fbench.store",
    "read_json": "fbench.store",
    # the landmark cache a preparation command writes and a run reads
    "write_landmark_cache": "fbench.landmarks",
    "load_landmarks": "fbench.landmarks",
    # the shortcut probe: which cheap cues predict the label before a table is believed
    "run_probe": "fbench.probe",
    "stored_probe": "fbench.probe",
    "shortcut_warnings": "fbench.probe",
}

__all__ = [
    "LABELS", "AblationSpec", "DatasetSpec", "DetectorSpec", "FbenchError", "ProbeFeatureSpec",
    "Recipe", "TransformSpec",
    "UnknownNameError", "hookimpl", *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fbench' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from fbench.api import (
        create_detector,
        create_transform,
        list_datasets,
        list_detectors,
        list_transforms,
        load_dataset,
        load_run,
        run,
    )
    from fbench.audit import difference_hash
    from fbench.batch import Batch, DetectorOutput
    from fbench.built import load_built_dataset
    from fbench.config import RunConfig
    from fbench.detector import ClassifierDetector, Detector
    from fbench.landmarks import load_landmarks, write_landmark_cache
    from fbench.manifest import make_manifest, validate_manifest
    from fbench.metrics import compute_metrics
    from fbench.probe import run_probe, shortcut_warnings, stored_probe
    from fbench.registry import registered
    from fbench.store import Run, read_json, write_json, write_parquet
    from fbench.weights import read_state_dict
