"""Entry point of the embedded ``synthetic`` dataset: face-like images in the three fbench
classes, generated on first use and cached, so fbench can be tried, tested and benchmarked with
no download.

Nothing heavy is imported here (``fbench list`` imports every plugin): numpy, OpenCV and the
generator are imported inside the factory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fbench import (
    DatasetSpec,
    FbenchError,
    hookimpl,
    make_owned_tmp_dir,
    release_owned_tmp_dir,
)
from fbench_synthetic import lifecycle

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

MANIFEST_FILE = "manifest.csv"
PARAMS_FILE = "params.json"
# a generation that died (killed, power loss) leaves its temporary folder behind: the next
# generation removes it as soon as its owner process is gone; a folder whose owner cannot be
# checked (another host sharing the cache, a name from before owners were recorded) once it is
# older than this (see lifecycle.remove_stale)
_STALE_TMP_S = 3600.0


def default_cache_dir() -> Path:
    """Where generated datasets live when no root is given: ``$FBENCH_CACHE/synthetic``, else
    ``~/.cache/fbench/synthetic``."""
    base = os.environ.get("FBENCH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "fbench") / "synthetic"


def dataset_dir_name(n_per_class: int, image_size: int, seed: int, eval_fraction: float,
                     version: str) -> str:
    """Folder name of one parameter set: readable parameters plus a hash that also covers the
    generator version, so a changed generator never reuses old pixels."""
    params = {"n_per_class": n_per_class, "image_size": image_size, "seed": seed,
              "eval_fraction": eval_fraction, "version": version}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return f"n{n_per_class}-px{image_size}-seed{seed}-{digest}"


def load_synthetic(root: str | os.PathLike | None = None, *, n_per_class: int = 1000,
                   image_size: int = 64, seed: int = 0,
                   eval_fraction: float = 0.2) -> pd.DataFrame:
    """The ``synthetic`` dataset's manifest, generating its PNGs first if they are not cached.

    ``root``: the folder that holds generated datasets (default :func:`default_cache_dir`);
    each parameter set gets its own subfolder. ``n_per_class`` images of each label 0 real,
    1 generated (up-sampled), 2 edited (pasted, with a mask); split ``train``/``eval`` by
    ``eval_fraction``. Image ``i`` of a class depends only on ``(seed, label, i)``.
    """
    # options may arrive as strings from --dataset-option
    n_per_class, image_size, seed = int(n_per_class), int(image_size), int(seed)
    eval_fraction = float(eval_fraction)
    if n_per_class < 1:
        raise FbenchError(f"synthetic: n_per_class={n_per_class} must be at least 1.")
    if image_size < 16 or image_size % 2:
        raise FbenchError(f"synthetic: image_size={image_size} must be an even number >= 16.",
                          "generated images are rendered at half size and up-sampled by 2.")
    if not 0.0 < eval_fraction < 1.0:
        raise FbenchError(f"synthetic: eval_fraction={eval_fraction} must lie in (0, 1).")

    from fbench import make_manifest
    from fbench_synthetic import generate as gen

    base = Path(root) if root is not None else default_cache_dir()
    final = base / dataset_dir_name(n_per_class, image_size, seed, eval_fraction,
                                    gen.GENERATOR_VERSION)
    if not (final / MANIFEST_FILE).is_file():
        # SIGTERM while generating: workers killed and the temporary folder removed on the
        # way out (issue 17), then the process ends as SIGTERM would have ended it
        with lifecycle.sigterm_cleans_up():
            _generate_atomically(final, gen, n_per_class, image_size, seed, eval_fraction)
    rows = _read_rows(final / MANIFEST_FILE)
    return make_manifest(rows, root=final, name="synthetic", image_size=image_size)


def _generate_atomically(final: Path, gen, n_per_class: int, image_size: int, seed: int,
                         eval_fraction: float) -> None:
    """Generate into a temporary sibling folder and rename it into place, so a generation that
    is killed half-way never leaves a partial dataset that a later call would reuse."""
    final.parent.mkdir(parents=True, exist_ok=True)
    # what generations that died left here (SIGKILL runs no cleanup), of any parameter set:
    # thousands of files each; a live generation's folder is kept
    lifecycle.remove_stale(final.parent, _STALE_TMP_S)
    tmp = make_owned_tmp_dir(final)
    try:
        start = time.perf_counter()
        print(f"fbench: generating the synthetic dataset ({3 * n_per_class} images, "
              f"{image_size} px) into {final} ...", file=sys.stderr, flush=True)
        rows = gen.generate(tmp, n_per_class, image_size, seed, eval_fraction)
        _write_rows(tmp / MANIFEST_FILE, rows)
        (tmp / PARAMS_FILE).write_text(json.dumps(
            {"n_per_class": n_per_class, "image_size": image_size, "seed": seed,
             "eval_fraction": eval_fraction, "version": gen.GENERATOR_VERSION}, indent=2) + "\n")
        if final.exists() and not (final / MANIFEST_FILE).is_file():
            # not ours to trust: a folder of that name without a manifest (made by hand?)
            shutil.rmtree(final)
        release_owned_tmp_dir(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            # another process finished the same dataset first: same seed, same pixels; use it
            if not (final / MANIFEST_FILE).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"fbench: synthetic dataset ready in {time.perf_counter() - start:.1f} s.",
              file=sys.stderr, flush=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_rows(path: Path, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "source", "group", "split",
                                               "mask"])
        writer.writeheader()
        writer.writerows(rows)


def _read_rows(path: Path) -> list[dict]:
    import csv

    # the csv module keeps every field a string: hex ids such as "1e5..." stay ids
    with open(path, newline="") as f:
        return [{**row, "label": int(row["label"])} for row in csv.DictReader(f)]


@hookimpl
def register_datasets(register) -> None:
    register(DatasetSpec(
        name="synthetic",
        summary="Embedded face-like images, generated on first use: real (1/f textures), "
                "generated (half-res + GAN-style up-sampling), edited (pasted region, masks)",
        factory=load_synthetic,
        labels=(0, 1, 2),
        has_masks=True,
        needs_root=False,
    ))
