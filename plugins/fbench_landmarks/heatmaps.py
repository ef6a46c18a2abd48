"""Landmark points → heatmaps, rendered on the model's device inside the forward pass (the cache
holds points only, so one cache serves every input size and rendering setting).

Each point becomes an isotropic Gaussian; the points of one channel are summed and clipped to
1. The Gaussian is separable, so a channel is ``Σ_k gy_k ⊗ gx_k``: one matrix product
``[H, K] @ [K, W]`` per image and channel, never a ``[K, H, W]`` tensor (468 points at
224 px would be 94 MB per image).
"""

from __future__ import annotations

import functools

import torch

from fbench import FbenchError

HEATMAPS = ("regions", "points")
MESH_POINTS = 468
"""mediapipe face mesh without iris refinement."""

REGIONS = ("face_oval", "eyes", "eyebrows", "nose", "lips", "mesh")
"""The channels of ``heatmap=regions``: five contours from mediapipe's published connection
sets, and all 468 points (the whole mesh) as the sixth."""


def channels(heatmap: str) -> int:
    if heatmap not in HEATMAPS:
        raise FbenchError(f"unknown heatmap {heatmap!r}.",
                          "use regions (6 channels: face oval, eyes, eyebrows, nose, lips, "
                          "all mesh points) or points (1 channel, all points, any K).")
    return len(REGIONS) if heatmap == "regions" else 1


@functools.lru_cache(maxsize=1)
def _region_indices() -> tuple[tuple[int, ...], ...]:
    """Point indices of each region, from the connection sets mediapipe publishes for its face
    mesh topology (imported here, at model construction, never by ``fbench list``)."""
    try:
        from mediapipe.python.solutions import face_mesh_connections as fmc
    except ImportError:  # pragma: no cover - mediapipe is a dependency of fbench
        raise FbenchError("heatmap=regions needs mediapipe (its face mesh topology).",
                          "install mediapipe, or use --set heatmap=points.") from None

    def points(*sets: frozenset) -> tuple[int, ...]:
        return tuple(sorted({i for edges in sets for edge in edges for i in edge}))

    return (points(fmc.FACEMESH_FACE_OVAL),
            points(fmc.FACEMESH_LEFT_EYE, fmc.FACEMESH_RIGHT_EYE),
            points(fmc.FACEMESH_LEFT_EYEBROW, fmc.FACEMESH_RIGHT_EYEBROW),
            points(fmc.FACEMESH_NOSE),
            points(fmc.FACEMESH_LIPS),
            tuple(range(MESH_POINTS)))


def group_matrix(heatmap: str) -> torch.Tensor:
    """``[C, K]`` 0/1 matrix: which points each channel draws. ``points`` is ``[1, 0]`` and
    means "all points, whatever K" (expanded when rendering)."""
    if channels(heatmap) == 1:
        return torch.ones(1, 0)
    groups = torch.zeros(len(REGIONS), MESH_POINTS)
    for c, idx in enumerate(_region_indices()):
        groups[c, list(idx)] = 1.0
    return groups


def render_heatmaps(points: torch.Tensor, groups: torch.Tensor, size: tuple[int, int],
                    sigma: float, found: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, C, H, W]`` in [0, 1] from ``points`` ``[B, K, 2]`` (x, y in [0, 1] of the width and
    height; pixel ``j`` covers ``[j, j + 1) / W``) and a ``[C, K]`` ``groups`` matrix (``[1, 0]``:
    one channel of all points). ``sigma`` is the Gaussian's standard deviation in pixels of the
    output. Rows with ``found`` False get all-zero maps."""
    b, k, _ = points.shape
    h, w = size
    if groups.shape[1] == 0:
        groups = groups.new_ones(groups.shape[0], k)
    elif groups.shape[1] != k:
        raise FbenchError(
            f"heatmap=regions draws mediapipe's {groups.shape[1]}-point face mesh, and the "
            f"run's landmarks have {k} points per face.",
            "use --set heatmap=points (any number of points).")
    p = points.float()
    groups = groups.to(p.device, p.dtype)
    ys = (torch.arange(h, device=p.device, dtype=p.dtype) + 0.5) / h
    xs = (torch.arange(w, device=p.device, dtype=p.dtype) + 0.5) / w
    inv = -0.5 / float(sigma) ** 2
    gy = torch.exp(((ys[None, None, :] - p[..., 1:2]) * h).square() * inv)   # [B, K, H]
    gx = torch.exp(((xs[None, None, :] - p[..., 0:1]) * w).square() * inv)   # [B, K, W]
    # [B, C, H, K] @ [B, 1, K, W]: the points of each channel summed, per image
    heat = (groups[None, :, None, :] * gy.transpose(1, 2)[:, None]) @ gx[:, None]
    heat = heat.clamp_(max=1.0)
    if found is not None:
        heat = heat * found.to(heat.dtype).view(b, 1, 1, 1)
    return heat
