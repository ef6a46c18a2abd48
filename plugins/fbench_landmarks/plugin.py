"""Entry point of the landmark plugin: the ``two-stream-landmark`` detector (RGB + facial
landmark heatmaps, after Songsri-in & Zafeiriou, arXiv 1910.05455), the `fbench data
landmarks` command that computes mediapipe face-mesh landmarks once per dataset, a run-end
hook that copies the run's landmark coverage into its summary, and the shortcut probe's
``face-found`` feature (`fbench data probe`): whether a face was found, the cue this detector's
empty landmark maps give away.

Nothing heavy here (every fbench start imports this module): torch, timm and mediapipe load
inside the factory and the command.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fbench import DetectorSpec, ProbeFeatureSpec, hookimpl

if TYPE_CHECKING:  # pragma: no cover
    import click
    import pandas as pd

    from fbench_landmarks.model import TwoStreamLandmark
    from fbench_landmarks.probe import FaceFound

NAME = "two-stream-landmark"


def make_two_stream_landmark(num_classes: int = 3, backbone: str = "resnet18",
                             fusion: str = "mid", heatmap: str = "regions", sigma: float = 0.01,
                             landmark_width: int = 32, mask_head: bool = False,
                             dropout: float = 0.2, bce_weight: float = 1.0,
                             dice_weight: float = 1.0) -> TwoStreamLandmark:
    """RGB timm ``backbone`` (random init) + a landmark-heatmap stream, joined per ``fusion``
    (``early`` | ``mid`` | ``late``); ``heatmap``: ``regions`` (6 channels) or ``points``
    (1); ``sigma``: Gaussian width as a fraction of the image side; ``mask_head``: add a mask
    decoder trained with ``bce_weight``·BCE + ``dice_weight``·Dice (needs a dataset with
    masks)."""
    from fbench_landmarks.model import TwoStreamLandmark

    return TwoStreamLandmark(num_classes, backbone=backbone, fusion=fusion, heatmap=heatmap,
                             sigma=sigma, landmark_width=landmark_width, mask_head=mask_head,
                             dropout=dropout, bce_weight=bce_weight, dice_weight=dice_weight)


@hookimpl
def register_detectors(register: Callable[[DetectorSpec], Any]) -> None:
    register(DetectorSpec(
        name=NAME,
        summary="Two streams: RGB (ResNet18) + mediapipe face-mesh landmark heatmaps, fused "
                "early/mid/late; optional mask head (Songsri-in & Zafeiriou 2019)",
        factory=make_two_stream_landmark,
        family="landmarks",
        input_size=224,
        transform="raw",
        # Static: the mask head is an option, off by default; with it on, the loss asks for
        # masks and says so when a dataset has none.
        needs_masks=False,
        needs_landmarks=True,
        defaults={"lr": 1e-3, "batch_size": 32},  # lr measured: docs/lr-sweep.md
        traits={"backbone": "ResNet18 + small CNN", "head": "landmark heatmaps",
                "fusion": "mid (option)", "multi_task": "optional (mask)"},
    ))


def make_face_found(manifest: pd.DataFrame) -> FaceFound:
    """The probe's ``face-found`` feature over ``manifest``: the landmark cache's answers
    where there is one, else mediapipe on the fly (imported only then)."""
    from fbench_landmarks.probe import FaceFound

    return FaceFound(manifest)


@hookimpl
def register_probe_features(register: Callable[[ProbeFeatureSpec], Any]) -> None:
    register(ProbeFeatureSpec(
        name="face-found",
        summary="a face was found (0/1) by the face mesh behind two-stream-landmark's "
                "landmark maps (its landmark cache, else on the fly)",
        spectral=False,
        factory=make_face_found,
    ))


@hookimpl
def register_commands(cli: click.Group) -> None:
    from fbench_landmarks.commands import add_commands

    add_commands(cli)


@hookimpl
def on_run_end(run_dir: str, summary: dict[str, Any]) -> None:
    """Copy the run's landmark coverage (images without a face, per split; recorded in its
    config by the core) into ``summary.json``, beside the scores it qualifies."""
    from fbench import read_json, write_json

    config_file, summary_file = Path(run_dir) / "config.json", Path(run_dir) / "summary.json"
    if not config_file.is_file() or not summary_file.is_file():
        return
    landmarks = read_json(config_file).get("landmarks")
    if not landmarks:
        return
    summary["landmarks"] = landmarks
    write_json(summary_file, {**read_json(summary_file), "landmarks": landmarks})
