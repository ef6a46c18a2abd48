"""The decoded-image cache (fbench.data.cache): batches read from it equal batches decoded
from the files; a run uses it when asked (``cache`` auto/off/build); a changed image or row is a
miss, never stale pixels; a killed build leaves nothing a reader would use; `fbench data cache`
builds it once."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tiny import tiny_plugin
from torch.utils.data import DataLoader

from fbench.api import load_dataset
from fbench.cli import cli
from fbench.data.cache import CachedDataset, build_cache, cache_root, loading_rates, open_cache
from fbench.data.images import ManifestDataset, collate, read_image
from fbench.errors import FbenchError
from fbench.plugins.registry import registered
from fbench.train.config import RunConfig

OPTIONS = {"n_per_class": 6, "image_size": 32}  # 18 PNGs, 6 of them edited with a mask
SIZE = 24  # a down-scale: the resampler's work is in the cached pixels


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch, tmp_path):
    """Each test its own $FBENCH_CACHE: its synthetic PNGs may be rewritten, its caches are
    its own."""
    monkeypatch.setenv("FBENCH_CACHE", str(tmp_path / "cache"))


def _manifest():
    return load_dataset("synthetic", **OPTIONS)


def _batches(dataset, batch_size=5):
    return list(DataLoader(dataset, batch_size=batch_size, collate_fn=collate))


def _assert_same(decoded, cached):
    assert len(decoded) == len(cached) > 0
    for a, b in zip(decoded, cached, strict=True):
        for name in ("images", "labels", "index", "masks", "has_mask"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and torch.equal(x, y), name


def _built_dirs():
    root = cache_root()
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) \
        if root.is_dir() else []


@pytest.mark.parametrize("resample", ["bilinear", "area"])
def test_batches_from_the_cache_equal_batches_from_decoding(resample):
    m = _manifest()
    assert (m["mask"] != "").any() and set(m["label"]) == {0, 1, 2}  # masks and fills
    cache, built = build_cache(m, SIZE, resample, True, progress=False, threads=2, chunk=4)
    assert built and cache.images.shape == (18, SIZE, SIZE, 3)
    assert cache.masks.shape == (18, SIZE, SIZE)
    # a split's rows in a shuffled order map onto the cache by path, mask and label
    rows = m[m["split"] == "train"].sample(frac=1.0, random_state=0)
    decoded = ManifestDataset(rows, SIZE, with_masks=True, resample=resample)
    cached = CachedDataset(rows, cache, with_masks=True)
    _assert_same(_batches(decoded), _batches(cached))
    # a DataLoader worker gets the folder, not the pixels, and reads the same samples
    copy = pickle.loads(pickle.dumps(cached))
    assert len(pickle.dumps(cached)) < cache.images.nbytes
    assert torch.equal(copy[3]["image"], decoded[3]["image"])


def test_a_run_reads_the_cache_only_as_its_setting_says(tmp_path):
    from fbench.train.loaders import build_loaders
    from fbench.train.resolve import resolve

    def loaders(setting):
        config = RunConfig(detector="cache-tiny", dataset="synthetic", dataset_options=OPTIONS,
                           input_size=SIZE, batch_size=4, cache=setting, out=str(tmp_path))
        return build_loaders(resolve(config), torch.device("cpu"), progress=False)

    with registered(tiny_plugin("cache-tiny"), name="tiny"):
        off = loaders("off")
        auto_missing = loaders("auto")
        assert not off.cache_used and not auto_missing.cache_used and _built_dirs() == []
        build = loaders("build")  # built first, then read
        assert build.cache_used and len(_built_dirs()) == 1
        auto = loaders("auto")
        assert auto.cache_used and isinstance(auto.train.dataset, CachedDataset)
        assert not loaders("off").cache_used  # off never reads it, even when built
    # the same batches, in the same seeded order, as decoding gives
    for split in ("train", "val", "eval"):
        _assert_same(list(getattr(off, split)), list(getattr(auto, split)))


def test_a_changed_image_or_row_misses_and_a_rebuild_replaces_the_old_cache():
    m = _manifest()
    cache, _ = build_cache(m, SIZE, "bilinear", True, progress=False)
    assert open_cache(m, SIZE, "bilinear", True) is not None  # a hit
    assert open_cache(m, SIZE + 8, "bilinear", True) is None  # another size: a miss
    assert open_cache(m, SIZE, "area", True) is None  # another resampler: a miss
    first = _built_dirs()

    # the same file name, other pixels
    path = os.path.join(m.attrs["root"], m["path"].iloc[0])
    old = read_image(path, SIZE)
    cv2.imwrite(path, np.full((32, 32, 3), 7, np.uint8))
    with pytest.warns(UserWarning, match="out of date"):
        assert open_cache(m, SIZE, "bilinear", True) is None
    fresh, built = build_cache(m, SIZE, "bilinear", True, progress=False)
    assert built and fresh.key != cache.key and _built_dirs() == first  # replaced in place
    j = int(fresh.positions(m.iloc[:1])[0])
    assert np.array_equal(fresh.images[j], read_image(path, SIZE))
    assert not np.array_equal(fresh.images[j], old)

    # a row changed (a label): another set of rows, never this cache
    relabelled = m.copy()
    relabelled.loc[relabelled.index[0], "label"] = 1 - int(relabelled["label"].iloc[0])
    assert open_cache(relabelled, SIZE, "bilinear", True) is None


def test_a_build_that_fails_leaves_nothing():
    m = _manifest()
    bad = os.path.join(m.attrs["root"], m["path"].iloc[-1])
    Path(bad).write_bytes(b"")  # an image that cannot be decoded, late in the build
    with pytest.raises(FbenchError, match="zero bytes"):
        build_cache(m, SIZE, "bilinear", True, progress=False, threads=1, chunk=2)
    assert list(cache_root().iterdir()) == []


CHILD = textwrap.dedent("""
    import os, signal, sys
    from fbench.api import load_dataset
    from fbench.data.cache import build_cache

    handshake = sys.argv[1]

    def halfway(done, total):
        if done >= total // 2:
            with open(handshake + ".tmp", "w") as fh:
                fh.write(str(done))
            os.replace(handshake + ".tmp", handshake)  # whole when the parent sees it
            signal.pause()  # half of the memory map written: wait here to be killed

    m = load_dataset("synthetic", n_per_class=6, image_size=32)
    build_cache(m, 24, "bilinear", True, progress=False, threads=1, chunk=2, on_chunk=halfway)
""")


def test_a_killed_build_leaves_nothing_used_and_the_next_build_succeeds(tmp_path):
    m = _manifest()  # generated here, so the child only builds the cache
    handshake = tmp_path / "halfway"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(handshake)], env=env,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not handshake.exists():  # the child's signal that it is half-way
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the build never got half-way"
            time.sleep(0.05)
        assert 0 < int(handshake.read_text()) < 18
    finally:
        child.kill()
        child.wait()
    leftovers = [p for p in cache_root().iterdir() if p.name.startswith(".")]
    assert leftovers and (leftovers[0] / "images.npy").is_file()  # killed mid-way
    assert _built_dirs() == [] and open_cache(m, SIZE, "bilinear", True) is None

    cache, built = build_cache(m, SIZE, "bilinear", True, progress=False)
    assert built and not any(p.exists() for p in leftovers)  # the dead build's folder removed
    _assert_same(_batches(ManifestDataset(m, SIZE, with_masks=True)),
                 _batches(CachedDataset(m, cache, with_masks=True)))


def test_data_cache_cli_builds_once_then_says_it_is_built():
    args = ["data", "cache", "synthetic", "--input-size", str(SIZE), "--no-progress",
            "--dataset-option", "n_per_class=6", "--dataset-option", "image_size=32"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "cached synthetic (18 images, 24 px, bilinear, with masks" in first.output
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert again.output.startswith("already built: synthetic (18 images")
    assert open_cache(_manifest(), SIZE, "bilinear", True) is not None
    other = CliRunner().invoke(cli, [*args, "--resample", "area"])  # another cache
    assert other.exit_code == 0 and "cached synthetic" in other.output
    assert len(_built_dirs()) == 2


def test_run_cache_build_is_recorded_in_the_run(tmp_path):
    with registered(tiny_plugin("cache-tiny"), name="tiny"):
        result = CliRunner().invoke(cli, [
            "run", "-d", "cache-tiny", "--dataset-option", "n_per_class=6",
            "--dataset-option", "image_size=32", "--input-size", str(SIZE), "--epochs", "1",
            "--batch-size", "4", "--cache", "build", "--no-progress",
            "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["cache"] == "build"
    assert len(_built_dirs()) == 1
    bad = CliRunner().invoke(cli, ["run", "--cache", "sometimes"])
    assert bad.exit_code == 2 and "sometimes" in bad.output


def test_bench_reports_decoding_and_cache_rates_per_core():
    from fbench.report.console import bench_markdown
    from fbench.use.bench import BenchResult

    m = _manifest()
    decode, cached = loading_rates(m, SIZE, "bilinear", True, batch_size=4)
    assert decode > 0 and cached > 0
    assert list(cache_root().glob("*")) == []  # measured on a scratch cache, not the user's

    result = BenchResult(
        detector="t", device="cpu", batch_size=4, input_size=SIZE, precision="fp32",
        channels_last=False, compiled=False, threads=2, data_images_per_s=100.0,
        bare_images_per_s=50.0, step_images_per_s=50.0, epoch_images_per_s=40.0,
        overhead_ratio=1.0, data_to_model_ratio=2.0, peak_memory_mb=10.0, gflop_per_step=None,
        achieved_tflops=None, params_m=0.01, decode_images_per_core_s=decode,
        cache_images_per_core_s=cached)
    text = bench_markdown([result], "fbench bench")
    assert "data img/s per core: decode | data img/s per core: cache" in text
    assert f"| {decode:.0f} | {cached:.0f} |" in text
