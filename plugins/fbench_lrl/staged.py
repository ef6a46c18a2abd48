"""A timm ``features_only`` backbone run one feature level at a time, so that two streams can
exchange information between levels (LRL's RGB-frequency attention sits there).

timm's feature extractors already run their modules in a plain sequence and tap some of them;
this module records that sequence once and cuts it at the taps. The timm module itself is kept
as ``net``, so its state-dict keys are timm's and timm weights load by name.
"""

from __future__ import annotations

import torch
from torch import nn

from fbench import FbenchError


def _execution_plan(net: nn.Module) -> tuple[list[str], list[str]]:
    """(module names in execution order, names after which a feature level is read)."""
    if isinstance(net, nn.ModuleDict) and hasattr(net, "return_layers"):
        # timm's FeatureListNet/FeatureDictNet: a flat ModuleDict run in order.
        units = list(net.keys())
        taps = [name for name in units if name in net.return_layers]
        return units, taps
    blocks = getattr(net, "blocks", None)
    if (hasattr(net, "conv_stem") and isinstance(blocks, nn.Sequential)
            and getattr(net, "feature_hooks", None) is None):
        # EfficientNetFeatures / MobileNetV3Features: the stem modules (conv_stem, bn1 and,
        # for MobileNetV3, act1: registered in the order they run), then the block stages.
        children = [name for name, _ in net.named_children()]
        stem = children[:children.index("blocks")]
        units = [*stem, *(f"blocks.{i}" for i in range(len(blocks)))]
        wanted = set(net.feature_info.module_name())
        taps = [name for name in units if name in wanted]
        return units, taps
    raise FbenchError(
        f"the timm backbone {type(net).__name__} cannot be run level by level here.",
        "choose a convolutional timm model (e.g. efficientnet_b0, efficientnet_b4, resnet18, "
        "resnet50, mobilenetv3_large_100, convnext_tiny).")


class StagedFeatures(nn.Module):
    """``timm.create_model(name, features_only=True, pretrained=False)`` as a sequence of
    stages: stage ``i`` runs from the end of stage ``i - 1`` (the input image for ``i = 0``) to
    feature level ``i``. ``channels[i]`` and ``reductions[i]`` describe level ``i``.

    Never downloads: ``pretrained=False`` always; local weights load with
    :meth:`load_timm_state`.
    """

    def __init__(self, name: str, in_chans: int = 3) -> None:
        super().__init__()
        import timm

        if not timm.is_model(name):
            import difflib

            close = difflib.get_close_matches(name, timm.list_models(), n=3)
            raise FbenchError(f"timm has no model {name!r}.",
                              "did you mean " + ", ".join(map(repr, close)) + "?" if close
                              else "see timm.list_models() for the names.")
        try:
            net = timm.create_model(name, features_only=True, pretrained=False,
                                    in_chans=in_chans)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise FbenchError(f"timm cannot build {name!r} as a feature extractor: {exc}",
                              "choose a convolutional backbone such as efficientnet_b0.") \
                from None
        units, taps = _execution_plan(net)
        self.net = net
        self.model_name = name
        self.in_chans = in_chans
        self.channels: tuple[int, ...] = tuple(net.feature_info.channels())
        self.reductions: tuple[int, ...] = tuple(net.feature_info.reduction())
        if len(taps) != len(self.channels):
            raise FbenchError(f"timm backbone {name!r}: its feature levels could not be "
                              "located in its modules.", "choose another backbone.")
        # Plain lists of names, not module lists: the modules stay registered under ``net``
        # with timm's names.
        self._stages: list[list[str]] = []
        start = 0
        for tap in taps:
            stop = units.index(tap) + 1
            self._stages.append(units[start:stop])
            start = stop

    @property
    def levels(self) -> int:
        return len(self._stages)

    def forward_stage(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """Run stage ``level``: from the previous level's features (or the image) to this
        level's."""
        for name in self._stages[level]:
            x = self.net.get_submodule(name)(x)
        return x

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level in range(self.levels):
            x = self.forward_stage(level, x)
            features.append(x)
        return features

    def load_timm_state(self, state: dict[str, torch.Tensor]) -> int:
        """Load a timm state dict of the same architecture (e.g. ImageNet weights saved from
        ``timm.create_model(name)``); tensors of the classifier head, and any whose shape
        differs (another stem width), are ignored. Returns how many tensors were loaded."""
        own = self.net.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        self.net.load_state_dict(usable, strict=False)
        return len(usable)

    def extra_repr(self) -> str:
        return (f"model={self.model_name!r}, in_chans={self.in_chans}, "
                f"channels={self.channels}, reductions={self.reductions}")


__all__ = ["StagedFeatures"]
