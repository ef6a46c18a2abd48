"""Building timm ResNets, optionally from local weights."""

from __future__ import annotations

import timm
from torch import nn

from fbench import FbenchError

INITS = ("reference", "timm")
"""``reference``: torchvision's initialisation, which the thesis's ``models.resnet18()`` got
(Kaiming-normal fan-out convolutions, every batch norm at weight 1, bias 0); ``timm``: timm's,
which also zeroes the last batch norm's weight in every residual block."""


def check_init(init: str) -> None:
    if init not in INITS:
        raise FbenchError(f"unknown init {init!r}.",
                          "use init=reference (torchvision's, as the thesis) or init=timm "
                          "(last batch norm of each block at zero).")


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
                 drop_rate: float, init: str = "reference") -> nn.Module:
    """timm's ``arch`` with ``init`` (see :data:`INITS`), then local weights if given.

    timm and torchvision initialise a ResNet's convolutions alike; the one difference is
    timm's ``zero_init_last``, so ``reference`` is timm's model with it off. (timm's and
    torchvision's resnet18 also share their state-dict keys, so torchvision's ImageNet file
    loads through ``pretrained_path``.)"""
    check_init(init)
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes,
                              drop_rate=drop_rate, zero_init_last=init == "timm")
    if pretrained_path:
        load_local_weights(model, pretrained_path)
    return model
