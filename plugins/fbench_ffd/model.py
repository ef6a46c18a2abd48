"""FFD (Dang et al., CVPR 2020): Xception with an attention map in its middle flow.

The backbone is the shared :class:`fbench_blocks.xception.XceptionBackbone` (timm's
``legacy_xception``), run in two parts around the attention layer, so that ``ffd-attention``
and ``f3net-xception`` differ in the attention layer alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fbench import Batch, Detector, DetectorOutput, FbenchError
from fbench_blocks.xception import EXIT, XceptionBackbone, kept_blocks
from fbench_ffd.attention import (
    SUPERVISIONS,
    WEAK_FAKE_TARGET,
    RegressionMap,
    full_map_loss,
    weak_map_loss,
)

ATTENTION_AFTER = {"full": 7, "thesis": 8}
"""Default block after which the attention layer sits. The paper: after block 7, half-way
through the middle flow. The thesis's depth has no block 7 (blocks 4-7 removed); block 8 is
where the thesis itself moved F3Net's block-7 MixBlock, and the map there has the same
728 channels and 1/16 resolution."""


def parse_attention_after(value: Any, depth: str) -> int:
    """``None`` (the depth's default) or a block number that exists at ``depth``."""
    kept = kept_blocks(depth)  # validates depth
    if value is None:
        return ATTENTION_AFTER[depth]
    try:
        point = int(value)
    except (TypeError, ValueError):
        raise FbenchError(f"attention_after={value!r} is not a block number.",
                          "write e.g. --set attention_after=8") from None
    if point not in kept:
        raise FbenchError(
            f"attention_after={value!r}: Xception at depth={depth} has no block {point}.",
            f"choose among blocks {', '.join(map(str, kept))} "
            f"(default {ATTENTION_AFTER[depth]}).")
    return point


class FFDAttention(Detector):
    """Xception with the direct-regression attention layer after block ``attention_after``.

    ``forward`` returns the logits, the attention map resized bilinearly to the input size as
    ``mask`` (the harness scores it against forgery masks and plots it), and the map at its own
    resolution as ``aux["attention_map"]``.

    ``loss`` = CE + ``map_weight`` · map loss, the map loss chosen by ``map_supervision``:

    - ``full``: L1 between the map (resized to the mask) and the forgery mask, on rows whose mask
      is known; needs ``batch.masks``;
    - ``weak``: the map's maximum pulled to 0 for real images and to ``weak_fake_target`` for
      forged ones (labels only);
    - ``none``: no map loss, the map learns from the classification loss alone.
    """

    def __init__(self, num_classes: int = 3, depth: str = "thesis",
                 attention_after: Any = None, map_supervision: str = "full",
                 map_weight: float = 1.0, weak_fake_target: float = WEAK_FAKE_TARGET,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if map_supervision not in SUPERVISIONS:
            raise FbenchError(f"unknown map_supervision {map_supervision!r}.",
                              "use full (L1 to the forgery mask), weak (image-level "
                              "constraints from the labels) or none.")
        if map_weight < 0:
            raise FbenchError(f"map_weight must be >= 0, got {map_weight}.")
        if not 0.0 < weak_fake_target <= 1.0:
            raise FbenchError(f"weak_fake_target must lie in (0, 1], got {weak_fake_target}.")
        if not 0.0 <= dropout < 1.0:
            raise FbenchError(f"dropout must be in [0, 1), got {dropout}.")
        self.depth = depth
        self.attention_after = parse_attention_after(attention_after, depth)
        self.map_supervision = map_supervision
        self.map_weight = float(map_weight)
        self.weak_fake_target = float(weak_fake_target)
        self.backbone = XceptionBackbone(3, depth)
        self.attention = RegressionMap(self.backbone.channels_at(self.attention_after))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.backbone.num_features, num_classes)

    def forward(self, batch: Batch) -> DetectorOutput:
        images = batch.images
        x = self.backbone.forward_between(images, -1, self.attention_after)
        x, attention = self.attention(x)
        x = self.backbone.forward_between(x, self.attention_after, EXIT)
        # The exit flow ends in a ReLU: pooling is all that is left of Xception's head.
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
        mask = F.interpolate(attention.float(), size=tuple(images.shape[-2:]), mode="bilinear",
                             align_corners=False)
        return DetectorOutput(logits=self.fc(self.dropout(pooled)), mask=mask,
                              aux={"attention_map": attention})

    def loss(self, output: DetectorOutput, batch: Batch) -> dict[str, torch.Tensor]:
        assert batch.labels is not None
        terms = {"ce": F.cross_entropy(output.logits.float(), batch.labels)}
        attention = output.aux["attention_map"]
        if self.map_supervision == "full":
            if batch.masks is None:
                raise FbenchError(
                    "ffd-attention with map_supervision=full needs forgery masks, and this "
                    "batch has none.",
                    "train on a dataset with masks (e.g. synthetic, seg_2), or set "
                    "map_supervision=weak (labels only) or none.")
            terms["map"] = self.map_weight * full_map_loss(attention, batch.masks,
                                                           batch.has_mask)
        elif self.map_supervision == "weak":
            terms["map"] = self.map_weight * weak_map_loss(attention, batch.labels,
                                                           self.weak_fake_target)
        return terms


def load_pretrained(model: FFDAttention, path: str) -> None:
    """Local weights: an ``ffd-attention`` state dict (an fbench checkpoint, or
    ``torch.save(model.state_dict())``) loads as is; otherwise the file is taken as an Xception
    state dict (e.g. timm's ImageNet ``legacy_xception``) and loaded into the backbone; the
    attention layer and the classifier keep their fresh initialisation then. Tensors whose
    shape differs (another number of classes) stay fresh too."""
    from fbench import read_state_dict

    state = read_state_dict(path)
    own = model.state_dict()
    direct = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if direct:
        model.load_state_dict(direct, strict=False)
        return
    if model.backbone.load_xception_state(state) == 0:
        raise FbenchError(f"no tensor in {path} matches the model's parameters.",
                          "give an ffd-attention checkpoint or an Xception state dict.")


def build_ffd(num_classes: int = 3, pretrained_path: str | None = None,
              **options: Any) -> FFDAttention:
    """The detector; ``options`` are the factory's keyword options."""
    model = FFDAttention(num_classes=num_classes, **options)
    if pretrained_path:
        load_pretrained(model, pretrained_path)
    return model


__all__ = ["ATTENTION_AFTER", "FFDAttention", "build_ffd", "load_pretrained",
           "parse_attention_after"]
