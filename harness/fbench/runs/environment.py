"""What a run was computed with: versions, git commit, device. Stored with every run so a
number can be traced to the code and machine that produced it."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("fbench", "torch", "torchvision", "timm", "numpy", "pandas", "scikit-learn",
            "opencv-contrib-python", "mediapipe", "pluggy")


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the fbench checkout (or ``path``), with ``-dirty`` if it has changes."""
    where = path or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "") if sha else None


def describe_environment(device: Any = None) -> dict[str, Any]:
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": versions,
        "git_commit": git_commit(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "device": str(device) if device is not None else None,
    }
    if device is not None and str(device).startswith("cuda"):
        env["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return env
