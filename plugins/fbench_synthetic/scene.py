"""Drawing the synthetic dataset's scenes: 1/f noise textures, face-like geometry (skin, hair,
eyes, brows, mouth, clothing) rendered at any resolution, and the resampling primitives
(resize, separable filters, blur) the forgeries are made with. No label is decided here:
:mod:`fbench_synthetic.generate` turns scenes into real, generated and edited images."""

from __future__ import annotations

import numpy as np
import scipy.fft  # float32 FFTs, ~3x faster than numpy.fft here (scipy comes with scikit-learn)

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


def _face_frame(p: dict, res: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates u, v in the face frame (rotated about the face centre)."""
    x, y = _grid(res)
    ct, st = np.cos(p["theta"]), np.sin(p["theta"])
    u = ct * (x - p["cx"]) + st * (y - p["cy"])
    v = -st * (x - p["cx"]) + ct * (y - p["cy"])
    return u, v


def render_scene(rng: np.random.Generator, p: dict, res: int) -> np.ndarray:
    """Render scene ``p`` at ``res`` x ``res``: float32 RGB, roughly in [0, 1]."""
    half = res / 2.0
    x, y = _grid(res)
    u, v = _face_frame(p, res)
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


