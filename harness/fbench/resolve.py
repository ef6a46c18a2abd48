"""From a :class:`RunConfig` to everything a run needs, checked before anything is written:
names resolve, options are ones the factories take, the dataset loads and validates, the
detector's needs (masks, landmarks) are met, and val is carved from train by group."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

from fbench.config import DEFAULTS, RunConfig, check_options
from fbench.errors import FbenchError
from fbench.manifest import validate_manifest
from fbench.registry import get_registry
from fbench.specs import DatasetSpec, DetectorSpec, TransformSpec
from fbench.splits import assert_grouped, carve_validation


def load_manifest(spec: DatasetSpec, root: str | None, options: dict[str, Any]) -> pd.DataFrame:
    """Call a dataset's factory and validate what it returns."""
    check_options("dataset", spec.name, spec.factory, options, reserved=("root",))
    if root is not None and not os.path.isdir(root):
        raise FbenchError(f"dataset root {root} does not exist or is not a directory.",
                          f"point --data-root at the directory holding the {spec.name} data.")
    if spec.needs_root and root is None:
        raise FbenchError(f"dataset {spec.name!r} needs --data-root (the directory with its "
                          "files).", "see docs/datasets.md for the expected layout.")
    manifest = spec.factory(root, **options)
    if not isinstance(manifest, pd.DataFrame):
        raise FbenchError(f"dataset {spec.name!r} returned {type(manifest).__name__}, "
                          "not a manifest DataFrame (a plugin bug).")
    manifest.attrs.setdefault("name", spec.name)
    return validate_manifest(manifest)


@dataclass
class ResolvedRun:
    config: RunConfig
    detector: DetectorSpec
    dataset: DatasetSpec
    transform: TransformSpec
    manifest: pd.DataFrame
    input_size: int
    audit: dict[str, Any] | None = None
    preflight: dict[str, Any] | None = None

    def build_model(self) -> Any:
        from fbench.detector import as_detector
        from fbench.specs import factory_options

        options = dict(self.config.options)
        # A detector whose size-dependent parts take ``input_size`` gets the run's size
        # unless the user set it explicitly.
        if "input_size" in factory_options(self.detector.factory) and "input_size" not in options:
            options["input_size"] = self.input_size
        model = self.detector.factory(num_classes=3, **options)
        return as_detector(model)

    def build_transform(self) -> Any:
        return self.transform.factory(**self.config.transform_options)

    def stored_config(self, **extra: Any) -> dict[str, Any]:
        counts = (self.manifest.groupby(["split", "label"]).size()
                  .unstack(fill_value=0).to_dict(orient="index"))
        return {
            **self.config.to_dict(),
            "input_size": self.input_size,
            "detector_family": self.detector.family,
            "providers": {
                "detector": get_registry().provider("detector", self.detector.name),
                "dataset": get_registry().provider("dataset", self.dataset.name),
                "transform": get_registry().provider("transform", self.transform.name),
            },
            "split_counts": {s: {str(k): int(v) for k, v in c.items()} for s, c in counts.items()},
            "audit": self.audit,
            "preflight": self.preflight,
            **self._landmarks(),
            **extra,
        }

    def _landmarks(self) -> dict[str, Any]:
        from fbench.landmarks import landmark_summary

        summary = landmark_summary(self.manifest)
        return {"landmarks": summary} if summary else {}


def resolve(config: RunConfig) -> ResolvedRun:
    from fbench.store import check_out_dir

    check_out_dir(config.out)
    reg = get_registry()
    det: DetectorSpec = reg.get("detector", config.detector)
    ds: DatasetSpec = reg.get("dataset", config.dataset)
    tname = config.transform or det.transform
    tr: TransformSpec = reg.get("transform", tname)
    check_options("detector", det.name, det.factory, config.options, reserved=("num_classes",))
    check_options("transform", tr.name, tr.factory, config.transform_options)
    if det.needs_masks and not ds.has_masks:
        raise FbenchError(f"detector {det.name!r} needs forgery masks, and dataset "
                          f"{ds.name!r} has none.", "choose a dataset with masks (e.g. seg_2).")

    settings = {k: getattr(config, k) for k in DEFAULTS}
    for key in DEFAULTS:
        if settings[key] is None:
            settings[key] = det.defaults.get(key, DEFAULTS[key])
    if settings["epochs"] < 1 or settings["batch_size"] < 1 or settings["lr"] <= 0:
        raise FbenchError("epochs and batch size must be >= 1 and lr > 0 "
                          f"(got {settings['epochs']}, {settings['batch_size']}, "
                          f"{settings['lr']}).")
    config = config.replace(transform=tname, **settings)

    manifest = load_manifest(ds, config.data_root, config.dataset_options)
    if det.needs_landmarks:  # from the dataset's own columns, or its cache (fbench.landmarks)
        from fbench.landmarks import require_landmarks

        manifest = require_landmarks(manifest, det.name, landmarks_command(config))
    # every file checked before anything is written or trained (see fbench.preflight)
    from fbench.preflight import preflight

    manifest, report = preflight(manifest, with_masks=ds.has_masks, skip_bad=config.skip_bad)
    manifest = carve_validation(manifest, config.val_fraction, config.seed)
    if config.audit:
        assert_grouped(manifest)
    # --skip-audit lets a known-leaky dataset (the thesis's recipe 3) be trained on to show
    # what the leak does to scores; the run records that the audit was skipped.
    audit_result = run_audit(manifest, config.audit)

    # Never up-sample past the dataset's native resolution by default: it adds no
    # information, only compute (the embedded dataset is 64 px; thesis detectors say 224).
    size = config.input_size or det.input_size
    native = manifest.attrs.get("image_size")
    if config.input_size is None and native:
        size = min(size, int(native))
    return ResolvedRun(config, det, ds, tr, manifest, int(size), audit_result,
                       report.as_dict())


def landmarks_command(config: RunConfig) -> str:
    """The command that prepares the landmark cache a run on ``config``'s dataset reads
    (``fbench data landmarks``, from the built-in landmarks plugin), with the same dataset
    options and root, so it resolves the same manifest."""
    import shlex

    parts = ["fbench", "data", "landmarks", config.dataset]
    if config.data_root is not None:
        parts += ["--data-root", str(config.data_root)]
    for key, value in config.dataset_options.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        parts += ["--dataset-option", f"{key}={text}"]
    return " ".join(shlex.quote(p) for p in parts)


def run_audit(manifest: pd.DataFrame, enabled: bool) -> dict[str, Any] | None:
    """Audit a built dataset (one whose manifest asks for it) before training; a leak stops
    the run. ``--skip-audit`` skips it, and the run records that it did."""
    if not enabled:
        from fbench.splits import groups_in_several_splits

        return {"skipped": True,
                "groups_in_several_splits": int(groups_in_several_splits(manifest)["group"]
                                                .nunique())}
    if not manifest.attrs.get("audit"):
        return None
    from fbench.audit import audit

    report = audit(manifest, manifest.attrs.get("expected_balance"), balance_tolerance=0.02)
    if not report.ok:
        raise FbenchError(
            f"dataset {manifest.attrs.get('name')!r} fails the leakage audit: "
            + ", ".join(f"{k} {v}" for k, v in report.summary().items() if v) + ".",
            "see `fbench data audit` for the offenders; rebuild the dataset, or pass "
            "--skip-audit (recorded in the run).",
        )
    return {"skipped": False, "ok": True, **report.summary()}
