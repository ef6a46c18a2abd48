"""The thesis's own split files, imported as a built dataset.

Each line is ``path<TAB>label`` or, for the segmentation recipes, ``image<TAB>mask<TAB>label``,
with absolute paths from the author's machine under one prefix (``.../deepfake/``). The
importer maps that prefix to where the user keeps the same files, infers each image's source
from its folder, turns the constant masks ``real.png`` / ``fake.png`` into "" (the loader's
all-zero / all-one masks), and writes ``manifest.parquet`` + ``recipe.json`` like
``fbench data build`` does.

What the lists cannot say: which video a FaceForensics++ frame came from. The thesis numbered
one video's frames consecutively with a global counter, so the importer chains them back into
pseudo-videos: frames with neighbouring numbers whose perceptual hashes are close join one
group, a jump in the hash starts the next. The groups are inferred, not recorded, and the
manifest says so (``attrs["groups"]``, kept in the card). Frames whose names carry no number
keep one group per file (``groups_unknown``)."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

from fbench import FbenchError, difference_hash
from fbench_thesis.identities import UnionFind
from fbench_thesis.images import image_size
from fbench_thesis.progress import progress_bar
from fbench_thesis.sources import FFPP

DATASET = "thesis-lists"
MANIFEST = "manifest.parquet"
CARD = "recipe.json"
CONSTANT_MASKS = ("real.png", "fake.png")
# Folder names in the author's layout (and fbench's own) -> fbench source names.
SOURCE_DIRS = {
    "ffhq_raw": "ffhq", "ffhq": "ffhq",
    "wgan_gp_img": "wgan-gp", "wgan-gp": "wgan-gp",
    "stylegan_img": "stylegan", "stylegan": "stylegan",
    "mspie_stylegan2_img": "mspie-stylegan2", "mspie-stylegan2": "mspie-stylegan2",
    "face2face": "face2face", "faceswap": "faceswap",
    "deepfakedetection": "deepfakedetection", "dfd": "deepfakedetection",
}
# Where the author's prefix ends: the first of these path parts.
MARKERS = ("FFHQ_raw", "Deepfake_datasets", *CONSTANT_MASKS)
_FRAME_DIRS = {"imgs", "images", "frames", "masks"}
# Chaining frames into pseudo-videos. Two sampled frames of one video differ in a few of the
# 64 hash bits, two different faces in about 32 (16 is 4 standard deviations below that for
# unrelated images); a frame looks up to 2 places ahead, so one odd frame (a blink, a turn)
# does not cut its video in two, across gaps of up to 3 numbers (frames left out of a list).
# Erring towards joining is the safe side: a merged group only makes splits coarser.
CHAIN_THRESHOLD = 16
CHAIN_LOOKAHEAD = 2
CHAIN_MAX_GAP = 3


def read_list(path: str | Path, split: str) -> list[dict[str, Any]]:
    """Rows of one split file: ``{"path", "mask", "label", "split", "line"}``. UTF-8 (a
    byte-order mark dropped; a line that is not UTF-8 named by file:line); labels read as
    manifests read them (``0``-``2`` or ``real``/``generated``/``edited``)."""
    from fbench import parse_label  # the label parser manifests use

    path = Path(path)
    if not path.is_file():
        raise FbenchError(f"split file {path} does not exist.")
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    rows = []
    for n, raw in enumerate(data.splitlines(), start=1):
        line = _decode(raw, path, n)
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) not in (2, 3):
            raise FbenchError(
                f"{path}:{n}: expected `path<TAB>label` or `image<TAB>mask<TAB>label`, "
                f"found {len(fields)} tab-separated field(s): {line[:120]!r}.",
                "give the thesis's split files (tab-separated, one image per line).")
        if not fields[0].strip():
            raise FbenchError(f"{path}:{n}: the line names no image: {line[:120]!r}.",
                              "every line starts with the image's path.")
        label = parse_label(fields[-1])
        if label is None:
            raise FbenchError(f"{path}:{n}: label {fields[-1]!r} is not 0, 1 or 2.",
                              "labels are 0 real, 1 generated, 2 edited (numbers, or those "
                              "names).")
        rows.append({"path": fields[0], "mask": fields[1] if len(fields) == 3 else "",
                     "label": label, "split": split, "line": n,
                     "with_mask": len(fields) == 3})
    if not rows:
        raise FbenchError(f"split file {path} has no rows.")
    return rows


def _decode(raw: bytes, path: Path, n: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FbenchError(f"{path}:{n}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                          f"{exc.start + 1}).", "save the split file as UTF-8.") from None


def author_prefix(paths: list[str]) -> str | None:
    """The common prefix before the thesis's folders (``/home/<author>/deepfake/``), or None
    when the paths are not in the thesis's layout. Raises when they disagree."""
    found = set()
    for p in paths:
        parts = PurePosixPath(p).parts
        for i, part in enumerate(parts):
            if part in MARKERS:
                found.add(str(PurePosixPath(*parts[:i])) + "/" if i else "")
                break
    if len(found) > 1:
        raise FbenchError(f"the split files use {len(found)} different prefixes "
                          f"({', '.join(sorted(found)[:3])}), not one.",
                          "map each with --map-prefix OLD=NEW.")
    return found.pop() if found else None


def map_path(path: str, mapping: list[tuple[str, str]]) -> str:
    """Replace the longest matching ``old`` prefix by its ``new`` one."""
    for old, new in sorted(mapping, key=lambda m: -len(m[0])):
        if path.startswith(old):
            rest = path[len(old):].lstrip("/")
            return os.path.join(new, rest) if rest else new
    return path


def infer_source(path: str) -> str:
    """The source of an image from its folders: a known folder name anywhere in the path,
    else the folder holding it (above ``imgs/`` for extracted frames)."""
    parts = list(PurePosixPath(path).parts[:-1])
    for part in reversed(parts):
        if part.lower() in SOURCE_DIRS:
            return SOURCE_DIRS[part.lower()]
    folders = [p for p in parts if p.lower() not in _FRAME_DIRS and p != "/"]
    return folders[-1].lower().replace("_", "-") if folders else "unknown"


def infer_group(source: str, label: int, path: str) -> tuple[str, bool]:
    """``(group, known)``: an image is its own identity (FFHQ, GANs); a frame's video is not
    recorded in the lists, so a frame gets its own group and ``known`` is False."""
    stem = PurePosixPath(path).stem
    if source in FFPP or label == 2:
        return f"{source}/frame-{stem}", False
    return f"{source}/{stem}", True


def frame_number(path: str) -> int | None:
    """The thesis's frame number (``imgs/794.png`` -> 794), or None for other names."""
    stem = PurePosixPath(path).stem
    return int(stem) if stem.isdigit() else None


def chain_frames(numbers: list[int], hashes: list[int], threshold: int = CHAIN_THRESHOLD,
                 lookahead: int = CHAIN_LOOKAHEAD, max_gap: int = CHAIN_MAX_GAP) -> list[int]:
    """Pseudo-videos of one source's frames: for each frame (in the order given), the
    smallest number of its chain. Frames are walked in number order; a frame joins one of the
    next ``lookahead`` frames, at most ``max_gap`` numbers on, whose hash differs by at most
    ``threshold`` bits."""
    order = sorted(range(len(numbers)), key=numbers.__getitem__)
    links = UnionFind()
    for k, i in enumerate(order):
        links.find(i)
        for j in order[k + 1:k + 1 + lookahead]:
            if numbers[j] - numbers[i] > max_gap:
                break
            if (hashes[i] ^ hashes[j]).bit_count() <= threshold:
                links.union(i, j)
    first: dict[int, int] = {}
    for i in order:  # number order: the first frame met is the chain's smallest number
        first.setdefault(links.find(i), numbers[i])
    return [first[links.find(i)] for i in range(len(numbers))]


def _is_frame(row: dict[str, Any]) -> bool:
    return row["source"] in FFPP or row["label"] == 2


def infer_frame_groups(rows: list[dict[str, Any]], threshold: int = CHAIN_THRESHOLD,
                       progress: bool = True) -> dict[str, Any] | None:
    """Chain the numbered FaceForensics++ frames of ``rows`` (mapped paths) into
    pseudo-videos, per source, setting their ``group`` in place. Returns what
    ``attrs["groups"]`` records: origin ``inferred`` (and how), ``unknown`` when no frame
    carries a number, or None when the rows hold no frames (their groups are recorded)."""
    numbered: dict[str, list[dict[str, Any]]] = {}
    unnumbered: set[str] = set()
    for row in filter(_is_frame, rows):
        if frame_number(row["path"]) is None:
            unnumbered.add(row["source"])
        else:
            numbered.setdefault(row["source"], []).append(row)
    if not numbered:
        return None if not unnumbered else {
            "origin": "unknown", "n_groups": sum(map(_is_frame, rows)),
            "method": "one group per frame: the lists record no video and the frame names "
                      "carry no number to chain", "sources": sorted(unnumbered)}
    n_frames = sum(map(len, numbered.values()))
    with progress_bar("chaining frames", n_frames, progress) as advance:
        hashes = {}
        for frames in numbered.values():
            for row in frames:
                hashes[id(row)] = difference_hash(row["path"])
                advance()
    n_groups = 0
    for source, frames in numbered.items():
        firsts = chain_frames([frame_number(r["path"]) for r in frames],
                              [hashes[id(r)] for r in frames], threshold)
        for row, first in zip(frames, firsts, strict=True):
            row["group"] = f"{source}/pseudo-video-{first}"
        n_groups += len(set(firsts))
    info = {"origin": "inferred", "n_groups": n_groups, "frames": n_frames,
            "method": f"frames of each FaceForensics++ source chained in frame-number order "
                      f"(a frame joins one of the next {CHAIN_LOOKAHEAD}, at most "
                      f"{CHAIN_MAX_GAP} numbers on, whose 64-bit dHash differs by at most "
                      f"{threshold} bits)", "sources": sorted(numbered)}
    if unnumbered:
        info["unknown_sources"] = sorted(unnumbered)
    return info


def _straddling(manifest: Any, groups: dict[str, Any] | None) -> int:
    """Inferred groups with frames in more than one split: a leak of the lists themselves."""
    if not groups or groups["origin"] != "inferred":
        return 0
    inferred = manifest[manifest["group"].str.contains("/pseudo-video-", regex=False)]
    return int((inferred.groupby("group")["split"].nunique() > 1).sum())


def _unknown_sources(groups: dict[str, Any] | None) -> list[str]:
    """Sources whose frames kept one group per file."""
    if not groups:
        return []
    if groups["origin"] == "unknown":
        return list(groups["sources"])
    return list(groups.get("unknown_sources", []))


def list_roots(mapping: list[tuple[str, str]], detected: str | None,
               paths: list[str]) -> list[str]:
    """The folders imported files may lie in: where the prefixes are mapped to (``--root``,
    each ``--map-prefix`` NEW); with no mapping, the lists' own prefix (paths kept as
    listed); with neither, the deepest folder holding every listed file (none named)."""
    if mapping:
        found = [os.path.abspath(new) for _, new in mapping]
    elif detected is not None:
        found = [os.path.abspath(detected)]
    else:
        found = [os.path.commonpath([os.path.dirname(p) for p in paths])]
    return list(dict.fromkeys(found))


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _refuse(built: list[dict[str, Any]], rows: list[dict[str, Any]],
            files: dict[str, str | Path], ok: Any, problem: str, fix: str) -> None:
    """Refuse the listed paths (images and masks) failing ``ok``: their count, the first and
    its file:line."""
    bad = [(p, r) for b, r in zip(built, rows, strict=True) for p in (b["path"], b["mask"])
           if p and not ok(p)]
    if bad:
        path, r = bad[0]
        raise FbenchError(f"{len(bad)} listed {problem}, e.g. {path} "
                          f"({files[r['split']]}:{r['line']}).", fix)


def drop_duplicate_lines(built: list[dict[str, Any]], rows: list[dict[str, Any]],
                         files: dict[str, str | Path]) -> tuple[list, list, int]:
    """The lines of each split without repeats of an image (the first kept): training on a
    listed image twice weighs it double, and evaluating on it twice counts it twice. Repeats
    are warned about (count and first examples) and their number returned; a repeat that
    disagrees on the label or mask is refused."""
    first: dict[tuple[str, str], int] = {}
    repeats = []  # (the repeat, the line it repeats), as indices
    for i, (b, r) in enumerate(zip(built, rows, strict=True)):
        j = first.setdefault((b["path"], r["split"]), i)
        if j != i:
            if (built[j]["label"], built[j]["mask"]) != (b["label"], b["mask"]):
                raise FbenchError(f"{files[r['split']]}:{r['line']}: {b['path']} is listed again "
                                  f"with another label or mask than on line {rows[j]['line']}.",
                                  "an image has one label and one mask: remove the wrong line.")
            repeats.append((i, j))
    if repeats:
        examples = ", ".join(f"{files[rows[i]['split']]}:{rows[i]['line']} (repeats line "
                             f"{rows[j]['line']})" for i, j in repeats[:3])
        warnings.warn(f"{len(repeats)} duplicated line(s) dropped (the same image twice in one "
                      f"split list), e.g. {examples}.", stacklevel=3)
    drop = {i for i, _ in repeats}
    return ([b for i, b in enumerate(built) if i not in drop],
            [r for i, r in enumerate(rows) if i not in drop], len(drop))


def _built_rows(rows: list[dict[str, Any]], mapping: list[tuple[str, str]]) -> list[dict]:
    """Manifest rows of the listed lines, paths mapped and made absolute (a relative one is
    relative to where the import ran, not to the dataset's directory)."""
    built = []
    for r in rows:
        source = infer_source(r["path"])
        group, _ = infer_group(source, r["label"], r["path"])
        constant = r["with_mask"] and PurePosixPath(r["mask"]).name in CONSTANT_MASKS
        mask = "" if constant or not r["mask"] else os.path.abspath(map_path(r["mask"], mapping))
        built.append({"path": os.path.abspath(map_path(r["path"], mapping)),
                      "label": r["label"], "source": source, "group": group,
                      "split": r["split"], "mask": mask, "list_line": r["line"]})
    return built


def import_lists(train: str | Path, eval_: str | Path, out: str | Path, *,
                 root: str | Path | None = None,
                 map_prefix: list[tuple[str, str]] | None = None,
                 progress: bool = True,
                 chain_threshold: int = CHAIN_THRESHOLD,
                 allow_outside_root: bool = False) -> dict[str, Any]:
    """Import the thesis's ``train`` and ``eval`` split files into ``out`` (manifest.parquet,
    recipe.json). ``root``: where the user keeps what the author kept under the detected
    prefix (``.../deepfake/``); ``map_prefix``: explicit ``(old, new)`` prefixes, applied
    first; ``chain_threshold``: the hash distance (bits of 64) under which neighbouring frames
    join one pseudo-video. Returns the card. Nothing is written unless every listed file
    exists.

    Every listed file must lie inside :func:`list_roots` unless ``allow_outside_root``
    (recorded, so runs accept it too). An image listed twice in one split is kept once
    (:func:`drop_duplicate_lines`; counted in the card's ``duplicates_dropped``)."""
    from fbench import __version__, make_manifest, write_json, write_parquet

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FbenchError(f"--out {out} is a file.", "give a directory.")
    files = {"train": train, "eval": eval_}
    rows = read_list(train, "train") + read_list(eval_, "eval")
    mapping = list(map_prefix or [])
    detected = author_prefix([r["path"] for r in rows])
    if root is not None:
        if detected is None:
            raise FbenchError("--root needs the thesis's layout (FFHQ_raw/, "
                              "Deepfake_datasets/, real.png) in the listed paths, and these "
                              f"paths have none (e.g. {rows[0]['path']}).",
                              "map the prefix explicitly with --map-prefix OLD=NEW.")
        mapping.append((detected, str(Path(root).resolve())))

    built = _built_rows(rows, mapping)
    roots = list_roots(mapping, detected, [b["path"] for b in built])
    if not allow_outside_root:  # `..` out of the root, or a foreign absolute path: any image
        _refuse(built, rows, files, lambda p: _inside(p, roots),
                f"path(s) lie outside the dataset root {' or '.join(roots)}",
                "a list may only name files under --root or a --map-prefix target (look for "
                "`..` or a foreign absolute path); pass --allow-outside-root if they are meant.")
    built, rows, duplicates = drop_duplicate_lines(built, rows, files)
    _refuse(built, rows, files, os.path.isfile, "file(s) do not exist",
            f"the lists' own prefix is {detected!r}: pass --root DIR (the folder holding "
            "FFHQ_raw/ and Deepfake_datasets/)." if detected is not None
            else "map the listed prefix to yours with --map-prefix OLD=NEW.")

    with progress_bar("reading image sizes", len(built), progress) as advance:
        for b in built:
            b["width"], b["height"] = image_size(b["path"])
            advance()
    groups = infer_frame_groups(built, chain_threshold, progress)
    manifest = make_manifest(built, root=out, name=DATASET, roots=roots,
                             allow_outside_root=allow_outside_root)
    manifest.attrs["duplicates_dropped"] = (duplicates
                                            + manifest.attrs.get("duplicates_dropped", 0))
    if groups is not None:
        groups["straddling"] = _straddling(manifest, groups)
        manifest.attrs["groups"] = groups
    groups_unknown = _unknown_sources(groups)
    counts = manifest.groupby(["split", "source"]).size()
    card = {
        "recipe": DATASET,
        "summary": "the thesis's own split lists, imported",
        "fbench": __version__,
        "lists": {split: {"file": str(Path(f).resolve()), "rows": int(n),
                          "sha256": hashlib.sha256(Path(f).read_bytes()).hexdigest()}
                  for split, f, n in (("train", train, (manifest["split"] == "train").sum()),
                                      ("eval", eval_, (manifest["split"] == "eval").sum()))},
        "prefix_map": [list(m) for m in mapping],
        "roots": roots,
        "allow_outside_root": allow_outside_root,
        "duplicates_dropped": manifest.attrs["duplicates_dropped"],
        "with_masks": any(r["with_mask"] for r in rows),
        "built": {s: {src: int(n) for src, n in counts[s].items()}
                  for s in counts.index.get_level_values(0).unique()},
        "groups_unknown": sorted(groups_unknown),
        "groups_note": ("frames of these sources have one group per file: the split lists do "
                        "not record their videos and their names carry no number to chain, "
                        "so a video in both splits cannot be seen by the group audit"
                        if groups_unknown else ""),
        **({"groups": groups} if groups else {}),
        # no recipe declares the lists' balance; the run-time audit still checks groups and
        # file hashes (computed then, since the lists carry none)
        "expected_balance": {},
        "audit": {"ok": None, "note": "not audited at import; `fbench data audit "
                  f"{DATASET} --data-root {out}` or `fbench run` audits it"},
    }
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(out / MANIFEST, manifest)
    write_json(out / CARD, card)
    return card
