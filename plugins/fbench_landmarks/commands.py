"""``fbench data landmarks DATASET``: compute facial landmarks once and cache them with the
dataset. Only click at import (the CLI builds its commands at every start); mediapipe, OpenCV
and pandas load inside the command."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import click

from fbench import FbenchError


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``--dataset-option KEY=VALUE`` as `fbench run` reads it: a TOML literal (``20``,
    ``0.5``, ``true``), else the plain string, so both resolve the same manifest."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise FbenchError(f"--dataset-option {pair!r} is not KEY=VALUE.",
                              "write e.g. --dataset-option n_per_class=500")
        try:
            parsed: Any = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value.strip()
        out[key.strip().replace("-", "_")] = parsed
    return out


@click.command("landmarks")
@click.argument("dataset")
@click.option("--data-root", type=click.Path(path_type=Path),
              help="The dataset's directory, as given to `fbench run` (not for synthetic).")
@click.option("--dataset-option", multiple=True, metavar="KEY=VALUE",
              help="A dataset option, as given to `fbench run`, repeatable.")
@click.option("--min-confidence", type=click.FloatRange(0, 1, min_open=True), default=0.5,
              show_default=True, help="mediapipe face detection threshold.")
@click.option("--force", is_flag=True, help="Compute again even if the cache is up to date.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def landmarks_cmd(dataset: str, data_root: Path | None, dataset_option: tuple[str, ...],
                  min_confidence: float, force: bool, no_progress: bool) -> None:
    """Compute mediapipe face-mesh landmarks (468 points) for every image of DATASET, once,
    and cache them with the dataset; detectors that need landmarks
    (e.g. two-stream-landmark) read the cache in every run. Give the same --data-root and
    --dataset-option as the runs will."""
    from rich.console import Console

    from fbench_landmarks.mesh import prepare_landmarks

    s = prepare_landmarks(dataset, str(data_root) if data_root else None,
                          parse_options(dataset_option), force=force,
                          min_confidence=min_confidence, progress=not no_progress)
    console = Console(highlight=False)
    if s["up_to_date"]:
        console.print(f"{dataset}: landmark cache {s['cache']} is up to date ({s['images']} "
                      f"images, {s['no_face']} without a face); --force computes it again.")
        return
    if s["replaced"]:
        console.print(f"[yellow]replaced:[/] {s['replaced']}")
    rate = f"{s['images'] / s['seconds']:.0f} images/s" if s["seconds"] > 0 else "-"
    console.print(f"{dataset}: landmarks of {s['images']} images in {s['cache']} "
                  f"({s['seconds']:.1f} s, {rate}).")
    if s["no_face"]:
        splits = ", ".join(f"{k} {v}" for k, v in sorted(s["no_face_by_split"].items()) if v)
        console.print(f"[yellow]{s['no_face']} of {s['images']} image(s) without a detectable "
                      f"face[/] ({splits}); they get empty landmark maps. E.g. "
                      + ", ".join(s["no_face_examples"]))
    else:
        console.print("a face was found in every image.")


def add_commands(cli: click.Group) -> None:
    """Attach the command to ``fbench data``."""
    data = cli.commands.get("data")
    if not isinstance(data, click.Group):
        raise FbenchError("the fbench CLI has no `data` group (fbench too old for "
                          "fbench_landmarks).")
    data.add_command(landmarks_cmd)
