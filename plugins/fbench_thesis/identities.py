"""Who appears in a FaceForensics++ video, and the groups and splits that follow from it.

FaceForensics++ names a manipulated video ``AAA_BBB``: the face of ``BBB`` (source) put into
video ``AAA`` (target); an original video is ``AAA``. Every method (Face2Face, FaceSwap, ...)
reuses the same pairs, so Face2Face ``000_003`` and FaceSwap ``003_000`` show the same two
people. Grouping frames by ``method/video`` lets those two land on different sides of a split;
grouping by the connected set of ids a video touches (over all methods) does not.

DeepFakeDetection names its videos ``AA_BB__scene__code`` (originals ``AA__scene``) over its own
28 actors, so its ids get a ``dfd-`` prefix: actor 01 of DFD is not YouTube video 001.

FaceForensics++'s official split files (``train.json``, ``val.json``, ``test.json``: JSON lists
of id pairs) can fix the split of every id instead of a seeded draw."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fbench import FbenchError
from fbench_thesis.images import natural_key

SPLITS_DIR = "ffpp-splits"
# official file -> the side of fbench's split it goes to (val is carved from train later)
SPLIT_FILES = {"train": "train", "val": "train", "test": "eval"}
DFD_SOURCES = ("deepfakedetection",)
_VIDEO_NAME = re.compile(r"^(\d+)(?:_(\d+))?(?:__.+)?$")
_GROUP_PREFIX = "ffpp-ids:"
_FIX_FILES = ("use the train.json / val.json / test.json of FaceForensics++'s dataset/splits "
              "folder unchanged (JSON lists of id pairs like [[\"071\", \"054\"], ...]), or "
              f"remove the {SPLITS_DIR}/ folder to split by identity groups instead")


class UnionFind:
    """Connected components over hashable items (path halving, no ranks: the sets here are
    small)."""

    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, item: Any) -> Any:
        self.parent.setdefault(item, item)
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: Any, b: Any) -> None:
        self.parent[self.find(a)] = self.find(b)


def video_identities(source: str, video: str) -> tuple[str, ...]:
    """The ids a video touches (target first), or ``()`` when its name is not in
    FaceForensics++'s scheme (the video then stays a group of its own)."""
    found = _VIDEO_NAME.match(video)
    if not found:
        return ()
    prefix = "dfd-" if source in DFD_SOURCES else ""
    ids = [f"{prefix}{i}" for i in found.groups() if i is not None]
    return tuple(dict.fromkeys(ids))  # a self-pair AAA_AAA touches one id


def component_name(ids: Iterable[str]) -> str:
    """A stable group name for a set of ids: the ids themselves when few, else the first id
    and a hash of all (group names end up in tables and messages)."""
    ordered = sorted(set(ids), key=natural_key)
    if len(ordered) <= 4:
        return _GROUP_PREFIX + "+".join(ordered)
    digest = hashlib.sha1(";".join(ordered).encode()).hexdigest()[:10]
    return f"{_GROUP_PREFIX}{ordered[0]}+{len(ordered) - 1}more-{digest}"


def assign_identity_groups(rows: list[dict[str, Any]]) -> int:
    """Set ``group`` (the component of ids, over all rows given: every method together) and
    ``identities`` (``;``-joined) on FaceForensics++ frame rows, in place. Rows whose video
    name carries no ids keep their group and get ``identities`` "". Returns the number of
    identity groups."""
    links = UnionFind()
    touched = []
    for row in rows:
        ids = video_identities(row["source"], row["video"])
        touched.append(ids)
        for other in ids:
            links.union(ids[0], other)
    members: dict[Any, set[str]] = {}
    for ids in touched:
        if ids:
            members.setdefault(links.find(ids[0]), set()).update(ids)
    names = {root: component_name(ids) for root, ids in members.items()}
    for row, ids in zip(rows, touched, strict=True):
        row["identities"] = ";".join(ids)
        if ids:
            row["group"] = names[links.find(ids[0])]
    return len(names)


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    """One official split file, validated: a JSON list of pairs of digit strings."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise FbenchError(f"split file {path} cannot be read ({exc}).", _FIX_FILES) from None
    except json.JSONDecodeError as exc:
        raise FbenchError(f"split file {path} is not valid JSON ({exc.msg}, line "
                          f"{exc.lineno}).", _FIX_FILES) from None
    if not isinstance(data, list) or not data:
        raise FbenchError(f"split file {path} holds {type(data).__name__} "
                          f"{str(data)[:60]!r}, not a non-empty list of id pairs.", _FIX_FILES)
    pairs = []
    for n, entry in enumerate(data):
        ok = (isinstance(entry, list) and len(entry) == 2
              and all(isinstance(i, str) and i.isdigit() for i in entry))
        if not ok:
            raise FbenchError(f"split file {path}: entry {n} is {json.dumps(entry)[:60]}, not a "
                              "pair of video ids like [\"071\", \"054\"].", _FIX_FILES)
        pairs.append((entry[0], entry[1]))
    return pairs


def read_split_files(folder: str | Path) -> dict[str, str]:
    """``{id: side}`` from ``train.json`` + ``val.json`` (side ``train``) and ``test.json``
    (side ``eval``) in ``folder``. Refuses a missing train/test file, a malformed file, and an
    id listed in two files."""
    folder = Path(folder)
    side: dict[str, str] = {}
    listed_in: dict[str, Path] = {}
    for name, to in SPLIT_FILES.items():
        path = folder / f"{name}.json"
        if not path.is_file():
            if name == "val":
                continue  # val only moves ids to the train side; without it they are unused
            raise FbenchError(f"{folder} has no {name}.json (official split files need "
                              "train.json and test.json; val.json is optional).", _FIX_FILES)
        for pair in _read_pairs(path):
            for i in pair:
                if i in listed_in and listed_in[i] != path:
                    raise FbenchError(f"id {i} is listed in both {listed_in[i]} and {path}: "
                                      "official splits never share a video id.", _FIX_FILES)
                listed_in[i], side[i] = path, to
    return side


def apply_split_files(rows: list[dict[str, Any]], side: dict[str, str], folder: Path) -> None:
    """Set ``fixed_split`` on FaceForensics++ rows from ``side`` (``{id: train|eval}``), in
    place. DeepFakeDetection ids are outside the official files and stay unset (""). A video
    whose ids are unlisted, or listed on both sides, is refused: its frames would be put on a
    side the files do not give it."""
    for row in rows:
        ids = [i for i in row["identities"].split(";") if i and not i.startswith("dfd-")]
        row["fixed_split"] = ""
        if not ids:
            continue
        unlisted = [i for i in ids if i not in side]
        if unlisted:
            raise FbenchError(
                f"{row['source']} video {row['video']} touches id(s) {', '.join(unlisted)} that "
                f"no file in {folder} lists.",
                "use the complete official split files (together they list all 1,000 ids), "
                f"or remove {folder} to split by identity groups instead.")
        sides = {side[i] for i in ids}
        if len(sides) > 1:
            where = ", ".join(f"{i}: {side[i]}" for i in ids)
            raise FbenchError(f"{row['source']} video {row['video']} touches ids on both sides "
                              f"of the official split ({where}).", _FIX_FILES)
        row["fixed_split"] = sides.pop()


def split_files_card(folder: Path) -> dict[str, Any]:
    """What a built dataset's card records about the split files it used."""
    files = {}
    for name in SPLIT_FILES:
        path = folder / f"{name}.json"
        if path.is_file():
            files[name] = {"file": str(path.resolve()),
                           "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {"origin": "FaceForensics++ official split files", "files": files,
            "mapping": "train + val -> train (val carved from it), test -> eval"}
