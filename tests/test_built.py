"""Built datasets: `fbench data build` through a recipe a plugin registers, the audit that
runs before training, and `--skip-audit` being recorded."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import fbench
from fbench.cli import cli
from fbench.plugins.registry import registered
from fbench.train.config import RunConfig
from fbench.train.resolve import resolve


def _collect(root: str) -> pd.DataFrame:
    rows = []
    for p in sorted(Path(root).glob("*/*.png")):
        src = p.parent.name
        rows.append({"path": str(p.relative_to(root)), "label": {"real": 0, "gan": 1}[src],
                     "source": src, "group": f"{src}-{p.stem}"})
    return pd.DataFrame(rows)


RECIPE = fbench.Recipe("toy", "two sources", {"train": {"real": 12, "gan": 12},
                                               "eval": {"real": 4, "gan": 4}},
                       collect=_collect, extra={"labels": {"real": 0, "gan": 1}})


class ToyPlugin:
    @fbench.hookimpl
    def register_recipes(self, register):
        register(RECIPE)

    @fbench.hookimpl
    def register_datasets(self, register):
        register(fbench.DatasetSpec(name="toy", summary="built toy", labels=(0, 1),
                                    factory=lambda root: fbench.load_built_dataset(root, "toy")))


@pytest.fixture
def sources(tmp_path):
    rng = np.random.default_rng(0)
    for src in ("real", "gan"):
        (tmp_path / "src" / src).mkdir(parents=True)
        for i in range(20):
            small = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
            img = cv2.resize(small, (32, 32), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(tmp_path / "src" / src / f"{i}.png"), img)
    return tmp_path


def test_build_then_run_audits_and_records(sources):
    with registered(ToyPlugin(), name="toy"):
        out = sources / "built"
        result = CliRunner().invoke(cli, ["data", "build", "toy", "--root",
                                          str(sources / "src"), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "audit passed" in result.output
        card = fbench.load_built_dataset(out, "toy").attrs["card"]
        assert card["built"]["eval"] == {"gan": 4, "real": 4}
        r = resolve(RunConfig(detector="resnet18", dataset="toy", data_root=str(out),
                              out=str(sources / "runs")))
        assert r.audit["ok"] and r.stored_config()["audit"]["ok"]

        # inject a leak: an eval image copied into train
        m = pd.read_parquet(out / "manifest.parquet")
        ev = m.index[m["split"] == "eval"][0]
        tr = m.index[m["split"] == "train"][0]
        m.loc[tr, "sha256"] = m.loc[ev, "sha256"]
        m.to_parquet(out / "manifest.parquet")
        with pytest.raises(fbench.FbenchError, match="fails the leakage audit"):
            resolve(RunConfig(detector="resnet18", dataset="toy", data_root=str(out)))
        skipped = resolve(RunConfig(detector="resnet18", dataset="toy", data_root=str(out),
                                    audit=False))
        assert skipped.stored_config()["audit"]["skipped"] is True
        audit = CliRunner().invoke(cli, ["data", "audit", "toy", "--data-root", str(out)])
        assert audit.exit_code != 0 and "identical files" in audit.output


def test_build_reports_shortfall_and_scale(sources):
    big = fbench.Recipe("big", "", {"train": {"real": 30}, "eval": {"real": 10}},
                        collect=_collect)

    class Big:
        @fbench.hookimpl
        def register_recipes(self, register):
            register(big)

    with registered(Big(), name="big"):
        out = sources / "b"
        result = CliRunner().invoke(cli, ["data", "build", "big", "--root",
                                          str(sources / "src"), "--out", str(out)])
        assert result.exit_code != 0 and "short by 20" in result.output
        assert "--scale 0.5" in result.output and not out.exists()
        ok = CliRunner().invoke(cli, ["data", "build", "big", "--root", str(sources / "src"),
                                      "--out", str(out), "--scale", "0.5"])
        assert ok.exit_code == 0, ok.output


def test_loading_a_directory_built_from_another_recipe(sources, tmp_path):
    with pytest.raises(fbench.FbenchError, match="holds no built dataset"):
        fbench.load_built_dataset(tmp_path, "toy")


def _paired_collect(root: str) -> pd.DataFrame:
    """Image i of `real` and of `gan` share group `pair-i` (as two FaceForensics++ methods share
    people); pairs 0-3 are pinned to eval and 4-7 to train, the rest are free."""
    frame = _collect(root)
    number = frame["path"].str.extract(r"/(\d+)\.png$")[0].astype(int)
    frame["group"] = "pair-" + number.astype(str)
    frame["fixed_split"] = ["eval" if n < 4 else "train" if n < 8 else "" for n in number]
    frame.attrs["groups"] = {"origin": "inferred", "method": "test pairs", "n_groups": 20}
    return frame


def test_sources_sharing_groups_are_split_together_and_pins_hold(sources):
    recipe = fbench.Recipe("pairs", "", {"train": {"real": 12, "gan": 12},
                                         "eval": {"real": 6, "gan": 6}},
                           collect=_paired_collect, extra={"labels": {"real": 0, "gan": 1}})
    from fbench.data.built import build_dataset

    for seed in (0, 1):
        out = sources / f"pairs{seed}"
        # no validation carve: with 2-image groups it would tip the tiny splits' balance
        card = build_dataset(recipe, sources / "src", out, seed=seed, val_fraction=0)
        m = pd.read_parquet(out / "manifest.parquet")
        assert card["split_together"] == ["gan", "real"] and card["audit"]["ok"]
        assert (m.groupby("group")["split"].nunique() == 1).all()  # one side for both sources
        side = m.groupby("source")["split"]
        assert side.value_counts().to_dict() == {("gan", "train"): 12, ("gan", "eval"): 6,
                                                 ("real", "train"): 12, ("real", "eval"): 6}
        pairs = m["group"].str[5:].astype(int)
        assert set(pairs[m["split"] == "eval"]) >= {0, 1, 2, 3}  # pinned to eval
        assert not set(pairs[m["split"] == "eval"]) & {4, 5, 6, 7}  # pinned to train
        assert "fixed_split" not in m.columns
        loaded = fbench.load_built_dataset(out, "pairs")
        assert loaded.attrs["groups"] == {"origin": "inferred", "method": "test pairs",
                                          "n_groups": 20}
