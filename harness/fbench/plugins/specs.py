"""The small frozen records a plugin hands to ``register``.

Nothing here imports torch: ``fbench list`` reads specs without loading any model code.
A factory is a plain callable; its keyword arguments are the thing's options, which the CLI
exposes as ``--set key=value`` (detectors) or ``--dataset-option key=value`` (datasets).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LABELS: dict[int, str] = {0: "real", 1: "generated", 2: "edited"}
"""The three labels every dataset and detector in fbench speaks."""

TRAITS = ("backbone", "head", "fusion", "multi_task")
"""The columns of a table laid out like the thesis's final table, in order."""
REFERENCE_METRICS = ("accuracy", "macro_f1", "dice", "params_m")

NAME_PATTERN = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(
            f"{kind} name {name!r} is not kebab-case (lowercase letters, digits, '-'): "
            "rename it, e.g. 'my-detector'."
        )


def factory_options(factory: Callable[..., Any]) -> dict[str, Any]:
    """The keyword options a factory accepts, with their defaults (``inspect.Parameter.empty``
    where it has none). ``**kwargs`` factories accept anything and return ``{"**": ...}``."""
    options: dict[str, Any] = {}
    for p in inspect.signature(factory).parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            options["**"] = inspect.Parameter.empty
        elif p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            options[p.name] = p.default
    return options


_PLAIN_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool,
                                 "None": type(None), "NoneType": type(None)}


def _annotation_parts(annotation: Any) -> list[Any]:
    """The members of a union annotation (``int | None``, ``Optional[int]``, ``Union[...]``),
    written as a type or, under ``from __future__ import annotations``, as text."""
    if isinstance(annotation, str):
        text = annotation.strip()
        # read as text, never evaluated: an annotation may name what only type checkers import
        optional = re.fullmatch(r"(?:typing\.)?Optional\[(.*)\]", text)
        if optional:
            return [*_annotation_parts(optional.group(1)), "None"]
        union = re.fullmatch(r"(?:typing\.)?Union\[(.*)\]", text)
        return [p.strip() for p in (union.group(1).split(",") if union else text.split("|"))]
    import types
    import typing

    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return list(typing.get_args(annotation))
    return [annotation]


def _plain_type(part: Any) -> type | None:
    """``part`` of an annotation as one of the plain types, or None when it is another."""
    if part is None or part is type(None):
        return type(None)
    if isinstance(part, str):
        return _PLAIN_TYPES.get(part)
    return part if part in _PLAIN_TYPES.values() else None


def option_types(factory: Callable[..., Any]) -> dict[str, tuple[type, ...] | None]:
    """For each keyword option of a factory, the plain types its annotation names (any of
    int, float, str, bool and None, alone or in a union), or, without an annotation, its
    default's type (None as a default says nothing). None where neither tells (an annotation
    such as ``Any``, ``Path`` or ``tuple[float, ...]``): such an option is not type-checked,
    since refusing a value the factory may well take is worse than not checking it."""
    out: dict[str, tuple[type, ...] | None] = {}
    for p in inspect.signature(factory).parameters.values():
        if p.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          inspect.Parameter.KEYWORD_ONLY):
            continue
        if p.annotation is not inspect.Parameter.empty:
            parts = [_plain_type(a) for a in _annotation_parts(p.annotation)]
            out[p.name] = None if None in parts else tuple(parts)
        elif type(p.default) in (bool, int, float, str):  # exactly: an enum default says more
            out[p.name] = (type(p.default),)
        else:
            out[p.name] = None
    return out


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its factory returns a validated manifest (a pandas DataFrame).

    ``factory(root, **options)``: ``root`` is the directory the user points at with
    ``--data-root`` (``None`` when not given; a dataset that needs one must say so).
    """

    name: str
    summary: str
    factory: Callable[..., Any]
    labels: tuple[int, ...] = (0, 1, 2)
    has_masks: bool = False
    has_landmarks: bool = False
    needs_root: bool = True

    def __post_init__(self) -> None:
        _check_name("dataset", self.name)


@dataclass(frozen=True)
class TransformSpec:
    """A preprocessing transform: ``factory(**options)`` returns a ``torch.nn.Module`` that runs
    on the model's device and maps a float batch in [0, 1], ``[B, 3, H, W]``, already resized to
    the detector's input size by the data loader, to the model's input.

    The module keeps the batch size, height, width and device, and returns a float tensor.
    ``fit_on_train`` and ``geometric`` declare what else the core may call on it (the protocols
    of :mod:`fbench.plugins.protocols`).
    """

    name: str
    summary: str
    factory: Callable[..., Any]
    fit_on_train: bool = False
    """The module is a ``FittedTransform``: the engine calls ``fit(batches)`` once with
    training batches before training (e.g. DCT statistics); its state is stored with the run."""
    geometric: bool = False
    """The module moves pixels (a crop, a warp) and is a ``GeometricTransform``:
    ``map_masks(masks)`` and ``map_points(points, size)`` move forgery masks and landmarks with
    the image when ``fbench robustness`` uses it as a perturbation."""

    def __post_init__(self) -> None:
        _check_name("transform", self.name)


@dataclass(frozen=True)
class DetectorSpec:
    """A detector: ``factory(num_classes=3, **options)`` returns a ``torch.nn.Module``.

    The module is either an :class:`fbench.Detector` (takes a :class:`fbench.Batch`, returns a
    :class:`fbench.DetectorOutput`, owns its loss) or any image classifier mapping
    ``[B, C, H, W]`` to logits, which the harness wraps with cross-entropy.
    """

    name: str
    summary: str
    factory: Callable[..., Any]
    family: str = ""
    input_size: int = 224
    transform: str = "raw"
    needs_masks: bool = False
    needs_landmarks: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)
    """Run settings this detector prefers (e.g. ``{"lr": 2e-4}``); the user's win."""
    traits: dict[str, str] = field(default_factory=dict)
    """What the model is made of, for tables laid out like the thesis's: any of
    ``backbone``, ``head``, ``fusion``, ``multi_task`` (e.g. ``{"head": "FAD"}``)."""
    references: dict[str, dict[str, float]] = field(default_factory=dict)
    """Numbers measured elsewhere, ``{title: {"accuracy"|"macro_f1"|"dice"|"params_m": v}}``
    (percent; params in millions), shown beside fbench's own, labelled, never instead."""
    protocols: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Training recipes a publication used, ``{protocol: settings}``, applied by
    ``fbench run --protocol NAME`` (e.g. ``{"thesis": {"lr": 2e-3, "batch_size": 32,
    "epochs": 30, "input_size": 224, "options": {"dice_reduction": "batch"}}}``): any run setting
    (``RunConfig`` field) plus ``options`` for the factory. Flags the user gives still win."""
    bench_groups: tuple[str, ...] = ()
    """The parts ``fbench bench`` times on their own in this detector's default build: each is
    the ``bench_group`` class attribute of a submodule (a ``BenchTimed``, e.g.
    ``"frequency: FAD"``), reported as its share of a training step."""
    channels_last: bool = True
    """Whether the model may run channels_last (NHWC) when a run or ``fbench bench`` asks for
    it (the run setting ``channels_last``: ``auto`` on CUDA, ``on``). False when the model
    breaks or slows under channels_last (say, a ``.view`` of a feature map that is then no
    longer contiguous, or a custom op that copies every input back to NCHW)."""

    def __post_init__(self) -> None:
        _check_name("detector", self.name)
        if not isinstance(self.input_size, int) or self.input_size < 8:
            raise ValueError(f"detector {self.name!r}: input_size must be an int >= 8")
        if isinstance(self.bench_groups, str) or not all(
                isinstance(g, str) and g for g in self.bench_groups):
            raise ValueError(f"detector {self.name!r}: bench_groups must be a tuple of "
                             "non-empty strings")
        # A list is accepted for convenience; stored as a tuple so the spec stays hashable.
        object.__setattr__(self, "bench_groups", tuple(self.bench_groups))
        unknown = set(self.traits) - set(TRAITS)
        if unknown:
            raise ValueError(f"detector {self.name!r}: unknown trait(s) {sorted(unknown)}; "
                             f"traits are {', '.join(TRAITS)}")
        for title, values in self.references.items():
            bad = set(values) - set(REFERENCE_METRICS)
            if bad:
                raise ValueError(f"detector {self.name!r}: reference {title!r} has unknown "
                                 f"metric(s) {sorted(bad)}; use {', '.join(REFERENCE_METRICS)}")


@dataclass(frozen=True)
class AblationSpec:
    """A named group of detectors that ``fbench ablate`` can resolve short names in,
    e.g. family ``f3net`` with ``{"fad": "f3net-fad", ...}``."""

    family: str
    variants: dict[str, str]
    summary: str = ""
    references: dict[str, dict[str, float]] = field(default_factory=dict)
    """Reference columns measured elsewhere, ``{column title: {short name: value}}``; shown
    beside fbench's own numbers, labelled as references, never instead of them."""


@dataclass(frozen=True)
class ProbeFeatureSpec:
    """A family of cheap image features for the shortcut probe (``fbench data probe``): a
    classifier fitted on them alone must not predict the label, or a detector can win by them.

    ``factory(manifest)`` is called once per probe with the whole manifest (so a family can
    read a cache made for it) and returns a ``ProbeExtractor`` (:mod:`fbench.plugins.protocols`):
    ``extract(row, image, path) -> sequence of floats``, ``row`` the manifest index, ``image``
    the decoded uint8 RGB ``[H, W, 3]``, ``path`` the resolved file; every image gets a vector
    of one length. The returned object may also have ``close()`` (called when the probe ends)
    and ``note`` (a line shown with the result, e.g. where its values came from).
    ``spectral``: the family measures frequency content, which frequency detectors are meant
    to learn; scoring high on it is expected, not a shortcut.
    """

    name: str
    summary: str
    spectral: bool
    factory: Callable[..., Any]

    def __post_init__(self) -> None:
        _check_name("probe feature family", self.name)


@dataclass(frozen=True)
class Recipe:
    """``counts[split][source]``: images of ``source`` in ``split`` (``train``/``eval``).

    ``collect(root)``: the plugin's function returning the candidate rows found under a
    sources root (columns path, label, source, group; optionally mask, width, height, and
    anything else worth keeping). ``with_masks``: rows keep their mask column (segmentation
    recipes). ``legacy_order``: the source's rows are taken in the given (file-listing) order
    instead of by group, which reproduces a leaky split on purpose (the thesis's recipe 3).
    ``extra["labels"]``: ``{source: label}``, for the balance audit."""

    name: str
    summary: str
    counts: dict[str, dict[str, int]]
    collect: Callable[[str], Any] | None = None
    with_masks: bool = False
    legacy_order: bool = False
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def sources(self) -> list[str]:
        return sorted({s for per in self.counts.values() for s in per})

    def total(self, split: str) -> int:
        return sum(self.counts.get(split, {}).values())

    def scaled(self, scale: float) -> Recipe:
        """The same ratios at ``scale`` (0 < scale <= 1), at least one image per entry."""
        if not 0 < scale <= 1:
            from fbench.errors import FbenchError

            raise FbenchError(f"--scale must be in (0, 1], got {scale}.")
        counts = {split: {src: max(1, math.floor(n * scale)) for src, n in per.items()}
                  for split, per in self.counts.items()}
        import dataclasses

        return dataclasses.replace(self, counts=counts, extra={**self.extra, "scale": scale})

    def expected_balance(self) -> dict[str, dict[int, float]]:
        """The label shares per split this recipe declares (needs each source's label in
        ``extra["labels"]``: ``{source: label}``)."""
        labels = self.extra.get("labels", {})
        out: dict[str, dict[int, float]] = {}
        for split, per in self.counts.items():
            total = sum(per.values())
            shares: dict[int, float] = {}
            for src, n in per.items():
                if src in labels:
                    shares[labels[src]] = shares.get(labels[src], 0.0) + n / total
            out[split] = shares
        return out
