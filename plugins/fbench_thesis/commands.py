"""``fbench data prepare ffhq|ffpp|ffpp-splits|check-gan`` and ``fbench data import-lists``.

Only click and rich at import (the CLI builds these commands at every start); OpenCV,
mediapipe and pandas load inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fbench import FbenchError

_DIR = click.Path(path_type=Path, file_okay=False)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


@click.group("prepare")
def prepare_group() -> None:
    """Prepare the thesis's sources (FFHQ crops, FaceForensics++ frames; check GAN folders)."""


@prepare_group.command("ffhq")
@click.argument("src", type=_DIR)
@click.option("--out", "-o", type=_DIR, required=True,
              help="Where the crops go; use SOURCES/ffhq to build recipes from them.")
@click.option("--threshold", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              show_default=True, help="Person score above which a pixel is the person.")
@click.option("--blank-background/--keep-background", default=True, show_default=True,
              help="Paint pixels at or below the threshold gray (192,192,192), or keep them.")
@click.option("--margin", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Grow the person box by this fraction of its size on each side.")
@click.option("--limit", type=click.IntRange(min=1),
              help="Crop a seeded random subset of this many images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --limit.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def prepare_ffhq_cmd(src: Path, out: Path, threshold: float, blank_background: bool,
                     margin: float, limit: int | None, seed: int, no_progress: bool) -> None:
    """Crop FFHQ images in SRC to the person (mediapipe selfie segmentation, model 0).

    Resumable: re-running with the same settings skips finished images."""
    from fbench_thesis.ffhq import prepare_ffhq

    s = prepare_ffhq(src, out, threshold=threshold, blank_background=blank_background,
                     margin=margin, limit=limit, seed=seed, progress=not no_progress)
    console = _console()
    console.print(f"FFHQ: {s['cropped']} crops in {out} ({s['processed']} processed now, "
                  f"{s['done_before']} done before; {s['images_per_s'] or '-'} images/s).")
    if s["no_person"]:
        console.print(f"[yellow]{len(s['no_person'])} image(s) with no person found[/] "
                      f"(not cropped; listed in {out / 'report.json'}): "
                      + ", ".join(s["no_person"][:10]))


@prepare_group.command("ffpp")
@click.argument("videos", type=_DIR)
@click.option("--masks", type=_DIR, help="The mask videos (default: FaceForensics++'s "
              "<method>/masks/videos beside <method>/<quality>/videos).")
@click.option("--out", "-o", type=_DIR, required=True,
              help="Where frames go; use SOURCES/face2face (or faceswap, deepfakedetection).")
@click.option("--every", type=click.IntRange(min=1),
              help="Take every N-th frame (from a seeded offset).")
@click.option("--per-video", type=click.IntRange(min=1),
              help="Take K seeded random frames per video. [default: 30 unless --every]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--min-confidence", type=click.FloatRange(0, 1, min_open=True), default=0.9,
              show_default=True, help="mediapipe face detection threshold.")
@click.option("--margin", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Grow the face box by this fraction of its size on each side.")
@click.option("--mask-threshold", type=click.IntRange(0, 254), default=0, show_default=True,
              help="Mask pixels above this value count as manipulated (the thesis: any "
              "non-zero).")
@click.option("--skip-bad", is_flag=True,
              help="Report unreadable or mismatched videos and go on (default: stop).")
@click.option("--method", help="The manipulation method, which seeds the sampling with the "
              "video id. [default: from .../manipulated_sequences/<Method>/..., else OUT's "
              "name]")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def prepare_ffpp_cmd(videos: Path, masks: Path | None, out: Path, every: int | None,
                     per_video: int | None, seed: int, min_confidence: float, margin: float,
                     mask_threshold: int, skip_bad: bool, method: str | None,
                     no_progress: bool) -> None:
    """Extract face crops and their masks from FaceForensics++ VIDEOS.

    Every frame keeps its video (OUT/index.parquet), so recipes split by video. Resumable:
    re-running with the same settings skips finished videos."""
    from fbench_thesis.ffpp import prepare_ffpp

    if every is not None and per_video is not None:
        raise FbenchError("give either --every or --per-video, not both.")
    s = prepare_ffpp(videos, out, masks=masks, every=every, per_video=per_video, seed=seed,
                     min_confidence=min_confidence, margin=margin,
                     mask_threshold=mask_threshold, skip_bad=skip_bad,
                     progress=not no_progress, method=method)
    console = _console()
    console.print(f"FaceForensics++ ({s['method']}): {s['frames']} frames from {s['videos']} "
                  f"videos in {out} "
                  f"({s['processed']} processed now, {s['done_before']} done before; "
                  f"{s['sampled_frames_per_s'] or '-'} sampled frames/s).")
    if s["frames_without_face"]:
        console.print(f"{s['frames_without_face']} sampled frame(s) had no face at "
                      f"confidence {min_confidence} and were left out.")
    if s["videos_without_face"]:
        console.print(f"[yellow]{len(s['videos_without_face'])} video(s) without a "
                      f"detectable face[/] (no frames; listed in {out / 'report.json'}): "
                      + ", ".join(s["videos_without_face"][:10]))
    for bad in s["bad_videos"]:
        console.print(f"[red]skipped[/] {bad['video']}: {bad['error']}")


@prepare_group.command("ffpp-splits")
@click.argument("splits", type=_DIR)
@click.option("--root", type=_DIR, required=True,
              help="The sources root that `fbench data build` reads (--root there).")
def prepare_ffpp_splits_cmd(splits: Path, root: Path) -> None:
    """Use FaceForensics++'s official SPLITS (train.json, val.json, test.json) when building
    recipes from --root: checked, then copied to ROOT/ffpp-splits/.

    train + val go to the train side (validation is carved from it), test to eval."""
    import shutil

    from fbench_thesis.identities import SPLIT_FILES, SPLITS_DIR, read_split_files

    side = read_split_files(splits)  # refuses malformed files before anything is copied
    target = root / SPLITS_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name in SPLIT_FILES:
        (target / f"{name}.json").unlink(missing_ok=True)  # no stale val.json from before
        if (splits / f"{name}.json").is_file():
            shutil.copyfile(splits / f"{name}.json", target / f"{name}.json")
    n_train = sum(1 for s in side.values() if s == "train")
    _console().print(f"official splits in {target}: {n_train} ids on the train side, "
                     f"{len(side) - n_train} on eval; `fbench data build` now puts every "
                     "FaceForensics++ video on the side of its ids.")


@prepare_group.command("check-gan")
@click.argument("directory", type=_DIR)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def check_gan_cmd(directory: Path, no_progress: bool) -> None:
    """Check a folder of generated images: readable, 8-bit RGB, counted by native size."""
    from fbench_thesis.gan import check_gan

    r = check_gan(directory, progress=not no_progress)
    console = _console()
    sizes = ", ".join(f"{size}: {n}" for size, n in r["sizes"].items())
    console.print(f"{directory}: {r['count']} images; sizes {sizes or '-'}.")
    problems = len(r["unreadable"]) + len(r["not_rgb"])
    if problems:
        examples = r["unreadable"][:3] + [f"{p} ({what})" for p, what in
                                          list(r["not_rgb"].items())[:3]]
        raise FbenchError(f"{directory}: {len(r['unreadable'])} unreadable and "
                          f"{len(r['not_rgb'])} non-RGB image(s), e.g. {', '.join(examples)}.",
                          "re-generate or remove them (a set whose images differ in format "
                          "gives a detector a shortcut).")
    console.print("all images are readable 8-bit RGB.")


def _prefix_pair(text: str) -> tuple[str, str]:
    old, sep, new = text.partition("=")
    if not sep or not old:
        raise FbenchError(f"--map-prefix {text!r} is not OLD=NEW.",
                          "e.g. --map-prefix /home/author/deepfake/=/data/thesis/")
    return old, new


@click.command("import-lists")
@click.argument("train", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("eval_", metavar="EVAL", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", "-o", type=_DIR, required=True,
              help="Directory to write manifest.parquet and recipe.json into.")
@click.option("--root", type=_DIR, help="Your copy of the author's deepfake/ folder (holding "
              "FFHQ_raw/, Deepfake_datasets/): the lists' prefix is mapped to it.")
@click.option("--map-prefix", multiple=True, metavar="OLD=NEW",
              help="Replace a path prefix (repeatable; the longest match wins).")
# default: lists.CHAIN_THRESHOLD (not imported: the CLI builds these commands at every start)
@click.option("--chain-threshold", type=click.IntRange(0, 64), default=16, show_default=True,
              help="Hash distance (bits of 64) under which neighbouring FaceForensics++ frames "
              "join one inferred video.")
@click.option("--allow-outside-root", is_flag=True,
              help="Accept listed files outside --root and the --map-prefix targets (a `..` "
              "or an unmapped absolute path); recorded in the dataset.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def import_lists_cmd(train: Path, eval_: Path, out: Path, root: Path | None,
                     map_prefix: tuple[str, ...], chain_threshold: int,
                     allow_outside_root: bool, no_progress: bool) -> None:
    """Import the thesis's TRAIN and EVAL split files (path<TAB>label, or
    image<TAB>mask<TAB>label; labels 0-2 or real/generated/edited) as the dataset
    `thesis-lists`.

    Listed files must lie under --root (or a --map-prefix target) unless
    --allow-outside-root; an image listed twice in one split is imported once (with a
    warning, and counted in recipe.json's duplicates_dropped)."""
    import warnings

    from rich.markup import escape

    from fbench_thesis.lists import import_lists

    # the import's warnings (duplicated lines) in the command's own voice
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        card = import_lists(train, eval_, out, root=root,
                            map_prefix=[_prefix_pair(m) for m in map_prefix],
                            progress=not no_progress, chain_threshold=chain_threshold,
                            allow_outside_root=allow_outside_root)
    console = _console()
    for w in caught:
        if issubclass(w.category, UserWarning):
            console.print(f"[yellow]warning:[/] {escape(str(w.message))}")
        else:  # a library's warning, as Python would have shown it
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    # sources are folder names from the lists: text, never rich markup
    for split, per in card["built"].items():
        console.print(f"{split}: " + ", ".join(f"{escape(src)} {n}"
                                               for src, n in sorted(per.items())))
    _print_inferred_groups(console, card.get("groups"))
    if card["groups_unknown"]:
        console.print(f"[yellow]note:[/] {escape(', '.join(card['groups_unknown']))}: "
                      f"{card['groups_note']}.")
    console.print(escape(f"imported into {out}; use it with --dataset thesis-lists "
                         f"--data-root {out}."))


def _print_inferred_groups(console: Any, groups: dict[str, Any] | None) -> None:
    if not groups or groups["origin"] != "inferred":
        return
    console.print(f"groups inferred: {groups['n_groups']} pseudo-videos from "
                  f"{groups['frames']} frames of {', '.join(groups['sources'])} "
                  f"({groups['method']}).")
    if groups["straddling"]:
        console.print(f"[yellow]{groups['straddling']} pseudo-video(s) have frames in both "
                      "train and eval:[/] the lists leak them, so `fbench run` refuses this "
                      "dataset unless --skip-audit (recorded); `fbench data audit "
                      "thesis-lists --data-root DIR` lists them.")


def add_commands(cli: click.Group) -> None:
    """Attach the commands to ``fbench data`` (joining a ``prepare`` group another plugin may
    already have made)."""
    data = cli.commands.get("data")
    if not isinstance(data, click.Group):
        raise FbenchError("the fbench CLI has no `data` group (fbench too old for "
                          "fbench_thesis).")
    prepare = data.commands.get("prepare")
    if isinstance(prepare, click.Group) and prepare is not prepare_group:
        for name, command in prepare_group.commands.items():
            prepare.add_command(command, name)
    else:
        data.add_command(prepare_group)
    data.add_command(import_lists_cmd)
