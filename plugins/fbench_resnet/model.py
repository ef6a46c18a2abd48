"""Building timm ResNets, optionally from local weights."""

from __future__ import annotations

import timm
from torch import nn

from fbench import FbenchError


def load_local_weights(model: nn.Module, path: str) -> None:
    """Load a local state dict into ``model``; keys whose shape differs (the classifier of an
    ImageNet checkpoint) keep their fresh initialisation."""
    from fbench import read_state_dict

    # fbench checkpoints wrap plain classifiers as "model.<key>"
    state = {k.removeprefix("model."): v for k, v in read_state_dict(path).items()}
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
