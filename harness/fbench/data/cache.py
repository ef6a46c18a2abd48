"""The decoded-image cache: every image of a dataset decoded and resized once, kept as uint8
``[N, S, S, 3]`` in a memory-mapped ``.npy`` file (masks, where the dataset has them, as uint8
``[N, S, S]`` in {0, 1}), so later epochs and runs read pixels instead of decoding files.

One cache per (dataset rows, input size, resampler) lives under ``$FBENCH_CACHE/images/``
(default ``~/.cache/fbench/images``); its ``index.json`` holds the full key, which covers every
image's and mask's content (:func:`cache_key`): a changed image or row makes it out of date,
never silently reused. Pixels and masks are :func:`fbench.data.images.read_image`'s and
``read_mask``'s, so batches from the cache equal batches from decoding. A cache is built into
a temporary folder and renamed into place only when complete: a killed build leaves only that
folder, which no reader opens and the next build removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fbench.data.fingerprint import dataset_identity, image_hashes
from fbench.data.images import ManifestDataset, check_resampler, collate, read_image, read_mask
from fbench.errors import FbenchError
from fbench.tempdirs import make_owned_tmp_dir, release_owned_tmp_dir, remove_dead_tmp_dirs

CACHE_VERSION = 1
"""Bumped when what a cache holds changes (a new decoder rule), so old caches are not read."""
INDEX_FILE, IMAGES_FILE, MASKS_FILE = "index.json", "images.npy", "masks.npy"
_STALE_TMP_S = 24 * 3600.0  # a temporary folder whose owner cannot be checked, after this
HashSource = pd.DataFrame | Callable[[], pd.DataFrame] | None
"""Every image's hash (:func:`fbench.data.fingerprint.image_hashes`), a function computing it
(called only when a cache is there to check), or None."""


def cache_root() -> Path:
    base = os.environ.get("FBENCH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "fbench") / "images"


def _rows(manifest: pd.DataFrame) -> tuple[list[str], list[str], list[int]]:
    """Path and mask as written in the manifest, and label, of each row in order."""
    return (manifest["path"].astype(str).tolist(), manifest["mask"].fillna("").astype(str)
            .tolist(), manifest["label"].astype(int).tolist())


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _masks_sha256(manifest: pd.DataFrame) -> str:
    """One SHA-256 over every mask file's path and content, order-free."""
    from fbench.data.audit import file_sha256
    from fbench.data.manifest import resolve_path

    _, masks, _ = _rows(manifest)
    lines = sorted({f"{m}\t{file_sha256(resolve_path(manifest, m))}" for m in masks if m})
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def cache_key(manifest: pd.DataFrame, input_size: int, resample: str, with_masks: bool,
              hashes: HashSource = None) -> str:
    """What a cache must match to be used: the dataset's identity (every image's content and
    the rows, ``val`` counted as ``train`` so the validation carve of any seed matches), every
    mask file's content when masks are cached, the input size, the resampler and the cache
    format. Order-free: the cache maps rows to its own order by path, mask and label."""
    if hashes is None:
        hashes = image_hashes(manifest)
    elif callable(hashes):
        hashes = hashes()
    return _digest({"version": CACHE_VERSION, **dataset_identity(manifest, hashes),
                    "masks": _masks_sha256(manifest) if with_masks else None,
                    "size": int(input_size), "resample": resample, "with_masks": with_masks})


def cache_dir(manifest: pd.DataFrame, input_size: int, resample: str, with_masks: bool,
              root: Path | None = None) -> Path:
    """Where the cache of these rows at this size and resampler lives (built or not), named by
    the cheap part of the key (the rows, not the file contents), so a run without a cache for
    its rows knows it without hashing every image."""
    from fbench.data.fingerprint import manifest_sha256

    unsplit = manifest.assign(split=manifest["split"].replace({"val": "train"}))
    key = _digest({"version": CACHE_VERSION, "rows": manifest_sha256(unsplit),
                   "size": int(input_size), "resample": resample, "masks": with_masks})
    return (root or cache_root()) / f"{key[:20]}-{int(input_size)}px-{resample}"


class ImageCache:
    """A built cache, opened read-only; its arrays are memory-mapped on first use (also in a
    DataLoader worker: pickling it carries the folder, not the pixels)."""

    def __init__(self, path: Path, index: dict[str, Any]) -> None:
        self.path, self.index, self.key = Path(path), index, str(index["key"])
        self.input_size, self.resample = int(index["input_size"]), str(index["resample"])
        self._images: np.ndarray | None = None
        self._masks: np.ndarray | None = None
        self._where: dict[tuple[str, str, int], int] | None = None

    def __len__(self) -> int:
        return len(self.index["paths"])

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.path / IMAGES_FILE, mmap_mode="r")
        return self._images

    @property
    def masks(self) -> np.ndarray | None:
        if self._masks is None and self.index.get("with_masks"):
            self._masks = np.load(self.path / MASKS_FILE, mmap_mode="r")
        return self._masks

    def positions(self, manifest: pd.DataFrame) -> np.ndarray:
        """The cache row of each manifest row (by path, mask and label; equal rows share)."""
        if self._where is None:
            ix = self.index
            rows = zip(ix["paths"], ix["masks"], ix["labels"], strict=True)
            self._where = {(p, m, int(lab)): i for i, (p, m, lab) in enumerate(rows)}
        out = [self._where.get(row) for row in zip(*_rows(manifest), strict=True)]
        if any(i is None for i in out):
            raise FbenchError(f"the image cache {self.path} does not hold every row asked for.",
                              "rebuild it with `fbench data cache` (or run with --cache off).")
        return np.asarray(out, dtype=np.int64)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None, "_masks": None}


def _check(path: Path, key: str) -> ImageCache:
    """The cache in ``path`` when whole and of ``key``; else raises ValueError or OSError."""
    index = json.loads((path / INDEX_FILE).read_text())
    if index.get("version") != CACHE_VERSION or index.get("key") != key:
        raise ValueError("out of date (an image, mask or row changed since it was built)")
    cache = ImageCache(path, index)
    n, s = len(cache), cache.input_size
    if cache.images.shape != (n, s, s, 3) or cache.images.dtype != np.uint8:
        raise ValueError(f"images.npy holds {cache.images.shape}, not {(n, s, s, 3)}")
    if index.get("with_masks") and (cache.masks is None or cache.masks.shape != (n, s, s)):
        raise ValueError("masks.npy does not match the index")
    return cache


def open_cache(manifest: pd.DataFrame, input_size: int, resample: str, with_masks: bool,
               hashes: HashSource = None, root: Path | None = None,
               warn: bool = True) -> ImageCache | None:
    """The built cache of ``manifest`` at this size and resampler, or None when there is none,
    or the one there is out of date or damaged (``warn``: say so, the caller decodes)."""
    path = cache_dir(manifest, input_size, resample, with_masks, root)
    if not (path / INDEX_FILE).is_file():
        return None
    try:
        return _check(path, cache_key(manifest, input_size, resample, with_masks, hashes))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if warn:
            warnings.warn(f"fbench: the image cache {path} is not used: {exc}; images are "
                          "decoded instead. Rebuild it with `fbench data cache` or "
                          "`fbench run --cache build`.", stacklevel=2)
        return None


CACHE_NAMES = r"[0-9a-f]{20}-\d+px-\w+"
"""The names of cache folders (see :func:`cache_dir`): whose temporary folders are ours."""


def remove_stale(root: Path) -> list[Path]:
    """Remove the temporary folders of builds that died (killed: no cleanup ran): those whose
    process on this host is gone, and any older than a day (another host's)."""
    return remove_dead_tmp_dirs(root, CACHE_NAMES, _STALE_TMP_S)


def _fill(ds: ManifestDataset, images: np.ndarray, masks: np.ndarray | None,
          chunks: list[range], threads: int, on_chunk: Callable[[int], None]) -> None:
    """Decode every chunk into the memory maps with ``threads`` threads (OpenCV's decode and
    PIL's resize release the GIL), at most two chunks per thread in flight."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    def work(rows: range) -> int:
        for i in rows:
            images[i] = read_image(ds.paths[i], ds.input_size, ds.resample)
            # as ManifestDataset makes a mask: the file's (nearest resize, > 127), else all
            # ones for generated, zeros for real (and for an edited image without one)
            if masks is not None and ds.mask_paths[i]:
                masks[i] = read_mask(ds.mask_paths[i], ds.input_size).astype(np.uint8)
            elif masks is not None:
                masks[i] = 1 if ds.labels[i] == 1 else 0
        return len(rows)

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fbench-cache")
    pending, todo = set(), iter(chunks)
    try:
        while True:
            while len(pending) < 2 * threads and (rows := next(todo, None)) is not None:
                pending.add(pool.submit(work, rows))
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                on_chunk(future.result())  # raises the first unreadable image's error
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _allocate(path: Path, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A new ``.npy`` memory map, its space reserved now: a full disk is one error here, not
    a SIGBUS from a page written later."""
    from numpy.lib.format import open_memmap

    arr = open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    try:
        if hasattr(os, "posix_fallocate") and arr.size:
            with open(path, "rb+") as fh:
                os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
    except OSError as exc:
        mb = arr.nbytes / 2**20
        raise FbenchError(f"no room for the image cache in {path.parent.parent} ({mb:.0f} MB): "
                          f"{exc.strerror or exc}.",
                          "free disk space, or set FBENCH_CACHE to a larger disk.") from None
    return arr


def build_cache(manifest: pd.DataFrame, input_size: int, resample: str, with_masks: bool,
                hashes: HashSource = None, *, root: Path | None = None,
                threads: int | None = None, progress: bool = True, console: Any = None,
                on_chunk: Callable[[int, int], None] | None = None,
                chunk: int = 64) -> tuple[ImageCache, bool]:
    """The cache of ``manifest`` at this size and resampler, built (with a progress bar on
    ``console``, ``threads`` decoding threads, default one per core) unless a valid one is
    there; returns it and whether it was built now. An out-of-date cache of the same rows is
    replaced. ``on_chunk(done, total)`` is called after each chunk is written."""
    check_resampler(resample)
    size = int(input_size)
    key = cache_key(manifest, size, resample, with_masks, hashes)
    final = cache_dir(manifest, size, resample, with_masks, root)
    if (final / INDEX_FILE).is_file():
        try:
            return _check(final, key), False
        except (OSError, ValueError, KeyError, TypeError):
            pass  # out of date or damaged: built again below, then put in its place
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final.parent)
    tmp = make_owned_tmp_dir(final)
    try:
        _build_into(tmp, manifest, size, resample, with_masks, key, threads or
                    os.cpu_count() or 1, progress, console, on_chunk, chunk)
        return _put_in_place(tmp, final, key), True
    finally:  # gone once renamed; else (failed, interrupted, or another build won) removed
        shutil.rmtree(tmp, ignore_errors=True)


def _build_into(tmp: Path, manifest: pd.DataFrame, size: int, resample: str, with_masks: bool,
                key: str, threads: int, progress: bool, console: Any,
                on_chunk: Callable[[int, int], None] | None, chunk: int) -> None:
    from fbench.files import write_json
    from fbench.progress import make_progress

    start = time.perf_counter()
    ds = ManifestDataset(manifest, size, with_masks=with_masks, resample=resample)
    n = len(ds)
    images = _allocate(tmp / IMAGES_FILE, np.uint8, (n, size, size, 3))
    masks = _allocate(tmp / MASKS_FILE, np.uint8, (n, size, size)) if with_masks else None
    chunks = [range(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]
    done = 0
    with make_progress(console, progress) as bar:
        task = bar.add_task(f"caching {n} images ({size} px)", total=n,
                            info=f"{threads} thread{'s' * (threads != 1)}")

        def advance(k: int) -> None:
            nonlocal done
            done += k
            bar.update(task, completed=done)
            if on_chunk is not None:
                on_chunk(done, n)

        _fill(ds, images, masks, chunks, threads, advance)
    images.flush()  # on disk before the rename says the cache is whole
    if masks is not None:
        masks.flush()
    del images, masks
    paths, mask_paths, labels = _rows(manifest)
    write_json(tmp / INDEX_FILE, {
        "version": CACHE_VERSION, "key": key, "dataset": manifest.attrs.get("name"),
        "input_size": size, "resample": resample, "with_masks": with_masks,
        "shape": [n, size, size, 3], "masks_shape": [n, size, size] if with_masks else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - start, 3),
        "paths": paths, "masks": mask_paths, "labels": labels})


def _put_in_place(tmp: Path, final: Path, key: str) -> ImageCache:
    """Rename the complete ``tmp`` to ``final``; an out-of-date cache there is moved aside
    first and removed after. Another build of the same key that finished first wins."""
    release_owned_tmp_dir(tmp)
    if final.exists():
        try:
            return _check(final, key)  # a concurrent build of the same key finished first
        except (OSError, ValueError, KeyError, TypeError):
            old = make_owned_tmp_dir(final)  # a name to move the old cache to, then remove
            release_owned_tmp_dir(old)  # empty, so the rename may replace it
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
    with contextlib.suppress(OSError):  # another build put its own in place meanwhile
        os.replace(tmp, final)
    return _check(final, key)


class CachedDataset(ManifestDataset):
    """:class:`ManifestDataset` whose images (and masks) come from an :class:`ImageCache`:
    the same samples, read instead of decoded."""

    def __init__(self, manifest: pd.DataFrame, cache: ImageCache,
                 with_masks: bool = False) -> None:
        super().__init__(manifest, cache.input_size, with_masks=with_masks,
                         resample=cache.resample)
        self.image_cache = cache
        self.positions = cache.positions(manifest)

    def _load(self, i: int) -> dict[str, Any]:
        j = int(self.positions[i])
        # one copy out of the read-only map, already in [3, S, S] order
        image = np.ascontiguousarray(self.image_cache.images[j].transpose(2, 0, 1))
        sample: dict[str, Any] = {"image": torch.from_numpy(image),
                                  "label": int(self.labels[i]), "index": i}
        if self.with_masks:
            mask = self.image_cache.masks[j].astype(np.float32)
            sample["mask"] = torch.from_numpy(mask)[None]
            # as ManifestDataset: an edited image without a mask file has no known mask
            sample["has_mask"] = bool(self.mask_paths[i]) or int(self.labels[i]) in (0, 1)
        if self.landmarks is not None:
            sample["landmarks"] = torch.from_numpy(self.landmarks[i])
            sample["landmarks_found"] = bool(self.landmarks_found[i])
        return sample


def loading_rates(manifest: pd.DataFrame, input_size: int, resample: str, with_masks: bool,
                  batch_size: int) -> tuple[float, float]:
    """Images per CPU-second of one process loading ``manifest``'s rows in batches: decoded,
    and read from a decoded-image cache built for them in a scratch folder (the build read the
    files, so neither pays the disk). CPU time: per core, and not moved by other processes
    taking turns on a busy machine (``fbench bench``). One torch thread: the collate's copies
    otherwise spin a second thread that a busy machine makes several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="fbench-cache-rates-") as scratch:
            cache, _ = build_cache(manifest, input_size, resample, with_masks,
                                   root=Path(scratch), threads=1, progress=False)
            decoded = ManifestDataset(manifest, input_size, with_masks, resample=resample)
            return (_per_cpu_second(decoded, batch_size),
                    _per_cpu_second(CachedDataset(manifest, cache, with_masks), batch_size))
    finally:
        torch.set_num_threads(threads)


def _per_cpu_second(dataset: ManifestDataset, batch_size: int) -> float:
    """Whole passes over ``dataset`` until a quarter CPU-second is measured."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    n, cpu = 0, 0.0
    while cpu < 0.25 and len(dataset):
        t0 = time.process_time()
        n += sum(len(b) for b in loader)
        cpu += time.process_time() - t0
    return n / max(cpu, 1e-9)
