"""Reading user-given weight files safely: ``weights_only=True`` (a checkpoint is data, never
code), with the wrappers people actually save (fbench checkpoints, Lightning, DataParallel)
unwrapped. Public for detector plugins that accept ``pretrained_path``."""

from __future__ import annotations

import os

import torch

from fbench.errors import FbenchError


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a local state-dict file, unwrapped; a clear error for anything else."""
    if not os.path.isfile(path):
        raise FbenchError(f"pretrained_path {path} does not exist.",
                          "give the path of a local .pt/.pth state dict.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FbenchError(f"cannot load weights from {path}: {exc}.",
                          "save them with torch.save(model.state_dict(), path).") from None
    for wrapper in ("model", "state_dict"):  # an fbench checkpoint, a Lightning-style one
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise FbenchError(f"{path} holds no state dict.",
                          "save one with torch.save(model.state_dict(), path).")
    # DataParallel checkpoints (the thesis trained on several GPUs) prefix every key.
    return {k.removeprefix("module."): v for k, v in state.items()
            if isinstance(v, torch.Tensor)}
