"""The speed settings of a run (issue 19): ``workers`` (``auto``: 0 on CPU, on CUDA enough to
feed the GPU), cuDNN autotuning, fused Adam, ``channels_last`` and ``compile``. They change
speed, not results: recorded in ``config.json``, no part of the configuration a table compares,
and on CPU by default nothing a run computes moves.

Every shipped detector is checked here under channels_last (the same logits as in the default
layout, same weights, eval mode) and for one bf16 autocast training step (a finite loss and
finite gradients), at 32 px, where F3Net-Mix's MixBlocks see 2x2 feature maps (at 16 px
they see 1x1, on which both layouts are one), and F3Net's parts on larger maps on their own:
a layout bug (a ``.view`` of a channels_last tensor) would scramble them.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from tiny import tiny_cnn

import fbench
from fbench.errors import FbenchError
from fbench.plugins.batch import Batch
from fbench.plugins.registry import get_registry, registered, reset_registry
from fbench.train import runtime
from fbench.train.config import RunConfig
from fbench.use.sample_batch import random_batch
from fbench_landmarks.heatmaps import MESH_POINTS

SIZE = 32
CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU


def _registered_detectors() -> list[str]:
    # collected at import, under the isolation the conftest gives every test (built-ins only)
    reset_registry()
    names = get_registry().names("detector")
    reset_registry()
    return names


DETECTORS = _registered_detectors()


def _build(name: str) -> tuple[fbench.DetectorSpec, torch.nn.Module]:
    """The detector as a run at SIZE px builds it (its options' defaults, the run's size)."""
    from fbench.train.resolve import build_detector

    spec = get_registry().get("detector", name)
    return spec, build_detector(spec, {}, SIZE)


# -- workers ---------------------------------------------------------------------------------

def test_workers_auto_is_0_on_cpu_and_a_number_stays_as_given():
    assert RunConfig().workers == "auto"
    assert runtime.resolve_workers("auto", CPU) == 0
    assert runtime.resolve_workers(3, CPU) == 3
    assert runtime.resolve_workers(0, CUDA) == 0


@pytest.mark.parametrize(("cores", "local", "expected"),
                         [(16, "1", 8), (4, "1", 3), (1, "1", 1), (16, "4", 3), (64, "2", 8)])
def test_workers_auto_on_cuda_leaves_a_core_to_each_gpu_process(monkeypatch, cores, local,
                                                                 expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
    assert runtime.resolve_workers("auto", CUDA) == expected
    # images kept in memory per process: more processes would each keep a copy
    assert runtime.resolve_workers("auto", CUDA, in_memory=True) == 0


def test_loader_processes_prefetch_and_pin_only_where_they_help():
    from fbench.train.loaders import loader_processes

    assert loader_processes(0, CPU) == {"num_workers": 0, "pin_memory": False}
    assert loader_processes(2, CUDA) == {"num_workers": 2, "pin_memory": True,
                                         "persistent_workers": True,
                                         "prefetch_factor": runtime.PREFETCH_FACTOR}


@pytest.mark.parametrize(("value", "said"), [
    ("many", 'setting workers must be a number of processes (0 or more) or "auto"'),
    (-1, 'setting workers must be a number of processes (0 or more) or "auto"'),
    (1.5, 'setting workers must be an integer or "auto"'),
    (True, 'setting workers must be an integer or "auto"'),
])
def test_workers_setting_is_checked_in_one_line(value, said):
    with pytest.raises(FbenchError) as err:
        RunConfig(workers=value)
    assert err.value.format_message().startswith(said)
    assert "\n" not in err.value.format_message()


def test_cli_takes_workers_auto_or_a_number_and_refuses_anything_else():
    from click.testing import CliRunner

    from fbench.cli import cli
    from fbench.cli.options import Workers

    assert Workers().convert("auto", None, None) == "auto"
    assert Workers().convert("4", None, None) == 4
    result = CliRunner().invoke(cli, ["run", "--workers", "many"])
    assert result.exit_code == 2
    assert "'many' is neither a number of processes (0 or more) nor auto" in result.output


def test_speed_settings_merge_from_flags_and_stay_out_of_the_configuration(tmp_path):
    from fbench.cli.config_merge import merge_run_config, refuse_changes_on_resume
    from fbench.report.tables import configuration_key

    toml = tmp_path / "run.toml"
    toml.write_text('compile = true\nchannels_last = "off"\nworkers = 2\n')
    config = merge_run_config(toml, {"workers": None, "channels_last": None}, {}, {})
    assert (config.compile, config.channels_last, config.workers) == (True, "off", 2)
    config = merge_run_config(None, {"workers": "auto", "channels_last": "on"}, {},
                              {"compile": True})
    assert (config.compile, config.channels_last, config.workers) == (True, "on", "auto")
    with pytest.raises(FbenchError, match="--compile cannot change them"):
        refuse_changes_on_resume(None, {}, {}, {"compile": True})
    base = RunConfig().to_dict()
    faster = {**base, "workers": 8, "channels_last": "on", "compile": True,
              "channels_last_used": True}
    assert configuration_key(faster) == configuration_key(base)


# -- cuDNN, fused Adam, channels_last: the choosing functions ---------------------------------

def test_cudnn_autotunes_on_cuda_only_and_is_restored_after():
    before = (torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(False)  # a CPU run earlier in this process sets it
        with runtime.cudnn_autotune(CPU):
            assert torch.backends.cudnn.benchmark is False
        with runtime.cudnn_autotune(CUDA):
            assert torch.backends.cudnn.benchmark is True
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before[0]
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])


def test_a_cpu_run_leaves_the_process_as_it_found_it():
    # its deterministic kernels must not keep a later CUDA run in the process from autotuning
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        torch.use_deterministic_algorithms(False)
        with runtime.training_modes(False, CPU, False):
            runtime.seed_everything(0, deterministic=True)  # as a CPU run does
            assert torch.are_deterministic_algorithms_enabled()
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


@pytest.mark.parametrize("ask", ["cudnn", "torch"])
def test_cudnn_does_not_autotune_where_deterministic_kernels_were_asked_for(ask):
    # autotuning may pick another algorithm in each of two runs a check compares
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
              torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = ask == "cudnn"
        torch.use_deterministic_algorithms(ask == "torch", warn_only=True)
        with runtime.cudnn_autotune(CUDA):
            assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[:2]
        torch.use_deterministic_algorithms(before[2], warn_only=before[3])


def test_the_optimizer_is_fused_only_on_cuda():
    assert not runtime.fused_optimizer("adam", CPU)
    assert not runtime.fused_optimizer("adam", None)
    assert runtime.fused_optimizer("adam", CUDA) and runtime.fused_optimizer("adamw", CUDA)
    assert not runtime.fused_optimizer("sgd", CUDA)
    for name in ("adam", "adamw"):
        opt = runtime.make_optimizer(name, [torch.nn.Parameter(torch.zeros(2))], 1e-3, 0.0,
                                     CPU)
        assert not opt.defaults.get("fused")  # CPU numbers stay as they were


@pytest.mark.parametrize(("setting", "device", "allowed", "expected"), [
    ("auto", CPU, True, False), ("auto", CUDA, True, True), ("auto", CUDA, False, False),
    ("on", CPU, True, True), ("on", CPU, False, False), ("off", CUDA, True, False)])
def test_channels_last_setting(setting, device, allowed, expected):
    assert runtime.wants_channels_last(setting, device, allowed) is expected


def test_batches_follow_the_models_memory_format():
    model = tiny_cnn()
    assert runtime.memory_format_of(model) is None
    model = model.to(memory_format=torch.channels_last)
    assert runtime.memory_format_of(model) is torch.channels_last
    raw = Batch(images=torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8))
    plain = runtime.prepare_batch(copy.copy(raw), torch.nn.Identity(), CPU)
    assert plain.images.is_contiguous()
    nhwc = runtime.prepare_batch(copy.copy(raw), torch.nn.Identity(), CPU, torch.channels_last)
    assert nhwc.images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain.images, nhwc.images)


def test_compile_failures_read_as_one_line():
    from torch._dynamo.exc import TorchDynamoException  # what dynamo's errors derive from

    with pytest.raises(FbenchError) as err, runtime.compile_failures_said(True):
        raise TorchDynamoException("no C++ compiler\n  a page of details")
    text = err.value.format_message()
    assert text.startswith("torch.compile could not compile the model:") and "\n" not in text
    assert "without --compile" in text
    with pytest.raises(ValueError), runtime.compile_failures_said(True):
        raise ValueError("a model bug stays itself")


def test_the_first_step_is_kept_out_of_the_throughput(monkeypatch):
    """With ``first_step_apart`` (a compiled run's first epoch) the first step's time goes to
    ``compile_warmup_seconds`` (above the other steps' mean) and not into images/s."""
    from types import SimpleNamespace

    from rich.console import Console

    from fbench.plugins.detector import as_detector
    from fbench.progress import make_progress
    from fbench.train.epoch import train_one_epoch

    # the loop's clock: its start, the end of the first step, the end of the epoch (3 steps)
    ticks = iter([0.0, 7.0, 10.0])
    clock = SimpleNamespace(perf_counter=lambda: next(ticks))
    monkeypatch.setattr("fbench.train.epoch.time", clock)
    model = as_detector(tiny_cnn())
    batches = [Batch(images=torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8),
                     labels=torch.tensor([0, 1])) for _ in range(3)]
    optimizer = runtime.make_optimizer("adam", model.parameters(), 1e-3, 0.0, CPU)
    with make_progress(Console(quiet=True), False) as bar:
        row = train_one_epoch(model, model, torch.nn.Identity(), optimizer, batches, CPU,
                              "fp32", bar, 1, Path(os.devnull), first_step_apart=True)
    assert row["compile_warmup_seconds"] == pytest.approx(7.0 - 1.5)
    assert row["train_images_per_s"] == pytest.approx(4 / 3.0)  # steps 2 and 3 only
    assert row["train_seconds"] == pytest.approx(10.0)


# -- every shipped detector under channels_last and bf16 --------------------------------------

@pytest.mark.parametrize("name", DETECTORS)
def test_detector_gives_the_same_outputs_under_channels_last(name):
    torch.manual_seed(0)
    spec, model = _build(name)
    if not spec.channels_last:
        pytest.skip(f"{name} declares channels_last=False")
    model.eval()
    batch = random_batch(spec, SIZE, landmark_points=MESH_POINTS)
    nhwc_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert runtime.memory_format_of(nhwc_model) is torch.channels_last
    nhwc_batch = copy.copy(batch)
    nhwc_batch.images = batch.images.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        plain, nhwc = model(batch), nhwc_model(nhwc_batch)
    # logits of a freshly built model are small (about 0.01): a scrambled layout moves them
    # by their own size, float reordering by about 1e-9
    torch.testing.assert_close(nhwc.logits, plain.logits, rtol=1e-3, atol=1e-5)
    if plain.mask is not None:
        torch.testing.assert_close(nhwc.mask, plain.mask, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("part", ["mixblock", "lfs", "fad"])
def test_f3net_parts_under_channels_last(part):
    """The parts of F3Net whose original code broke under channels_last (a ``.view`` of a
    tensor that is no longer contiguous), on feature maps large enough to tell the layouts
    apart."""
    from fbench_blocks.frequency import FADHead, LFSHead
    from fbench_f3net.mixblock import MixBlock

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if part == "mixblock":
        module = MixBlock(8).eval()
        with torch.no_grad():  # gamma 0 makes the block the identity: give it a say
            module.gamma_into_a.fill_(1.0)
            module.gamma_into_b.fill_(-1.0)
        inputs = [torch.randn(2, 8, 6, 6, generator=g), torch.randn(2, 8, 6, 6, generator=g)]
    else:
        module = (LFSHead() if part == "lfs" else FADHead(size=16)).eval()
        inputs = [torch.randn(2, 3, 16, 16, generator=g)]
    nhwc_module = copy.deepcopy(module).to(memory_format=torch.channels_last)
    with torch.no_grad():
        plain = module(*inputs)
        nhwc = nhwc_module(*[x.contiguous(memory_format=torch.channels_last) for x in inputs])
    for a, b in zip(plain if isinstance(plain, tuple) else (plain,),
                    nhwc if isinstance(nhwc, tuple) else (nhwc,), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_trains_a_bf16_step(name):
    torch.manual_seed(0)
    spec, model = _build(name)
    model.train()
    batch = random_batch(spec, SIZE, landmark_points=MESH_POINTS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        losses = model.loss(out, batch)
    loss = sum(losses.values())
    assert bool(torch.isfinite(loss)), {k: float(v) for k, v in losses.items()}
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads
    bad = [n for n, g in grads.items() if not bool(torch.isfinite(g).all())]
    assert not bad, bad


def test_the_spec_says_where_channels_last_breaks():
    spec = fbench.DetectorSpec(name="nchw-only", summary="t", factory=tiny_cnn,
                               channels_last=False)
    assert spec.channels_last is False
    assert fbench.DetectorSpec(name="any", summary="t", factory=tiny_cnn).channels_last
    assert all(isinstance(get_registry().get("detector", n).channels_last, bool)
               for n in DETECTORS)


# -- --compile, end to end --------------------------------------------------------------------

class Tiny:
    @fbench.hookimpl
    def register_detectors(self, register):
        register(fbench.DetectorSpec(name="fast-tiny", summary="t", input_size=16,
                                     factory=lambda num_classes=3: tiny_cnn(num_classes)))


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:run .* collapsed")  # one epoch of two steps: expected
@pytest.mark.skipif(_compiler() is None,
                    reason="torch.compile on CPU needs a C++ compiler (c++ or g++), none found")
def test_compile_trains_an_epoch_and_its_checkpoint_loads_uncompiled(tmp_path):
    from fbench.use.model import load_trained

    with registered(Tiny(), name="fast-tiny"):
        run = fbench.run(detector="fast-tiny", dataset="synthetic", device="cpu", epochs=1,
                         batch_size=4, compile=True, out=str(tmp_path),
                         dataset_options={"n_per_class": 6, "image_size": 16}, progress=False)
        config = json.loads((run.path / "config.json").read_text())
        summary = json.loads((run.path / "summary.json").read_text())
        assert config["compile"] is True and config["workers"] == 0  # auto, resolved on CPU
        assert config["channels_last"] == "auto" and config["channels_last_used"] is False
        assert summary["compile_warmup_seconds"] > 0
        state = torch.load(run.path / "checkpoints" / "best.pt", weights_only=True)
        assert not any(k.startswith("_orig_mod.") for k in state["model"])
        model, _, _ = load_trained(run.path)  # an uncompiled model, strict keys
        assert not hasattr(model, "_orig_mod")
