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
plugin adds ``face-found``). Every image is decoded once, with fbench's own reader, for all of
them.

The result is stored as JSON: ``probe.json`` beside a built dataset's ``recipe.json``, else
``$FBENCH_CACHE/probe/<manifest sha256>.json`` (default ``~/.cache/fbench/probe``).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fbench.errors import FbenchError
from fbench.data.manifest import resolve_path
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
SPECTRUM_SIZE = 64
SPECTRUM_BANDS = 16
NO_QUANTISATION = -1.0
"""The JPEG-quality feature of a file without quantisation tables (PNG, lossless formats)."""
FORMATS = ("JPEG", "PNG")
"""File formats with their own indicator feature; anything else counts as "other"."""

# The JPEG standard's luminance quantisation table (ITU T.81, Annex K), in natural order: the
# table libjpeg scales by the quality setting, so the scale of a file's table tells its quality.
_STD_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)

Extractor = Callable[[int, np.ndarray, str], Sequence[float]]


# -- the built-in feature families -------------------------------------------------------------
def jpeg_quality(tables: dict[int, Sequence[int]] | None) -> float | None:
    """The libjpeg quality (1-100) whose scaling of the standard luminance table is closest to
    ``tables[0]`` (PIL's ``im.quantization``); None without tables."""
    if not tables or 0 not in tables:
        return None
    q = np.asarray(tables[0], dtype=np.float64)
    if q.shape != _STD_LUMINANCE.shape:
        return None
    # libjpeg clips scaled entries to [1, 255]; the clipped ones no longer carry the scale
    free = (q > 1) & (q < 255)
    scale = 100.0 * (q[free] / _STD_LUMINANCE[free]).mean() if free.any() else (
        100.0 * q.sum() / _STD_LUMINANCE.sum())
    quality = 5000.0 / scale if scale > 100.0 else (200.0 - scale) / 2.0
    return float(np.clip(round(quality), 1, 100))


def _header(path: str, image: np.ndarray) -> tuple[str, int, int, float | None]:
    """Format, width, height and JPEG quality from the file header (PIL reads it without
    decoding the pixels); the decoded image's size where PIL cannot identify the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return (im.format or "", im.width, im.height,
                    jpeg_quality(getattr(im, "quantization", None)))
    except (UnidentifiedImageError, OSError):
        return "", image.shape[1], image.shape[0], None


def _colour(manifest: pd.DataFrame) -> Extractor:
    def extract(row: int, image: np.ndarray, path: str) -> list[float]:
        pixels = image.reshape(-1, 3).astype(np.float32) / 255.0
        return [*pixels.mean(axis=0), *pixels.std(axis=0)]

    return extract


def _file_size(manifest: pd.DataFrame) -> Extractor:
    def extract(row: int, image: np.ndarray, path: str) -> list[float]:
        return [math.log(max(os.path.getsize(path), 1))]

    return extract


def _native_size(manifest: pd.DataFrame) -> Extractor:
    def extract(row: int, image: np.ndarray, path: str) -> list[float]:
        _, width, height, _ = _header(path, image)
        return [float(width), float(height)]

    return extract


def _jpeg(manifest: pd.DataFrame) -> Extractor:
    def extract(row: int, image: np.ndarray, path: str) -> list[float]:
        fmt, _, _, quality = _header(path, image)
        known = [float(fmt == f) for f in FORMATS]
        return [NO_QUANTISATION if quality is None else quality, *known, 1.0 - sum(known)]

    return extract


def _band_index(size: int, bands: int) -> np.ndarray:
    """For each frequency of a centred ``size`` x ``size`` spectrum, its radial band: equal
    widths from the centre (DC) out to the corners, so every frequency is counted once."""
    centre = size // 2
    y, x = np.mgrid[:size, :size]
    radius = np.hypot(y - centre, x - centre)
    return np.minimum((radius / (radius.max() + 1e-9) * bands).astype(np.int64), bands - 1)


def _spectrum(manifest: pd.DataFrame) -> Extractor:
    import cv2

    from fbench.data.images import resize_square

    bands = _band_index(SPECTRUM_SIZE, SPECTRUM_BANDS)
    counts = np.bincount(bands.ravel(), minlength=SPECTRUM_BANDS)

    def extract(row: int, image: np.ndarray, path: str) -> list[float]:
        # fbench's own resize: the probe sees the frequencies a run's loader leaves
        small = resize_square(image, SPECTRUM_SIZE)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float64)
        # without the mean, band 0 would repeat the colour family's brightness
        power = np.abs(np.fft.fftshift(np.fft.fft2(gray - gray.mean()))) ** 2
        energy = np.bincount(bands.ravel(), weights=power.ravel(), minlength=SPECTRUM_BANDS)
        return list(np.log(energy / counts + 1e-6))

    return extract


BUILTIN_FAMILIES: tuple[ProbeFeatureSpec, ...] = (
    ProbeFeatureSpec("colour", "per-image RGB mean and std", False, _colour),
    ProbeFeatureSpec("file-size", "file size in bytes (log)", False, _file_size),
    ProbeFeatureSpec("native-size", "width and height from the file header", False,
                     _native_size),
    ProbeFeatureSpec("jpeg-quality", "JPEG quality from the quantisation tables (-1 without), "
                     "file format (JPEG, PNG, other)", False, _jpeg),
    ProbeFeatureSpec("spectrum", f"log energy of the centred 2-D FFT of the gray image at "
                     f"{SPECTRUM_SIZE} px, in {SPECTRUM_BANDS} radial bands", True, _spectrum),
)
CORE = "fbench (core)"


def feature_families() -> list[tuple[ProbeFeatureSpec, str]]:
    """Every family the probe scores, with who provides it: the built-ins, then the plugins'
    (``register_probe_features``); spectral families last."""
    from fbench.plugins.registry import get_registry

    families = [(spec, CORE) for spec in BUILTIN_FAMILIES]
    for name, (spec, plugin) in sorted(get_registry().specs("probe feature").items()):
        if name in {s.name for s in BUILTIN_FAMILIES}:
            raise FbenchError(f"plugin {plugin!r} registers probe feature {name!r}, a name "
                              "fbench uses for a built-in family.", "rename it.")
        families.append((spec, plugin))
    return sorted(families, key=lambda f: f[0].spectral)  # stable: otherwise as listed


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


# -- features ----------------------------------------------------------------------------------
def _open_families(manifest: pd.DataFrame, families: Sequence[tuple[ProbeFeatureSpec, str]]
                   ) -> list[tuple[ProbeFeatureSpec, str, Any]]:
    opened = []
    try:
        for spec, plugin in families:
            opened.append((spec, plugin, spec.factory(manifest)))
    except BaseException:
        _close(opened)
        raise
    return opened


def _close(opened: list[tuple[ProbeFeatureSpec, str, Any]]) -> None:
    for _, _, extract in opened:
        close = getattr(extract, "close", None)
        if callable(close):
            close()


def _stack(spec: ProbeFeatureSpec, plugin: str, vectors: list[np.ndarray]) -> np.ndarray:
    lengths = {len(v) for v in vectors}
    if len(lengths) != 1 or 0 in lengths:
        raise FbenchError(f"probe feature {spec.name!r} (plugin {plugin!r}) returned vectors "
                          f"of lengths {sorted(lengths)}; every image needs one length >= 1.")
    features = np.stack(vectors)
    if not np.isfinite(features).all():
        raise FbenchError(f"probe feature {spec.name!r} (plugin {plugin!r}) returned values "
                          "that are not finite.")
    return features


def extract_features(manifest: pd.DataFrame, rows: pd.DataFrame,
                     families: Sequence[tuple[ProbeFeatureSpec, str]],
                     progress: Progress | None = None
                     ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Each family's feature matrix over ``rows`` (a subset of ``manifest``, which the families'
    factories receive whole), decoding every image once; and each family's note."""
    from fbench.data.images import read_image

    opened = _open_families(manifest, families)
    vectors: dict[str, list[np.ndarray]] = {spec.name: [] for spec, _ in families}
    task = progress.add_task("probe", total=len(rows), info="") if progress is not None else None
    try:
        for row, rel in zip(rows.index, rows["path"], strict=True):
            path = resolve_path(manifest, rel)
            image = read_image(path)
            for spec, _, extract in opened:
                vectors[spec.name].append(np.asarray(extract(int(row), image, path),
                                                     dtype=np.float64).ravel())
            if progress is not None:
                progress.advance(task)
    finally:
        _close(opened)
        if progress is not None and task is not None:
            progress.remove_task(task)
    notes = {spec.name: str(getattr(extract, "note", "") or "") for spec, _, extract in opened}
    return {s.name: _stack(s, p, vectors[s.name]) for s, p, _ in opened}, notes


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
