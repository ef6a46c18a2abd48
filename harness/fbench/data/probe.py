"""The shortcut probe: can a cue unrelated to forgery predict a dataset's labels?

A detector that wins by file size, JPEG quality or whether a face was found makes every table
built on that dataset wrong. For each cheap feature family the probe fits a logistic
regression (standardised features, balanced class weights, fixed seed) on the train side of
the manifest (train and val together) and scores it on the eval split with macro-F1 over the
labels the eval split has, beside chance level.

Chance level is the expected macro-F1 of a *stratified guess*: a label drawn at random, blind
to the image, with the eval split's own class frequencies. Its per-class F1 equals that class's
frequency, so chance is 1/K on K labels present; no image-blind guess does better in
expectation, and the best constant guess does worse (0.17 on three balanced classes; stored
too, as ``chance_constant``). A family that scores ``margin`` (0.15) or more above chance is a
shortcut, unless it is spectral: frequency content is what FAD/LFS-style detectors are meant to
learn, so there a high score is expected.

Families: colour, file size, native size, JPEG quality and format, global spectrum energies
(built in), and whatever plugins register through ``register_probe_features`` (the landmarks
plugin adds ``face-found``): :mod:`fbench.data.probe_features`. Every image is decoded once,
with fbench's own reader, for all of them.

The result is stored as JSON: ``probe.json`` beside a built dataset's ``recipe.json``, else
``$FBENCH_CACHE/probe/<manifest sha256>.json`` (default ``~/.cache/fbench/probe``).
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fbench.data.probe_features import extract_features, feature_families
from fbench.errors import FbenchError
from fbench.plugins.specs import LABELS, ProbeFeatureSpec

if TYPE_CHECKING:  # pragma: no cover
    from rich.progress import Progress
    from rich.table import Table

FORMAT = 1
"""Bump when the stored layout changes; an older file then reads as absent."""
PROBE_FILE = "probe.json"
SHORTCUT_MARGIN = 0.15
DEFAULT_MAX_PER_CLASS = 2000
RANDOM_STATE = 0
CHANCE_RULE = ("stratified guess: a label drawn at random, blind to the image, with the eval "
               "split's class frequencies (expected macro-F1 = 1/K on K labels)")
# -- which images ----------------------------------------------------------------------------
def _side(split: pd.Series) -> pd.Series:
    """``train`` for train and val rows (the probe fits on both), ``eval`` for eval."""
    return split.where(split == "eval", "train")


def probe_key(manifest: pd.DataFrame, hashes: pd.DataFrame | None = None) -> str:
    """SHA-256 of the manifest's rows with val counted as train (the probe fits on both, so a
    validation split carved from train, as `fbench run` does, leaves the key unchanged) and of
    every image's content (a regenerated dataset with the same file names is another dataset).
    ``hashes``: :func:`fbench.data.fingerprint.image_hashes` of the manifest, when already known."""
    from fbench.data.fingerprint import image_hashes, images_sha256, manifest_sha256

    folded = manifest.assign(split=_side(manifest["split"]))
    hashes = image_hashes(manifest) if hashes is None else hashes
    return hashlib.sha256(f"{manifest_sha256(folded)}\n{images_sha256(hashes)}"
                          .encode()).hexdigest()


def subsample(manifest: pd.DataFrame, max_per_class: int) -> pd.DataFrame:
    """At most ``max_per_class`` rows per (train or eval, label), the same ones on every call:
    those whose path hashes lowest, which does not depend on row order or on the other rows."""
    key = manifest["path"].map(lambda p: hashlib.sha256(p.encode("utf-8", "surrogateescape"))
                               .hexdigest())
    ordered = manifest.assign(_side=_side(manifest["split"]), _key=key).sort_values("_key")
    picked = ordered.groupby(["_side", "label"], sort=False).head(max_per_class)
    return manifest.loc[sorted(picked.index)]


# -- scores ----------------------------------------------------------------------------------
def chance_levels(eval_labels: np.ndarray) -> tuple[float, float]:
    """(stratified, constant): the expected macro-F1 of a stratified guess (see the module
    docstring) and the macro-F1 of the best constant guess, over the labels present."""
    from fbench.metrics import majority_macro_f1

    labels = np.asarray(eval_labels)
    present = np.unique(labels)
    # per class, F1 = 2pq/(p+q) with guess frequency q = the class frequency p: F1 = p
    stratified = float(np.mean([np.mean(labels == k) for k in present]))
    return stratified, majority_macro_f1(labels)


def fit_and_score(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray,
                  y_eval: np.ndarray) -> tuple[float, dict[int, float]]:
    """Eval macro-F1 (over the labels eval has, as chance is) of a logistic regression on
    standardised features with balanced class weights, fitted on the train side; and the F1 of
    each of those labels
    (one binary feature can name only two of three labels, so its macro-F1 is capped near
    0.56 even when it gives one label away: the per-label F1 shows that)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(
        class_weight="balanced", max_iter=2000, random_state=RANDOM_STATE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unconverged fit still scores what it learned
        model.fit(x_train, y_train)
    labels = np.unique(y_eval)
    per_label = f1_score(y_eval, model.predict(x_eval), labels=labels, average=None,
                         zero_division=0)
    return float(per_label.mean()), {int(k): float(v) for k, v in zip(labels, per_label,
                                                                       strict=True)}


def verdict(macro_f1: float, chance: float, spectral: bool, constant: bool,
            margin: float = SHORTCUT_MARGIN) -> str:
    """A family's verdict: ``shortcut``, ``spectral (expected)``, ``weak cue``, ``near chance``
    or ``constant`` (no information: every training image has the same features)."""
    if constant:
        return "constant"
    above = macro_f1 - chance
    if above >= margin:
        return "spectral (expected)" if spectral else "shortcut"
    # a few hundred eval images leave macro-F1 a sampling noise of about 0.02-0.03
    return "weak cue" if above >= margin / 3 else "near chance"


@dataclass(frozen=True)
class FamilyScore:
    """One row of the probe's table."""

    family: str
    summary: str
    provider: str
    spectral: bool
    n_features: int
    macro_f1: float
    chance: float
    verdict: str
    note: str = ""
    f1_per_label: dict[int, float] = field(default_factory=dict)

    @property
    def margin(self) -> float:
        return self.macro_f1 - self.chance


@dataclass(frozen=True)
class ProbeResult:
    """What one probe measured; ``to_dict()`` is what is stored and what the readers take."""

    dataset: str
    manifest_sha256: str
    images: dict[str, int]
    max_per_class: int
    labels: tuple[int, ...]
    chance: float
    chance_constant: float
    margin: float
    seconds: float
    families: tuple[FamilyScore, ...]
    stored_at: str | None = field(default=None, compare=False)

    @property
    def table(self) -> pd.DataFrame:
        """One row per family: family, n_features, macro_f1, chance, margin, verdict,
        spectral, provider, note."""
        return _table(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "dataset": self.dataset, "manifest_sha256": self.manifest_sha256,
            "images": dict(self.images), "max_per_class": self.max_per_class,
            "labels": [int(k) for k in self.labels], "chance": round(self.chance, 4),
            "chance_rule": CHANCE_RULE, "chance_constant": round(self.chance_constant, 4),
            "margin_threshold": self.margin, "seconds": round(self.seconds, 2),
            "families": [{"family": f.family, "summary": f.summary, "provider": f.provider,
                          "spectral": f.spectral, "n_features": f.n_features,
                          "macro_f1": round(f.macro_f1, 4), "chance": round(f.chance, 4),
                          "margin": round(f.margin, 4), "verdict": f.verdict, "note": f.note,
                          "f1_per_label": {LABELS.get(k, str(k)): round(v, 4)
                                           for k, v in f.f1_per_label.items()}}
                         for f in self.families],
            **({"stored_at": self.stored_at} if self.stored_at else {}),
        }


def _score_families(features: dict[str, np.ndarray], families: Sequence[tuple[Any, str]],
                    notes: dict[str, str], is_train: np.ndarray, y: np.ndarray, chance: float,
                    margin: float) -> tuple[FamilyScore, ...]:
    scores = []
    for spec, provider in families:
        x = features[spec.name]
        constant = bool((np.ptp(x[is_train], axis=0) == 0).all())
        f1, per_label = fit_and_score(x[is_train], y[is_train], x[~is_train], y[~is_train])
        scores.append(FamilyScore(spec.name, spec.summary, provider, spec.spectral,
                                  int(x.shape[1]), f1, chance,
                                  verdict(f1, chance, spec.spectral, constant, margin),
                                  notes.get(spec.name, ""), per_label))
    return tuple(scores)


def _check_labels(rows: pd.DataFrame, name: str) -> None:
    for side, part in rows.groupby(_side(rows["split"])):
        if part["label"].nunique() < 2:
            raise FbenchError(f"{name}: the probe needs two labels or more in the {side} split; "
                              f"it has only {sorted(part['label'].unique())}.",
                              "probe a dataset with several classes.")


def run_probe(manifest: pd.DataFrame, *, max_per_class: int = DEFAULT_MAX_PER_CLASS,
              margin: float = SHORTCUT_MARGIN, store: bool = True,
              families: Sequence[tuple[ProbeFeatureSpec, str]] | None = None,
              progress: Progress | None = None) -> ProbeResult:
    """Score every feature family on ``manifest`` (as ``fbench.load_dataset`` returns it) and,
    with ``store``, keep the result where :func:`stored_probe` finds it.

    ``max_per_class`` rows per (train or eval, label) at most, chosen deterministically;
    ``families`` defaults to :func:`feature_families`; ``progress``: a rich Progress (with an
    ``info`` field, like the engine's) that gets one task over the images."""
    if max_per_class < 1:
        raise FbenchError(f"max_per_class={max_per_class} must be at least 1.")
    name = str(manifest.attrs.get("name", "dataset"))
    rows = subsample(manifest, max_per_class)
    _check_labels(rows, name)
    families = list(families if families is not None else feature_families())
    start = time.perf_counter()
    features, notes = extract_features(manifest, rows, families, progress)
    is_train = (_side(rows["split"]) == "train").to_numpy()
    y = rows["label"].to_numpy(dtype=np.int64)
    chance, constant = chance_levels(y[~is_train])
    scores = _score_families(features, families, notes, is_train, y, chance, margin)
    result = ProbeResult(
        dataset=name, manifest_sha256=probe_key(manifest),
        images={"train": int(is_train.sum()), "eval": int((~is_train).sum()),
                "total": int(len(rows)), "manifest": int(len(manifest))},
        max_per_class=max_per_class, labels=tuple(int(k) for k in np.unique(y)),
        chance=chance, chance_constant=constant, margin=margin,
        seconds=time.perf_counter() - start, families=scores)
    if store:
        where = store_probe(manifest, result.to_dict())
        result = replace(result, stored_at=str(where))
    return result


# -- where results are kept --------------------------------------------------------------------
def _cache_dir() -> Path:
    base = os.environ.get("FBENCH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "fbench") / "probe"


def _places(manifest: pd.DataFrame, key: str) -> list[Path]:
    """Where a result may live, first choice first: beside a built dataset's card (it travels
    with the dataset), then the cache."""
    places = []
    root = manifest.attrs.get("root")
    if manifest.attrs.get("card") and root:  # a built dataset (fbench.data.built)
        places.append(Path(root) / PROBE_FILE)
    return [*places, _cache_dir() / f"{key}.json"]


def store_probe(manifest: pd.DataFrame, result: dict[str, Any]) -> Path:
    """Write ``result`` (a :meth:`ProbeResult.to_dict`) where :func:`stored_probe` reads it;
    returns the file. A built dataset's folder that is read-only falls back to the cache."""
    from fbench.files import write_json

    places = _places(manifest, result["manifest_sha256"])
    for i, path in enumerate(places):
        try:
            write_json(path, result)
            return path
        except OSError as exc:
            if i == len(places) - 1:
                raise FbenchError(f"cannot write the probe result {path}: "
                                  f"{exc.strerror or exc}.",
                                  "make it writable, or set FBENCH_CACHE.") from None
    raise AssertionError("unreachable")  # pragma: no cover


def stored_probe(manifest: pd.DataFrame,
                 hashes: pd.DataFrame | None = None) -> dict[str, Any] | None:
    """The stored probe result of ``manifest`` (the same rows, val counted as train, and the
    same image contents), or None when it was never probed, or the file is from another
    layout or another build. ``hashes`` as for :func:`probe_key`."""
    from fbench.files import read_json

    key = probe_key(manifest, hashes)
    for path in _places(manifest, key):
        try:
            data = read_json(path)
        except (OSError, ValueError):
            continue
        if (isinstance(data, dict) and data.get("format") == FORMAT
                and data.get("manifest_sha256") == key):
            return {**data, "stored_at": str(path)}
    return None


# -- what a person reads -----------------------------------------------------------------------
def shortcut_warnings(result: dict[str, Any], margin: float = SHORTCUT_MARGIN) -> list[str]:
    """One sentence per non-spectral family that scores ``margin`` or more above chance."""
    out = []
    for f in result.get("families", []):
        if not f["spectral"] and f["macro_f1"] - f["chance"] >= margin:
            out.append(f"{f['family']!r} predicts the label at macro-F1 {f['macro_f1']:.2f} "
                       f"(chance {f['chance']:.2f}): a detector can win on it.")
    return out


def _table(result: dict[str, Any]) -> pd.DataFrame:
    columns = ["family", "n_features", "macro_f1", "chance", "margin", "verdict", "spectral",
               "provider", "note"]
    return pd.DataFrame([{c: f.get(c) for c in columns} for f in result["families"]],
                        columns=columns)


def images_line(result: dict[str, Any]) -> str:
    """How many images the probe used, and how they were chosen."""
    n = result["images"]
    labels = ", ".join(LABELS.get(k, str(k)) for k in result["labels"])
    return (f"{n['total']} of {n['manifest']} images (train+val {n['train']}, eval "
            f"{n['eval']}; at most {result['max_per_class']} per split and label), labels "
            f"{labels}; chance = {result['chance_rule']}.")


def _rows(result: dict[str, Any]) -> list[list[str]]:
    return [[f["family"], str(f["n_features"]), f"{f['macro_f1']:.2f}", f"{f['chance']:.2f}",
             f"{f['margin']:+.2f}", f["verdict"]] for f in result["families"]]


HEADER = ("family", "features", "eval macro-F1", "chance", "margin", "verdict")


def probe_markdown(result: dict[str, Any]) -> str:
    """The result as a markdown table with what each family measures, for docs and cards."""
    from fbench.markdown import to_markdown

    rows = [[*r, f["summary"] + (f" ({f['note']})" if f.get("note") else "")]
            for r, f in zip(_rows(result), result["families"], strict=True)]
    table = to_markdown([*HEADER, "what"], rows, [False, True, True, True, True, False, False])
    warnings_ = "".join(f"- {w}\n" for w in shortcut_warnings(result,
                                                                 result["margin_threshold"]))
    return (f"Shortcut probe of `{result['dataset']}`: {images_line(result)}\n\n{table}"
            + (f"\n{warnings_}" if warnings_ else ""))


_STYLE = {"shortcut": "bold red", "weak cue": "yellow", "spectral (expected)": "cyan"}


def probe_table(result: dict[str, Any]) -> Table:
    """The result as a rich table."""
    from rich.table import Table

    table = Table(title=f"shortcut probe of {result['dataset']}", header_style="bold")
    for i, col in enumerate(HEADER):
        table.add_column(col, justify="right" if 0 < i < 5 else "left",
                         no_wrap=col in ("family", "verdict"))
    for row in _rows(result):
        style = _STYLE.get(row[-1])
        table.add_row(*row[:-1], f"[{style}]{row[-1]}[/]" if style else row[-1])
    return table
