"""LRL (Chen et al., AAAI 2021, "Local Relation Learning for Face Forgery Detection").

Two timm backbones run level by level: an RGB stream on the model input and a frequency stream
on its high-pass DCT image. At the levels ``fuse_at`` an RGB-frequency attention module fuses
them and feeds the fused map back into both; at the levels ``sim_at`` the fused map is cut into
patches whose pairwise similarities are trained towards targets read from the forgery mask.
An optional decoder predicts the mask itself from the deepest similarity level.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fbench import Batch, Detector, DetectorOutput, FbenchError
from fbench_blocks.decoder import SegDecoder
from fbench_blocks.losses import mask_losses
from fbench_blocks.options import parse_int_list
from fbench_lrl.highpass import DEFAULT_CUTOFF, HighPassDCT
from fbench_lrl.rfam import RGBFrequencyAttention
from fbench_lrl.similarity import similarity_loss
from fbench_lrl.staged import StagedFeatures

DEFAULT_BACKBONE = "efficientnet_b0"


def parse_levels(name: str, value: Any, levels: int) -> tuple[int, ...]:
    """``"2,3,4"``, ``[2, 3]`` or ``3`` → distinct ascending feature levels in
    ``range(levels)``."""
    try:
        points = parse_int_list(value)
    except (TypeError, ValueError):
        raise FbenchError(f"{name}={value!r} is not a list of feature levels.",
                          f"write e.g. --set {name}=2,3") from None
    if not points or list(points) != sorted(set(points)) or not all(
            0 <= p < levels for p in points):
        raise FbenchError(f"{name}={value!r}: give distinct, ascending feature levels of the "
                          f"backbone (0..{levels - 1}).", "e.g. 2,3")
    return points


def parse_grids(value: Any, count: int) -> tuple[int, ...]:
    """One grid side for every similarity level, or one per level (``"4"``, ``"8,4"``)."""
    try:
        grids = parse_int_list(value)
    except (TypeError, ValueError):
        grids = ()
    if len(grids) == 1:
        grids = grids * count
    if len(grids) != count or any(k < 2 for k in grids):
        raise FbenchError(f"sim_grid={value!r}: give one patch-grid side >= 2, or one per "
                          f"similarity level ({count}).", "e.g. --set sim_grid=4")
    return grids


class LRL(Detector):
    """RGB + high-pass-DCT streams, RFAM fusion, patch-similarity (and mask) supervision.

    ``forward`` returns the logits (pooled final maps of both streams, concatenated, dropout,
    linear), with the mask head the mask probabilities at the input size as ``mask``, and in
    ``aux`` the fused maps the similarity loss reads (``fused_<level>``) and ``mask_logits``.

    ``loss`` = CE + ``sim_weight``·MSE(similarities) + ``mask_weight``·(BCE + Dice); the mask
    derived terms use only rows whose mask is known (``batch.has_mask``).
    """

    def __init__(self, num_classes: int = 3, backbone: str = DEFAULT_BACKBONE,
                 fuse_at: Any = None, sim_at: Any = None, sim_grid: Any = 4,
                 sim_weight: float = 1.0, mask_head: bool = True, mask_weight: float = 1.0,
                 highpass_cutoff: float = DEFAULT_CUTOFF, dropout: float = 0.2) -> None:
        super().__init__()
        if min(sim_weight, mask_weight) < 0:
            raise FbenchError("sim_weight and mask_weight must be >= 0.")
        if not 0.0 <= dropout < 1.0:
            raise FbenchError(f"dropout must be in [0, 1), got {dropout}.")
        if not isinstance(mask_head, bool):
            raise FbenchError(f"mask_head={mask_head!r} is not a boolean.",
                              "use --set mask_head=true or --set mask_head=false.")
        self.highpass = HighPassDCT(highpass_cutoff)
        self.rgb = StagedFeatures(backbone, in_chans=3)
        self.freq = StagedFeatures(backbone, in_chans=1)
        levels = self.rgb.levels
        # Defaults: fuse at the three deepest levels, compare patches at all of them but the
        # last (at 224 px with EfficientNet: 28×28 and 14×14; the last is 7×7, too coarse).
        self.fuse_at = (parse_levels("fuse_at", fuse_at, levels) if fuse_at is not None
                        else tuple(range(max(levels - 3, 0), levels)))
        self.sim_at = (parse_levels("sim_at", sim_at, levels) if sim_at is not None
                       else self.fuse_at[:-1] or self.fuse_at)
        if not set(self.sim_at) <= set(self.fuse_at):
            raise FbenchError(
                f"sim_at={','.join(map(str, self.sim_at))}: patch similarity reads the fused "
                f"maps, which exist only at fuse_at={','.join(map(str, self.fuse_at))}.",
                "choose sim_at among the fuse_at levels.")
        self.sim_grid = parse_grids(sim_grid, len(self.sim_at))
        self.rfam = nn.ModuleDict({str(level): RGBFrequencyAttention(self.rgb.channels[level])
                                   for level in self.fuse_at})
        self.sim_weight = float(sim_weight)
        self.mask_weight = float(mask_weight)
        self.decoder: SegDecoder | None = None
        if mask_head:
            level = self.sim_at[-1]
            channels = self.rgb.channels[level]
            mid = min(channels, 128)
            # one stride-2 transposed conv per halving of the resolution, widths halving too
            ups = max(int(round(math.log2(self.rgb.reductions[level]))), 1)
            widths = tuple(max(mid // 2 ** (i + 1), 8) for i in range(ups))
            self.decoder = SegDecoder(channels, mid, widths, activation="relu")
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * self.rgb.channels[-1], num_classes)

    def forward(self, batch: Batch) -> DetectorOutput:
        images = batch.images
        r, f = images, self.highpass(images).to(images.dtype)
        aux: dict[str, torch.Tensor] = {}
        for level in range(self.rgb.levels):
            r = self.rgb.forward_stage(level, r)
            f = self.freq.forward_stage(level, f)
            if level in self.fuse_at:
                r, f, fused = self.rfam[str(level)](r, f)
                aux[f"fused_{level}"] = fused
        pooled = torch.cat([F.adaptive_avg_pool2d(r, 1).flatten(1),
                            F.adaptive_avg_pool2d(f, 1).flatten(1)], dim=1)
        logits = self.fc(self.dropout(pooled))
        mask = None
        if self.decoder is not None:
            mask_logits = self.decoder(aux[f"fused_{self.sim_at[-1]}"],
                                       size=tuple(images.shape[-2:]))
            aux["mask_logits"] = mask_logits
            mask = torch.sigmoid(mask_logits.float())
        return DetectorOutput(logits=logits, mask=mask, aux=aux)

    def loss(self, output: DetectorOutput, batch: Batch) -> dict[str, torch.Tensor]:
        assert batch.labels is not None
        if batch.masks is None:
            raise FbenchError("lrl needs forgery masks (its patch-similarity targets come from "
                              "them), and this batch has none.",
                              "train on a dataset with masks (e.g. synthetic, seg_2).")
        terms = {"ce": F.cross_entropy(output.logits.float(), batch.labels)}
        features = [output.aux[f"fused_{level}"] for level in self.sim_at]
        terms["sim"] = self.sim_weight * similarity_loss(features, batch.masks,
                                                         list(self.sim_grid), batch.has_mask)
        if self.decoder is not None:
            for name, value in mask_losses(output.aux["mask_logits"], batch.masks,
                                           batch.has_mask).items():
                terms[name] = self.mask_weight * value
        return terms


def _adapt_stem(state: dict[str, torch.Tensor],
                own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An RGB stem weight for a 1-channel stem: summed over the input channels (what timm does
    for ``in_chans=1``), so a grayscale image sees the filters an RGB one would."""
    adapted = dict(state)
    for key, w in state.items():
        target = own.get(key)
        if (target is not None and w.dim() == 4 and target.dim() == 4 and w.shape[1] == 3
                and target.shape[1] == 1 and w.shape[0] == target.shape[0]
                and w.shape[2:] == target.shape[2:]):
            adapted[key] = w.sum(dim=1, keepdim=True)
    return adapted


def load_pretrained(model: LRL, path: str) -> None:
    """Local weights: an ``lrl`` state dict of the same configuration (an fbench checkpoint,
    or ``torch.save(model.state_dict())``) loads as is; otherwise the file is taken as a timm
    state dict of the backbone (e.g. ImageNet weights saved from ``timm.create_model(name)``)
    and loaded into both streams, the RGB stem summed over its channels for the frequency
    stream. Tensors whose shape differs stay freshly initialised."""
    from fbench import read_state_dict

    state = read_state_dict(path)
    own = model.state_dict()
    direct = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if direct:
        model.load_state_dict(direct, strict=False)
        return
    loaded = model.rgb.load_timm_state(state)
    loaded += model.freq.load_timm_state(_adapt_stem(state, model.freq.net.state_dict()))
    if loaded == 0:
        raise FbenchError(f"no tensor in {path} matches the model's parameters.",
                          "give an lrl checkpoint or a timm state dict of the backbone "
                          f"({model.rgb.model_name}).")


def build_lrl(num_classes: int = 3, pretrained_path: str | None = None,
              **options: Any) -> LRL:
    """The detector; ``options`` are the factory's keyword options."""
    model = LRL(num_classes=num_classes, **options)
    if pretrained_path:
        load_pretrained(model, pretrained_path)
    return model


__all__ = ["DEFAULT_BACKBONE", "LRL", "build_lrl", "load_pretrained", "parse_grids",
           "parse_levels"]
