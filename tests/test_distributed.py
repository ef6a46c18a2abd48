"""torchrun with 2 CPU processes (gloo): every eval image is scored exactly once, the gathered
predictions equal a single-process evaluation of the same checkpoint, and only rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch

from fbench.metrics import PROB_COLUMNS
from fbench.runs.store import load_run
from fbench.train.config import RunConfig
from fbench.train.engine import build_loaders, load_checkpoint, predict
from fbench.train.resolve import resolve

# 31 per class: the eval split does not divide evenly between the two ranks
ARGS = ["--detector", "resnet18", "--dataset", "synthetic", "--epochs", "2", "--input-size",
        "32", "--batch-size", "8", "--dataset-option", "n_per_class=31",
        "--dataset-option", "image_size=32", "--no-progress"]


def test_two_process_run_gathers_every_eval_image_once(tmp_path):
    out = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--standalone", "-m", "fbench", "run", *ARGS, "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, "only rank 0 creates a run directory"
    run = load_run(runs[0])
    assert run.config["world_size"] == 2

    cfg = RunConfig.from_dict({k: v for k, v in run.config.items()
                               if k in RunConfig.__dataclass_fields__}).replace(out=str(out))
    resolved = resolve(cfg)
    ev = run.predictions[run.predictions["split"] == "eval"]
    expected = resolved.manifest[resolved.manifest["split"] == "eval"]
    assert len(expected) % 2 == 1
    assert sorted(ev["path"]) == sorted(expected["path"])  # each image exactly once

    device = torch.device("cpu")
    model = resolved.build_model()
    transform = resolved.build_transform()
    state = load_checkpoint(run.checkpoint("best"))
    model.load_state_dict(state["model"])
    transform.load_state_dict(state["transform"])
    single = predict(model, transform, build_loaders(resolved, device).eval, device)
    single_paths = expected["path"].to_numpy()[single["index"]]
    stored = ev.set_index("path").loc[single_paths]
    probs = stored[list(PROB_COLUMNS)].to_numpy()
    np.testing.assert_allclose(probs, single["probs"], atol=1e-5)
