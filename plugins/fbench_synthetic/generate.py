"""Procedural face-like images in three classes that differ the way real forgeries do.

- label 0 ``real``: a face-like scene rendered at full resolution. Background, skin, hair and
  clothing textures are 1/f^alpha noise fields, so the spectrum looks like a natural image's and
  carries energy up to Nyquist.
- label 1 ``generated``: the same kind of scene rendered at half resolution and up-sampled the way
  GAN generators do (transposed convolution with a per-image kernel whose sub-pixel phases have
  unequal gains, nearest or bilinear resize): the top octave of the content is missing and
  periodic spectral peaks appear.
- label 2 ``edited``: a real-like scene whose face area (or a blob) is replaced, through a
  feathered mask, by a donor scene rendered at a lower resolution with a colour tint: a local
  colour mismatch plus a local resampling trace. The mask (alpha > 0.5) is stored.

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
import scipy.fft  # float32 FFTs, ~3x faster than numpy.fft here (scipy comes with scikit-learn)

GENERATOR_VERSION = "synthetic-v1"
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
# noise fields and shapes


_LOGK_CACHE: dict[tuple[int, float], np.ndarray] = {}


def _log_freqs(res: int, stretch: float) -> np.ndarray:
    """log |k| (k in cycles per image, y frequencies scaled by ``stretch``) on the rfft2 grid,
    with the DC bin at 0; cached because every image of a size reuses it."""
    key = (res, float(stretch))
    logk = _LOGK_CACHE.get(key)
    if logk is None:
        ky, kx = np.meshgrid(np.fft.fftfreq(res) * res * stretch, np.fft.rfftfreq(res) * res,
                             indexing="ij")
        k = np.sqrt(kx ** 2 + ky ** 2)
        k[0, 0] = 1.0
        logk = np.log(k).astype(np.float32)
        _LOGK_CACHE[key] = logk
    return logk


def noise_fields(rng: np.random.Generator, res: int, alphas: np.ndarray,
                 stretch: np.ndarray | None = None) -> np.ndarray:
    """Zero-mean unit-std fields with amplitude spectrum ~ 1/|k|^alpha, one per alpha,
    float32 ``[n, res, res]``.

    Frequencies are in cycles per *image*, so a field rendered at half resolution has the same
    coarse structure statistics as one at full resolution, only without the top octave: that is
    exactly the difference the up-sampled class must show. ``stretch`` > 1 squeezes the y
    frequencies (strand-like texture for hair)."""
    alphas = np.asarray(alphas, np.float32)
    stretches = np.ones(len(alphas)) if stretch is None else np.asarray(stretch)
    logk = np.stack([_log_freqs(res, s) for s in stretches])
    amp = np.exp(-alphas[:, None, None] * logk)
    amp[:, 0, 0] = 0.0  # no DC: each field is zero-mean
    # uniform white noise (4x faster to draw than normal here; flat spectrum all the same, and
    # the filtered field is Gaussian by the central limit theorem)
    white = rng.random((len(alphas), res, res), dtype=np.float32)
    f = scipy.fft.irfft2(scipy.fft.rfft2(white) * amp, s=(res, res))
    f /= f.std(axis=(1, 2), keepdims=True) + 1e-8
    return f


_GRID_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(res: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates x, y in [-1, 1] (y down), cached per resolution."""
    grid = _GRID_CACHE.get(res)
    if grid is None:
        c = (np.arange(res, dtype=np.float32) + 0.5) / (res / 2.0) - 1.0
        grid = tuple(np.meshgrid(c, c))
        _GRID_CACHE[res] = grid
    return grid


def _soft(dist: np.ndarray, px: float) -> np.ndarray:
    """Coverage of an 'inside when dist < 1' shape, anti-aliased over about one pixel.

    ``px`` is how many pixels one unit of ``dist`` spans near the edge; the edge is as sharp as
    the rendering resolution allows, so a scene rendered small and up-sampled has softer edges
    than one rendered at full size."""
    out = (1.0 - dist) * np.float32(px)
    out += 0.5
    # np.minimum/np.maximum in place: np.clip's Python wrapper costs more than the work here
    return np.minimum(np.maximum(out, 0.0, out=out), 1.0, out=out)


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, au: float, av: float,
             half_res: float) -> np.ndarray:
    du = (u - np.float32(cu)) * np.float32(1.0 / au)
    dv = (v - np.float32(cv)) * np.float32(1.0 / av)
    return _soft(np.sqrt(du * du + dv * dv), min(au, av) * half_res)


def _blend(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """In place: img = alpha * colour + (1 - alpha) * img (colour: RGB or per-pixel RGB)."""
    a = alpha[..., None]
    img *= 1.0 - a
    img += a * colour


# --------------------------------------------------------------------------------------------
# scenes


_SKIN_LIGHT = np.array([0.96, 0.80, 0.70], np.float32)
_SKIN_DARK = np.array([0.42, 0.28, 0.20], np.float32)
_HAIR = np.array([[0.06, 0.05, 0.05], [0.30, 0.19, 0.11], [0.55, 0.40, 0.22],
                  [0.85, 0.72, 0.48], [0.55, 0.22, 0.10], [0.62, 0.62, 0.62]], np.float32)


def draw_scene(rng: np.random.Generator) -> dict:
    """Scene parameters in resolution-free coordinates (x, y in [-1, 1], y down)."""
    a = rng.uniform(0.40, 0.56)
    hair_base = _HAIR[rng.integers(len(_HAIR))]
    return {
        "bg": rng.uniform(0.1, 0.9, 3).astype(np.float32),
        # smooth, portrait-like backgrounds (FFHQ's are mostly out of focus): busier ones
        # (alpha 0.9-1.7) put so much top-octave energy into real images that PNG file size
        # alone told real from up-sampled (macro-F1 up to 0.45 on mean/std/size features)
        "bg_amp": rng.uniform(0.05, 0.25),
        "bg_alpha": rng.uniform(1.3, 2.2),
        "bg_grad": rng.normal(0, 0.12, 2),
        "cx": rng.uniform(-0.12, 0.12), "cy": rng.uniform(-0.04, 0.14),
        "a": a, "b": a * rng.uniform(1.2, 1.45), "theta": rng.uniform(-0.35, 0.35),
        **draw_identity(rng),
        "hair": np.clip(hair_base * rng.uniform(0.8, 1.2) + rng.normal(0, 0.03, 3),
                        0, 1).astype(np.float32),
        "hair_amp": rng.uniform(0.08, 0.25),
        "hair_alpha": rng.uniform(0.9, 1.4),
        "fringe": rng.uniform(0.35, 0.65), "hair_len": rng.uniform(-0.3, 1.0),
        "hair_wave": rng.uniform(0, 2 * np.pi), "hair_freq": rng.uniform(3, 9),
        "cloth": rng.uniform(0.05, 0.95, 3).astype(np.float32),
        "cloth_amp": rng.uniform(0.03, 0.2),
        "light": rng.normal(0, 0.2, 2),
    }


def draw_identity(rng: np.random.Generator) -> dict:
    """The parts of a scene a face swap changes: skin, eyes, brows, mouth."""
    tone = rng.uniform(0, 1)
    skin = (1 - tone) * _SKIN_LIGHT + tone * _SKIN_DARK + rng.normal(0, 0.03, 3)
    return {
        "skin": np.clip(skin, 0, 1).astype(np.float32),
        "skin_amp": rng.uniform(0.02, 0.07),
        "skin_alpha": rng.uniform(1.2, 1.9),
        "eye_x": rng.uniform(0.30, 0.42), "eye_y": rng.uniform(-0.22, -0.05),
        "eye_w": rng.uniform(0.13, 0.19), "eye_h": rng.uniform(0.05, 0.08),
        "iris": np.clip(rng.uniform(0.05, 0.6, 3) * rng.uniform(0.5, 1.0), 0, 1
                        ).astype(np.float32),
        "brow": rng.uniform(0.10, 0.17),
        "mouth_y": rng.uniform(0.45, 0.62), "mouth_w": rng.uniform(0.20, 0.34),
        "mouth_h": rng.uniform(0.035, 0.09),
        "lip": np.clip(np.array([0.75, 0.35, 0.35]) * rng.uniform(0.6, 1.1)
                       + rng.normal(0, 0.04, 3), 0, 1).astype(np.float32),
    }


_SCLERA = np.array([0.92, 0.9, 0.88], np.float32)
_PUPIL = np.array([0.03, 0.03, 0.03], np.float32)


class _FeatureBlender:
    """Blends small ellipses given in the face frame, touching only the pixels near each."""

    def __init__(self, img: np.ndarray, u: np.ndarray, v: np.ndarray, p: dict,
                 half: float) -> None:
        self.img, self.u, self.v, self.half = img, u, v, half
        self.cx, self.cy = p["cx"], p["cy"]
        self.ct, self.st = np.cos(p["theta"]), np.sin(p["theta"])
        self.res = img.shape[0]

    def __call__(self, cu: float, cv: float, au: float, av: float, colour: np.ndarray,
                 weight: float = 1.0) -> None:
        # face frame -> image coordinates -> pixel box around the circumscribed circle
        x = self.cx + self.ct * cu - self.st * cv
        y = self.cy + self.st * cu + self.ct * cv
        r = max(au, av) * self.half + 2.0
        px, py = (x + 1.0) * self.half - 0.5, (y + 1.0) * self.half - 0.5
        x0, x1 = max(0, int(px - r)), min(self.res, int(px + r) + 2)
        y0, y1 = max(0, int(py - r)), min(self.res, int(py + r) + 2)
        if x0 >= x1 or y0 >= y1:
            return
        box = (slice(y0, y1), slice(x0, x1))
        alpha = _ellipse(self.u[box], self.v[box], cu, cv, au, av, self.half)
        if weight != 1.0:
            alpha *= weight
        if colour.ndim == 3:
            colour = colour[box]
        _blend(self.img[box], alpha, colour)


def render_scene(rng: np.random.Generator, p: dict, res: int) -> np.ndarray:
    """Render scene ``p`` at ``res`` x ``res``: float32 RGB, roughly in [0, 1]."""
    half = res / 2.0
    x, y = _grid(res)
    # face frame: rotated about the face centre
    ct, st = np.cos(p["theta"]), np.sin(p["theta"])
    u = ct * (x - p["cx"]) + st * (y - p["cy"])
    v = -st * (x - p["cx"]) + ct * (y - p["cy"])
    a, b = p["a"], p["b"]

    # bg (3: luminance + 2 chroma), skin, hair (strands), cloth
    f = noise_fields(rng, res,
                     np.array([p["bg_alpha"]] * 3 + [p["skin_alpha"], p["hair_alpha"], 1.2]),
                     stretch=np.array([1, 1, 1, 1, 5.0, 1]))
    lum = f[0, ..., None]
    chroma = np.stack([f[1], -0.5 * f[1] + f[2], -0.5 * f[1] - f[2]], -1) * 0.35
    grad = (p["bg_grad"][0] * x + p["bg_grad"][1] * y)[..., None]
    img = p["bg"] + p["bg_amp"] * (lum + chroma) + grad

    # clothes / shoulders below the face
    shoulder = p["cy"] + 1.05 * b + 0.35 * (x - p["cx"]) ** 2
    cloth_a = _soft(1.0 - (y - shoulder) / 0.5, 0.5 * half)
    _blend(img, cloth_a, p["cloth"] * (1 + p["cloth_amp"] * f[5, ..., None]))

    skin_tex = 1.0 + p["skin_amp"] * f[3, ..., None]
    shade = (1.0 + p["light"][0] * u / a + p["light"][1] * v / b
             - 0.22 * ((u / a) ** 2 + (v / b) ** 2))[..., None]
    skin = p["skin"] * skin_tex * shade
    # neck
    neck_a = _soft(np.maximum(np.abs(u) / (0.45 * a), 1.0 - (v - 0.5 * b) / b), 0.45 * a * half)
    _blend(img, neck_a, skin * 0.82)
    hair_tex = p["hair"] * (1.0 + p["hair_amp"] * f[4, ..., None] * 2.0)
    # hair behind the head, down to a random length
    hair_back = _ellipse(u, v, 0.0, -0.12 * b, 1.2 * a, 1.12 * b, half)
    hair_back *= _soft(1.0 + (v - p["hair_len"] * b) / b, b * half)
    _blend(img, hair_back, hair_tex)
    # face
    face_a = _ellipse(u, v, 0.0, 0.0, a, b, half)
    _blend(img, face_a, skin)
    # small features are blended on a crop around them only (rendering speed)
    feature = _FeatureBlender(img, u, v, p, half)
    # nose shadow and nostrils
    feature(0.06 * a, 0.12 * b, 0.07 * a, 0.22 * b, skin * 0.7, 0.25)
    for side in (-1, 1):
        feature(side * 0.08 * a, 0.32 * b, 0.05 * a, 0.03 * b, skin * 0.45, 0.7)
    # eyes: sclera, iris, pupil; brows above
    for side in (-1, 1):
        ex, ey = side * p["eye_x"] * a, p["eye_y"] * b
        ew, eh = p["eye_w"] * a, p["eye_h"] * b
        feature(ex, ey, ew, eh, _SCLERA)
        feature(ex, ey, 0.45 * ew, 0.95 * eh, p["iris"])
        feature(ex, ey, 0.2 * ew, 0.45 * eh, _PUPIL)
        feature(ex, ey - p["brow"] * b, 1.15 * ew, 0.035 * b, hair_tex * 0.8, 0.9)
    # mouth: lips and the dark line between them
    my = p["mouth_y"] * b
    feature(0.0, my, p["mouth_w"] * a, p["mouth_h"] * b, p["lip"])
    feature(0.0, my, 0.9 * p["mouth_w"] * a, 0.012 * b + 0.6 / half, p["lip"] * 0.35, 0.8)
    # fringe: hair over the forehead with a wavy edge
    line = -p["fringe"] * b + 0.06 * b * np.sin(p["hair_freq"] * u / a + p["hair_wave"])
    fringe = _soft(1.0 + (v - line) / b, b * half) * face_a
    _blend(img, fringe, hair_tex)
    return img


# --------------------------------------------------------------------------------------------
# resampling in numpy: workers may be forked, and OpenCV's thread pool does not survive fork()
# (opencv/opencv#5150), so OpenCV is used for PNG encoding only. Semantics follow OpenCV's
# resize (half-pixel centres, replicated border; cubic with a = -0.75).


_TAPS_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _cubic(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    t = np.abs(t)
    return np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                    np.where(t < 2, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a, 0.0))


def _resize_taps(n_in: int, n_out: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights ``[n_out, taps]`` of a 1-D resize (cached)."""
    key = ("resize", n_in, n_out, kind)
    if key not in _TAPS_CACHE:
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        base = np.floor(src)
        frac = (src - base)[:, None]
        if kind == "linear":
            offsets = np.arange(0, 2)
            w = np.concatenate([1 - frac, frac], axis=1)
        else:  # cubic
            offsets = np.arange(-1, 3)
            w = _cubic(frac - offsets[None, :])
            w /= w.sum(axis=1, keepdims=True)
        idx = np.clip(base[:, None].astype(int) + offsets[None, :], 0, n_in - 1)
        _TAPS_CACHE[key] = (idx, w.astype(np.float32))
    return _TAPS_CACHE[key]


def _conv_taps(n: int, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights of a 1-D correlation with ``kernel`` (anchor len // 2), borders
    mirrored without repeating the edge (OpenCV's BORDER_REFLECT_101)."""
    k = len(kernel)
    pos = np.arange(n)[:, None] + np.arange(k)[None, :] - k // 2
    pos = np.abs(pos)
    pos = np.where(pos > n - 1, 2 * (n - 1) - pos, pos)
    return np.clip(pos, 0, n - 1), np.broadcast_to(np.asarray(kernel, np.float32), (n, k))


def _apply_taps(img: np.ndarray, idx: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    """out[j] = sum_t w[j, t] * img[idx[j, t]] along ``axis`` (0 or 1)."""
    x = img if axis == 0 else np.swapaxes(img, 0, 1)
    shape = w.shape + (1,) * (x.ndim - 1)
    out = (x[idx] * w.reshape(shape)).sum(axis=1)
    return out if axis == 0 else np.swapaxes(out, 0, 1)


def resize(img: np.ndarray, size: int, kind: str = "linear") -> np.ndarray:
    """Resize ``[h, w(, c)]`` to ``size`` x ``size``: ``linear`` or ``cubic``."""
    out = _apply_taps(img, *_resize_taps(img.shape[0], size, kind), axis=0)
    return np.ascontiguousarray(_apply_taps(out, *_resize_taps(img.shape[1], size, kind), 1))


def separable_filter(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate both axes with the same 1-D ``kernel``."""
    out = _apply_taps(img, *_conv_taps(img.shape[0], kernel), axis=0)
    return np.ascontiguousarray(_apply_taps(out, *_conv_taps(img.shape[1], kernel), axis=1))


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    r = max(1, int(np.ceil(3 * sigma)))
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return separable_filter(img, g / g.sum())


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


def make_edited(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A real-like scene with a region replaced by a resampled, tinted donor: (image, mask)."""
    p = draw_scene(rng)
    base = render_scene(rng, p, size)
    # donor: the same head geometry (an aligned face swap) with another identity and
    # background, rendered at 40-60% of the size and resized up: a local resampling trace
    donor_p = {**draw_scene(rng), **{k: p[k] for k in ("cx", "cy", "a", "b", "theta")}}
    small = max(8, int(round(size * rng.uniform(0.4, 0.6))))
    donor = render_scene(rng, donor_p, small)
    donor = resize(donor, size, "linear" if rng.random() < 0.5 else "cubic")
    # colour mismatch: a per-channel gain away from identity (never near it) and an offset
    gain = 1.0 + rng.choice([-1, 1], 3) * rng.uniform(0.12, 0.3, 3)
    donor = donor * gain.astype(np.float32) + np.float32(rng.normal(0, 0.08))
    alpha = paste_region(rng, p, size)
    out = alpha[..., None] * donor + (1.0 - alpha[..., None]) * base
    mask = np.where(alpha > 0.5, 255, 0).astype(np.uint8)
    return out, mask


# --------------------------------------------------------------------------------------------
# the common finish: global statistics and sensor noise drawn from one distribution


def finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Re-standardise per-channel mean/std to common targets, add sensor noise, quantise.

    The targets and the noise strength come from the same distribution for every class, so a
    classifier on global colour statistics or file size learns (almost) nothing; what is left
    to learn is local structure: spectra, edges, colour consistency."""
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
    out += rng.standard_normal(out.shape, dtype=np.float32) * sigma
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
    mask = None
    if label == 0:
        img = render_scene(rng, draw_scene(rng), size)
    elif label == 1:
        kind = UPSAMPLERS[rng.integers(len(UPSAMPLERS))]
        small = render_scene(rng, draw_scene(rng), size // 2)
        img = upsample2(rng, small, kind)
    else:
        img, mask = make_edited(rng, size)
    rgb = finish(rng, img)
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
    rows: list[dict] = []
    if workers > 1:
        with warnings.catch_warnings():
            # Python >= 3.12 warns about fork() in a process with threads (torch's); the
            # workers touch only numpy, scipy.fft and PNG encoding, which are fork-safe
            warnings.simplefilter("ignore", DeprecationWarning)
            with ProcessPoolExecutor(workers,
                                     mp_context=multiprocessing.get_context("fork")) as ex:
                for part in ex.map(job, chunks):
                    rows.extend(part)
    else:
        for chunk in chunks:
            rows.extend(job(chunk))
    ids = [r["group"] for r in rows]
    if len(set(ids)) != len(ids):  # 64-bit random ids: never in practice, but never overwrite
        raise RuntimeError("synthetic: two images drew the same id; use another seed")
    rows.sort(key=lambda r: (r["label"], r.pop("index")))
    return rows
