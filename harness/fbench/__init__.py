"""fbench: a plugin-based benchmark harness for image-forgery detectors.

The public names a plugin or a user needs. Light names are imported eagerly; anything that
needs torch is imported on first access, so ``fbench --help`` and ``fbench list`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fbench.errors import FbenchError, UnknownNameError
from fbench.plugins.hookspecs import hookimpl
from fbench.plugins.specs import (
    LABELS,
    AblationSpec,
    DatasetSpec,
    DetectorSpec,
    ProbeFeatureSpec,
    Recipe,
    TransformSpec,
)

__version__ = "0.1.0"

_LAZY = {
    # torch-side contract
    "Batch": "fbench.plugins.batch",
    "DetectorOutput": "fbench.plugins.batch",
    "Detector": "fbench.plugins.detector",
    "ClassifierDetector": "fbench.plugins.detector",
    # python API
    "list_detectors": "fbench.api",
    "list_datasets": "fbench.api",
    "list_transforms": "fbench.api",
    "create_detector": "fbench.api",
    "create_transform": "fbench.api",
    "load_dataset": "fbench.api",
    "run": "fbench.api",
    "sweep": "fbench.api",
    "load_run": "fbench.api",
    "iter_runs": "fbench.api",
    "RunConfig": "fbench.train.config",
    "Run": "fbench.api",
    # helpers for plugins
    "make_manifest": "fbench.data.manifest",
    "validate_manifest": "fbench.data.manifest",
    "parse_label": "fbench.data.manifest",
    "compute_metrics": "fbench.metrics",
    "registered": "fbench.plugins.registry",
    "load_built_dataset": "fbench.data.built",
    "difference_hash": "fbench.data.audit",
    "make_progress": "fbench.progress",
    "read_state_dict": "fbench.train.weights",
    # atomic writes for plugins that store files of their own
    "write_json": "fbench.files",
    "write_parquet": "fbench.files",
    "read_json": "fbench.files",
    # folders written under a temporary name, and what dead writers left of them
    "make_owned_tmp_dir": "fbench.tempdirs",
    "release_owned_tmp_dir": "fbench.tempdirs",
    "remove_dead_tmp_dirs": "fbench.tempdirs",
    # the landmark cache a preparation command writes and a run reads
    "write_landmark_cache": "fbench.data.landmarks",
    "load_landmarks": "fbench.data.landmarks",
    # the one image reader and truncation rule, for plugins that read images
    "read_image": "fbench.data.images",
    "header_size": "fbench.data.images",
    "truncation_reason": "fbench.data.images",
    "UnreadableImage": "fbench.data.images",
    # the shortcut probe: which cheap cues predict the label before a table is believed
    "run_probe": "fbench.data.probe",
    "stored_probe": "fbench.data.probe",
    "shortcut_warnings": "fbench.data.probe",
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
        Run,
        create_detector,
        create_transform,
        iter_runs,
        list_datasets,
        list_detectors,
        list_transforms,
        load_dataset,
        load_run,
        run,
        sweep,
    )
    from fbench.data.audit import difference_hash
    from fbench.data.built import load_built_dataset
    from fbench.data.images import (
        UnreadableImage,
        header_size,
        read_image,
        truncation_reason,
    )
    from fbench.data.landmarks import load_landmarks, write_landmark_cache
    from fbench.data.manifest import make_manifest, parse_label, validate_manifest
    from fbench.data.probe import run_probe, shortcut_warnings, stored_probe
    from fbench.files import read_json, write_json, write_parquet
    from fbench.metrics import compute_metrics
    from fbench.plugins.batch import Batch, DetectorOutput
    from fbench.plugins.detector import ClassifierDetector, Detector
    from fbench.plugins.registry import registered
    from fbench.progress import make_progress
    from fbench.tempdirs import (
        make_owned_tmp_dir,
        release_owned_tmp_dir,
        remove_dead_tmp_dirs,
    )
    from fbench.train.config import RunConfig
    from fbench.train.weights import read_state_dict
