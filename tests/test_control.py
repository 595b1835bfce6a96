"""Target-density control: λ moves the right way, keeps group ratios, reaches the target."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import sparseopt as so
from sparseopt.control import TargetDensity, group_densities, penalised_density
from sparseopt.metrics import density
from sparseopt.models import build_model


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))


def test_group_densities_are_each_penalised_groups_share_of_nonzero_weights() -> None:
    net = _net()
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3, lam_scale="layer")
    with torch.no_grad():
        net[0].weight[:6] = 0  # 6 of 8 rows: 20 of 80 weights left
        net[2].weight[0, :4] = 0  # 20 of 24 left
    penalised = [i for i, g in enumerate(opt.param_groups) if g["penalty"] != "none"]
    assert group_densities(opt) == [(penalised[0], 0.25), (penalised[1], 20 / 24)]
    assert penalised_density(opt) == 40 / 104


def test_dense_network_raises_lam_empty_network_lowers_it() -> None:
    net = _net()
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3)
    ctl = TargetDensity(0.2, gain=1.0, kp=0.0, max_factor=2.0)
    assert penalised_density(opt) == 1.0
    assert ctl.update(net, opt) == pytest.approx(2e-3)  # log(1/0.2) > log 2: clipped at x2
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    assert ctl.update(net, opt) == pytest.approx(1e-3)
    assert [h[1] for h in ctl.history] == [1.0, 0.0]


def test_a_sticky_plant_holds_lam_once_its_density_stops_rising() -> None:
    """Anti-windup for LinBreg/AdaBreg: too dense, λ rises while the density still rises
    and holds once it does not (by 1 % or more since λ last rose); a plain controller
    keeps raising it."""
    net = _net()
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3)
    sticky = TargetDensity(0.2, gain=1.0, max_factor=2.0, sticky=True)
    plain = TargetDensity(0.2, gain=1.0, max_factor=2.0)
    for ctl in (sticky, plain):
        opt.set_lam(1e-3)
        lams = [ctl.update(net, opt) for _ in range(3)]  # the density stays 1.0
        assert lams[0] == pytest.approx(2e-3)
        assert lams[1:] == (
            [pytest.approx(2e-3)] * 2 if ctl.sticky else [pytest.approx(4e-3), pytest.approx(8e-3)]
        )
    assert TargetDensity.for_optimizer("adabreg", 0.1).sticky
    assert TargetDensity.for_optimizer("linbreg", 0.1).sticky
    assert not TargetDensity.for_optimizer("splitlbi", 0.1).sticky  # λ acts on Γ at once
    # the methods that start dense approach D along a ramp (rounds 28-29); the others at once
    for name in ("proxsgd", "rvsm", "rda"):
        assert TargetDensity.for_optimizer(name, 0.1).ramp == 0.8
    for name in ("linbreg", "adabreg", "splitlbi"):
        assert TargetDensity.for_optimizer(name, 0.1).ramp == 0.0


def test_a_sticky_plant_that_creeps_raises_lam_again() -> None:
    """The growth is measured from the density at which λ last rose, not from the previous
    update: a support creeping by 0.75 % per update (under the 1 % threshold each time)
    raises λ once it has grown by 1 % in all (round 30: AdaBreg's LeNet-5 crept from
    13.7 % to 19.4 % under a held λ when each update was compared with the last)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(100, 50), nn.ReLU(), nn.Linear(50, 3))
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3)
    keep = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight[:25].zero_()  # 2 650 of 5 150 penalised weights: d = 0.515
    ctl = TargetDensity(0.2, gain=1.0, max_factor=2.0, sticky=True)
    lam = ctl.update(net, opt)
    assert lam == pytest.approx(2e-3)  # too dense: λ rises
    assert ctl.update(net, opt) == pytest.approx(lam)  # not grown since: λ holds
    lams = []
    for k in range(1, 4):  # 20 more weights each time: +0.75 % of the density
        with torch.no_grad():
            net[0].weight[24, : 20 * k] = keep[24, : 20 * k]
        lams.append(ctl.update(net, opt))
    assert lams[0] == pytest.approx(lam)  # +0.75 % since λ rose: hold
    assert lams[1] == pytest.approx(2 * lam)  # +1.5 % since λ rose: λ rises again
    assert lams[2] == pytest.approx(2 * lam)  # +0.74 % since then: hold
    clone = TargetDensity(0.2, sticky=True)
    clone.load_state_dict(ctl.state_dict())
    assert clone.state_dict() == ctl.state_dict()  # the anchor survives a resume


def test_a_ramp_steers_to_a_reference_from_the_start_density_to_the_target() -> None:
    """With ``ramp`` the error is log(d / r_t), r_t = d0^(1-s) D^s, s = t / (ramp · T):
    at the start density on the ramp's path λ holds; without the ramp the same density
    is "too sparse" and λ falls; past the ramp the reference is D."""
    net = _net()
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3)
    ramped = TargetDensity(0.25, gain=1.0, max_factor=2.0, ramp=0.5, total_steps=100)
    assert ramped.reference(0) == 0.25  # no start density measured yet
    assert ramped.update(net, opt, step=0) == pytest.approx(1e-3)  # d = d0 = r_0: hold
    assert ramped.reference(25) == pytest.approx((1.0 * 0.25) ** 0.5)  # halfway, log-linear
    assert ramped.reference(50) == ramped.reference(99) == pytest.approx(0.25)
    with torch.no_grad():  # past the ramp the reference is D: as without a ramp
        net[0].weight[:4].zero_()
        net[2].weight.zero_()
        net[2].weight[:, :4].fill_(0.1)
    d = penalised_density(opt)
    assert 0.25 < d < 1.0
    lam = ramped.update(net, opt, step=50)
    assert lam == pytest.approx(1e-3 * min(2.0, d / 0.25))  # reference D: too dense
    plain = TargetDensity(0.25, gain=1.0, max_factor=2.0)
    opt.set_lam(1e-3)
    assert plain.update(net, opt, step=0) == pytest.approx(1e-3 * min(2.0, d / 0.25))
    # the start density is kept in the state (a resumed run stays on its ramp)
    clone = TargetDensity(0.25, ramp=0.5, total_steps=100)
    clone.load_state_dict(ramped.state_dict())
    assert clone.reference(25) == pytest.approx(ramped.reference(25))
    old = ramped.state_dict()
    del old["start_density"]  # a state saved before the ramp existed
    TargetDensity(0.25, ramp=0.5, total_steps=100).load_state_dict(old)
    for bad in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match="ramp"):
            TargetDensity(0.1, ramp=bad)
    with pytest.raises(ValueError, match="total_steps"):
        TargetDensity(0.1, total_steps=0)


def test_the_ramp_takes_the_trainers_sparse_steps() -> None:
    trainer = SimpleNamespace(sparse_epochs=8, batches_per_epoch=lambda: 25)
    ctl = TargetDensity(0.1, ramp=0.5)
    ctl.on_train_begin(trainer)
    assert ctl.total_steps == 200
    given = TargetDensity(0.1, ramp=0.5, total_steps=7)
    given.on_train_begin(trainer)
    assert given.total_steps == 7
    no_ramp = TargetDensity(0.1)
    no_ramp.on_train_begin(trainer)
    assert no_ramp.total_steps is None


def test_target_miss_says_what_to_change() -> None:
    from sparseopt.control import target_miss

    assert target_miss(0.1, 0.12, "adabreg") == "" and target_miss(0.1, 0.081, "rda") == ""
    grown = target_miss(0.05, 0.0711, "adabreg")
    assert "5 % was not reached (7.11 %" in grown
    assert grown.endswith("along a ramp (--init-density 0.025 --target-density-ramp 0.8)")
    # only what the run did not do; both done: a lower target
    at_recipe = target_miss(0.13, 0.2, "linbreg", init_density=0.01, ramp=0.0)
    assert at_recipe.endswith("along a ramp (--target-density-ramp 0.8)")
    ramped = target_miss(0.008, 0.0107, "adabreg", init_density=0.01, ramp=0.8)
    assert ramped.endswith("along a ramp (--init-density 0.004)")
    both = target_miss(0.008, 0.0107, "adabreg", init_density=0.004, ramp=0.8)
    assert both.endswith("ask for a lower --target-density (this one ended 1.34x over)")
    # LinBreg at a small target: the start and ramp fell short on the study (round 39)
    small = target_miss(0.01, 0.03, "linbreg", init_density=0.01, ramp=0.0)
    assert small.endswith(
        "(--init-density 0.005 --target-density-ramp 0.8); at 1 % linbreg may still end "
        "over the target that way; if so, ask for a lower --target-density (this one ended "
        "3.00x over)"
    )
    assert "may still" in target_miss(0.02, 0.03, "linbreg")  # up to 2 % included
    # start and ramp both used: only the lower target, once
    both = target_miss(0.01, 0.03, "linbreg", init_density=0.005, ramp=0.8)
    assert "may still" not in both and both.count("lower --target-density") == 1
    assert "may still" not in target_miss(0.01, 0.03, "adabreg", init_density=0.01, ramp=0.0)
    assert "may still" not in target_miss(0.05, 0.08, "linbreg", init_density=0.01, ramp=0.0)
    assert "more --epochs)" in target_miss(0.05, 0.0711, "splitlbi")
    assert "more --epochs, or a smaller --refit)" in target_miss(0.05, 0.0711, "rda", refit=True)
    assert "more --epochs" in target_miss(0.3, 0.2, "adabreg")  # too sparse: more steps
    assert "was not reached (0.00 %" in target_miss(0.3, 0.0, "rda")


def test_a_group_penalty_whose_groups_all_start_active_is_told_the_cause(tmp_path) -> None:
    """LinBreg's group ℓ0 (its group ℓ1 too before round 56) from the elementwise start
    with its floor: every filter group starts active and fills (83 % of the digits MLP's
    weights whatever the λ, round 53);
    a start or ramp hint would only make it denser. The config knows the case; the run's
    warning names it; a start drawn per group, kernel groups, an ℓ1 penalty, a dense start
    or no floor are not that case; a too sparse run keeps the epochs hint."""
    from engine_helpers import tiny

    from sparseopt.config import TrainConfig
    from sparseopt.control import target_miss
    from sparseopt.engine import train

    said = target_miss(
        0.13, 0.83, "linbreg", init_density=0.01, ramp=0.0, groups_start_alive="filter"
    )
    assert "every group starts active" in said and "--init-groups filter" in said
    assert "ramp" not in said and "lower --target-density" not in said
    assert "more --epochs" in target_miss(0.3, 0.1, "linbreg", groups_start_alive="filter")
    assert "every group" not in target_miss(0.13, 0.83, "splitlbi", groups_start_alive="filter")

    def alive(**kw: object) -> bool:
        return TrainConfig(optimizer="linbreg", **kw).resolve().groups_start_alive()

    assert alive(penalty="group_l0") == "filter"
    assert alive(penalty="group_l1") is None  # round 56: its recipe starts per group
    assert alive(penalty="group_l0", groups="channel") == "channel"
    assert alive(penalty="l1", linear_penalty="group_l1") == "filter"
    assert alive(penalty="group_l1", init_groups="kernel") == "filter"  # floored per kernel
    assert not alive(penalty="group_l1", init_groups="filter")
    assert not alive(penalty="l1", conv_penalty="group_l1", conv_groups="neuron")  # not judged
    channel = target_miss(0.13, 0.83, "linbreg", groups_start_alive="channel")
    assert "--init-groups channel" in channel
    assert not alive(penalty="l1", conv_penalty="group_l1", conv_groups="kernel")
    assert not alive(penalty="group_l1", init_floor=False)
    assert not alive(penalty="group_l1", init_density=1.0) and not alive(penalty="l1")
    res = train(tiny(tmp_path / "g", optimizer="linbreg", penalty="group_l0", epochs=2))
    log = (tmp_path / "g" / "log.txt").read_text()
    assert res.config.groups_start_alive() and "every group starts active" in log
    # a refit's first line says it too (the target is judged where the support is fixed)
    kw = {"optimizer": "linbreg", "penalty": "group_l0", "epochs": 3, "refit": 0.34}
    train(tiny(tmp_path / "r", **kw))
    refit_line = next(
        line
        for line in (tmp_path / "r" / "log.txt").read_text().splitlines()
        if line.startswith("refit:")
    )
    assert "every group starts active" in refit_line


def test_group_ratios_kept_and_unpenalised_groups_untouched() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 16, 3))
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, conv_lam=1e-3, linear_lam=4e-3)
    TargetDensity(0.5, gain=0.1, kp=0.0).update(net, opt)
    lams = {g["name"]: g["lam"] for g in opt.param_groups}
    assert lams["conv"] > 1e-3
    assert lams["linear"] / lams["conv"] == pytest.approx(4.0)
    assert lams["unpenalised"] == 0.0


def test_splitlbi_set_lam_changes_the_deployable_density_at_once() -> None:
    net = _net()
    opt = so.create_optimizer(net, "splitlbi", lr=0.5, nu=1.0, lam=1e-4)
    x, y = torch.randn(32, 10), torch.randint(0, 3, (32,))
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    d0 = penalised_density(opt)
    TargetDensity(0.01, gain=10.0, kp=0.0, max_factor=1e6).update(net, opt)
    assert penalised_density(opt) < d0  # Γ = κ prox(V) recomputed with the new λ


def test_invalid_arguments() -> None:
    for bad in (0.0, 1.5, True):
        with pytest.raises(ValueError, match="target density"):
            TargetDensity(bad)
    with pytest.raises(ValueError, match="every_steps"):
        TargetDensity(0.1, every_steps=0)
    with pytest.raises(ValueError, match="max_factor"):
        TargetDensity(0.1, max_factor=1.0)
    net = _net()
    with pytest.raises(TypeError, match="set_lam"):
        TargetDensity(0.1).update(net, torch.optim.SGD(net.parameters(), lr=0.1))


def test_callback_hooks_and_state_round_trip() -> None:
    net = _net()
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3)
    trainer = SimpleNamespace(model=net, optimizer=opt, global_step=10)
    per_step = TargetDensity(0.3, every_steps=5)
    per_step.on_step_end(trainer, 7)
    assert not per_step.history
    per_step.on_step_end(trainer, 10)
    metrics: dict = {}
    per_step.on_epoch_end(trainer, 1, metrics)  # per-step mode: no extra update
    assert len(per_step.history) == 1 and metrics["target_density"] == 0.3
    per_epoch = TargetDensity(0.3)
    per_epoch.on_epoch_end(trainer, 1, metrics)
    assert len(per_epoch.history) == 1 and metrics["controlled_lam"] == per_epoch.history[-1][2]
    clone = TargetDensity(0.3)
    clone.load_state_dict(per_epoch.state_dict())
    assert clone.history == per_epoch.history and clone.state_dict() == per_epoch.state_dict()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "kwargs", "target"),
    [
        ("linbreg", {"lr": 0.1, "lam": 1.0, "momentum": 0.9, "lam_scale": "layer"}, 0.10),
        ("splitlbi", {"lr": 0.05, "lam": 1.0, "nu": 10.0}, 0.10),
    ],
)
def test_target_density_is_reached_on_digits(name: str, kwargs: dict, target: float) -> None:
    from sparseopt.data import load_dataset

    torch.manual_seed(0)
    data = load_dataset("digits", seed=0)
    x, y = data.train.tensors
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=(64,))
    if name == "linbreg":  # inverse scale space: start sparse (Bungert et al.)
        so.sparse_init_(model, 0.01, generator=torch.Generator().manual_seed(0))
    opt = so.create_optimizer(model, name, **kwargs)
    ctl = TargetDensity.for_optimizer(opt, target, every_steps=2)
    trainer = SimpleNamespace(model=model, optimizer=opt)
    gen = torch.Generator().manual_seed(0)
    step = 0
    for _ in range(10):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            step += 1
            ctl.on_step_end(trainer, step)
    assert density(model, opt).weight_density == pytest.approx(target, abs=0.02)
    assert ctl.history[-1][2] != kwargs["lam"]  # λ had to move


def test_the_end_of_a_run_reads_the_penalised_density(tmp_path: Path) -> None:
    """The final warning compares the target with the density the controller measured
    (penalised weights only), not the weight density, which counts LeNet-5's unpenalised
    (dense) convolutions here."""
    from engine_helpers import tiny

    from sparseopt.engine import train

    kw = {"optimizer": "splitlbi", "model": "lenet5", "conv_penalty": "none", "refit": 0.0}
    res = train(tiny(tmp_path / "a", **kw, epochs=2, target_density=0.9))
    log = (tmp_path / "a" / "log.txt").read_text()
    assert "the target density 90 % was not reached (0.00 % of the penalised weights)" in log
    assert res.metrics["weight_density"] > 0.1  # the dense convolutions


def test_the_ramp_starts_at_the_first_update_and_survives_a_longer_resume() -> None:
    """The ramp runs from the step of the first update (a ``start_step`` delays it), and a
    resumed controller keeps its ``total_steps``: a run extended with more epochs does not
    reopen a finished ramp."""
    net = _net()
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3)
    ctl = TargetDensity(0.25, ramp=0.5, total_steps=100, start_step=40)
    ctl.update(net, opt, step=40)
    assert ctl.reference(40) == pytest.approx(1.0)  # d0 = 1.0 at t0 = 40
    assert ctl.reference(65) == pytest.approx(0.5) and ctl.reference(90) == 0.25
    longer = TargetDensity(0.25, ramp=0.5, total_steps=200)  # as rebuilt for more epochs
    longer.load_state_dict(ctl.state_dict())
    assert longer.total_steps == 100 and longer.reference(90) == 0.25


def test_a_ramp_without_its_steps_warns_once() -> None:
    net = _net()
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3)
    ctl = TargetDensity.for_optimizer("proxsgd", 0.2)  # ramp 0.8, no total_steps
    with pytest.warns(UserWarning, match="total_steps is not set"):
        ctl.update(net, opt, step=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ctl.update(net, opt, step=1)  # once
        TargetDensity(0.2, ramp=0.5, total_steps=10).update(net, opt, step=0)  # all set


def test_a_sticky_state_saved_before_the_anchor_resumes_holding() -> None:
    net = _net()
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3)
    ctl = TargetDensity(0.2, gain=1.0, max_factor=2.0, sticky=True)
    ctl.update(net, opt)  # too dense: λ rose
    old = ctl.state_dict()
    del old["rose_at"]
    resumed = TargetDensity(0.2, gain=1.0, max_factor=2.0, sticky=True)
    resumed.load_state_dict(old)
    assert resumed.update(net, opt) == pytest.approx(ctl.history[-1][2])  # holds, as it would


def _at_target(net: nn.Module) -> float:
    """Zero weights of ``net`` until its penalised density is 0.5 (the error is 0)."""
    with torch.no_grad():
        for p in (m.weight for m in net if isinstance(m, nn.Linear)):
            p.view(-1)[: p.numel() // 2] = 0
    return 0.5


def test_lr_coupled_steers_the_threshold_lr_times_lam() -> None:
    """At the target (no feedback), a halved lr doubles λ: η·λ, ProxSGD's ℓ1 threshold
    (and with it its ℓ0 threshold √(2ηλ)), holds. Without the coupling λ stays; an lr of
    0, or a first update, leaves λ."""
    for coupled, expect in ((True, [1e-3, 2e-3, 2e-3, 8e-3]), (False, [1e-3] * 4)):
        net = _net()
        opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3)
        target = _at_target(net)
        ctl = TargetDensity(target, gain=1.0, lr_coupled=coupled)
        lams = []
        for lr in (0.1, 0.05, 0.0, torch.tensor(0.0125)):  # a tensor lr too
            for g in opt.param_groups:
                g["lr"] = lr
            lams.append(ctl.update(net, opt))
        assert lams == pytest.approx(expect)
        thresholds = [float(opt.param_groups[0]["lr"]) * lams[-1], 0.1 * lams[0]]
        assert (thresholds[0] == pytest.approx(thresholds[1])) is coupled


def test_lr_coupled_is_outside_the_max_factor_bound_and_kept_in_the_state() -> None:
    """The feedforward factor is not clipped at max_factor (a cosine's last epochs
    divide η by more than 1.5), and a resumed controller compares with the lr of its
    last update (a state saved before the coupling measures afresh)."""
    net = _net()
    opt = so.create_optimizer(net, "proxsgd", lr=0.4, lam=1e-3)
    ctl = TargetDensity(_at_target(net), gain=1.0, max_factor=1.5, lr_coupled=True)
    ctl.update(net, opt)
    clone = TargetDensity(ctl.target, gain=1.0, max_factor=1.5, lr_coupled=True)
    clone.load_state_dict(ctl.state_dict())
    for g in opt.param_groups:
        g["lr"] = 0.1
    assert clone.update(net, opt) == pytest.approx(4e-3)  # x4 > max_factor
    old = {k: v for k, v in ctl.state_dict().items() if k != "lrs"}
    fresh = TargetDensity(ctl.target, lr_coupled=True)
    fresh.load_state_dict(old)
    for g in opt.param_groups:
        g["lr"] = 0.05  # half the lr the clone saw: a comparison would double λ
    assert fresh.update(net, opt) == pytest.approx(4e-3)  # λ as it is: no lr to compare


def test_lr_coupled_follows_each_groups_own_lr_with_the_feedback_after_it() -> None:
    """One λ per layer (``lam_scale="layer"``), each group's lr moved by its own factor:
    each λ follows its own group's lr, in the global and the per-layer allocation, and
    a feedback factor (too dense) multiplies on top."""
    for allocation in ("global", "he"):
        net = _net()
        opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3, lam_scale="layer")
        penalised = [g for g in opt.param_groups if g["penalty"] != "none"]
        assert len(penalised) == 2
        ctl = TargetDensity(0.5, gain=1.0, max_factor=1.5, lr_coupled=True, allocation=allocation)
        ctl.update(net, opt)  # dense: the feedback raises every λ by 1.5
        before = [g["lam"] for g in penalised]
        penalised[0]["lr"], penalised[1]["lr"] = 0.05, 0.025
        ctl.update(net, opt)  # still dense: 1.5 again, times each group's lr fall
        assert [g["lam"] for g in penalised] == pytest.approx(
            [before[0] * 2 * 1.5, before[1] * 4 * 1.5]
        )


def test_lr_coupled_is_refused_on_a_sticky_plant() -> None:
    with pytest.raises(ValueError, match="Invalid lr_coupled value: True; a sticky plant"):
        TargetDensity(0.1, sticky=True, lr_coupled=True)
    with pytest.raises(ValueError, match="lr_coupled"):
        TargetDensity.for_optimizer("linbreg", 0.1, lr_coupled=True)


def _wide() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 40), nn.ReLU(), nn.Linear(40, 3))


def test_a_starved_layer_holds_lam_down_like_an_empty_one() -> None:
    """1 of 40 units left (2.5 % < 5 %) turns a too-dense error around; 2 (5 %) do not;
    with min_alive=0 only an empty layer does (the guard before round 58)."""
    from sparseopt.control import STARVED, starved

    assert STARVED == 0.05 and starved(1, 40) and not starved(2, 40)
    for alive, min_alive, up in ((1, STARVED, False), (2, STARVED, True), (1, 0.0, True)):
        net = _wide()
        opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3)
        with torch.no_grad():
            net[0].weight[alive:] = 0  # the head dense: overall far above the target
        ctl = TargetDensity(0.05, gain=1.0, max_factor=2.0, min_alive=min_alive)
        lam = ctl.update(net, opt)
        assert (lam > 1e-3) == up, (alive, min_alive)
        assert ctl.held == (0 if up else 1)
    # a small layer (fewer than 20 units) is starved only when empty
    assert not starved(1, 10) and starved(0, 10)


def test_the_starved_guard_acts_per_layer_under_the_he_allocation() -> None:
    net = _wide()
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3, lam_scale="layer")
    with torch.no_grad():
        net[0].weight[1:] = 0  # 1 of 40 units: starved; the head dense, too dense
    ctl = TargetDensity(0.05, allocation="he", gain=1.0, max_factor=2.0)
    ctl.update(net, opt)
    lams = [g["lam"] for g in opt.param_groups if g["penalty"] != "none"]
    assert lams[0] < 1e-3 < lams[1]  # the starved layer's λ falls, the head's rises


def test_the_held_count_is_logged_and_kept_in_the_state() -> None:
    net = _wide()
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3)
    with torch.no_grad():
        net[0].weight[1:] = 0
    ctl = TargetDensity(0.05)
    metrics: dict = {}
    ctl.on_epoch_end(SimpleNamespace(model=net, optimizer=opt, global_step=3), 1, metrics)
    assert metrics["lam_held_starved"] == 1
    clone = TargetDensity(0.05)
    clone.load_state_dict(ctl.state_dict())
    assert clone.held == 1
    state = ctl.state_dict()
    del state["held"]  # saved before the count
    clone.load_state_dict(state)
    assert clone.held == 0
    for bad in (-0.1, 1.0, True, "0.1"):
        with pytest.raises(ValueError, match="min_alive"):
            TargetDensity(0.1, min_alive=bad)
