"""LRL's multi-scale patch similarity: the target every pair of patches should reach, read from
the forgery mask, and the similarity the features predict.

A feature map is cut into a ``k × k`` grid of patches. Patch ``i`` of the mask is forged in
proportion ``p_i``; two patches should look alike in proportion to how alike their forgery is:
``s_ij = 1 − (p_i − p_j)²`` (1 for two real or two fully forged patches, 0 for a real and a
fully forged one). The prediction is the cosine similarity of the patches' mean features,
mapped from [−1, 1] to [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def patch_fractions(masks: torch.Tensor, grid: int) -> torch.Tensor:
    """``[B, 1, H, W]`` masks in [0, 1] → ``[B, grid²]`` forged fraction of each patch
    (row-major). When ``H`` is not a multiple of ``grid`` the patches are adaptive-pooling
    bins (sizes differ by one pixel)."""
    return F.adaptive_avg_pool2d(masks.float(), grid).flatten(1)


def similarity_target(masks: torch.Tensor, grid: int) -> torch.Tensor:
    """``[B, grid², grid²]``: ``s_ij = 1 − (p_i − p_j)²`` from the masks' patch fractions."""
    p = patch_fractions(masks, grid)
    return 1.0 - (p.unsqueeze(2) - p.unsqueeze(1)).square()


def patch_similarity(features: torch.Tensor, grid: int) -> torch.Tensor:
    """``[B, C, h, w]`` → ``[B, grid², grid²]``: ``(1 + cos(f_i, f_j)) / 2`` between the mean
    feature vectors of the patches. Computed in float32 (normalising in half precision loses
    the small differences the loss is about)."""
    pooled = F.adaptive_avg_pool2d(features.float(), grid).flatten(2).transpose(1, 2)
    unit = F.normalize(pooled, dim=-1, eps=1e-6)
    return (1.0 + unit @ unit.transpose(1, 2)) / 2.0


def similarity_loss(features: list[torch.Tensor], masks: torch.Tensor, grids: list[int],
                    rows: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between predicted and target similarities, averaged over the scales
    (one ``features[i]`` at grid ``grids[i]``), on ``rows`` (default: all). Zero, attached to
    the graph, when no row is selected."""
    zero = sum(f.float().sum() for f in features) * 0.0
    if rows is not None:
        if not bool(rows.any()):
            return zero
        features = [f[rows] for f in features]
        masks = masks[rows]
    terms = [F.mse_loss(patch_similarity(f, k), similarity_target(masks, k))
             for f, k in zip(features, grids, strict=True)]
    return torch.stack(terms).mean()


__all__ = ["patch_fractions", "patch_similarity", "similarity_loss", "similarity_target"]
