"""Procedural face-like images in three classes that differ the way real forgeries do.

- label 0 ``real``: a face-like scene rendered at full resolution. Background, skin, hair and
  clothing textures are 1/f^alpha noise fields, so the spectrum looks like a natural image's and
  carries energy up to Nyquist.
- label 1 ``generated``: the same kind of scene held at half resolution and up-sampled the way
  GAN generators do (transposed convolution with a per-image kernel whose sub-pixel phases have
  unequal gains, nearest or bilinear resize): the top octave of the content is missing and
  periodic spectral peaks appear. The inner face alone is then re-rendered at output resolution,
  as the face-restoration pass of generation pipelines does (see :func:`make_generated`).
- label 2 ``edited``: a real-like scene whose face area (or a blob) is replaced, through a
  feathered mask, by a donor scene rendered at 70-90% of the size with a colour tint and a
  smoother grain of its own: a local colour mismatch plus a local resampling trace, in the
  content and in the noise. The mask (alpha > 0.5) is stored.

No face-detection cue: mediapipe's face mesh (what landmark detectors are fed) finds a face in
about as many images of each class. In ``synthetic-v1`` it found one in 72% of real images but
only 28-35% of the forged ones, because the eyes, brows and mouth are 1-3 px at 64 px and the
forged classes drew the face at half resolution (or 40-60% for the donor) and, for transposed
convolutions, under a 3-10% checkerboard: "a face was found" alone predicted the label.

No trivial cue: every image, whatever its class, is re-standardised to per-channel mean/std
targets drawn from one common distribution, and then gets sensor noise whose strength is drawn
from one common distribution, so global colour statistics and PNG file size carry (almost) no
label. Everything is drawn from an RNG seeded by ``(seed, label, index)``: image ``i`` of a class
is the same whatever ``n_per_class`` is.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np

from fbench_synthetic.lifecycle import run_in_worker, worker_init
from fbench_synthetic.scene import (  # noqa: F401 - the scene API, re-exported
    _blend,
    _ellipse,
    _face_frame,
    _grid,
    draw_scene,
    gaussian_blur,
    noise_fields,
    render_scene,
    resize,
    separable_filter,
)

GENERATOR_VERSION = "synthetic-v2"
"""Bump when the pixels change: it is part of the cache key, so old caches are not reused."""

SOURCES = {0: "synthetic-real", 1: "synthetic-upsampled", 2: "synthetic-pasted"}
UPSAMPLERS = ("tconv3", "tconv4", "nearest", "bilinear")

# 1/phi: the golden-ratio sequence frac(c + i/phi) fills [0, 1) evenly for every prefix, so the
# eval share of each class is eval_fraction to within one or two images for any n_per_class,
# and image i keeps its split when n_per_class changes.
_INV_PHI = (5 ** 0.5 - 1) / 2


@dataclass(frozen=True)
class SyntheticImage:
    """One generated sample: uint8 RGB pixels, and for edited images the binary forged mask."""

    image_id: str
    label: int
    source: str
    split: str
    rgb: np.ndarray
    mask: np.ndarray | None


# --------------------------------------------------------------------------------------------
# up-sampling (label 1) and pasting (label 2)


def _phase_kernel(rng: np.random.Generator, kind: str) -> np.ndarray:
    """The 1-D taps of a separable transposed convolution (stride 2) whose two sub-pixel
    phases have unequal gains and shapes: the periodic (checkerboard) trace of GAN
    up-sampling layers, visible as peaks at Nyquist in the spectrum."""
    if kind == "tconv3":
        # taps [w, 1, w]: phase gains 1 and 2w, so w != 0.5 gives a checkerboard
        w = rng.uniform(0.40, 0.47) if rng.random() < 0.5 else rng.uniform(0.53, 0.60)
        g = np.array([w, 1.0, w])
    else:
        # four taps around the bilinear [0.25, 0.75, 0.75, 0.25], each one perturbed
        g = np.array([0.25, 0.75, 0.75, 0.25]) * rng.uniform(0.88, 1.12, 4)
    return (g / g.sum() * 2.0).astype(np.float32)  # mean phase gain 1: brightness kept


def upsample2(rng: np.random.Generator, small: np.ndarray, kind: str) -> np.ndarray:
    """Up-sample ``[h, w, 3]`` by 2 the way a generator's last layers would."""
    h, w = small.shape[:2]
    if kind == "nearest":
        return np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    if kind == "bilinear":
        return resize(small, 2 * h, "linear")
    zero = np.zeros((2 * h, 2 * w, 3), np.float32)
    zero[::2, ::2] = small  # zero insertion, then the kernel: a transposed convolution
    return separable_filter(zero, _phase_kernel(rng, kind))


# the inner face (eyes, brows, nose, mouth and the skin between them) as a share of the face
# ellipse's axes: what a face-restoration pass re-renders
_INNER_FACE = 0.9


def make_generated(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """A scene held at half resolution and up-sampled by ``kind``, its inner face restored.

    Why the restored face: eyes, brows and mouth are 1-3 px wide at 64 px, so a face held at
    half resolution lost them, and the transposed convolutions' checkerboard (3-10% deep) hid
    what was left; mediapipe's face mesh then found a face in 28% of generated images against
    72% of real ones, a label cue that landmark detectors were fed. Generation pipelines restore
    faces (GFPGAN, CodeFormer: the inner face is regenerated at output resolution and blended
    back), so here the inner face is taken from the full-resolution rendering and everything
    else (background, hair, clothes, face outline: about three quarters of the image) keeps the
    up-sampling's missing top octave and periodic peaks at full strength."""
    p = draw_scene(rng)
    full = render_scene(rng, p, size)
    # the generator's half-resolution stage: the same scene without its top octave
    h = size // 2
    small = full.reshape(h, 2, h, 2, 3).mean(axis=(1, 3))
    img = upsample2(rng, small, kind)
    u, v = _face_frame(p, size)
    inner = _ellipse(u, v, 0.0, 0.0, _INNER_FACE * p["a"], _INNER_FACE * p["b"], size / 2.0)
    _blend(img, inner, full)
    return img


def paste_region(rng: np.random.Generator, p: dict, size: int) -> np.ndarray:
    """The soft region a donor is pasted through: float32 alpha ``[size, size]`` in [0, 1].

    Mostly the face area (a face swap), sometimes a blob elsewhere (a splice); its area is
    drawn in 18-45% of the image so that an edit is large enough to be found at 64 px (small
    soft edits stalled a ResNet18 near macro-F1 0.7 in a prototype)."""
    area = rng.uniform(0.18, 0.45)
    x, y = _grid(size)
    if rng.random() < 0.7:
        cx, cy, theta = p["cx"], p["cy"] + rng.uniform(-0.05, 0.12) * p["b"], p["theta"]
        aspect = p["b"] / p["a"] * rng.uniform(0.9, 1.1)
    else:
        cx, cy, theta = rng.uniform(-0.35, 0.35), rng.uniform(-0.35, 0.35), rng.uniform(-1, 1)
        aspect = rng.uniform(0.7, 1.5)
    # an ellipse of that area (the domain [-1, 1]^2 has area 4), its edge wobbled by a smooth
    # field so the region is a blob rather than a perfect ellipse
    ax = np.sqrt(4 * area / (np.pi * aspect))
    ct, st = np.cos(theta), np.sin(theta)
    u = ct * (x - cx) + st * (y - cy)
    v = -st * (x - cx) + ct * (y - cy)
    d = np.sqrt((u / ax) ** 2 + (v / (ax * aspect)) ** 2)
    d = d + 0.12 * noise_fields(rng, size, np.array([2.5]))[0]
    hard = (d < 1.0).astype(np.float32)
    return gaussian_blur(hard, rng.uniform(1.0, 2.5) * size / 64.0)  # feathered edge


@dataclass(frozen=True)
class Donor:
    """Where an edit pasted its donor, for :func:`finish`: the donor brings its own grain, at
    ``res`` x ``res`` and resized to the image with ``kind``."""

    alpha: np.ndarray
    res: int
    kind: str


def make_edited(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, Donor]:
    """A real-like scene with a region replaced by a resampled, tinted donor:
    (image, mask, where the donor went)."""
    p = draw_scene(rng)
    base = render_scene(rng, p, size)
    # donor: the same head geometry (an aligned face swap) with another identity and
    # background, rendered at 70-90% of the size and resized up: a local resampling trace.
    # Not lower: the donor covers the face, and at 40-60% (synthetic-v1) its 1-3 px eyes and
    # mouth were gone, so mediapipe's face mesh found a face in 36% of edited images against
    # 76% of real ones. Not higher either: at 80-95% resnet18 no longer told edited from real
    # (edited F1 0.70, against 0.80 at 70-90%)
    donor_p = {**draw_scene(rng), **{k: p[k] for k in ("cx", "cy", "a", "b", "theta")}}
    small = max(8, int(round(size * rng.uniform(0.7, 0.9))))
    kind = "linear" if rng.random() < 0.5 else "cubic"
    donor = resize(render_scene(rng, donor_p, small), size, kind)
    # colour mismatch: a per-channel gain away from identity (never near it) and an offset
    gain = 1.0 + rng.choice([-1, 1], 3) * rng.uniform(0.12, 0.3, 3)
    donor = donor * gain.astype(np.float32) + np.float32(rng.normal(0, 0.08))
    alpha = paste_region(rng, p, size)
    out = alpha[..., None] * donor + (1.0 - alpha[..., None]) * base
    mask = np.where(alpha > 0.5, 255, 0).astype(np.uint8)
    # swapped faces are smoother than the camera's grain (the waxy look of face swaps): the
    # donor's grain is drawn at 40-60% resolution and resized. It is also what lets the
    # 70-90% donor keep its face findable (70% found, against 66% with full-resolution grain)
    grain = max(8, int(round(size * rng.uniform(0.4, 0.6))))
    return out, mask, Donor(alpha, grain, kind)


# --------------------------------------------------------------------------------------------
# the common finish: global statistics and sensor noise drawn from one distribution


def finish(rng: np.random.Generator, img: np.ndarray, donor: Donor | None = None) -> np.ndarray:
    """Re-standardise per-channel mean/std to common targets, add sensor noise, quantise.

    The targets and the noise strength come from the same distribution for every class, so a
    classifier on global colour statistics or file size learns (almost) nothing; what is left
    to learn is local structure: spectra, edges, colour consistency. Under an edit's ``donor``
    the noise is the donor's own grain, drawn at a lower resolution and resized."""
    m = rng.uniform(85, 165) + np.clip(rng.normal(0, 12, 3), -30, 30)
    s = rng.uniform(36, 60) * np.clip(rng.normal(1, 0.08, 3), 0.8, 1.2)
    flat = img.reshape(-1, 3)
    mu, sd = flat.mean(axis=0), flat.std(axis=0)
    gain = s / (sd + 1e-6)
    out = img * gain.astype(np.float32) + (m - mu * gain).astype(np.float32)
    # sensor noise: read noise plus a shot-noise part growing with intensity; drawn after the
    # re-standardisation so its strength is the same whatever the class, and over a wide range
    # so that file size varies more within a class than between classes
    read = rng.uniform(1.5, 6.0)
    shot = rng.uniform(0.0, 0.04)
    sigma = np.sqrt(np.float32(read ** 2) + np.float32(shot) * np.maximum(out, 0.0))
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    if donor is not None:
        # of the same strength, but resized: smoother, its variance beating with the sub-pixel
        # phase (see make_edited)
        own = resize(rng.standard_normal((donor.res, donor.res, 3), dtype=np.float32),
                     out.shape[0], donor.kind)
        _blend(noise, donor.alpha, own)
    out += noise * sigma
    return np.rint(np.minimum(np.maximum(out, 0.0), 255.0)).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# one image, a whole dataset


def image_rng(seed: int, label: int, index: int) -> np.random.Generator:
    """The RNG of image ``index`` of class ``label``: independent of how many are generated."""
    return np.random.default_rng([int(seed), int(label), int(index)])


def split_of(seed: int, label: int, index: int, eval_fraction: float) -> str:
    """``eval`` or ``train`` for image ``index`` of class ``label`` (stable as n grows)."""
    offset = np.random.default_rng([int(seed), int(label), 2 ** 32 - 1]).random()
    return "eval" if (offset + index * _INV_PHI) % 1.0 < eval_fraction else "train"


def make_image(seed: int, label: int, index: int, size: int,
               eval_fraction: float) -> SyntheticImage:
    """Generate image ``index`` of class ``label`` (a pure function of its arguments)."""
    rng = image_rng(seed, label, index)
    # the id comes first from the image's own stream: random hex, no label cue in file names
    image_id = f"{int(rng.integers(0, 2 ** 63)):016x}"
    mask = donor = None
    if label == 0:
        img = render_scene(rng, draw_scene(rng), size)
    elif label == 1:
        img = make_generated(rng, size, UPSAMPLERS[rng.integers(len(UPSAMPLERS))])
    else:
        img, mask, donor = make_edited(rng, size)
    rgb = finish(rng, img, donor)
    return SyntheticImage(image_id, label, SOURCES[label],
                          split_of(seed, label, index, eval_fraction), rgb, mask)


def _write_png(path: str, pixels: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", pixels)  # encoding only: no OpenCV thread pool involved
    if not ok:
        raise OSError(f"synthetic: could not encode {path}")
    with open(path, "wb") as f:
        f.write(buf.tobytes())


def _write_chunk(out_dir: str, seed: int, size: int, eval_fraction: float,
                 indices: range) -> list[dict]:
    """Generate and write images ``indices`` of every class; return their manifest rows."""
    rows = []
    for index in indices:
        for label in (0, 1, 2):
            s = make_image(seed, label, index, size, eval_fraction)
            path = f"images/{s.image_id}.png"
            _write_png(os.path.join(out_dir, path), s.rgb[..., ::-1])  # OpenCV wants BGR
            mask_path = ""
            if s.mask is not None:
                mask_path = f"masks/{s.image_id}.png"
                _write_png(os.path.join(out_dir, mask_path), s.mask)
            rows.append({"path": path, "label": label, "source": s.source,
                         "group": s.image_id, "split": s.split, "mask": mask_path,
                         "index": index})
    return rows


def _workers(total_images: int) -> int:
    """How many processes to generate with: forked workers on Linux for big sets (pure
    numpy in the workers; see above), one process elsewhere or for small sets."""
    if (total_images < 600 or not sys.platform.startswith("linux")
            or multiprocessing.current_process().daemon):  # daemons may not have children
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _stop_now(ex: ProcessPoolExecutor) -> None:
    """Kill the pool's workers and shut it down without waiting for their running chunks: on
    SIGTERM, Ctrl-C or an error the caller removes the folder they write into, and a worker
    still writing would leave files behind (a chunk takes seconds)."""
    # ProcessPoolExecutor keeps its workers by pid in _processes; without it (another
    # Python), shutting down still waits for the running chunks and then ends
    for proc in list((getattr(ex, "_processes", None) or {}).values()):
        try:
            proc.kill()
        except (OSError, ValueError):
            pass  # already gone
    ex.shutdown(wait=True, cancel_futures=True)


def _in_pool(workers: int, job: partial, chunks: list[range]) -> list[dict]:
    """Run ``job`` on ``chunks`` in ``workers`` forked processes that die with this one (see
    :func:`fbench_synthetic.lifecycle.worker_init`)."""
    rows: list[dict] = []
    with warnings.catch_warnings():
        # Python >= 3.12 warns about fork() in a process with threads (torch's); the
        # workers touch only numpy, scipy.fft and PNG encoding, which are fork-safe
        warnings.simplefilter("ignore", DeprecationWarning)
        ex = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                 initializer=worker_init, initargs=(os.getpid(),))
        try:
            for part in ex.map(partial(run_in_worker, os.getpid(), job), chunks):
                rows.extend(part)
            ex.shutdown(wait=True)
        except BaseException:
            _stop_now(ex)
            raise
    return rows


def generate(out_dir: str | os.PathLike, n_per_class: int, image_size: int, seed: int,
             eval_fraction: float, workers: int | None = None) -> list[dict]:
    """Write ``3 * n_per_class`` PNGs into ``out_dir/images`` (masks into ``out_dir/masks``)
    and return the manifest rows, paths relative to ``out_dir``, class-major by index.

    The pixels do not depend on ``workers``: every image has its own RNG."""
    out_dir = os.fspath(out_dir)
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "masks"), exist_ok=True)
    workers = _workers(3 * n_per_class) if workers is None else max(1, int(workers))
    step = max(1, -(-n_per_class // (4 * workers)))
    chunks = [range(i, min(i + step, n_per_class)) for i in range(0, n_per_class, step)]
    job = partial(_write_chunk, out_dir, seed, image_size, eval_fraction)
    if workers > 1:
        rows = _in_pool(workers, job, chunks)
    else:
        rows = [row for chunk in chunks for row in job(chunk)]
    ids = [r["group"] for r in rows]
    if len(set(ids)) != len(ids):  # 64-bit random ids: never in practice, but never overwrite
        raise RuntimeError("synthetic: two images drew the same id; use another seed")
    rows.sort(key=lambda r: (r["label"], r.pop("index")))
    return rows
