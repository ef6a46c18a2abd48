"""The thesis plugin's door: it loads through the `fbench` entry point like any plugin, keeps
`fbench --help` light (no torch, OpenCV, mediapipe or pandas at import), and what it builds is
something `fbench run` trains on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from thesis_fixtures import MarkerDetector, make_ffpp_videos, make_image_sources

import fbench
from fbench.cli import cli
from fbench.plugins.registry import registered
from fbench_thesis.ffpp import prepare_ffpp

BIN = Path(sys.executable).parent


def test_plugin_module_imports_nothing_heavy():
    code = ("import sys, fbench_thesis.plugin as p; "
            "heavy = [m for m in ('torch', 'cv2', 'mediapipe', 'pandas', 'numpy') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_commands_come_through_the_entry_point():
    fbench_bin = BIN / "fbench"
    if not fbench_bin.exists():
        pytest.skip("the fbench console script is not installed next to this Python")
    out = subprocess.run([str(fbench_bin), "data", "prepare", "--help"], capture_output=True,
                         text=True, env={"FBENCH_LOAD_PLUGINS": "", "PATH": str(BIN)})
    assert out.returncode == 0, out.stderr
    assert all(c in out.stdout for c in ("ffhq", "ffpp", "check-gan"))


def _tiny_cnn(num_classes: int = 3):
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, num_classes))


class TinyDetector:
    """A detector that asks for masks, so the run loads seg_2's frame and constant masks."""

    @fbench.hookimpl
    def register_detectors(self, register):
        register(fbench.DetectorSpec(name="tiny-mask-cnn", summary="test", factory=_tiny_cnn,
                                     input_size=32, needs_masks=True))


@pytest.mark.filterwarnings("ignore:.*collapsed")  # one epoch of a toy model may well
def test_a_built_seg_2_dataset_trains(tmp_path):
    """`fbench data build seg_2` then `fbench run --dataset seg_2` (1 epoch, tiny model)."""
    root = tmp_path / "sources"
    make_image_sources(root, n_ffhq=100, n_gan=50)
    for i, (method, name) in enumerate((("Face2Face", "face2face"), ("FaceSwap", "faceswap"))):
        videos, masks = make_ffpp_videos(tmp_path / "ff", method, 5, 6, seed=i)
        prepare_ffpp(videos, root / name, masks=masks, per_video=4, progress=False,
                     detector=MarkerDetector())
    built = tmp_path / "built"
    result = CliRunner().invoke(cli, ["data", "build", "seg_2", "--root", str(root), "--out",
                                      str(built), "--scale", "0.005"])
    assert result.exit_code == 0, result.output
    with registered(TinyDetector(), name="tiny"):
        run = fbench.run(detector="tiny-mask-cnn", dataset="seg_2", data_root=str(built),
                         epochs=1, batch_size=64, out=str(tmp_path / "runs"))
    assert run.status["state"] == "completed"
    assert run.config["audit"]["ok"] and run.config["dataset"] == "seg_2"
    assert set(run.predictions["split"]) == {"val", "eval"}
