"""Pictures of runs and datasets (matplotlib; PDF, SVG or PNG by the output's suffix, PNG at
``PNG_DPI``): confusion matrices, training curves, average spectra and Grad-CAM maps.

matplotlib, torch and scipy are imported inside the functions, so that importing this module
(and ``fbench --help``) stays fast. Figures use the Agg backend: plotting must work on a
headless machine and never open a window. Figure sizes are fixed (no ``bbox_inches="tight"``)
so that a picture's pixel size is predictable: ``width_in * dpi`` by ``height_in * dpi``.
Titles name detectors and datasets; run ids (long, unreadable in a paper) only on request
(``run_ids=True``). Every colour bar sits beside the panel it explains.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fbench.errors import FbenchError
from fbench.figures import PNG_DPI, figure_format, new_figure, save_figure
from fbench.plugins.specs import LABELS

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from fbench.runs.store import Run

CLASS_NAMES: tuple[str, ...] = tuple(LABELS[c] for c in sorted(LABELS))

# Figure sizes in inches; whole or half inches so that size * dpi is an exact pixel count.
CONFUSION_SIZE = (6.0, 5.0)
CURVES_SIZE = (10.0, 4.0)
SPECTRUM_COLUMN_WIDTH = 4.0  # per column (DCT, DFT)
SPECTRUM_ROW_HEIGHT = 3.0  # per group, plus SPECTRUM_HEADER for the title
SPECTRUM_HEADER = 0.5
GRADCAM_COLUMN_WIDTH = 3.0
GRADCAM_ROW_HEIGHT = 3.0
DEFAULT_DPI = PNG_DPI


def _as_run(run: Run | str | Path) -> Run:
    from fbench.runs.store import Run, load_run

    return run if isinstance(run, Run) else load_run(run)


# -- confusion matrix ---------------------------------------------------------------------

def confusion_counts(run: Run | str | Path, split: str = "eval") -> np.ndarray:
    """The ``[3, 3]`` confusion matrix (rows true, columns predicted) of a split, recomputed
    from the run's stored predictions (never taken from summary.json)."""
    from fbench.metrics import metrics_from_predictions

    r = _as_run(run)
    if r.predictions is None:
        raise FbenchError(f"run {r.path} has no predictions.parquet "
                          f"(state: {r.status.get('state', 'unknown')}).",
                          "plot a completed run.")
    try:
        m = metrics_from_predictions(r.predictions, split)
    except ValueError:
        raise FbenchError(f"run {r.path} has no {split!r} predictions.") from None
    return np.asarray(m["confusion_matrix"], dtype=np.int64)


def plot_confusion(run: Run | str | Path, output: str | Path, split: str = "eval",
                   dpi: int = DEFAULT_DPI, run_ids: bool = False) -> Path:
    """Confusion matrix of a run's split: counts and row-normalised percentages; the title
    names detector, dataset and split (and the run id if ``run_ids``)."""
    figure_format(output)  # a bad suffix fails before any work
    r = _as_run(run)
    cm = confusion_counts(r, split)
    totals = cm.sum(axis=1, keepdims=True)
    # A class absent from the split has an all-zero row: show 0 %, not a division warning.
    pct = np.divide(100.0 * cm, totals, out=np.zeros(cm.shape), where=totals > 0)

    fig = new_figure(*CONFUSION_SIZE, dpi)
    ax = fig.add_subplot()
    # Colour by the row share, so that a small class is as readable as a large one.
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(im, ax=ax, label="% of true class")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{pct[i, j]:.1f}%", ha="center", va="center",
                    color="white" if pct[i, j] > 50 else "black")
    ticks = range(len(CLASS_NAMES))
    ax.set_xticks(ticks, CLASS_NAMES)
    ax.set_yticks(ticks, CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    detector = r.config.get("detector", "?")
    title = f"{detector} on {r.config.get('dataset', '?')} ({split}, n={int(cm.sum())})"
    ax.set_title(f"{title}\n{r.id}" if run_ids else title, fontsize=9)
    return save_figure(fig, output, dpi)


# -- training curves ----------------------------------------------------------------------

def selected_epoch(run: Run) -> int | None:
    """The epoch whose checkpoint the run evaluated: summary.json says so; a run without a
    summary (still running, failed) falls back to the last epoch that improved validation."""
    if run.summary and run.summary.get("selected_epoch") is not None:
        return int(run.summary["selected_epoch"])
    if "selected" in run.epochs.columns and run.epochs["selected"].any():
        return int(run.epochs.loc[run.epochs["selected"].astype(bool), "epoch"].iloc[-1])
    return None


def run_labels(runs: Sequence[Run], run_ids: bool = False) -> list[str]:
    """Legend labels that tell runs apart without run ids where possible: the detector, then
    detector and seed, then a number; with ``run_ids`` the id follows the detector."""
    detectors = [str(r.config.get("detector", "?")) for r in runs]
    if run_ids:
        return [f"{d} ({r.id})" for d, r in zip(detectors, runs, strict=True)]
    if len(set(detectors)) == len(detectors):
        return detectors
    seeded = [f"{d}, seed {r.config.get('seed', '?')}"
              for d, r in zip(detectors, runs, strict=True)]
    if len(set(seeded)) == len(seeded):
        return seeded
    return [f"{d} #{i}" for i, d in enumerate(detectors, 1)]


def plot_curves(runs: Sequence[Run | str | Path], output: str | Path,
                dpi: int = DEFAULT_DPI, run_ids: bool = False) -> Path:
    """Train loss and validation macro-F1 per epoch, one line per run, the selected epoch
    marked with a star; the legend names detectors (and run ids if ``run_ids``)."""
    figure_format(output)
    loaded = [_as_run(r) for r in runs]
    if not loaded:
        raise FbenchError("no runs to plot.", "pass one or more run directories.")
    empty = [r.id for r in loaded if r.epochs.empty or "train_loss" not in r.epochs.columns]
    if empty:
        raise FbenchError(f"run(s) {', '.join(empty)} have no epochs.json yet.",
                          "plot runs that finished at least one epoch.")
    labels = run_labels(loaded, run_ids)

    fig = new_figure(*CURVES_SIZE, dpi)
    ax_loss, ax_f1 = fig.subplots(1, 2)
    for r, label in zip(loaded, labels, strict=True):
        ep = r.epochs
        line, = ax_loss.plot(ep["epoch"], ep["train_loss"], marker=".", label=label)
        colour = line.get_color()
        if "val_macro_f1" in ep.columns:
            ax_f1.plot(ep["epoch"], ep["val_macro_f1"], marker=".", color=colour, label=label)
        sel = selected_epoch(r)
        if sel is not None and (ep["epoch"] == sel).any():
            row = ep[ep["epoch"] == sel].iloc[0]
            ax_loss.plot([sel], [row["train_loss"]], marker="*", markersize=14, color=colour,
                         linestyle="none")
            if "val_macro_f1" in ep.columns:
                ax_f1.plot([sel], [row["val_macro_f1"]], marker="*", markersize=14,
                           color=colour, linestyle="none")
    ax_loss.set_title("train loss")
    ax_f1.set_title("validation macro-F1 (★ selected epoch)")
    for ax in (ax_loss, ax_f1):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        # Epochs are whole numbers: no 1.5 ticks on short runs (and with min_n_ticks=1, no
        # 0.98 ticks on a one-epoch run either).
        ax.xaxis.get_major_locator().set_params(integer=True, min_n_ticks=1)
    ax_f1.set_ylim(-0.02, 1.02)
    ax_loss.legend(fontsize=8)
    datasets = dict.fromkeys(str(r.config.get("dataset", "?")) for r in loaded)
    fig.suptitle(f"training on {', '.join(datasets)}", fontsize=10)
    return save_figure(fig, output, dpi)


# -- spectra ------------------------------------------------------------------------------

def average_spectra(manifest: pd.DataFrame, per: str = "class", size: int = 64,
                    max_images: int | None = 200, seed: int = 0
                    ) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Per group (class name or source): the mean log-magnitude DCT-II (orthonormal) and
    centred DFT spectra of the grayscale images, resized to ``size``, and the image count."""
    import cv2
    from scipy.fft import dctn

    from fbench.data.images import read_image
    from fbench.data.manifest import resolve_path

    if per not in ("class", "source"):
        raise FbenchError(f"unknown grouping {per!r}.", "use --per class or --per source.")
    keys = (manifest["label"].map(LABELS) if per == "class" else manifest["source"].astype(str))
    order = ([LABELS[c] for c in sorted(LABELS) if LABELS[c] in set(keys)] if per == "class"
             else sorted(set(keys)))
    out: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    for name in order:
        rows = manifest[keys == name]
        if max_images is not None and len(rows) > max_images:
            # A seeded sample rather than the first rows: manifests are often sorted by
            # source or generator, and the head would not be representative.
            rows = rows.sample(n=max_images, random_state=seed)
        dct_sum = np.zeros((size, size))
        dft_sum = np.zeros((size, size))
        for path in rows["path"]:
            rgb = read_image(resolve_path(manifest, path), size)
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64) / 255.0
            # log(1e-8 + |X|): a zero coefficient would otherwise be -inf and poison the mean
            dct_sum += np.log(np.abs(dctn(gray, type=2, norm="ortho")) + 1e-8)
            dft = np.fft.fftshift(np.fft.fft2(gray, norm="ortho"))
            dft_sum += np.log(np.abs(dft) + 1e-8)
        n = len(rows)
        out[name] = (dct_sum / n, dft_sum / n, n)
    if not out:
        raise FbenchError("the dataset has no images to plot.")
    return out


def frequency_extent(size: int, kind: str) -> tuple[float, float, float, float]:
    """``imshow`` extent that puts a ``size``-point spectrum on axes in cycles/pixel (of the
    resized image), each coefficient centred on its frequency. DCT-II coefficient ``k`` is
    ``k / (2 size)`` (0 to just under 0.5, DC top left); centred-DFT index ``i`` is
    ``(i - size // 2) / size`` (-0.5 to just under 0.5, DC in the middle, shown with
    ``origin="lower"`` so that positive frequencies point up)."""
    if kind == "dct":
        lo, hi = -0.5 / (2 * size), (size - 0.5) / (2 * size)
        return (lo, hi, hi, lo)  # top row is k = 0
    lo, hi = (-(size // 2) - 0.5) / size, (size - 1 - size // 2 + 0.5) / size
    return (lo, hi, lo, hi)


def plot_spectrum(manifest: pd.DataFrame, output: str | Path, per: str = "class",
                  size: int = 64, max_images: int | None = 200, title: str | None = None,
                  dpi: int = DEFAULT_DPI) -> Path:
    """Average log-magnitude spectra: one row per group, columns DCT and DFT, axes in
    cycles/pixel, one colour scale per column (so rows compare directly), drawn as a colour
    bar beside every panel."""
    figure_format(output)
    spectra = average_spectra(manifest, per, size, max_images)
    n = len(spectra)
    fig = new_figure(2 * SPECTRUM_COLUMN_WIDTH, n * SPECTRUM_ROW_HEIGHT + SPECTRUM_HEADER, dpi)
    axes = np.atleast_2d(fig.subplots(n, 2, squeeze=False))
    for col, (kind, label) in enumerate((("dct", "DCT-II"), ("dft", "centred DFT"))):
        maps = [s[col] for s in spectra.values()]
        lo = min(float(m.min()) for m in maps)
        # The DC/low-frequency peak dwarfs the rest; the 99.5th percentile keeps the
        # high-frequency differences (where generator artefacts live) visible.
        hi = max(float(np.percentile(m, 99.5)) for m in maps)
        for row, (name, s) in enumerate(spectra.items()):
            ax = axes[row, col]
            im = ax.imshow(s[col], cmap="viridis", vmin=lo, vmax=hi,
                           extent=frequency_extent(size, kind),
                           origin="upper" if kind == "dct" else "lower")
            ax.set_title(f"{name} (n={s[2]}): {label}", fontsize=8)
            ax.set_xlabel("$f_x$ (cycles/pixel)", fontsize=7)
            ax.set_ylabel("$f_y$ (cycles/pixel)", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.locator_params(nbins=5)
            cb = fig.colorbar(im, ax=ax, label="mean log |X|")
            cb.ax.tick_params(labelsize=6)
            cb.ax.yaxis.label.set_size(7)
    # The frequencies are those of the resized image: say which size that is.
    fig.suptitle(f"{title or f'average spectra per {per}'} ({size}×{size} grayscale)",
                 fontsize=10)
    return save_figure(fig, output, dpi)


# -- Grad-CAM -----------------------------------------------------------------------------

def find_layer(model: Any, name: str | None = None) -> tuple[str, Any]:
    """The module to hook: ``name`` (dotted, as in ``named_modules``) or, by default, the
    last ``Conv2d``, the usual Grad-CAM choice (the deepest map that is still spatial)."""
    from torch import nn

    modules = dict(model.named_modules())
    if name is not None:
        if name not in modules:
            import difflib

            close = difflib.get_close_matches(name, [k for k in modules if k], n=5, cutoff=0.4)
            raise FbenchError(f"the model has no layer {name!r}.",
                              ("close matches: " + ", ".join(close)) if close else
                              "layers: " + ", ".join(k for k in list(modules)[1:20] if k))
        return name, modules[name]
    convs = [(k, m) for k, m in modules.items() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise FbenchError("the model has no Conv2d layer for Grad-CAM.",
                          "name a spatial layer with --layer.")
    return convs[-1]


def gradcam_maps(model: Any, transform: Any, rgb: np.ndarray, layer: str | None = None,
                 target_class: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Grad-CAM of ``rgb`` (uint8 ``[N, S, S, 3]``) for ``target_class`` (default: each
    image's predicted class).

    Returns ``(cams, probs, layer_name)``: ``cams`` float ``[N, S, S]`` in [0, 1] (each map
    scaled by its own maximum), ``probs`` ``[N, 3]`` softmax probabilities."""
    import torch
    import torch.nn.functional as F

    from fbench.plugins.batch import Batch

    name, module = find_layer(model, layer)
    captured: dict[str, torch.Tensor] = {}

    def keep(_module: Any, _inputs: Any, output: Any) -> None:
        act = output[0] if isinstance(output, (tuple, list)) else output
        act.retain_grad()  # the gradient of the class score w.r.t. this map is what we weigh
        captured["act"] = act

    handle = module.register_forward_hook(keep)
    try:
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            images = transform(x)
        # A graph from the input on: the map gets a gradient even if the model's weights
        # are frozen (requires_grad=False), as fine-tuned backbones often are.
        images = images.detach().requires_grad_(True)
        # Gradients are needed even if the caller runs under no_grad (e.g. inside predict).
        with torch.enable_grad():
            model.zero_grad(set_to_none=True)
            out = model(Batch(images=images, rgb=x))
            logits = out.logits.float()
            probs = torch.softmax(logits, dim=1)
            target = (probs.argmax(1) if target_class is None
                      else torch.full((len(x),), int(target_class), dtype=torch.long))
            score = logits.gather(1, target[:, None]).sum()
            score.backward()
    finally:
        handle.remove()
    act = captured.get("act")
    if act is None or act.grad is None or act.ndim != 4:
        raise FbenchError(f"layer {name!r} gave no spatial feature map with a gradient.",
                          "choose a convolutional layer with --layer.")
    weights = act.grad.mean(dim=(2, 3), keepdim=True)  # one weight per channel
    cam = F.relu((weights * act).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return (cam / peak).numpy(), probs.detach().numpy().astype(np.float64), name


def plot_gradcam(run: Run | str | Path, images: Sequence[str | Path], output: str | Path,
                 layer: str | None = None, target_class: int | None = None,
                 dpi: int = DEFAULT_DPI, run_ids: bool = False) -> Path:
    """Grad-CAM of a trained run on chosen image files: one row per image, columns image and
    CAM overlay with its colour scale beside it; titles give the predicted class and its
    probability, the figure title detector, training dataset and layer (and the run id if
    ``run_ids``)."""
    from fbench.data.images import read_image, stored_resampler

    figure_format(output)  # before loading the model
    if not images:
        raise FbenchError("no images given.", "pass one or more image files.")
    if target_class is not None and target_class not in LABELS:
        raise FbenchError(f"--target-class {target_class} is not a class.",
                          "use 0 (real), 1 (generated) or 2 (edited).")
    from fbench.use.model import load_trained

    model, transform, r = load_trained(run)
    size = int(r.config["input_size"])
    rgb = np.stack([read_image(str(p), size, stored_resampler(r.config)) for p in images])
    cams, probs, name = gradcam_maps(model, transform, rgb, layer, target_class)

    n = len(images)
    fig = new_figure(2 * GRADCAM_COLUMN_WIDTH, n * GRADCAM_ROW_HEIGHT, dpi)
    axes = fig.subplots(n, 2, squeeze=False)
    for i, path in enumerate(images):
        pred = int(probs[i].argmax())
        shown = pred if target_class is None else int(target_class)
        axes[i, 0].imshow(rgb[i])
        axes[i, 0].set_title(Path(path).name, fontsize=8)
        axes[i, 1].imshow(rgb[i])
        cam = axes[i, 1].imshow(cams[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        axes[i, 1].set_title(f"pred {LABELS[pred]} ({probs[i, pred]:.2f}); "
                             f"CAM for {LABELS[shown]}", fontsize=8)
        for ax in axes[i]:
            ax.set_axis_off()
        # Each map is scaled by its own maximum, so the scale reads "share of this map's peak".
        cb = fig.colorbar(cam, ax=axes[i, 1], label="Grad-CAM / its max")
        cb.ax.tick_params(labelsize=6)
        cb.ax.yaxis.label.set_size(7)
    title = (f"Grad-CAM of {r.config.get('detector', '?')} "
             f"(trained on {r.config.get('dataset', '?')}) at {name}")
    fig.suptitle(f"{title}\n{r.id}" if run_ids else title, fontsize=9)
    return save_figure(fig, output, dpi)
