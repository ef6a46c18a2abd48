"""`fbench plot ... -o FILE`: the file really is in the format its suffix names (read from its
bytes, not trusted from its name), PNGs are 300 dpi, other suffixes are refused before any
work; titles carry no run ids unless asked; colour bars sit beside their own panels; spectra
have frequency axes and Grad-CAM overlays a colour scale. One tiny run serves the module."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from tiny import tiny_plugin

import fbench
from fbench.cli import cli
from fbench.errors import FbenchError
from fbench.figures import PNG_DPI, save_figure
from fbench.plugins.registry import registered
from fbench.report import plots

pytestmark = pytest.mark.filterwarnings("ignore:run .* collapsed:UserWarning")

DATASET_OPTIONS = {"n_per_class": 12, "image_size": 32}
CLI_DATASET = ["--dataset-option", "n_per_class=12", "--dataset-option", "image_size=32"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FORMATS = ("pdf", "svg", "png")


def _plugin():
    return tiny_plugin("fig-tiny", input_size=32, width=4, depth=2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, module_env):
    """One tiny run (1 epoch), one image file per class, and the dataset's manifest."""
    from fbench.data.manifest import resolve_path

    with registered(_plugin(), name="tiny"):
        run = fbench.run(detector="fig-tiny", dataset="synthetic", epochs=1, seed=0,
                         out=str(tmp_path_factory.mktemp("runs")),
                         dataset_options=DATASET_OPTIONS)
    manifest = fbench.load_dataset("synthetic", **DATASET_OPTIONS)
    images = [str(resolve_path(manifest, manifest[manifest["label"] == c]["path"].iloc[0]))
              for c in (0, 1, 2)]
    return run, images, manifest


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, kept for inspection (they are still written)."""
    kept = []

    def keep(fig, output, dpi=None):
        kept.append(fig)
        return save_figure(fig, output, dpi)

    monkeypatch.setattr(plots, "save_figure", keep)
    return kept


def real_format(path: Path) -> str:
    """The format a file's bytes say it is, whatever its name."""
    head = path.read_bytes()[:512]
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.lstrip().startswith((b"<?xml", b"<svg")) and b"<svg" in head:
        return "svg"
    return f"unknown {head[:8]!r}"


def _cli_args(kind: str, tiny, output: Path) -> list[str]:
    run, images, _ = tiny
    args = {"confusion": ["confusion", str(run.path)],
            "curves": ["curves", str(run.path)],
            "spectrum": ["spectrum", "synthetic", "--size", "16", "--max-images", "2",
                         *CLI_DATASET],
            "gradcam": ["gradcam", str(run.path), images[0]]}[kind]
    return ["plot", *args, "-o", str(output)]


@pytest.mark.parametrize("kind", ["confusion", "curves", "spectrum", "gradcam"])
def test_every_kind_written_in_the_format_its_suffix_names(kind, tiny, tmp_path):
    from PIL import Image

    with registered(_plugin(), name="tiny"):
        for fmt in FORMATS:
            out = tmp_path / f"{kind}.{fmt}"
            res = CliRunner().invoke(cli, _cli_args(kind, tiny, out))
            assert res.exit_code == 0, res.output
            assert real_format(out) == fmt, out
    with Image.open(tmp_path / f"{kind}.png") as img:
        dpi = img.info["dpi"]
        size = img.size
    assert dpi == pytest.approx((PNG_DPI, PNG_DPI), abs=0.5)
    if kind == "confusion":  # the fixed figure size at 300 dpi, pixel for pixel
        assert size == tuple(round(v * PNG_DPI) for v in plots.CONFUSION_SIZE)
    if kind == "confusion":  # an upper-case suffix is the same format (one kind is enough)
        out = tmp_path / "upper.PDF"
        res = CliRunner().invoke(cli, _cli_args(kind, tiny, out))
        assert res.exit_code == 0, res.output
        assert real_format(out) == "pdf"


@pytest.mark.parametrize("name", ["c.jpg", "c.eps", "c"])
def test_other_suffixes_refused_in_one_line_before_any_work(name, tmp_path):
    # the run directory does not exist: the suffix must be what fails, before it is read
    res = CliRunner().invoke(cli, ["plot", "confusion", str(tmp_path / "no-run"),
                                   "-o", str(tmp_path / name)])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), res.output
    assert all(s in lines[0] for s in (".pdf", ".svg", ".png"))
    assert "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []
    # the library refuses too, and leaves no file (not even a temporary one) behind
    from fbench.figures import new_figure

    with pytest.raises(FbenchError, match=r"\.pdf, \.svg, \.png"):
        save_figure(new_figure(1, 1), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def _texts(fig) -> str:
    from matplotlib.text import Text

    return "\n".join(t.get_text() for t in fig.findobj(Text))


def test_titles_name_detector_and_dataset_and_run_ids_only_if_asked(tiny, tmp_path, figures):
    run, images, _ = tiny
    with registered(_plugin(), name="tiny"):
        for run_ids in (False, True):
            plots.plot_confusion(run, tmp_path / "c.svg", run_ids=run_ids)
            plots.plot_curves([run], tmp_path / "k.svg", run_ids=run_ids)
            plots.plot_gradcam(run, images[:1], tmp_path / "g.svg", run_ids=run_ids)
        res = CliRunner().invoke(cli, ["plot", "confusion", str(run.path), "--title-run-ids",
                                       "-o", str(tmp_path / "cli.svg")])
    assert res.exit_code == 0, res.output
    plain, with_ids, cli_ids = figures[:3], figures[3:6], figures[6]
    for fig in plain:
        text = _texts(fig)
        assert run.id not in text
        assert "fig-tiny" in text and "synthetic" in text
    for fig in (*with_ids, cli_ids):
        assert run.id in _texts(fig)
    # a one-epoch run's curves have whole-epoch ticks (not 0.96 ... 1.04)
    ax = plain[1].axes[0]
    lo, hi = ax.get_xlim()
    shown = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert shown and all(float(t).is_integer() for t in shown)


def test_legend_labels_tell_runs_apart_without_ids():
    def fake(detector, seed, rid):
        return SimpleNamespace(config={"detector": detector, "seed": seed}, id=rid)

    assert plots.run_labels([fake("a", 0, "r1"), fake("b", 0, "r2")]) == ["a", "b"]
    assert plots.run_labels([fake("a", 0, "r1"), fake("a", 1, "r2")]) == [
        "a, seed 0", "a, seed 1"]
    assert plots.run_labels([fake("a", 0, "r1"), fake("a", 0, "r2")]) == ["a #1", "a #2"]
    assert plots.run_labels([fake("a", 0, "r1")], run_ids=True) == ["a (r1)"]


def _colour_bars_beside_their_panels(fig) -> int:
    """Every colour bar lies just right of the panel whose image it explains, level with it,
    and nearer to it than to any other panel; returns how many there are."""
    images = [im for ax in fig.axes for im in ax.get_images() if im.colorbar is not None]
    panels = [im.axes for im in images]
    for im in images:
        own, bar = im.axes.get_position(), im.colorbar.ax.get_position()
        assert bar.x0 >= own.x1 - 1e-6  # on the right
        assert own.y0 - 1e-6 <= (bar.y0 + bar.y1) / 2 <= own.y1 + 1e-6  # level with it
        gaps = {id(p): abs(bar.x0 - p.get_position().x1) + abs(
            (bar.y0 + bar.y1) / 2 - (p.get_position().y0 + p.get_position().y1) / 2)
            for p in panels}
        assert min(gaps, key=gaps.get) == id(im.axes)
    return len(images)


def test_colour_bars_frequency_axes_and_cam_scale(tiny, tmp_path, figures):
    run, images, manifest = tiny
    with registered(_plugin(), name="tiny"):
        plots.plot_confusion(run, tmp_path / "c.png")
        plots.plot_spectrum(manifest, tmp_path / "s.png", size=16, max_images=2)
        plots.plot_gradcam(run, images[:2], tmp_path / "g.png")
    confusion, spectrum, gradcam = figures
    assert _colour_bars_beside_their_panels(confusion) == 1
    # spectra: 3 classes x (DCT, DFT), each panel with its own bar and frequency axes
    assert _colour_bars_beside_their_panels(spectrum) == 6
    panels = [ax for ax in spectrum.axes if ax.get_images()]
    for ax in panels:
        assert "cycles/pixel" in ax.get_xlabel() and "cycles/pixel" in ax.get_ylabel()
        lo, hi = sorted(ax.get_xlim())
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert len(ticks) >= 3 and all(label.get_text() for label in ax.get_xticklabels())
        assert hi <= 0.5 + 1e-9 and (lo < -0.4 if "DFT" in ax.get_title() else lo < 0.01)
    # Grad-CAM: one bar per overlay, on the CAM's 0..1 scale
    assert _colour_bars_beside_their_panels(gradcam) == 2
    for ax in gradcam.axes:
        for im in ax.get_images():
            if im.colorbar is not None:
                assert (im.norm.vmin, im.norm.vmax) == (0, 1)


def _peaks(profile: np.ndarray, start: float, end: float) -> list[float]:
    """Where a 1-D profile peaks, in the coordinates of an axis running from ``start`` (the
    first sample's edge) to ``end``."""
    n = len(profile)
    return sorted(round(start + (i + 0.5) * (end - start) / n, 9)
                  for i in np.flatnonzero(profile > 0.5 * profile.max()))


@pytest.mark.parametrize("size", [16, 15])
def test_frequency_axes_put_a_cosine_at_its_frequency(size):
    """A cosine of known frequency peaks, on the plotted axes, at that frequency, in x and
    in y (rows are drawn downwards for the DCT, upwards for the DFT: ``origin``)."""
    from scipy.fft import dctn

    x = np.arange(size)
    f = round(0.25 * size) / size  # ~0.25 cycles/pixel, on the DFT grid
    k = 3  # DCT-II basis k has k / (2 size) cycles/pixel
    cases = {"dft": (lambda g: np.abs(np.fft.fftshift(np.fft.fft2(g))),
                     np.cos(2 * np.pi * f * x), [-f, f]),
             "dct": (lambda g: np.abs(dctn(g, type=2, norm="ortho")),
                     np.cos(np.pi * k * (2 * x + 1) / (2 * size)), [k / (2 * size)])}
    for kind, (transform, wave, expected) in cases.items():
        left, right, bottom, top = plots.frequency_extent(size, kind)
        # origin="upper" (DCT) draws row 0 at the top, origin="lower" (DFT) at the bottom
        first, last = (top, bottom) if kind == "dct" else (bottom, top)
        horizontal = transform(np.tile(wave, (size, 1)))
        assert _peaks(horizontal.max(axis=0), left, right) == pytest.approx(expected)
        assert _peaks(horizontal.max(axis=1), first, last) == pytest.approx([0.0])
        vertical = transform(np.tile(wave[:, None], (1, size)))
        assert _peaks(vertical.max(axis=1), first, last) == pytest.approx(expected)
