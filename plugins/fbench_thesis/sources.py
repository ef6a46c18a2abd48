"""The sources under a sources root, as the recipes read them (docs/datasets.md):

    ROOT/ffhq/                     FFHQ PNGs, raw or the output of `prepare ffhq` (label 0)
    ROOT/wgan-gp/, stylegan/, mspie-stylegan2/   generated images (label 1)
    ROOT/face2face/, faceswap/, deepfakedetection/   `prepare ffpp` output (label 2):
        imgs/*.png, masks/*.png, index.parquet
    ROOT/ffpp-splits/                 optional: FaceForensics++'s official train/val/test.json

Each scan returns candidate rows: path and mask (relative to ROOT), label, source, group (an
image's own identity; for FaceForensics++ frames the connected set of people their video
touches, over all methods: see :mod:`fbench_thesis.identities`), width, height; FaceForensics++
rows also carry ``video``, ``frame``, ``identities`` and, with official split files,
``fixed_split``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fbench import FbenchError
from fbench_thesis.identities import (
    SPLITS_DIR,
    apply_split_files,
    assign_identity_groups,
    read_split_files,
    split_files_card,
)
from fbench_thesis.images import image_size, list_images, natural_key

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

GANS = ("wgan-gp", "stylegan", "mspie-stylegan2")
FFPP = ("face2face", "faceswap", "deepfakedetection")
LABELS: dict[str, int] = {"ffhq": 0, **dict.fromkeys(GANS, 1), **dict.fromkeys(FFPP, 2)}
COLUMNS = ["path", "label", "source", "group", "mask", "width", "height"]


def _missing_fix(source: str, where: Path) -> str:
    if source == "ffhq":
        return (f"put the FFHQ PNGs in {where} (raw, as the thesis's lists used, or cropped "
                f"with `fbench data prepare ffhq FFHQ_DIR --out {where}`).")
    if source in GANS:
        return (f"put the {source} images in {where} and check them with "
                f"`fbench data prepare check-gan {where}`.")
    return (f"extract the frames with `fbench data prepare ffpp VIDEOS_DIR --masks MASKS_DIR "
            f"--out {where}`.")


def scan_images(root: Path, source: str) -> list[dict]:
    """FFHQ or a GAN folder. A prepared FFHQ folder's ``index.parquet`` gives the sizes; any
    other folder is scanned and each file's header read."""
    import pandas as pd

    where = root / source
    index = where / "index.parquet"
    if index.is_file():
        listed = pd.read_parquet(index)
        entries = [(where / str(r.image), int(r.width), int(r.height))
                   for r in listed.itertuples(index=False)]
        entries.sort(key=lambda e: natural_key(str(e[0].relative_to(where))))
        absent = [str(p) for p, _, _ in entries if not p.is_file()]
        if absent:
            raise FbenchError(f"{index} lists {len(absent)} image(s) that do not exist, e.g. "
                              f"{absent[0]}.", f"prepare {where} again (it resumes).")
    else:
        entries = [(p, *image_size(p)) for p in list_images(where)]
    rows = []
    for p, w, h in entries:
        rel = p.relative_to(where)
        rows.append({"path": f"{source}/{rel.as_posix()}", "label": LABELS[source],
                     "source": source, "group": f"{source}/{rel.with_suffix('').as_posix()}",
                     "mask": "", "width": w, "height": h})
    return rows


def scan_ffpp(root: Path, source: str, legacy_order: bool = False) -> list[dict]:
    """A prepared FaceForensics++ method: one row per frame, grouped by video (``collect``
    regroups them by identity across methods).

    ``legacy_order``: order the rows as the thesis's file listing did, to reproduce its leak:
    frames numbered by one counter over all videos (so a video's frames have consecutive
    numbers), then sorted as strings (0, 1, 10, 100, ..., 2, 20, ...)."""
    import pandas as pd

    where = root / source
    index_file = where / "index.parquet"
    if not index_file.is_file():
        raise FbenchError(f"{where} has no index.parquet, so the video of each frame is "
                          "unknown and the splits could not be grouped.",
                          _missing_fix(source, where) + " Frames from the thesis's own lists "
                          "can be used with `fbench data import-lists`.")
    index = pd.read_parquet(index_file)
    lacking = {"video", "frame", "image", "mask", "width", "height"} - set(index.columns)
    if lacking:
        raise FbenchError(f"{index_file} lacks column(s) {sorted(lacking)}.",
                          _missing_fix(source, where))
    index = index.assign(video=index["video"].astype(str))
    index = index.iloc[sorted(range(len(index)), key=lambda i: (
        natural_key(index["video"].iat[i]), int(index["frame"].iat[i])))]
    for col in ("image", "mask"):
        absent = [p for p in index[col] if not (where / p).is_file()]
        if absent:
            raise FbenchError(f"{index_file} lists {len(absent)} {col} file(s) that do not "
                              f"exist, e.g. {where / absent[0]}.",
                              f"prepare {where} again (it redoes the videos with missing "
                              "files).")
    rows = [{"path": f"{source}/{r.image}", "label": LABELS[source], "source": source,
             "group": f"{source}/{r.video}", "mask": f"{source}/{r.mask}",
             "width": int(r.width), "height": int(r.height), "video": r.video,
             "frame": int(r.frame)} for r in index.itertuples(index=False)]
    if legacy_order:
        for n, row in enumerate(rows):
            row["legacy_number"] = n
        rows.sort(key=lambda r: str(r["legacy_number"]))
    return rows


def collect(root: str, sources: tuple[str, ...], legacy_order: bool = False) -> pd.DataFrame:
    """Candidate rows of ``sources`` under ``root`` (a recipe's ``collect``). FaceForensics++
    frames of all methods are grouped together by identity, and get a ``fixed_split`` when
    ``root/ffpp-splits/`` holds the official split files (recorded in ``attrs``)."""
    import pandas as pd

    base = Path(root)
    rows: list[dict] = []
    ffpp_rows: list[dict] = []
    for source in sources:
        where = base / source
        if not where.is_dir():
            raise FbenchError(f"source {source!r} not found: {where} is not a directory.",
                              _missing_fix(source, where))
        found = (scan_ffpp(base, source, legacy_order) if source in FFPP
                 else scan_images(base, source))
        if not found:
            raise FbenchError(f"source {source!r} has no images in {where}.",
                              _missing_fix(source, where))
        rows.extend(found)
        if source in FFPP:
            ffpp_rows.extend(found)
    attrs = _group_ffpp(base, ffpp_rows)
    frame = pd.DataFrame(rows)
    # FaceForensics++ columns are absent for images: fill them so the dtypes stay integers
    for col, empty in (("video", ""), ("frame", -1), ("legacy_number", -1), ("identities", ""),
                       ("fixed_split", "")):
        if col in frame.columns:
            frame[col] = frame[col].fillna(empty)
            if empty == -1:
                frame[col] = frame[col].astype("int64")
    frame = frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]]
    frame.attrs.update(attrs)
    return frame


def _group_ffpp(base: Path, rows: list[dict]) -> dict:
    """Group FaceForensics++ rows by identity and apply the official split files when the
    sources root has them; returns what the build should record."""
    if not rows:
        return {}
    assign_identity_groups(rows)
    folder = base / SPLITS_DIR
    if not folder.is_dir():
        return {}
    apply_split_files(rows, read_split_files(folder), folder)
    return {"fixed_splits": split_files_card(folder)}
