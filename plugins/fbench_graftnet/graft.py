"""Multi-model graft attention: the thesis's fusion of three feature maps in which every channel
is one token, queries come from the RGB stream, keys from LFS and values from FAD."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

THESIS_GRID = 28
"""Side of the token grid in the thesis: its maps are 32 × 28 × 28 at 224 px (input / 8), so a
token is a flattened 28 × 28 map of 784 values."""


def resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` resized to ``size``: area averaging to shrink (adaptive average pooling, which
    keeps every pixel's contribution), bilinear to enlarge; the identity at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class GraftAttention(nn.Module):
    """``forward(query, key, value)`` on three ``[B, C, h, w]`` maps (RGB, LFS, FAD) →
    ``[B, C, h_v, w_v]``, the attended map at the size of ``value``.

    Each map is brought to a fixed ``grid × grid`` token grid (see :func:`resample`) and
    flattened to ``C`` tokens of ``d = grid²`` values; three linear projections ``d → d`` give
    queries, keys and values; ``heads`` heads each attend over the ``C`` tokens with a ``d /
    heads`` slice (scaled dot product, softmax, dropout ``attn_dropout`` on the weights while
    training); the heads are concatenated and an output projection ``d → d`` follows. The
    result is unfolded to ``grid × grid`` and resized to the value map's size.

    At the thesis's 224 px the maps are already 28 × 28: no resampling happens, and the four
    ``784 → 784`` projections hold 2.46 M of the model's 3.14 M parameters. The grid is fixed
    (not derived from the input size) so the model and its checkpoints are the same at every
    input size.

    The output projection starts near zero (``N(0, 0.001)``, bias 0), as in the thesis's
    attention module: the classifier after it starts from an almost-zero map (batch norm
    rescales it), and a residual around the block (``residual=True``) starts close to the
    identity.
    """

    def __init__(self, grid: int = THESIS_GRID, heads: int = 8, attn_dropout: float = 0.1,
                 out_init_std: float = 1e-3) -> None:
        super().__init__()
        dim = grid * grid
        if grid < 1 or heads < 1 or dim % heads:
            raise ValueError(f"grid² = {dim} must split evenly into {heads} heads")
        self.grid, self.heads, self.dim = grid, heads, dim
        self.attn_dropout = attn_dropout
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        nn.init.normal_(self.out.weight, std=out_init_std)
        nn.init.zeros_(self.out.bias)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]`` → ``[B, C, grid²]``."""
        return resample(x, (self.grid, self.grid)).flatten(2)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape  # [B, C, d] → [B, heads, C, d / heads]
        return t.view(b, n, self.heads, self.dim // self.heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor,
                value: torch.Tensor) -> torch.Tensor:
        if not query.shape[:2] == key.shape[:2] == value.shape[:2]:
            raise ValueError("graft attention needs maps with the same batch and channel count, "
                             f"got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
        b, c = value.shape[:2]
        q = self._split(self.query(self.tokens(query)))
        k = self._split(self.key(self.tokens(key)))
        v = self._split(self.value(self.tokens(value)))
        attended = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        merged = self.out(attended.transpose(1, 2).reshape(b, c, self.dim))
        return resample(merged.view(b, c, self.grid, self.grid), tuple(value.shape[-2:]))

    def extra_repr(self) -> str:
        return f"grid={self.grid}, heads={self.heads}, attn_dropout={self.attn_dropout}"
