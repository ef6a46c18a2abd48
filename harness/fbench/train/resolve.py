"""From a :class:`RunConfig` to everything a run needs, checked before anything is written:
names resolve, options are ones the factories take, the dataset loads and validates, the
detector's needs (masks, landmarks) are met, and val is carved from train by group."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fbench.data.manifest import validate_manifest
from fbench.data.splits import assert_grouped, carve_validation
from fbench.errors import FbenchError
from fbench.plugins.registry import get_registry
from fbench.plugins.specs import DatasetSpec, DetectorSpec, TransformSpec
from fbench.train.config import DEFAULTS, FIXED_EPOCHS, RunConfig, check_options


def load_manifest(spec: DatasetSpec, root: str | None, options: dict[str, Any]) -> pd.DataFrame:
    """Call a dataset's factory and validate what it returns. Options are checked by name
    and by the type of the factory's defaults first, so ``image_size=abc`` is one line, not
    the factory's own traceback."""
    options = check_options("dataset", spec.name, spec.factory, options, reserved=("root",))
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


def model_options(spec: DetectorSpec, options: dict[str, Any], input_size: int) -> dict[str, Any]:
    """The options a detector's factory is called with: the user's, plus the run's input size
    for a detector whose size-dependent parts take ``input_size`` (unless the user set it)."""
    from fbench.plugins.specs import factory_options

    options = dict(options)
    if "input_size" in factory_options(spec.factory) and "input_size" not in options:
        options["input_size"] = input_size
    return options


def build_detector(spec: DetectorSpec, options: dict[str, Any], input_size: int) -> Any:
    """The one place a detector is built for a run, new or stored: its factory with
    :func:`model_options`, wrapped as a :class:`fbench.Detector`."""
    from fbench.plugins.detector import as_detector

    return as_detector(spec.factory(num_classes=3, **model_options(spec, options, input_size)))


@dataclass(frozen=True)
class ResolvedRun:
    config: RunConfig
    detector: DetectorSpec
    dataset: DatasetSpec
    transform: TransformSpec
    manifest: pd.DataFrame
    input_size: int
    audit: dict[str, Any] | None = None
    preflight: dict[str, Any] | None = None
    _hashes: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    def model_options(self, input_size: int | None = None) -> dict[str, Any]:
        """The options the detector's factory is called with (:func:`model_options`)."""
        return model_options(self.detector, self.config.options, input_size or self.input_size)

    def build_model(self, input_size: int | None = None) -> Any:
        """The detector at the run's input size (or at ``input_size``, e.g. to count the
        parameters of the 224 px model)."""
        return build_detector(self.detector, self.config.options, input_size or self.input_size)

    def parameter_counts(self, model: Any) -> dict[str, Any]:
        """The model's parameters at the run's input size and, for a detector whose size
        depends on the input (a FAD head's filters are N x N), at 224 px, the size the
        thesis's (and most papers') counts refer to."""
        import torch

        from fbench.plugins.detector import count_parameters

        n = count_parameters(model)
        if not self.size_dependent():
            return {"n_parameters": n, "parameters_counted_at": None}
        if self.input_size == 224:
            n224 = n
        else:
            with torch.random.fork_rng(devices=[]):  # counting must not move the run's RNG
                n224 = count_parameters(self.build_model(224))
        return {"n_parameters": n, "parameters_counted_at": self.input_size,
                "n_parameters_224": n224}

    def size_dependent(self) -> bool:
        """Whether the detector's parameters may depend on the input size (it takes one)."""
        from fbench.plugins.specs import factory_options

        return ("input_size" in factory_options(self.detector.factory)
                and "input_size" not in self.config.options)

    def detector_options(self) -> dict[str, Any]:
        """Every option of the factory as this run used it: its defaults (those that are
        plain data) under the user's. Stored with the run, so a changed default (GraftNet's
        residual, the reference initialisation) never makes two different models look like
        one configuration."""
        import inspect

        from fbench.plugins.specs import factory_options

        out: dict[str, Any] = {}
        for key, default in factory_options(self.detector.factory).items():
            if key in ("**", "num_classes") or default is inspect.Parameter.empty:
                continue
            if default is None or isinstance(default, (bool, int, float, str)):
                out[key] = default
        out.update(self.model_options())
        return dict(sorted(out.items()))

    def image_hashes(self) -> pd.DataFrame:
        """Every image's SHA-256 (computed once per resolved run)."""
        if self._hashes is None:
            from fbench.data.fingerprint import image_hashes

            # a memo, not state: frozen records may still cache what they compute
            object.__setattr__(self, "_hashes", image_hashes(self.manifest))
        return self._hashes

    def dataset_identity(self) -> dict[str, str]:
        """What makes two runs' data the same: every image's content and the rows (label,
        source, group, train/eval side), but not the validation carve, which moves with the
        seed."""
        from fbench.data.fingerprint import dataset_identity

        return dataset_identity(self.manifest, self.image_hashes())

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
            "detector_options": self.detector_options(),
            "groups": groups_origin(self.manifest),
            "audit": self.audit,
            "preflight": self.preflight,
            **self._landmarks(),
            **extra,
        }

    def warnings(self) -> list[str]:
        """What a reader of this run's numbers must know about its data: groups that were
        inferred or unknown (possible leaks)."""
        from fbench.data.probe import shortcut_warnings, stored_probe

        out = []
        groups = groups_warning(groups_origin(self.manifest))
        if groups:
            out.append(groups)
        probe = stored_probe(self.manifest, self.image_hashes())
        if probe is not None:
            out += shortcut_warnings(probe)
        return out

    def _landmarks(self) -> dict[str, Any]:
        from fbench.data.landmarks import landmark_summary

        summary = landmark_summary(self.manifest)
        return {"landmarks": summary} if summary else {}


def groups_origin(manifest: pd.DataFrame) -> dict[str, Any]:
    """How the manifest's groups were made: ``recorded`` (the dataset knows its videos or
    identities), ``inferred`` (reconstructed, e.g. from near-duplicate frames) or ``unknown``
    (one group per image for lack of information); datasets say so in ``attrs["groups"]``."""
    info = dict(manifest.attrs.get("groups") or {})
    info.setdefault("origin", "recorded")
    return info


def groups_warning(info: dict[str, Any] | None) -> str | None:
    """One sentence for runs and tables on a dataset whose groups are not recorded."""
    origin = (info or {}).get("origin", "recorded")
    if origin == "recorded":
        return None
    how = f" ({info['method']})" if info.get("method") else ""
    if origin == "inferred":
        return (f"the dataset's groups (videos) were inferred{how}, not recorded: frames of "
                "one video may still straddle train/val/eval and inflate the scores.")
    return (f"the dataset's groups are {origin}{how}: each image is its own group, so frames "
            "of one video may straddle train/val/eval and inflate the scores.")


PRECISE_BN_BATCHES = 32
PRECISE_BN_BELOW_STEPS = 500


def resolve_convergence(config: RunConfig, n_train: int) -> RunConfig:
    """Warm-up and precise BatchNorm where the run leaves them unset: one epoch of warm-up
    from a ceiling of 10 epochs (none below: a short run has no steps to spare); precise BN
    over up to 32 training batches when an epoch has fewer than 500 steps (BatchNorm's running
    statistics then lag the weights; on long epochs they have caught up)."""
    changes: dict[str, Any] = {}
    if config.warmup_epochs is None:
        changes["warmup_epochs"] = 1 if config.epochs >= 10 else 0
    if config.precise_bn is None:
        steps = max(1, n_train // config.batch_size)
        changes["precise_bn"] = (min(PRECISE_BN_BATCHES, steps)
                                 if steps < PRECISE_BN_BELOW_STEPS else 0)
    return config.replace(**changes) if changes else config


def apply_protocol(config: RunConfig, det: DetectorSpec) -> RunConfig:
    """The run settings of ``config.protocol`` (a training recipe the detector declares), under
    every setting the user changed from fbench's defaults (a field still at its default takes
    the protocol's value; detector options merge, the user's winning)."""
    if config.protocol == "fbench":
        return config
    recipe = det.protocols.get(config.protocol)
    if recipe is None:
        have = sorted(n for n, (spec, _) in get_registry().specs("detector").items()
                      if config.protocol in spec.protocols)
        raise FbenchError(
            f"detector {det.name!r} declares no {config.protocol!r} protocol"
            + (f" (its protocols: {', '.join(sorted(det.protocols))})" if det.protocols
               else "") + ".",
            (f"detectors with it: {', '.join(have)}; " if have else "")
            + "or use --protocol fbench.")
    import dataclasses

    defaults = RunConfig()
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    changes: dict[str, Any] = {}
    for key, value in recipe.items():
        if key == "options":
            changes["options"] = {**value, **config.options}
        elif key not in fields or key in ("detector", "protocol"):
            raise FbenchError(f"detector {det.name!r}: protocol {config.protocol!r} sets "
                              f"unknown run setting {key!r} (a plugin bug).")
        elif getattr(config, key) == getattr(defaults, key):
            changes[key] = value
    # a published recipe trains as published (FIXED_EPOCHS), unless it or the user says else
    for key, value in FIXED_EPOCHS.items():
        if key not in recipe and getattr(config, key) is None:
            changes[key] = value
    return config.replace(**changes)


def resolve(config: RunConfig) -> ResolvedRun:
    from fbench.data.images import check_resampler
    from fbench.runs.store import check_out_dir

    check_out_dir(config.out)
    check_resampler(config.resample)
    reg = get_registry()
    det: DetectorSpec = reg.get("detector", config.detector)
    ds: DatasetSpec = reg.get("dataset", config.dataset)
    config = apply_protocol(config, det)
    tname = config.transform or det.transform
    tr: TransformSpec = reg.get("transform", tname)
    # checked by name and type, and converted ("0.5" from TOML reaches the factory as 0.5)
    config = config.replace(
        options=check_options("detector", det.name, det.factory, config.options,
                              reserved=("num_classes",)),
        transform_options=check_options("transform", tr.name, tr.factory,
                                        config.transform_options))
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
    if det.needs_landmarks:  # from the dataset's own columns, or its cache (fbench.data.landmarks)
        from fbench.data.landmarks import require_landmarks

        manifest = require_landmarks(manifest, det.name, landmarks_command(config))
    # every file checked before anything is written or trained (see fbench.data.preflight)
    from fbench.data.preflight import preflight

    manifest, report = preflight(manifest, with_masks=ds.has_masks, skip_bad=config.skip_bad)
    manifest = carve_validation(manifest, config.val_fraction, config.seed)
    config = resolve_convergence(config, int((manifest["split"] == "train").sum()))
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
        from fbench.data.audit import identities_in_several_splits
        from fbench.data.splits import groups_in_several_splits

        straddling = identities_in_several_splits(manifest)
        return {"skipped": True,
                "groups_in_several_splits": int(groups_in_several_splits(manifest)["group"]
                                                .nunique()),
                "identities_in_several_splits": int(straddling["identity"].nunique())
                if len(straddling) else 0}
    if not manifest.attrs.get("audit"):
        return None
    from fbench.data.audit import audit

    report = audit(manifest, manifest.attrs.get("expected_balance"), balance_tolerance=0.02)
    if not report.ok:
        raise FbenchError(
            f"dataset {manifest.attrs.get('name')!r} fails the leakage audit: "
            + ", ".join(f"{k} {v}" for k, v in report.summary().items() if v) + ".",
            "see `fbench data audit` for the offenders; rebuild the dataset, or pass "
            "--skip-audit (recorded in the run).",
        )
    return {"skipped": False, "ok": True, **report.summary()}
