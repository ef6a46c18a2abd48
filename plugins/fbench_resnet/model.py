"""Building timm ResNets, optionally from local weights."""

from __future__ import annotations

import os

import timm
import torch
from torch import nn

from fbench import FbenchError


def load_local_weights(model: nn.Module, path: str) -> None:
    """Load a local state dict into ``model``; keys whose shape differs (the classifier of an
    ImageNet checkpoint) keep their fresh initialisation."""
    if not os.path.isfile(path):
        raise FbenchError(f"pretrained_path {path} does not exist.",
                          "give the path of a local .pt/.pth state dict.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FbenchError(f"cannot load weights from {path}: {exc}.",
                          "save them with torch.save(model.state_dict(), path).") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # an fbench checkpoint
    if isinstance(state, dict):  # fbench checkpoints wrap classifiers as "model.<key>"
        state = {k.removeprefix("model."): v for k, v in state.items()}
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise FbenchError(f"no tensor in {path} matches the model's parameters.",
                          "check that the weights are for this architecture.")
    model.load_state_dict(usable, strict=False)


def build_resnet(arch: str, num_classes: int, pretrained_path: str | None,
                 drop_rate: float) -> nn.Module:
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes,
                              drop_rate=drop_rate)
    if pretrained_path:
        load_local_weights(model, pretrained_path)
    return model
