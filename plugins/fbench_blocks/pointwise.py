"""A strided 1 × 1 convolution that channels_last on the CPU can train.

oneDNN's CPU kernel for the weight gradient of a 1 × 1 convolution with stride > 1, in the
channels_last (nhwc) layout, writes past its workspace when the input has fewer than 16
channels (oneDNN issue 6035, open): with torch 2.14.1 on this project's Xeon a training step
dies with ``free(): invalid next size`` or ``double free or corruption`` from 96 px up, and the
issue reports wrong weight gradients without a crash on other machines. GraftNet's first LFS
block (6 → 32 channels, stride 2 on a 112² map at 224 px) is such a convolution.

A 1 × 1 convolution with stride ``s`` and no padding is the same sum as a stride-1 convolution of
the input subsampled every ``s`` pixels, which oneDNN computes with another kernel. The module
below takes that path only for a channels_last input on the CPU and under torch.compile (a
compiled GraftNet training step at 224 px died with a segmentation fault in its backward even
with channels-first input, and completes with this path: inductor can choose the channels_last
layout for convolutions by itself), so every other run computes exactly what it did before
(the committed runs stay bit-identical); the parameters and their names are unchanged, so
checkpoints load either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

AFFECTED_BELOW = 16
"""Inputs with fewer channels than this hit oneDNN's bug (its channel block, 16 on AVX-512)."""


class SubsampledPointwiseConv(nn.Conv2d):
    """An ``nn.Conv2d`` (1 × 1, stride > 1, no padding) that, for a channels_last CPU input or
    under torch.compile, subsamples first and convolves with stride 1. Make one with
    :func:`safe_strided_pointwise`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch.compile's inductor may lay convolutions out channels_last by itself, whatever
        # the input's layout: a compiled model takes the safe path too
        if torch.compiler.is_compiling() or (
                x.device.type == "cpu" and x.dim() == 4
                and x.is_contiguous(memory_format=torch.channels_last)):
            sh, sw = self.stride
            return F.conv2d(x[..., ::sh, ::sw], self.weight, self.bias, 1, 0, self.dilation,
                            self.groups)
        return super().forward(x)


def _affected(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and max(conv.stride) > 1
            and conv.padding == (0, 0) and conv.in_channels < AFFECTED_BELOW)


def safe_strided_pointwise(model: nn.Module) -> list[str]:
    """Turn every affected convolution of ``model`` (1 × 1, stride > 1, no padding, under
    :data:`AFFECTED_BELOW` input channels) into a :class:`SubsampledPointwiseConv` in place,
    keeping its parameters; returns their names."""
    names = [name for name, module in model.named_modules() if _affected(module)]
    for name in names:
        model.get_submodule(name).__class__ = SubsampledPointwiseConv
    return names


__all__ = ["AFFECTED_BELOW", "SubsampledPointwiseConv", "safe_strided_pointwise"]
