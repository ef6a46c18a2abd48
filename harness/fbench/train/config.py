"""The configuration of one run: what the CLI, a TOML file and ``fbench.run`` all resolve to.

Configs are data (TOML), never executed. Unset fields (``None``) resolve from the detector's
preferred defaults, then fbench's own.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fbench.errors import FbenchError

FIXED_EPOCHS: dict[str, Any] = {"schedule": "constant", "warmup_epochs": 0, "patience": 0,
                                "min_delta": 0.0, "collapse_epochs": 0, "precise_bn": 0,
                                "clip_grad": None}
"""Training as fbench did before its convergence settings, and as published recipes train: a
constant rate over every epoch to the ceiling, running BatchNorm statistics, no stopping rule,
no clipping. Runs stored before these settings read back as this."""

DEFAULTS: dict[str, Any] = {"epochs": 20, "batch_size": 64, "lr": 1e-3,
                            "schedule": "cosine", "patience": 3, "collapse_epochs": 3}
"""fbench's own defaults for the settings a detector may prefer otherwise
(``DetectorSpec.defaults``). ``epochs`` is the ceiling; ``patience`` stops earlier on a
plateau. 20: every shipped detector reached a plateau under it on the committed synthetic
tables (leaderboards/synthetic.md, 3 seeds each); under 12, resnet18, graftnet and the
landmark net stopped at the ceiling still improving (docs/lr-sweep.md). ``warmup_epochs``
(1 from a ceiling of 10 epochs, else 0) and ``precise_bn`` (on over up to 32 batches when an
epoch has fewer than 500 steps) resolve from the run's size."""


# The type (and range) each setting must have: checked once, when a RunConfig is made, so a
# TOML `epochs = "ten"` or `fbench.run(lr="fast")` is one line naming the setting, not a
# TypeError deep inside training. (name: (types, check, what the check means, an example))
_INT, _NUM, _STR, _BOOL = (int,), (int, float), (str,), (bool,)
_CHECKS: dict[str, tuple[tuple[type, ...], Any, str, str]] = {
    "epochs": (_INT, lambda v: v >= 1, "at least 1", "epochs = 30"),
    "batch_size": (_INT, lambda v: v >= 1, "at least 1", "batch_size = 64"),
    "lr": (_NUM, lambda v: v > 0, "above 0", "lr = 2e-4"),
    "weight_decay": (_NUM, lambda v: v >= 0, "0 or more", "weight_decay = 1e-4"),
    "seed": (_INT, lambda v: True, "", "seed = 0"),
    "input_size": (_INT, lambda v: v >= 8, "at least 8", "input_size = 224"),
    "val_fraction": (_NUM, lambda v: 0 <= v < 1, "in [0, 1)", "val_fraction = 0.1"),
    "workers": ((int, str), lambda v: v == "auto" if isinstance(v, str) else v >= 0,
                'a number of processes (0 or more) or "auto"', 'workers = "auto"'),
    "tf32": (_BOOL, lambda v: True, "", "tf32 = true"),
    "compile": (_BOOL, lambda v: True, "", "compile = true"),
    "channels_last": (_STR, lambda v: v in ("auto", "on", "off"), "auto, on or off",
                      'channels_last = "auto"'),
    "keep_last": (_BOOL, lambda v: True, "", "keep_last = true"),
    "schedule": (_STR, lambda v: v in ("cosine", "step", "constant"),
                 "cosine, step or constant", 'schedule = "cosine"'),
    "warmup_epochs": (_NUM, lambda v: v >= 0, "0 or more", "warmup_epochs = 1"),
    "patience": (_INT, lambda v: v >= 0, "0 (off) or more", "patience = 3"),
    "min_delta": (_NUM, lambda v: v >= 0, "0 or more", "min_delta = 0.005"),
    "collapse_epochs": (_INT, lambda v: v >= 0, "0 (off) or more", "collapse_epochs = 3"),
    "precise_bn": (_INT, lambda v: v >= 0, "0 (off) or more", "precise_bn = 32"),
    "clip_grad": (_NUM, lambda v: v > 0, "above 0", "clip_grad = 1.0"),
    "audit": (_BOOL, lambda v: True, "", "audit = true"),
    "skip_bad": (_BOOL, lambda v: True, "", "skip_bad = false"),
    "cache_images": (_BOOL, lambda v: True, "", "cache_images = true"),
    "cache": (_STR, lambda v: v in ("auto", "off", "build"), "auto, off or build",
              'cache = "auto"'),
    "detector": (_STR, lambda v: True, "", 'detector = "resnet18"'),
    "dataset": (_STR, lambda v: True, "", 'dataset = "synthetic"'),
    "transform": (_STR, lambda v: True, "", 'transform = "dct"'),
    "optimizer": (_STR, lambda v: v in ("adam", "adamw", "sgd"), "adam, adamw or sgd",
                  'optimizer = "adam"'),
    "device": (_STR, lambda v: True, "", 'device = "cuda"'),
    # auto (bf16 on CUDA, fp32 on CPU) is what `fbench bench` measures with; a run refuses it
    "precision": (_STR, lambda v: v in ("fp32", "bf16", "auto"), "fp32 or bf16",
                  'precision = "bf16"'),
    "resample": (_STR, lambda v: v in ("bilinear", "area"), "bilinear or area",
                 'resample = "bilinear"'),
    "protocol": (_STR, lambda v: True, "", 'protocol = "thesis"'),
    "data_root": (_STR, lambda v: True, "", 'data_root = "built/seg_2"'),
    "out": (_STR, lambda v: True, "", 'out = "runs"'),
    "name": (_STR, lambda v: True, "", 'name = "baseline"'),
    "options": ((dict,), lambda v: True, "", "[options] depth = \"thesis\""),
    "dataset_options": ((dict,), lambda v: True, "", "[dataset_options] n_per_class = 500"),
    "transform_options": ((dict,), lambda v: True, "", "[transform_options] ..."),
}


# what a setting takes, where its types alone would say it wrong ("an integer or a string")
_KINDS = {"workers": 'an integer or "auto"'}


def _check_setting(name: str, value: Any) -> None:
    types, ok, meaning, example = _CHECKS[name]
    # bool is an int in Python; a flag is never a count, and a count never a flag
    wrong_type = (not isinstance(value, types)
                  or (isinstance(value, bool) and bool not in types))
    if wrong_type:
        kinds = _KINDS.get(name) or " or ".join(
            {"int": "an integer", "float": "a number", "str": "a string",
             "bool": "true or false", "dict": "a table"}[t.__name__]
            for t in types if not (t is int and float in types))
        raise FbenchError(f"setting {name} must be {kinds}, got {value!r}.", f"e.g. {example}")
    if not ok(value):
        raise FbenchError(f"setting {name} must be {meaning}, got {value!r}.", f"e.g. {example}")


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a run. ``options`` go to the detector's factory (``--set``),
    ``dataset_options`` to the dataset's (``--dataset-option``), ``transform_options`` to the
    transform's (``--transform-option``).

    ``tf32``: allow TensorFloat-32 convolutions and matmuls on CUDA (off by default: TF32
    measurably moves LFS's log-DCT bands). ``resample``: how images are resized to the input
    size (see :data:`fbench.data.images.RESAMPLERS`). ``protocol``: ``fbench`` (the settings
    here and the detector's preferences) or a published training recipe the detector declares in
    ``DetectorSpec.protocols`` (``thesis``), applied under any flag the user gives.
    ``cache``: the decoded-image cache (:mod:`fbench.data.cache`): ``auto`` reads it when it is
    built, ``build`` builds it first when missing, ``off`` never touches it.

    Speed (recorded in ``config.json``, no part of the configuration a table compares:
    results move within float tolerance at most, and on CPU not at all by default):
    ``workers``, the DataLoader processes, or ``auto`` (0 on CPU, on CUDA enough to feed the
    GPU: :func:`fbench.train.runtime.resolve_workers`; the run stores the number it used);
    ``channels_last``, the model's and the input's memory format: ``auto`` (on CUDA where the
    detector allows it), ``on`` (on CPU too) or ``off``; ``compile``, ``torch.compile`` the
    model for training (its first step's warm-up is stored apart, as
    ``compile_warmup_seconds``, and not counted in the throughput).

    ``keep_last``: keep ``checkpoints/last.pt`` (model, optimizer, scheduler and RNG state for
    ``--resume``) once the run completes; by default only ``best.pt`` (model and transform)
    stays.

    Convergence: ``epochs`` is the ceiling; ``schedule`` (cosine, step, constant) with a linear
    ``warmup_epochs``; ``patience`` epochs without a validation macro-F1 gain above
    ``min_delta`` stop the run (0: never); ``collapse_epochs`` epochs in a row with validation
    predictions on one class stop it (0: never); ``precise_bn`` training batches recompute the
    BatchNorm statistics before each validation (0: off); ``clip_grad`` clips the gradient
    norm."""

    detector: str = "resnet18"
    dataset: str = "synthetic"
    transform: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 1e-4
    schedule: str | None = None
    warmup_epochs: float | None = None
    patience: int | None = None
    min_delta: float = 0.0
    collapse_epochs: int | None = None
    precise_bn: int | None = None
    clip_grad: float | None = None
    optimizer: str = "adam"
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    tf32: bool = False
    keep_last: bool = False
    input_size: int | None = None
    resample: str = "bilinear"
    protocol: str = "fbench"
    val_fraction: float = 0.1
    workers: int | str = "auto"
    channels_last: str = "auto"
    compile: bool = False
    cache_images: bool | None = None
    cache: str = "auto"
    audit: bool = True
    skip_bad: bool = False
    data_root: str | None = None
    out: str = "runs"
    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    transform_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:  # None: resolved later from the detector's preferences
                _check_setting(f.name, value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            import difflib

            hints = [m for k in unknown for m in difflib.get_close_matches(k, known, n=1)]
            raise FbenchError(
                f"{source}: unknown setting(s) {', '.join(unknown)}.",
                (f"did you mean {', '.join(hints)}? " if hints else "")
                + "detector options go under [options]; settings are: "
                + ", ".join(sorted(known)) + ".",
            )
        return cls(**data)

    @classmethod
    def from_stored(cls, stored: dict[str, Any], source: str = "config.json") -> RunConfig:
        """The configuration a stored run (its ``config.json``) was resolved to: the one home
        for reading a run's settings back (resume, reproduce, predict, Grad-CAM, robustness).
        Metadata such as ``n_parameters`` is dropped; what a run recorded as it used it wins
        over what today's defaults would give."""
        from fbench.data.images import stored_resampler

        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in stored.items() if k in known}
        data["resample"] = stored_resampler(stored)  # older runs resized with INTER_AREA
        used = stored.get("detector_options")
        if used is not None:
            # every option as the run used it, so a default changed since (GraftNet's
            # residual, the reference initialisation) does not change the rebuilt model; the
            # input size still follows the run's input size unless the user had set it
            given = stored.get("options") or {}
            data["options"] = {k: v for k, v in used.items() if k != "input_size" or k in given}
        # config.json's "audit" holds the audit's result, not the setting: a dict with
        # skipped=True means --skip-audit, anything else that the audit was on.
        if "schedule" not in stored:  # stored before schedules: fbench trained this way
            data.update(FIXED_EPOCHS)
        audit = stored.get("audit")
        if not isinstance(audit, bool):
            data["audit"] = not (isinstance(audit, dict) and audit.get("skipped"))
        return cls.from_dict(data, source=source)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML run config; returns the raw dict (validated by ``RunConfig.from_dict``)."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise FbenchError(f"config file {p} does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise FbenchError(f"config file {p} is not valid TOML: {exc}.") from None


def parse_value(text: str) -> Any:
    """``--set`` values are TOML literals (``3``, ``0.5``, ``true``, ``"a"``); anything that
    does not parse as one is taken as a plain string (``depth=thesis``)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignments(pairs: tuple[str, ...] | list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs of ``flag`` (``--set``, ``--dataset-option``, ...) as a dict, ``-``
    in keys read as ``_``. Values are :func:`parse_value` literals, with two exceptions, since
    a run stores its options as strict JSON: a TOML date or time (``2024-01-01``) is kept as
    the text typed (no option takes a date object), and ``nan``/``inf`` are refused."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise FbenchError(f"{flag} {pair!r} is not KEY=VALUE.",
                              f"write e.g. {flag} depth=thesis")
        text = value.strip()
        parsed = parse_value(text)
        # a date the user typed is the text they typed (nested ones become ISO text)
        out[key.strip().replace("-", "_")] = (text if _is_date(parsed)
                                              else _storable(parsed, f"{flag} {pair}"))
    return out


def _is_date(value: Any) -> bool:
    import datetime

    return isinstance(value, datetime.date | datetime.time)  # a datetime is a date


def _storable(value: Any, where: str) -> Any:
    """``value`` as strict JSON can store it: dates and times as ISO text, non-finite numbers
    refused."""
    import math

    if _is_date(value):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        raise FbenchError(f"{where}: {value} is not a finite number.",
                          "give a finite number (a run stores its options as JSON).")
    if isinstance(value, list):
        return [_storable(v, where) for v in value]
    if isinstance(value, dict):
        return {k: _storable(v, where) for k, v in value.items()}
    return value


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_TYPE_EXAMPLES = {bool: "true", int: "1", float: "0.5", str: "text"}


def _expected(types: tuple[type, ...]) -> tuple[tuple[type, ...], str]:
    """The types an option of ``types`` (from :func:`fbench.plugins.specs.option_types`) takes
    (a number may be written as an integer) and how to say so."""
    if float in types and int not in types:
        types = (*types, int)
    words = [w for t, w in _TYPE_WORDS.items() if t in types and not (t is int and float in types)]
    return types, " or ".join(words) or "none"


def _example(default: Any, types: tuple[type, ...]) -> str:
    """A value to show in the fix: the default where it is one of ``types``, else a typical
    value of the first of them."""
    if default is not None and type(default) in types:
        return str(default).lower() if isinstance(default, bool) else str(default)
    return next((_TYPE_EXAMPLES[t] for t in types if t in _TYPE_EXAMPLES), "")


def _typed(value: Any, types: tuple[type, ...], default: Any) -> tuple[bool, Any]:
    """``value`` as an option of ``types`` takes it, and whether it does: a string that reads
    as the expected number or flag (``"64"``, from a TOML string, an older run's config or the
    Python API) is converted, a number given for a text option becomes its text; None passes
    where the annotation or the default allows it."""
    import math

    if value is None:
        return (type(None) in types or default is None), value
    if isinstance(value, str) and str not in types:
        value = parse_value(value.strip())
    elif (str in types and isinstance(value, int | float) and not isinstance(value, bool)
          and int not in types and float not in types):
        value = str(value)
    # bool is an int in Python: a flag is never a count, and a count never a flag
    ok = isinstance(value, types) and (bool in types or not isinstance(value, bool))
    # a run stores its options as strict JSON, which has no nan or inf
    return ok and not (isinstance(value, float) and not math.isfinite(value)), value


def typed_options(kind: str, name: str, factory: Any, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against the types the factory declares for them, by annotation or,
    without one, by its default's type (:func:`fbench.plugins.specs.option_types`), before the
    factory sees them: an integer where it takes one, a number for a float (an integer will
    do), true/false for a flag, a string for a string, None where the annotation or default
    allows it; options whose type neither tells pass as given. A string that reads as the
    expected number or flag is converted and a number given for a string option becomes its
    text (see :func:`_typed`). Anything else is one line naming the option, the expected type
    and an example. Returns the converted copy (names are :func:`check_options`'s job)."""
    from fbench.plugins.specs import factory_options, option_types

    declared = option_types(factory)
    defaults = factory_options(factory)
    out = dict(options)
    for key, value in options.items():
        if declared.get(key) is None:
            continue
        types, what = _expected(declared[key])
        ok, converted = _typed(value, types, defaults.get(key))
        if not ok:
            flag = _FLAGS[kind]
            raise FbenchError(f"{kind} {name!r}: option {key} must be {what}, got {value!r}.",
                              f"e.g. {flag} {key}={_example(defaults.get(key), types)}")
        out[key] = converted
    return out


_FLAGS = {"detector": "--set", "dataset": "--dataset-option", "transform": "--transform-option"}


def check_options(kind: str, name: str, factory: Any, options: dict[str, Any],
                  reserved: tuple[str, ...] = ()) -> dict[str, Any]:
    """Refuse options a factory does not take, listing the ones it does, and options of a
    type it does not take (:func:`typed_options`), before anything is built: ``--set
    drop_rate=abc`` is one line, not a traceback from inside the model mid-run. Returns the
    options as the factory should get them (``"0.5"`` read as 0.5)."""
    from fbench.plugins.specs import factory_options

    accepted = factory_options(factory)
    if "**" not in accepted:  # a **kwargs factory takes any name; its named options are typed
        names = [k for k in accepted if k not in reserved]
        unknown = [k for k in options if k not in names]
        if unknown:
            listing = ", ".join(names) if names else "none"
            raise FbenchError(
                f"{kind} {name!r} takes no option {', '.join(map(repr, unknown))}.",
                f"its options ({_FLAGS[kind]} key=value) are: {listing}.",
            )
    return typed_options(kind, name, factory, options)
