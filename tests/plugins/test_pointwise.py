"""The strided 1 × 1 convolution that dodges oneDNN's channels_last backward bug (oneDNN issue
6035: under 16 input channels, stride 2, nhwc, from about 96 px the weight gradient writes past
its workspace and the process dies): same sums and gradients as ``nn.Conv2d``, the buggy kernel
never reached, only the affected convolutions swapped, and a GraftNet channels_last training
step at the size that used to crash."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from fbench_blocks.pointwise import SubsampledPointwiseConv, safe_strided_pointwise

CL = torch.channels_last


def _pair(cin: int, stride: int = 2) -> tuple[nn.Conv2d, nn.Conv2d]:
    torch.manual_seed(0)
    plain = nn.Conv2d(cin, 8, 1, stride, bias=True)
    swapped = nn.Conv2d(cin, 8, 1, stride, bias=True)
    swapped.load_state_dict(plain.state_dict())
    assert safe_strided_pointwise(nn.Sequential(swapped)) == ["0"]
    return plain, swapped


@pytest.mark.parametrize("layout", [torch.contiguous_format, CL])
def test_same_outputs_and_gradients_as_a_plain_convolution(layout):
    plain, swapped = _pair(6)
    swapped = swapped.to(memory_format=layout)
    x = torch.randn(2, 6, 33, 33)  # odd: the last row and column are kept by both
    x1 = x.clone().requires_grad_()
    x2 = x.clone().contiguous(memory_format=layout).requires_grad_()
    y1, y2 = plain(x1), swapped(x2)
    assert y1.shape == y2.shape == (2, 8, 17, 17)
    torch.testing.assert_close(y2, y1)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(swapped.weight.grad, plain.weight.grad)
    torch.testing.assert_close(swapped.bias.grad, plain.bias.grad)
    torch.testing.assert_close(x2.grad, x1.grad)


def test_the_buggy_kernel_is_not_reached_for_channels_last(monkeypatch):
    _, swapped = _pair(6)
    seen = []
    original = torch.nn.functional.conv2d

    def spy(x, weight, bias=None, stride=1, *args):
        seen.append(stride)
        return original(x, weight, bias, stride, *args)

    monkeypatch.setattr(torch.nn.functional, "conv2d", spy)
    swapped(torch.randn(1, 6, 8, 8).contiguous(memory_format=CL))
    assert seen == [1]  # stride 1 on the subsampled map, never the nhwc stride-2 kernel
    seen.clear()
    swapped(torch.randn(1, 6, 8, 8))  # channels-first: nn.Conv2d's own strided path, unchanged
    assert seen == [(2, 2)]
    # under torch.compile, whose inductor may make convolutions channels_last by itself
    seen.clear()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    swapped(torch.randn(1, 6, 8, 8))
    assert seen == [1]


def test_only_affected_convolutions_are_swapped():
    model = nn.Sequential(
        nn.Conv2d(6, 8, 1, 2),                # affected
        nn.Conv2d(16, 8, 1, 2),               # 16 channels: oneDNN's block, not affected
        nn.Conv2d(6, 8, 1, 1),                # stride 1
        nn.Conv2d(6, 8, 3, 2),                # 3 × 3
        nn.Conv2d(6, 8, 1, 2, padding=1),     # padded: subsampling would not be the same sum
    )
    assert safe_strided_pointwise(model) == ["0"]
    assert [type(m) is SubsampledPointwiseConv for m in model] == [True, False, False, False,
                                                                  False]
    assert set(model.state_dict()) == {f"{i}.{p}" for i in range(5) for p in ("weight", "bias")}


def test_graftnet_swaps_its_first_lfs_skip():
    import fbench

    model = fbench.create_detector("graftnet")
    swapped = [n for n, m in model.named_modules() if isinstance(m, SubsampledPointwiseConv)]
    assert swapped == ["lfs.0.skip"]  # 6 → 32 channels, 1 × 1, stride 2


GRAFTNET_STEP = """
import torch, fbench
from fbench.plugins.registry import get_registry
from fbench.use.sample_batch import random_batch
spec = get_registry().get("detector", "graftnet")
model = fbench.create_detector("graftnet", input_size=192).to(memory_format=torch.channels_last)
batch = random_batch(spec, 192, n=2, landmark_points=0)  # GraftNet reads none
batch.images = batch.images.contiguous(memory_format=torch.channels_last)
loss = sum(model.loss(model(batch), batch).values())
loss.backward()
print("finite", bool(torch.isfinite(loss)))
"""


def _step_in_a_child(code: str) -> None:
    # a child process, because the bug kills its process rather than raising
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finite True" in proc.stdout


def test_a_graftnet_channels_last_step_at_the_crashing_size_completes():
    # 192 px puts a 96² six-channel map into lfs.0.skip, the smallest size that crashed
    _step_in_a_child(GRAFTNET_STEP)


@pytest.mark.slow
def test_a_compiled_graftnet_step_at_the_crashing_size_completes():
    # channels-first input: inductor's own channels_last layout reached the bug (a segmentation
    # fault at 224 px before the fix); compiling takes a minute or more on two cores
    code = GRAFTNET_STEP.replace(".to(memory_format=torch.channels_last)", "").replace(
        "batch.images = batch.images.contiguous(memory_format=torch.channels_last)\n", "")
    code = code.replace("model(batch)", "torch.compile(model)(batch)")
    assert "compile" in code and "channels_last" not in code
    _step_in_a_child(code)
