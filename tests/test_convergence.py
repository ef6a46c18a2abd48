"""The pieces that make a run converge and say so: the learning-rate schedule (values per
step), precise BatchNorm statistics, and the stopping rule."""

from __future__ import annotations

import math

import pytest
import torch

from fbench.train.convergence import (
    StopRule,
    lr_factor,
    make_scheduler,
    recompute_batchnorm,
    stop_record,
)


def _rates(schedule: str, epochs: int, steps: int, warmup: float) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = make_scheduler(opt, schedule, epochs, steps, warmup)
    out = []
    for _ in range(epochs * steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_constant_schedule_is_the_base_rate_at_every_step():
    assert _rates("constant", 3, 4, 0) == [0.1] * 12


def test_linear_warmup_then_cosine_to_zero_at_the_ceiling():
    rates = _rates("cosine", 4, 5, warmup=1)  # 20 steps, 5 of warm-up
    assert rates[:5] == pytest.approx([0.1 * k / 6 for k in range(1, 6)])
    assert rates[5] == pytest.approx(0.1)  # the first step after warm-up is the full rate
    assert rates[5 + 15 // 2] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 7 / 15)))
    assert all(a >= b for a, b in zip(rates[5:], rates[6:], strict=False))  # never rises
    assert rates[-1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 14 / 15)))


def test_step_schedule_falls_tenfold_at_half_and_three_quarters():
    rates = _rates("step", 8, 1, 0)
    assert rates == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2)


def test_scheduler_state_resumes_the_same_curve():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = make_scheduler(opt, "cosine", 3, 4, 0.5)
    for _ in range(5):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched2 = make_scheduler(opt2, "cosine", 3, 4, 0.5)
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr()
    opt.step(), sched.step(), opt2.step(), sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(0, 10, 0, "exponential")


def test_precise_bn_gives_the_statistics_of_the_data_not_of_the_last_updates():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8),
                              torch.nn.Dropout(0.5))
    data = [torch.randn(16, 4) * 3 + 1 for _ in range(6)]
    # stale: statistics from a few updates on other data, as early training leaves them
    net.train()
    net(torch.randn(16, 4) * 0.1)
    stale = net[1].running_var.clone()
    rng = torch.get_rng_state()
    n = recompute_batchnorm(net, data, net)
    assert n == 6 and not net.training and net[1].momentum == 0.1
    assert torch.equal(torch.get_rng_state(), rng)  # dropout off: no random number drawn
    with torch.no_grad():
        h = net[0](torch.cat(data))
    assert torch.allclose(net[1].running_mean, h.mean(0), atol=1e-4)
    # cumulative average of per-batch unbiased variances: close to the pooled variance
    assert torch.allclose(net[1].running_var, h.var(0), rtol=0.15)
    assert not torch.allclose(stale, net[1].running_var, rtol=0.5)


def test_precise_bn_rescues_a_model_that_separates_classes_with_batch_statistics():
    """The case of the issue: a network whose BatchNorm running statistics are stale predicts
    one class in eval mode although, with batch statistics, it separates the classes."""
    torch.manual_seed(0)
    x = torch.cat([torch.randn(60, 2) + torch.tensor([4.0, 0]),
                   torch.randn(60, 2) + torch.tensor([-4.0, 0])]) + 50  # far from the origin
    y = torch.cat([torch.zeros(60), torch.ones(60)]).long()
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(2), torch.nn.Linear(2, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 0], [-1.0, 0]]))
        net[1].bias.zero_()
    net.train()
    assert (net(x).argmax(1) == y).float().mean() > 0.95  # batch statistics: separates
    net[0].reset_running_stats()  # running stats describe other data (mean 0, var 1)
    net.eval()
    assert net(x).argmax(1).unique().numel() == 1  # eval mode: one class, "collapsed"
    recompute_batchnorm(net, x.split(30), net)
    assert (net(x).argmax(1) == y).float().mean() > 0.95


def test_a_model_without_batchnorm_is_left_alone():
    net = torch.nn.Linear(2, 2)
    assert recompute_batchnorm(net, [torch.randn(3, 2)], net) == 0


def _log(scores, collapsed=None):
    collapsed = collapsed or [False] * len(scores)
    return [{"epoch": i + 1, "val_macro_f1": s, "val_collapsed": c}
            for i, (s, c) in enumerate(zip(scores, collapsed, strict=True))]


def test_patience_stops_on_a_plateau_only():
    rule = StopRule(patience=2, min_delta=0.01)
    assert rule.decide(_log([0.3, 0.5, 0.6])) is None
    assert rule.decide(_log([0.3, 0.5, 0.505])) is None  # one epoch without a real gain
    assert rule.decide(_log([0.3, 0.5, 0.505, 0.509])) == "plateau"
    assert StopRule().decide(_log([0.5] * 10)) is None  # no patience: never


def test_collapse_stops_after_k_collapsed_epochs_in_a_row():
    rule = StopRule(collapse_epochs=2)
    assert rule.decide(_log([0.2, 0.2], [True, False])) is None
    assert rule.decide(_log([0.2, 0.3, 0.2, 0.2], [True, False, True, True])) == "collapse"


def test_converged_means_a_plateau_or_a_ceiling_reached_without_gains():
    rule = StopRule(patience=2)
    assert stop_record("plateau", 5, rule, _log([0.3, 0.5, 0.6, 0.6, 0.6]))["converged"]
    still_improving = _log([0.3, 0.4, 0.5, 0.6])
    assert not stop_record("ceiling", 4, rule, still_improving)["converged"]
    flat = _log([0.3, 0.6, 0.6, 0.6, 0.6])
    assert stop_record("ceiling", 5, StopRule(), flat)["converged"]  # window of 3 epochs
    assert not stop_record("ceiling", 5, StopRule(), _log([0.3, 0.4, 0.5, 0.55, 0.6]))[
        "converged"]
    nan = stop_record("nan", 3, rule, flat, "loss became nan")
    assert not nan["converged"] and nan["detail"] == "loss became nan"


def test_precise_bn_without_batches_keeps_the_statistics_there_were():
    net = torch.nn.BatchNorm1d(3)
    net.train()
    net(torch.randn(8, 3) + 5)
    before = net.running_mean.clone()
    assert recompute_batchnorm(net, [], net) == 0
    assert torch.equal(net.running_mean, before) and net.momentum == 0.1
