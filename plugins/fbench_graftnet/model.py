"""GraftNet, the thesis's "multi-model graft attention" detector, and its multi-task variant.

Three streams see the same ImageNet-normalised image: F3Net's FAD head (12 channels) and LFS
head (6 channels), reused from ``fbench_f3net``, and a small RGB stem. Each is reduced by
Xception blocks to 32 × (input / 8)² maps; graft attention lets RGB ask (queries) and LFS answer
(keys) which FAD channels (values) to mix; the attention's output (by default alone, as the
thesis's published code; plus the FAD map with ``residual=True``, as its figure) is classified
by four more Xception blocks. GraftNet-Seg decodes the same fused map to a forgery mask.

Every layer starts with PyTorch's default initialisation, as in the thesis's code (timm's
Xception ``Block`` carries no initialisation of its own), except the attention's output
projection (see :class:`~fbench_graftnet.graft.GraftAttention`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fbench import Batch, Detector, DetectorOutput, FbenchError
from fbench_blocks.frequency import LFS_ORDERS, FADHead, LFSHead
from fbench_blocks.losses import DICE_REDUCTIONS, multitask_loss
from fbench_blocks.pointwise import safe_strided_pointwise
from fbench_graftnet.decoder import ACTIVATIONS, GraftDecoder
from fbench_graftnet.graft import THESIS_GRID, GraftAttention

WIDTH = 32
"""Channels of every stream where the graft attention joins them (one token per channel)."""


def xception_block(in_channels: int, out_channels: int, reps: int, stride: int) -> nn.Module:
    """One Xception block (ReLU → separable 3 × 3 conv → BN, ``reps`` times; max-pool when
    strided; 1 × 1 conv skip when the shape changes): timm's, the Keras-ported block the
    public F3Net code and the thesis used."""
    from timm.models.xception import Block

    return Block(in_channels, out_channels, reps, stride)


def _stem(in_channels: int, out_channels: int) -> list[nn.Module]:
    # A plain strided 3×3 conv first: the separable blocks that follow start with a ReLU.
    return [nn.Conv2d(in_channels, out_channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


def _check_options(input_size: Any, token_grid: Any, heads: Any, residual: Any,
                   lfs_order: Any, dropout: Any) -> None:
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 16:
        raise FbenchError(f"input_size must be an integer >= 16, got {input_size!r}.",
                          "it sizes the learnable FAD filters; 224 is the thesis's.")
    for name, value in (("token_grid", token_grid), ("heads", heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FbenchError(f"{name} must be a positive integer, got {value!r}.",
                              "the thesis used token_grid=28 and heads=8.")
    if (token_grid * token_grid) % heads:
        raise FbenchError(
            f"token_grid={token_grid} gives tokens of {token_grid ** 2} values, which "
            f"heads={heads} cannot split evenly.",
            "choose token_grid and heads with token_grid² divisible by heads "
            "(the thesis: token_grid=28, heads=8).")
    if not isinstance(residual, bool):
        raise FbenchError(f"residual must be true or false, got {residual!r}.",
                          "write --set residual=true to add the FAD map (the thesis's "
                          "figure); false, the default, is its published code.")
    if lfs_order not in LFS_ORDERS:
        raise FbenchError(f"unknown lfs_order {lfs_order!r}.",
                          "use lfs_order=log-first (the thesis) or paper (sum, then log).")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) \
            or not 0.0 <= dropout < 1.0:
        raise FbenchError(f"dropout must be a number in [0, 1), got {dropout!r}.")


class GraftNet(Detector):
    """The thesis's GraftNet on ImageNet-normalised RGB (``batch.images``, ``raw`` transform).

    Shapes at 224 px (input / 2, / 4, / 8 at any size):

    - FAD: head → 12 × 224² → 3 × 3 conv (stride 2) → 32 × 112² → two Xception blocks →
      32 × 56² (the decoder's skip) → 32 × 28²;
    - LFS: head → 6 × 112² → two Xception blocks → 32 × 28²;
    - RGB: 3 × 3 conv (stride 2) → 16 × 112² → two Xception blocks → 32 × 28²;
    - graft attention (queries RGB, keys LFS, values FAD; ``heads`` heads over 32 tokens of
      ``token_grid²`` values): its output alone is the fused map, as in the thesis's published
      code (the model behind its table); ``residual=True`` adds the FAD map, as its figure;
    - Xception blocks 32 → 64 → 128 (each halving) → 256 → 256, ReLU, global average pool,
      dropout, linear classifier.
    """

    def __init__(self, num_classes: int = 3, input_size: int = 224,
                 token_grid: int = THESIS_GRID, heads: int = 8, residual: bool = False,
                 lfs_order: str = "log-first", dropout: float = 0.2) -> None:
        super().__init__()
        _check_options(input_size, token_grid, heads, residual, lfs_order, dropout)
        self.input_size = input_size
        self.residual = residual
        self.fad_head = FADHead(input_size)
        self.fad_stem = nn.Sequential(*_stem(12, WIDTH))
        self.fad_block1 = xception_block(WIDTH, WIDTH, 2, 2)
        self.fad_block2 = xception_block(WIDTH, WIDTH, 2, 2)
        self.lfs_head = LFSHead(order=lfs_order)
        self.lfs = nn.Sequential(xception_block(self.lfs_head.bands, WIDTH, 2, 2),
                                 xception_block(WIDTH, WIDTH, 2, 2))
        self.rgb = nn.Sequential(*_stem(3, 16), xception_block(16, WIDTH, 2, 2),
                                 xception_block(WIDTH, WIDTH, 2, 2))
        self.graft = GraftAttention(token_grid, heads)
        self.blocks = nn.Sequential(xception_block(WIDTH, 64, 2, 2),
                                    xception_block(64, 128, 2, 2),
                                    xception_block(128, 256, 3, 1),
                                    xception_block(256, 256, 3, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(256, num_classes)
        # The first LFS block's skip (6 → 32 channels, 1 × 1, stride 2) would crash oneDNN's
        # channels_last backward on the CPU; see fbench_blocks.pointwise.
        safe_strided_pointwise(self)

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                      list[torch.Tensor]]:
        """Pooled features ``[B, 256]``, the fused map ``[B, 32, h, w]`` and the decoder's
        skip maps (FAD after its first block, the LFS head's output, the input)."""
        lfs_map = self.lfs_head(images)
        fad_skip = self.fad_block1(self.fad_stem(self.fad_head(images)))
        fad = self.fad_block2(fad_skip)
        lfs = self.lfs(lfs_map)
        rgb = self.rgb(images)
        # The attention resamples each map to its token grid, so streams that round to
        # different sizes at odd input sizes need no alignment; its output has FAD's size.
        attended = self.graft(rgb, lfs, fad)
        fused = fad + attended if self.residual else attended
        pooled = F.adaptive_avg_pool2d(F.relu(self.blocks(fused)), 1).flatten(1)
        return pooled, fused, [fad_skip, lfs_map, images]

    def forward(self, batch: Batch) -> DetectorOutput:
        pooled, _, _ = self.features(batch.images)
        return DetectorOutput(logits=self.fc(self.dropout(pooled)))


class GraftNetSeg(GraftNet):
    """GraftNet plus a U-Net-like decoder (:class:`~fbench_graftnet.decoder.GraftDecoder`)
    from the fused map to a forgery mask at the input's size.

    ``loss`` = ``ce_weight``·CE + ``bce_weight``·BCE + ``dice_weight``·Dice; the mask terms
    (``fbench_blocks.losses.multitask_loss``) use only rows whose mask is known
    (``batch.has_mask``).
    """

    def __init__(self, num_classes: int = 3, input_size: int = 224,
                 token_grid: int = THESIS_GRID, heads: int = 8, residual: bool = False,
                 lfs_order: str = "log-first", dropout: float = 0.2, ce_weight: float = 1.0,
                 bce_weight: float = 1.0, dice_weight: float = 1.0,
                 dice_reduction: str = "image", decoder_activation: str = "none") -> None:
        super().__init__(num_classes, input_size, token_grid, heads, residual, lfs_order,
                         dropout)
        if dice_reduction not in DICE_REDUCTIONS:
            raise FbenchError(f"unknown dice_reduction {dice_reduction!r}.",
                              "use image (per image, averaged) or batch (the thesis).")
        if decoder_activation not in ACTIVATIONS:
            raise FbenchError(f"unknown decoder_activation {decoder_activation!r}.",
                              "use none (the thesis's affine decoder) or relu.")
        weights = {"ce": ce_weight, "bce": bce_weight, "dice": dice_weight}
        for name, value in weights.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise FbenchError(f"{name}_weight must be a number >= 0, got {value!r}.")
        self.decoder = GraftDecoder(WIDTH, (WIDTH, self.lfs_head.bands, 3), (16, 8, 4),
                                    activation=decoder_activation)
        self.weights = {k: float(v) for k, v in weights.items()}
        self.dice_reduction = dice_reduction

    def forward(self, batch: Batch) -> DetectorOutput:
        images = batch.images
        pooled, fused, skips = self.features(images)
        mask_logits = self.decoder(fused, skips, size=tuple(images.shape[-2:]))
        return DetectorOutput(logits=self.fc(self.dropout(pooled)),
                              mask=torch.sigmoid(mask_logits.float()),
                              aux={"mask_logits": mask_logits})

    def loss(self, output: DetectorOutput, batch: Batch) -> dict[str, torch.Tensor]:
        return multitask_loss(output, batch, self.weights, self.dice_reduction)


__all__ = ["GraftNet", "GraftNetSeg", "WIDTH", "xception_block"]
