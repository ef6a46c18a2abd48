"""The F3Net family (every variant's forward and backward is the contract test's): the
thesis's parameter counts, the heads against their definitions and their filters learning,
the Xception's initialisation (the thesis's and timm's), the multi-task loss and its two Dice
reductions, the thesis's recipe, local weights, and one run through the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detector_helpers import default_init_bound, make_batch, n_params, thesis_recipe
from scipy.fft import dctn
from torch import nn

import fbench
from fbench import FbenchError
from fbench_blocks.frequency import FADHead, LFSHead, band_masks
from fbench_blocks.losses import dice_loss, mask_losses
from fbench_blocks.xception import XceptionBackbone
from fbench_f3net.mixblock import MixBlock
from fbench_f3net.model import parse_mix_after

VARIANTS = ("xception", "fad", "lfs", "both", "mix", "mix-seg")
# Trainable parameters (3 classes, thesis depth) in the thesis's table, in millions.
THESIS_PARAMS = {"xception": 14.35, "fad": 14.55, "lfs": 14.35, "both": 28.92, "mix": 33.17,
                 "mix-seg": 35.17}




def test_registration_and_ablation_group():
    from fbench.plugins.registry import get_registry

    reg = get_registry()
    assert fbench.list_detectors("f3net-*") == sorted(f"f3net-{v}" for v in VARIANTS)
    for v in VARIANTS:
        spec = reg.get("detector", f"f3net-{v}")
        assert spec.family == "f3net" and spec.transform == "raw" and spec.input_size == 224
        assert spec.needs_masks == (v == "mix-seg")
        heads = {"xception": (), "fad": ("FAD",), "lfs": ("LFS",)}.get(v, ("FAD", "LFS"))
        assert spec.bench_groups == tuple(f"frequency: {h}" for h in heads)
    group, provider = reg.ablations()["f3net"]
    assert provider == "f3net"
    assert group.variants == {v: f"f3net-{v}" for v in VARIANTS}


def test_parameter_counts_match_the_thesis_table():
    for v in VARIANTS:
        model = fbench.create_detector(f"f3net-{v}", depth="thesis")
        assert abs(n_params(model) / 1e6 - THESIS_PARAMS[v]) < 0.05, v
        # Nothing is frozen: the DCT matrices and band masks are buffers, not parameters.
        assert all(p.requires_grad for p in model.parameters())
        # By default every stream starts as the thesis's did: PyTorch's default init keeps a
        # weight within 1/sqrt(fan_in), which timm's Kaiming normal on the stem overshoots.
        for stream in model.backbones():
            for conv in (stream.conv1, stream.conv2):
                w = conv.weight.detach()
                assert float(w.abs().max()) <= default_init_bound(w), v


def _has_default_init(weight: torch.Tensor) -> bool:
    """Whether ``weight`` looks drawn as PyTorch draws a fresh conv's: uniform within
    ±1/sqrt(fan_in), so with std bound/sqrt(3)."""
    bound = default_init_bound(weight)
    std = float(weight.std())
    return float(weight.abs().max()) <= bound and abs(std / (bound / 3 ** 0.5) - 1) < 0.1


def test_reference_init_is_pytorchs_default_as_the_thesis_and_timm_init_differs():
    torch.manual_seed(0)
    layers = ("conv1", "conv2", "block8.rep.1.conv1", "block8.rep.1.pointwise",
              "block12.skip", "conv4.pointwise")
    for in_chans, stride in ((12, 2), (6, 1)):  # the FAD and LFS streams' stems
        reference = XceptionBackbone(in_chans, stem_stride=stride)  # the default
        timm_init = XceptionBackbone(in_chans, stem_stride=stride, init="timm")
        # The thesis's own stem, a fresh conv, for comparison with the analytic bound.
        thesis_stem = nn.Conv2d(in_chans, 32, 3, stride, 0, bias=False)
        assert _has_default_init(thesis_stem.weight.detach())
        for name in layers:
            ours = reference.get_submodule(name).weight.detach()
            assert _has_default_init(ours), (in_chans, name)
            assert not _has_default_init(timm_init.get_submodule(name).weight.detach()), name
        # Batch norms start at weight 1, bias 0 under both.
        for model in (reference, timm_init):
            norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
            assert norms and all(bool((m.weight == 1).all() and (m.bias == 0).all())
                                 for m in norms)
    assert n_params(reference) == n_params(timm_init)
    with pytest.raises(FbenchError, match="unknown init"):
        fbench.create_detector("f3net-xception", init="kaiming")


def test_mix_runs_where_the_two_streams_round_to_different_sizes():
    # At 72 px the FAD stream is 5x5 after block 3 and the LFS stream 4x4.
    model = fbench.create_detector("f3net-mix-seg").eval()
    with torch.no_grad():
        out = model(make_batch(72, n=1))
    assert out.logits.shape == (1, 3) and out.mask.shape == (1, 1, 72, 72)


def test_full_depth_places_mixblocks_as_the_paper():
    model = fbench.create_detector("f3net-mix", depth="full")
    assert model.mix_after == (7, 12)
    assert [b.channels for b in model.mix] == [728, 1024]
    assert model.fad.blocks == tuple(range(1, 13))
    with torch.no_grad():
        assert model.eval()(make_batch(64, n=1)).logits.shape == (1, 3)
    thesis = fbench.create_detector("f3net-mix", mix_after="3,11")
    assert thesis.mix_after == (3, 11) and 4 not in thesis.fad.blocks


def test_options_are_checked():
    assert parse_mix_after(None, "thesis") == (8, 11)
    assert parse_mix_after([8, 11], "thesis") == parse_mix_after("8, 11", "thesis")
    for bad in ("5,11", "11,8", "x", "8,8"):
        with pytest.raises(FbenchError, match="mix_after"):
            parse_mix_after(bad, "thesis")
    with pytest.raises(FbenchError, match="depth"):
        fbench.create_detector("f3net-xception", depth="deep")
    with pytest.raises(FbenchError, match="lfs_order"):
        fbench.create_detector("f3net-lfs", lfs_order="backwards")
    with pytest.raises(FbenchError, match="takes no option"):
        fbench.create_detector("f3net-xception", lfs_order="paper")


def test_fad_bands_follow_the_thesis_definition_and_the_all_band_is_the_identity():
    masks = band_masks(224, 224)
    i, j = np.indices((224, 224))
    assert np.array_equal(masks[0].numpy(), (i + j <= 79).astype(np.float32))  # 224 // 2.82
    assert np.array_equal(masks[1].numpy(), ((i + j >= 79) & (i + j <= 112)).astype(np.float32))
    assert np.array_equal(masks[2].numpy(), (i + j >= 112).astype(np.float32))
    assert bool(masks[3].all())
    head = FADHead(size=32, learnable=False)
    x = torch.randn(2, 3, 32, 32)
    y = head(x)
    assert y.shape == (2, 12, 32, 32)
    assert torch.allclose(y[:, 9:12], x, atol=1e-5)  # the "all" band passes everything


def test_fad_learnable_filters_resample_to_other_sizes():
    head = FADHead(size=32)
    assert head.learnable.shape == (4, 32, 32)
    x = torch.randn(1, 3, 48, 48)
    y = head(x)
    assert y.shape == (1, 12, 48, 48)
    y.square().mean().backward()
    assert float(head.learnable.grad.abs().sum()) > 0


def _lfs_reference(x: torch.Tensor, head: LFSHead) -> np.ndarray:
    """LFS by its definition: unfold windows, scipy DCT per window, band statistics."""
    luma = np.array([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
    gray = ((x.double().numpy() * luma).sum(axis=1, keepdims=True) + 1.0) * 122.5
    s = head.window
    patches = F.unfold(torch.from_numpy(gray), s, padding=head.padding, stride=head.stride)
    n, _, windows = patches.shape
    coeffs = dctn(patches.numpy().transpose(0, 2, 1).reshape(n, windows, s, s), type=2,
                  norm="ortho", axes=(-2, -1))
    filters = head.filters().detach().double().numpy()
    sizes = head.band_size.double().numpy()
    out = []
    for m in range(head.bands):
        if head.order == "log-first":
            q = (np.log10(np.abs(coeffs) + head.eps) * filters[m]).sum(axis=(-2, -1)) / sizes[m]
        else:
            q = np.log10(np.abs(coeffs * filters[m]).sum(axis=(-2, -1)) / sizes[m] + head.eps)
        out.append(q)
    side = head.output_size(x.shape[-1])
    return np.stack(out, axis=1).reshape(n, head.bands, side, side)


@pytest.mark.parametrize("order", ["paper", "log-first"])
def test_lfs_head_equals_its_definition(order):
    torch.manual_seed(1)
    head = LFSHead(order=order)
    with torch.no_grad():
        head.learnable.normal_(0.0, 1.0)  # exercise the learnable part too
    x = torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(2))
    y = head(x)
    assert y.shape == (2, 6, 10, 10)
    np.testing.assert_allclose(y.detach().numpy(), _lfs_reference(x, head), rtol=1e-4,
                               atol=2e-3)
    assert head.output_size(224) == 112 and head.output_size(299) == 149
    y.square().mean().backward()  # the learnable band filters learn
    assert float(head.learnable.grad.abs().sum()) > 0


def test_mixblock_starts_as_the_identity():
    block = MixBlock(8)
    a, b = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5)
    for mode in (True, False):
        block.train(mode)
        out_a, out_b = block(a, b)
        assert torch.allclose(out_a, a) and torch.allclose(out_b, b)
    out_a, _ = block(a, b)
    out_a.sum().backward()
    assert block.gamma_into_a.grad is not None


def test_mix_seg_loss_uses_masks_only_where_known():
    model = fbench.create_detector("f3net-mix-seg", ce_weight=2.0, dice_weight=0.5).eval()
    batch = make_batch(32, n=3)
    batch.has_mask = torch.tensor([True, False, True])
    with torch.no_grad():
        out = model(batch)
        losses = model.loss(out, batch)
        batch.masks[1] = 1.0 - batch.masks[1]  # the unknown row's mask does not matter
        assert all(torch.equal(v, model.loss(out, batch)[k]) for k, v in losses.items())
        ce = F.cross_entropy(out.logits, batch.labels)
        assert torch.allclose(losses["ce"], 2.0 * ce)
        known = torch.tensor([0, 2])
        probs = out.mask[known]
        bce = F.binary_cross_entropy(probs, batch.masks[known])
        assert torch.allclose(losses["bce"], bce, atol=1e-5)
        assert torch.allclose(losses["dice"], 0.5 * dice_loss(probs, batch.masks[known]))
        batch.has_mask = torch.zeros(3, dtype=torch.bool)
        none = model.loss(out, batch)
        assert float(none["bce"]) == 0.0 and float(none["dice"]) == 0.0


def test_dice_reductions():
    probs = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]).view(2, 1, 2, 2)
    target = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]]).view(2, 1, 2, 2)
    per_image = dice_loss(probs, target, "image", smooth=0.0)
    assert torch.allclose(per_image, torch.tensor(0.5))        # (0 + 1) / 2
    whole = dice_loss(probs, target, "batch", smooth=0.0)
    assert torch.allclose(whole, torch.tensor(1.0 - 8.0 / 9.0))  # the big mask dominates


def test_batch_dice_is_the_thesis_one_dice_over_the_flattened_batch():
    # A generated image's all-one mask and a real image's all-zero mask, as the thesis's, and
    # a decoder that says 0.5 everywhere (logits 0).
    masks = torch.stack([torch.ones(1, 4, 4), torch.zeros(1, 4, 4)])
    logits = torch.zeros(2, 1, 4, 4)
    batch = mask_losses(logits, masks, None, "batch")["dice"]
    # One Dice over all 32 pixels, smooth 1e-4 (the thesis's): intersection 8, sums 16 + 16.
    assert torch.allclose(batch, torch.tensor(1.0 - 16.0001 / 32.0001))
    # Per image (smooth 1): (1 - 17/25) for the all-one mask, (1 - 1/9) for the all-zero one.
    image = mask_losses(logits, masks, None, "image")["dice"]
    assert torch.allclose(image, torch.tensor((8 / 25 + 8 / 9) / 2))


def test_mix_seg_thesis_protocol_trains_with_batch_dice():
    recipe = thesis_recipe("f3net-mix-seg")
    assert recipe["options"] == {"dice_reduction": "batch"}
    model = fbench.create_detector("f3net-mix-seg", **recipe["options"]).eval()
    batch = make_batch(32)
    batch.masks = torch.stack([torch.ones(1, 32, 32), torch.zeros(1, 32, 32)])
    with torch.no_grad():
        out = model(batch)
        dice = model.loss(out, batch)["dice"]
    p, t = out.mask.double(), batch.masks.double()
    by_hand = 1 - (2 * (p * t).sum() + 1e-4) / (p.sum() + t.sum() + 1e-4)
    assert torch.allclose(dice.double(), by_hand, atol=1e-6)
    assert not torch.allclose(dice, dice_loss(out.mask, batch.masks, "image"), atol=1e-3)


def test_thesis_protocols():
    batch = {"xception": 192, "fad": 192, "lfs": 192, "both": 72, "mix": 72, "mix-seg": 96}
    for v in VARIANTS:
        recipe = thesis_recipe(f"f3net-{v}")
        assert recipe["lr"] == 2e-3 and recipe["batch_size"] == batch[v], v
        # Dice is the only model option the thesis's recipe changes from fbench's defaults.
        assert recipe.get("options", {}) == ({"dice_reduction": "batch"} if v == "mix-seg"
                                             else {}), v


def test_pretrained_xception_weights_load_into_every_stream(tmp_path):
    import timm

    xception = timm.create_model("legacy_xception", pretrained=False, num_classes=1000)
    with torch.no_grad():
        xception.conv1.weight.fill_(0.3)
    path = tmp_path / "xception.pth"
    torch.save(xception.state_dict(), path)
    model = fbench.create_detector("f3net-both", pretrained_path=str(path))
    assert torch.allclose(model.fad.conv1.weight, torch.full_like(model.fad.conv1.weight, 0.075))
    assert torch.allclose(model.lfs.conv1.weight, torch.full_like(model.lfs.conv1.weight, 0.15))
    for stream in (model.fad, model.lfs):
        assert torch.equal(stream.block8.rep[1].pointwise.weight,
                           xception.block8.rep[1].pointwise.weight)
    assert model.fc.out_features == 3


def test_pretrained_f3net_checkpoint_round_trips_and_bad_files_are_refused(tmp_path):
    source = fbench.create_detector("f3net-lfs")
    path = tmp_path / "lfs.pt"
    torch.save({"model": source.state_dict()}, path)  # as an fbench checkpoint wraps it
    loaded = fbench.create_detector("f3net-lfs", pretrained_path=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    with pytest.raises(FbenchError, match="does not exist"):
        fbench.create_detector("f3net-lfs", pretrained_path=str(tmp_path / "none.pt"))
    evil = tmp_path / "evil.pt"
    torch.save({"model": object()}, evil)
    with pytest.raises(FbenchError, match="cannot load weights"):
        fbench.create_detector("f3net-lfs", pretrained_path=str(evil))


def test_mix_seg_trains_through_the_engine(tmp_path):
    run = fbench.run(detector="f3net-mix-seg", dataset="synthetic", epochs=1, batch_size=12,
                     input_size=32, seed=0, out=str(tmp_path),
                     dataset_options={"n_per_class": 8, "image_size": 32})
    assert run.status["state"] == "completed"
    assert {"train_ce", "train_bce", "train_dice"} <= set(run.epochs.columns)
    assert "dice" in run.predictions.columns  # the mask output is scored
