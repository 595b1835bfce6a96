"""TargetDensity's per-layer allocation ("he"): the shares, the per-group loops, their
state, the one-group-per-layer param groups and the config that turns it on."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import sparseopt as so
from sparseopt.config import TrainConfig
from sparseopt.control import (
    GLOBAL_PENALTIES,
    PRESETS,
    TargetDensity,
    conserve_budget,
    he_shares,
    penalised_density,
    preset_allocation,
    unit_floor,
)
from sparseopt.groups import param_groups


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 3)
    )


@pytest.mark.parametrize("density", [0.3, 0.1, 0.02])
def test_the_shares_are_what_a_global_threshold_keeps_of_a_he_draw(density: float) -> None:
    """Oracle: draw the body's layers He-normal, keep the global top ``density`` of
    magnitudes, and read each layer's density; the head is at ``density`` itself."""
    shapes = [(64, 3, 3, 3), (64, 64, 3, 3), (256, 1024), (10, 256)]
    gen = torch.Generator().manual_seed(0)
    body = [torch.randn(s, generator=gen) * math.sqrt(2 / math.prod(s[1:])) for s in shapes[:-1]]
    flat = torch.cat([w.abs().flatten() for w in body])
    tau = flat.kthvalue(flat.numel() - round(density * flat.numel())).values
    drawn = [float((w.abs() > tau).float().mean()) for w in body]
    shares = he_shares(
        [math.prod(s) for s in shapes],
        [math.prod(s[1:]) for s in shapes],
        [s[0] for s in shapes],
        density,
    )
    for share, got, w in zip(shares, drawn, body, strict=False):  # 4 binomial std. errors
        assert share == pytest.approx(got, abs=4 * math.sqrt(got * (1 - got) / w.numel()) + 1e-3)
    assert shares[-1] == density
    # a smaller fan-in keeps more: the first convolution is the densest layer
    assert shares[0] == max(shares) and shares[0] > density
    n = [math.prod(s) for s in shapes[:-1]]
    assert sum(a * b for a, b in zip(n, shares, strict=False)) / sum(n) == pytest.approx(density)


def test_no_share_falls_below_one_weight_per_output_unit() -> None:
    # a wide layer behind a tiny-fan-in one would get almost nothing from the threshold
    shares = he_shares([10**6, 10**5, 100], [1, 10**4, 10], [10**6, 10, 10], 0.01)
    assert shares[1] == pytest.approx(10 / 10**5)  # one weight per output unit
    # water-filling: the floored layer's excess comes out of the others, the body stays at D
    n = [1000, 10**5, 10**5, 100]
    shares = he_shares(n, [1, 10**4, 100, 10], [1000, 10, 1000, 10], 0.01)
    assert shares[1] == pytest.approx(10 / 10**5)
    assert sum(a * b for a, b in zip(n[:-1], shares, strict=False)) / sum(n[:-1]) == (
        pytest.approx(0.01)
    )
    # floors alone above D (one weight per row of a narrow body): every layer at its floor
    assert he_shares([100, 50, 20], [1, 10**8, 10], [100, 1, 2], 0.01) == [0.01, 0.01, 0.01]
    assert he_shares([100, 100, 20], [10, 10, 10], [10, 10, 2], 1.0) == [1.0, 1.0, 1.0]
    assert he_shares([50], [5], [10], 0.2) == [0.2]  # only a head
    assert he_shares([], [], [], 0.2) == []
    with pytest.raises(ValueError, match="density"):
        he_shares([10], [1], [1], 0.0)
    with pytest.raises(ValueError, match="one fan-in"):
        he_shares([10, 10], [1], [1, 1], 0.1)


@pytest.mark.parametrize(
    ("numel", "rows", "density"), [(1000, 10, 0.13), (100, 50, 0.2), (10**5, 100, 0.01)]
)
def test_the_floor_is_one_weight_per_output_unit_and_the_shares_respect_it(
    numel: int, rows: int, density: float
) -> None:
    floor = unit_floor(numel, rows, density)
    assert floor == min(density, rows / numel)
    assert unit_floor(0, rows, density) == density  # an empty tensor: no division by 0
    # a layer whose He share would be far below the floor (a huge fan-in) is held at it
    shares = he_shares([10**6, numel, 100], [1, 10**8, 10], [10**6, rows, 10], density)
    assert shares[1] >= floor * (1 - 1e-12)


def test_layer_groups_are_one_per_layer_with_the_same_lam_and_the_same_iterates() -> None:
    """``lam_scale="layer"``: one group per penalised layer, no factor; with λ fixed the
    optimizer computes what one group per kind computes (AdaBreg, exact)."""
    nets = [_mlp(), _mlp()]
    groups = param_groups(nets[0], lam=0.1, lam_scale="layer")
    assert [(g["name"], len(g["params"]), g["lam"]) for g in groups] == [
        ("linear", 1, 0.1),
        ("linear", 1, 0.1),
        ("linear", 1, 0.1),
        ("unpenalised", 3, 0.0),
    ]
    assert all("lam_factor" not in g for g in groups)
    opts = [
        so.create_optimizer(net, "adabreg", lr=0.01, lam=0.1, lam_scale=s)
        for net, s in zip(nets, ("layer", "none"), strict=True)
    ]
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    for _ in range(5):
        for net, opt in zip(nets, opts, strict=True):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_each_layer_moves_towards_its_own_share() -> None:
    """A layer denser than its share gets a larger λ, a sparser one a smaller λ, in the
    same update (the global allocation moves every λ by one factor)."""
    net = _mlp()
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3, lam_scale="layer")
    with torch.no_grad():  # layer 0 fully dense, layer 1 at 1 %, the head dense
        w = net[2].weight
        w.mul_((torch.rand_like(w) < 0.01).float())
    ctl = TargetDensity(0.2, allocation="he", gain=1.0, max_factor=2.0)
    ctl.update(net, opt)
    lams = [g["lam"] for g in opt.param_groups[:3]]
    assert lams[0] > 1e-3 and lams[2] > 1e-3  # too dense: up
    assert lams[1] < 1e-3  # too sparse: down
    # one density: the network is too dense overall, so the too-sparse layer's λ rises too
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3, lam_scale="layer")
    TargetDensity(0.2, gain=1.0, max_factor=2.0).update(net, opt)
    lams = [g["lam"] for g in opt.param_groups[:3]]
    assert lams[1] > 1e-3 and lams == [pytest.approx(lams[0], rel=1e-12)] * 3


class _Plant(torch.optim.Optimizer):
    """A plant whose deployable weights are the entries above the group's λ (density
    falls with λ at once), for closed-loop tests."""

    def __init__(self, groups: list[dict]) -> None:
        super().__init__(groups, {"lam": 0.0, "penalty": "l1"})

    def set_lam(self, lam: float, groups: list[int]) -> None:
        for i in groups:
            self.param_groups[i]["lam"] = lam

    def deployable(self, p: torch.Tensor) -> torch.Tensor:
        group = next(g for g in self.param_groups if any(q is p for q in g["params"]))
        return p * (p.abs() > group["lam"])


def test_the_closed_loop_ends_each_layer_at_its_share_and_the_network_at_the_target() -> None:
    net = _mlp()
    with torch.no_grad():  # He-normal: densities that move smoothly with λ
        for i in (0, 2, 4):
            nn.init.kaiming_normal_(net[i].weight)
    plant = _Plant(param_groups(net, lam=1e-3, lam_scale="layer"))
    ctl = TargetDensity(0.1, allocation="he", gain=0.3, max_factor=1.2)
    for _ in range(200):
        ctl.update(net, plant)
    weights = [net[i].weight for i in (0, 2, 4)]
    shares = he_shares(
        [w.numel() for w in weights],
        [w.shape[1] for w in weights],
        [w.shape[0] for w in weights],
        0.1,
    )
    got = [float((plant.deployable(w) != 0).float().mean()) for w in weights]
    assert got == pytest.approx(shares, abs=0.02)
    assert ctl.history[-1][1] == pytest.approx(0.1, abs=0.01)  # the network as a whole


@pytest.mark.parametrize("seed", range(20))
def test_the_budget_is_kept_when_groups_hold_more_than_their_share(seed: int) -> None:
    """conserve_budget against its definition: the groups over their reduced share count
    at what they hold, the others at the reduced share, and together they make the
    budget; no group outside that set holds more than its reduced share; the reduction
    factor is the largest that does this (every group in the set holds more than it)."""
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 7, (1,), generator=g))
    shares = (torch.rand(n, generator=g) * 100 + 1).tolist()
    counts = [s * float(torch.rand(1, generator=g)) * 2.5 for s in shares]
    targets = conserve_budget(counts, shares)
    rho = targets[0] / shares[0]
    assert targets == pytest.approx([s * rho for s in shares], rel=1e-12)
    assert 0.0 <= rho <= 1.0
    over = [i for i in range(n) if counts[i] > targets[i]]
    free = [i for i in range(n) if i not in over]
    held = sum(counts[i] for i in over) + sum(targets[i] for i in free)
    if sum(counts[i] for i in over) <= sum(shares):
        assert held == pytest.approx(sum(shares), rel=1e-9)
    else:  # the groups over their share alone exceed the budget: the others get nothing
        assert rho == 0.0
    if all(c <= s for c, s in zip(counts, shares, strict=True)):
        assert rho == 1.0  # nothing over its share: the shares as they are


def test_the_budget_is_kept_in_the_examples() -> None:
    assert conserve_budget([5, 5], [10, 10]) == [10, 10]
    # the first holds 30 of its 10: the other two give up 20 between them, pro rata
    assert conserve_budget([30, 5, 2], [10, 40, 10]) == pytest.approx([6, 24, 6])
    # the second holds more than its reduced 24: the third gets what is left, 60 - 56
    assert conserve_budget([30, 26, 2], [10, 40, 10]) == pytest.approx([4, 16, 4])
    assert conserve_budget([70, 5], [10, 40]) == [0.0, 0.0]


class _PinnedPlant(_Plant):
    """The threshold plant with part of one layer pinned on whatever its λ (a support the
    plant cannot take back, as an inverse scale space method's sparse start)."""

    def __init__(self, groups: list[dict], pin: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__(groups)
        self.pin, self.mask = pin, mask

    def deployable(self, p: torch.Tensor) -> torch.Tensor:
        out = super().deployable(p)
        return torch.where(self.mask, p, out) if p is self.pin else out


@pytest.mark.parametrize("allocation", ["he", "he_all"])
def test_a_sticky_network_with_a_layer_over_its_share_ends_at_the_target(allocation: str) -> None:
    """A layer held over its share (7.8 % of layer 2 pinned on, its share 2.1 %) cannot
    come down: on a sticky plant the other layers give its excess up and the network
    ends at the target; steered without the budget it ends over it by the excess (he_all:
    LinBreg's preset, the same budget)."""
    ends = {}
    for sticky in (True, False):
        net = _mlp()
        with torch.no_grad():
            for i in (0, 2, 4):
                nn.init.kaiming_normal_(net[i].weight)
        mask = torch.zeros_like(net[2].weight, dtype=torch.bool)
        mask[:, :5] = True
        plant = _PinnedPlant(param_groups(net, lam=3.0, lam_scale="layer"), net[2].weight, mask)
        ctl = TargetDensity(0.1, allocation=allocation, gain=0.3, max_factor=1.2, sticky=sticky)
        for _ in range(300):
            ctl.update(net, plant)
        ends[sticky] = ctl.history[-1][1]
    weights = [net[i].weight.numel() for i in (0, 2, 4)]
    head = "threshold" if allocation == "he_all" else "target"
    share = he_shares(weights, [8, 64, 32], [64, 32, 3], 0.1, head=head)[1]
    excess = (160 - share * weights[1]) / sum(weights)  # 4.4 % of the network
    assert ends[True] == pytest.approx(0.1, abs=0.005)
    assert ends[False] == pytest.approx(0.1 + excess, abs=0.005)


def test_an_empty_layer_is_steered_up_when_the_budget_is_spent() -> None:
    """The layers over their share alone exceed the budget (every reduced share 0): a
    layer with no weight left still gets its λ lowered (the empty-layer guard), with the
    proportional term of a sticky AdaBreg-like loop too."""
    net = _mlp()
    mask = torch.ones_like(net[0].weight, dtype=torch.bool)  # layer 0 pinned fully on
    with torch.no_grad():
        net[2].weight.zero_()
    plant = _PinnedPlant(param_groups(net, lam=1.0, lam_scale="layer"), net[0].weight, mask)
    ctl = TargetDensity(0.1, allocation="he", gain=0.1, gain_up=2.0, kp=4.0, sticky=True)
    lams = []
    for _ in range(4):
        ctl.update(net, plant)
        lams.append(plant.param_groups[1]["lam"])
    assert all(b < a for a, b in zip([1.0, *lams], lams, strict=False))


def test_no_layer_is_steered_below_one_weight_per_output_unit() -> None:
    """When the layers over their share alone spend the budget, every other target falls
    to its floor, not to 0: a layer holding one weight per output unit is where it should
    be (λ stays); steered to 0 its λ would rise by max_factor."""
    net = _mlp()
    with torch.no_grad():
        for i in (2, 4):  # one weight per output unit
            w = net[i].weight
            w.zero_()
            w[torch.arange(w.shape[0]), torch.arange(w.shape[0]) % w.shape[1]] = 1.0
    mask = torch.ones_like(net[0].weight, dtype=torch.bool)  # 512 weights, budget 265
    plant = _PinnedPlant(param_groups(net, lam=1e-3, lam_scale="layer"), net[0].weight, mask)
    ctl = TargetDensity(0.1, allocation="he", gain=0.3, max_factor=2.0, sticky=True)
    ctl.update(net, plant)
    assert [g["lam"] for g in plant.param_groups[1:3]] == [pytest.approx(1e-3)] * 2
    assert plant.param_groups[0]["lam"] > 1.9e-3  # the pinned layer, over: λ rises


def test_a_sticky_plant_too_dense_rises_by_the_pi_step() -> None:
    """Too dense by 5 % and grown: λ rises by exp(gain_up · log 1.05), the PI step, on a
    sticky plant as on a plain one (round 37 did not adopt a brake by max_factor)."""
    net = _mlp()
    for sticky in (True, False):
        opt = _Plant(param_groups(net, lam=1e-3))
        ctl = TargetDensity(penalised_density(opt) / 1.05, gain=0.2, max_factor=1.5, sticky=sticky)
        assert ctl.update(net, opt) == pytest.approx(1e-3 * 1.05**0.2, rel=1e-9)


def test_per_layer_state_round_trips_and_an_older_state_loads() -> None:
    """The per-group loops are in the state: a controller restored from it takes the same
    next step as the one that saved it; a state saved before them loads (fresh loops)."""
    nets = [_mlp(), _mlp()]
    opts = [so.create_optimizer(n, "adabreg", lr=0.01, lam=0.3, lam_scale="layer") for n in nets]
    first = TargetDensity.for_optimizer("adabreg", 0.2)
    assert first.allocation == "he"
    for _ in range(3):
        first.update(nets[0], opts[0])
    opts[1].load_state_dict(opts[0].state_dict())
    second = TargetDensity.for_optimizer("adabreg", 0.2)
    second.load_state_dict(first.state_dict())
    assert second.state_dict() == first.state_dict() and len(first.state_dict()["groups"]) == 3
    assert second.update(nets[1], opts[1]) == first.update(nets[0], opts[0])
    assert [g["lam"] for g in opts[1].param_groups] == [g["lam"] for g in opts[0].param_groups]
    old = {k: v for k, v in first.state_dict().items() if k != "groups"}
    third = TargetDensity.for_optimizer("adabreg", 0.2)
    third.load_state_dict(old)
    assert third._groups == {}


def test_a_group_of_several_layers_is_steered_to_their_joint_share() -> None:
    """One group for every layer: "he" steers it to the target, as "global" does."""
    nets = [_mlp(), _mlp()]
    opts = [so.create_optimizer(n, "proxsgd", lr=0.1, lam=1e-3) for n in nets]  # per kind
    assert sum(g["penalty"] != "none" for g in opts[0].param_groups) == 1
    with pytest.warns(UserWarning, match="joint share"):
        lam_he = TargetDensity(0.2, allocation="he").update(nets[0], opts[0])
    assert lam_he == pytest.approx(TargetDensity(0.2).update(nets[1], opts[1]), rel=1e-12)


def test_the_preset_needs_per_layer_groups_else_one_density_with_a_warning() -> None:
    """``create_optimizer(model, "adabreg")`` keeps one group per layer kind (the layout
    of optimizer states saved before); its preset's per-layer allocation then falls back
    to one density, and says so. The recipe's per-layer groups get it."""
    net = _mlp()
    per_kind = so.create_optimizer(net, "adabreg")
    assert sum(g["penalty"] != "none" for g in per_kind.param_groups) == 1
    with pytest.warns(UserWarning, match="lam_scale='layer'"):
        assert TargetDensity.for_optimizer(per_kind, 0.1).allocation == "global"
    assert TargetDensity.for_optimizer(per_kind, 0.1, allocation="he").allocation == "he"
    per_layer = so.create_optimizer(net, "adabreg", lam_scale="layer")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TargetDensity.for_optimizer(per_layer, 0.1).allocation == "he"
    assert TargetDensity.for_optimizer("adabreg", 0.1).allocation == "he"
    linbreg = so.create_optimizer(net, "linbreg", lam_scale="layer")  # round 62's preset
    assert TargetDensity.for_optimizer(linbreg, 0.1).allocation == "he_all"
    # an optimizer state saved with the per-kind layout loads into today's default
    old = so.create_optimizer(_mlp(), "adabreg", lam_scale="none")
    per_kind.load_state_dict(old.state_dict())


def test_a_run_saved_before_resumes_with_its_groups(tmp_path) -> None:
    """A run directory whose config has no ``lam_scale`` / ``target_allocation`` (saved
    before they existed) resumes with one group per kind and one density, whatever
    today's recipe says."""
    import yaml
    from engine_helpers import tiny

    from sparseopt.engine import train

    train(tiny(tmp_path, epochs=1, lam_scale="none", target_allocation="global"))
    path = tmp_path / "config.yaml"
    saved = yaml.safe_load(path.read_text())
    assert saved["optimizer"] == "adabreg" and saved["target_density"] == 0.13
    for key in ("lam_scale", "target_allocation"):
        del saved[key]
    path.write_text(yaml.safe_dump(saved))
    res = train({"epochs": 2}, resume=tmp_path)
    assert [row["epoch"] for row in res.history] == [0, 1, 2]
    assert (res.config.lam_scale, res.config.target_allocation) == ("none", "global")


def test_the_config_turns_it_on_where_the_groups_are_layers() -> None:
    for name, preset in (("linbreg", "he_all"), ("adabreg", "he")):  # rounds 62 and 36
        assert PRESETS[name]["allocation"] == preset
        cfg = TrainConfig(optimizer=name).resolve()
        assert (cfg.lam_scale, cfg.target_allocation) == ("layer", preset)
        # one group for every layer of a kind: one density (a resumed run from before)
        cfg = TrainConfig(optimizer=name, lam_scale="none").resolve()
        assert cfg.target_allocation == "global"
        got = TrainConfig(optimizer=name, lam_scale="fan_in").resolve().target_allocation
        assert got == preset
        with pytest.raises(ValueError, match="lam_scale layer or fan_in"):
            TrainConfig(optimizer=name, lam_scale="none", target_allocation="he").resolve()
    for name in ("splitlbi", "proxsgd", "rda", "rvsm", "sgd"):
        assert TrainConfig(optimizer=name).resolve().target_allocation == "global"
    with pytest.raises(ValueError, match="optimizer 'sgd' is dense"):
        TrainConfig(optimizer="sgd", target_allocation="he").resolve()
    with pytest.raises(ValueError, match="lam_scale is none"):
        TrainConfig(optimizer="proxsgd", target_density=0.1, target_allocation="he").resolve()
    with pytest.raises(ValueError, match="no target density is set"):  # λ fixed: nothing to share
        TrainConfig(optimizer="adabreg", lam=0.3, target_allocation="he").resolve()
    # with a λ of the user's the recipe's groups per layer (for its controller) are off
    fixed = TrainConfig(optimizer="adabreg", lam=0.3).resolve()
    assert (fixed.lam_scale, fixed.target_allocation) == ("none", "global")
    with pytest.raises(ValueError, match="coupled groups are not layers"):
        TrainConfig(optimizer="adabreg", coupled="head", target_allocation="he").resolve()
    with pytest.raises(ValueError, match="target_allocation value: 'layers'"):
        TrainConfig(optimizer="adabreg", target_allocation="layers").validate()
    with pytest.raises(ValueError, match="coupled groups are not layers"):
        TrainConfig(optimizer="adabreg", coupled="head", target_allocation="he").validate()
    with pytest.raises(ValueError, match="allocation"):
        TargetDensity(0.1, allocation="layer")


def test_adabregs_tl1_steers_one_density() -> None:
    """AdaBreg's per-layer allocation (studied with ℓ1) is off with Tℓ1, where it emptied
    layers (docs/recipes.md, rounds 53-54), and with group ℓ1 (round 56: per layer it
    lost the digits MLP): in the config (also for one layer kind's Tℓ1) and for a
    controller built from an optimizer instance; ℓ0, LinBreg's Tℓ1 and a given
    allocation are as they were."""
    assert GLOBAL_PENALTIES == {"adabreg": ("tl1", "group_l1")}
    assert preset_allocation("adabreg", ["tl1"]) == "global"
    assert preset_allocation("adabreg", ["l1", None]) == "he"
    assert preset_allocation("linbreg", ["tl1"]) == "he_all"
    assert preset_allocation("rda", ["tl1"]) == "global"
    cfg = TrainConfig(optimizer="adabreg", penalty="tl1").resolve()
    assert (cfg.lam_scale, cfg.target_allocation, cfg.target_density) == ("layer", "global", 0.13)
    mixed = TrainConfig(optimizer="adabreg", conv_penalty="tl1").resolve()
    assert mixed.target_allocation == "global"
    for pen in ("l1", "l0", "group_l0"):
        assert TrainConfig(optimizer="adabreg", penalty=pen).resolve().target_allocation == "he"
    grouped = TrainConfig(optimizer="adabreg", penalty="group_l1").resolve()
    assert (grouped.target_allocation, grouped.init_groups) == ("global", "filter")
    assert TrainConfig(optimizer="linbreg", penalty="tl1").resolve().target_allocation == "he_all"
    given = TrainConfig(optimizer="adabreg", penalty="tl1", target_allocation="he").resolve()
    assert given.target_allocation == "he"
    opt = so.create_optimizer(_mlp(), "adabreg", penalty="tl1", lam_scale="layer")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TargetDensity.for_optimizer(opt, 0.1).allocation == "global"
    assert TargetDensity.for_optimizer(opt, 0.1, allocation="he").allocation == "he"


def test_the_engine_builds_the_allocation_into_its_controller() -> None:
    from sparseopt.engine.build import build_callbacks

    net = _mlp()
    for allocation in ("he", "global"):
        cfg = TrainConfig(optimizer="adabreg", target_allocation=allocation).resolve()
        opt = so.create_optimizer(net, cfg.optimizer, **cfg.optimizer_kwargs())
        callbacks = build_callbacks(cfg, net, opt, [])
        (ctl,) = [cb for cb in callbacks if isinstance(cb, TargetDensity)]
        assert ctl.allocation == allocation


def test_compare_sees_old_runs_as_the_same_settings_and_checks_all_before_training(
    tmp_path, capsys
) -> None:
    """A dense run saved before ``lam_scale`` existed (``none`` from the saved-before
    defaults) is the same setting as today's (``None``: a dense method has no λ groups),
    and so is an AdaBreg run with a λ of the user's; ``compare --target-allocation he``
    over a method whose groups are not per layer is refused before anything trains."""
    from sparseopt.cli import main
    from sparseopt.cli.compare import _comparable

    old_sgd = TrainConfig.from_dict({"optimizer": "sgd", "lam_scale": "none"})
    assert _comparable(old_sgd) == _comparable(TrainConfig(optimizer="sgd"))
    given = TrainConfig(optimizer="sgd", lam_scale="fan_in").resolve()  # still refused:
    with pytest.raises(ValueError, match="dense optimizer 'sgd'"):
        so.create_optimizer(_mlp(), "sgd", **given.optimizer_kwargs())
    old_fixed = TrainConfig(optimizer="adabreg", lam=0.3, lam_scale="none")
    assert _comparable(old_fixed) == _comparable(TrainConfig(optimizer="adabreg", lam=0.3))
    out = tmp_path / "cmp"
    args = ["compare", "--epochs", "1", "--limit-batches", "2", "--out", str(out), "--quiet"]
    code = main([*args, "--optimizers", "adabreg", "proxsgd", "--target-allocation", "he"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "proxsgd: Invalid target_allocation" in err[0]
    assert not (out / "adabreg").exists()


def test_uniform_steers_every_layer_to_the_target_itself() -> None:
    """Every layer at exactly D: uniform moves no λ; he moves them (its shares differ
    from D), and one layer off D moves only its own λ."""
    net = _mlp()
    with torch.no_grad():
        for m in (net[0], net[2], net[4]):
            w = m.weight.view(-1)
            w[int(0.25 * w.numel()) :] = 0  # 25 % of each layer
    for allocation, moved in (("uniform", False), ("he", True)):
        opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3, lam_scale="layer")
        TargetDensity(0.25, allocation=allocation, gain=1.0, max_factor=2.0).update(net, opt)
        lams = [g["lam"] for g in opt.param_groups if g["penalty"] != "none"]
        assert len(lams) == 3
        assert any(abs(lam - 1e-3) > 1e-9 for lam in lams) == moved, allocation
    with torch.no_grad():
        net[2].weight.view(-1)[: net[2].weight.numel() // 2] = 1.0  # layer 1 at 50 %+
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3, lam_scale="layer")
    TargetDensity(0.25, allocation="uniform", gain=1.0, max_factor=2.0).update(net, opt)
    lams = [g["lam"] for g in opt.param_groups if g["penalty"] != "none"]
    assert lams[0] == pytest.approx(1e-3) and lams[2] == pytest.approx(1e-3) and lams[1] > 1e-3


def test_uniform_is_a_per_layer_allocation_in_the_config_and_the_header(tmp_path) -> None:
    from sparseopt.cli import main

    with pytest.raises(ValueError, match=r"Invalid target_allocation value: 'uniform'.*lam_scale"):
        TrainConfig(optimizer="proxsgd", target_density=0.1, target_allocation="uniform").resolve()
    with pytest.raises(ValueError, match="coupled groups are not layers"):
        TrainConfig(optimizer="adabreg", coupled="head", target_allocation="uniform").validate()
    cfg = TrainConfig(optimizer="proxsgd", lam_scale="layer", target_allocation="uniform").resolve()
    assert cfg.target_allocation == "uniform" and cfg.target_density == 0.13
    out = tmp_path / "run"
    args = ["train", "-o", "proxsgd", "--lam-scale", "layer", "--target-allocation", "uniform"]
    assert main([*args, "--epochs", "1", "--limit-batches", "2", "--out", str(out)]) in (0, 4)
    header = (out / "log.txt").read_text().splitlines()[0]
    assert "per layer (uniform)" in header


def test_uniform_on_a_sticky_plant_keeps_every_layer_at_the_target() -> None:
    """A layer far over D does not push the layers at D down (he's conserve_budget
    would: the network's budget kept)."""
    net = _mlp()
    with torch.no_grad():
        for j, m in enumerate((net[0], net[2], net[4])):
            w = m.weight.view(-1)
            w[int((0.9 if j == 0 else 0.25) * w.numel()) :] = 0
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3, lam_scale="layer")
    ctl = TargetDensity(0.25, allocation="uniform", gain=1.0, max_factor=2.0, sticky=True)
    ctl.update(net, opt)
    lams = [g["lam"] for g in opt.param_groups if g["penalty"] != "none"]
    assert lams[0] > 1e-3
    assert lams[1] == pytest.approx(1e-3, rel=0.05) and lams[2] == pytest.approx(1e-3, rel=0.05)


@pytest.mark.parametrize("density", [0.3, 0.13, 0.02])
def test_he_all_puts_the_head_under_the_threshold_at_the_target_or_more(density: float) -> None:
    """Oracle: a He draw of every layer, head included, under one global magnitude
    threshold keeping ``density`` of the weights; the head is never below ``density``."""
    shapes = [(6, 1, 5, 5), (16, 6, 5, 5), (120, 400), (84, 120), (10, 84)]  # LeNet-5
    gen = torch.Generator().manual_seed(0)
    ws = [torch.randn(s, generator=gen) * math.sqrt(2 / math.prod(s[1:])) for s in shapes]
    flat = torch.cat([w.abs().flatten() for w in ws])
    tau = flat.kthvalue(flat.numel() - round(density * flat.numel())).values
    drawn = [float((w.abs() > tau).float().mean()) for w in ws]
    n = [math.prod(s) for s in shapes]
    args = (n, [math.prod(s[1:]) for s in shapes], [s[0] for s in shapes], density)
    shares = he_shares(*args, head="threshold")
    assert shares[-1] >= density
    if drawn[-1] > density + 4 * math.sqrt(density / n[-1]):  # the head above D: drawn
        for share, got, k in zip(shares, drawn, n, strict=True):
            assert share == pytest.approx(got, abs=4 * math.sqrt(got * (1 - got) / k) + 1e-3)
    # the whole network at D, the head's excess paid by the body
    assert sum(a * b for a, b in zip(n, shares, strict=True)) / sum(n) == pytest.approx(density)
    old = he_shares(*args)
    assert shares[-1] > old[-1] and all(a <= b for a, b in zip(shares[:-1], old[:-1], strict=True))


_DENSITIES = [0.1, 0.13, 0.3, 0.5, 0.8]


@pytest.mark.parametrize(
    ("args", "densities"),
    [
        (([144, 4608, 18432, 2048], [9, 144, 288, 1024], [16, 32, 64, 2]), _DENSITIES),  # curve CNN
        (([144, 4608, 18432, 4096], [9, 144, 288, 2048], [16, 32, 64, 2]), _DENSITIES),  # words CNN
        (([192, 16], [3, 1], [64, 16]), [0.05]),  # floors that hold the head at D jointly
    ],
)
def test_he_all_leaves_a_head_below_the_target_at_it_and_the_body_unchanged(
    args: tuple[list[int], list[int], list[int]], densities: list[float]
) -> None:
    """A two-class head on 1 024 or 2 048 features has He weights below the body's
    threshold: at D, and every share what ``he`` gives, to the last bit."""
    for density in densities:
        assert he_shares(*args, density, head="threshold") == he_shares(*args, density)
    for density in (0.13, 0.3, 0.5):  # a lone layer (the no-overlap network): D exactly
        assert he_shares([16], [16], [1], density, head="threshold") == [density]
    assert he_shares([], [], [], 0.1, head="threshold") == []
    with pytest.raises(ValueError, match="Invalid head value: 'body'"):
        he_shares(*args, 0.1, head="body")


def test_he_all_steers_the_head_to_its_threshold_share() -> None:
    """The closed loop ends the head of a narrow MLP above D, each layer at its
    ``head="threshold"`` share, the network at D; ``he`` ends the head at D."""
    weights_at = {}
    for allocation in ("he_all", "he"):
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 32), nn.ReLU(), nn.Linear(32, 10)
        )
        with torch.no_grad():
            for i in (0, 2, 4):
                nn.init.kaiming_normal_(net[i].weight)
        plant = _Plant(param_groups(net, lam=1e-3, lam_scale="layer"))
        ctl = TargetDensity(0.1, allocation=allocation, gain=0.3, max_factor=1.2)
        for _ in range(200):
            ctl.update(net, plant)
        ws = [net[i].weight for i in (0, 2, 4)]
        weights_at[allocation] = [float((plant.deployable(w) != 0).float().mean()) for w in ws]
        assert ctl.history[-1][1] == pytest.approx(0.1, abs=0.01)
    shares = he_shares([32768, 4096, 320], [256, 128, 32], [128, 32, 10], 0.1, head="threshold")
    assert shares[-1] > 0.5
    assert weights_at["he_all"] == pytest.approx(shares, abs=0.03)
    assert weights_at["he"][-1] == pytest.approx(0.1, abs=0.03)


def test_he_all_is_a_per_layer_allocation_in_the_config() -> None:
    cfg = TrainConfig(optimizer="adabreg", target_allocation="he_all").resolve()
    assert cfg.target_allocation == "he_all" and cfg.lam_scale == "layer"
    with pytest.raises(ValueError, match=r"Invalid target_allocation value: 'he_all'.*lam_scale"):
        TrainConfig(optimizer="proxsgd", target_density=0.1, target_allocation="he_all").resolve()
    with pytest.raises(ValueError, match="Invalid target_allocation value: 'he_al'"):
        TrainConfig(optimizer="adabreg", target_allocation="he_al").validate()


def test_proportional_on_the_density_ignores_a_moving_goal() -> None:
    """k_P on the error kicks λ when the goal moves and the density does not;
    ``proportional="density"`` leaves only the integral term then, and with a fixed goal
    both compute the same λ (global and per layer)."""
    for allocation in ("global", "he"):
        lams = {}
        for prop in ("error", "density"):
            net = _mlp()
            with torch.no_grad():
                for m in (net[0], net[2], net[4]):
                    w = m.weight.view(-1)
                    w[int(0.3 * w.numel()) :] = 0
            opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3, lam_scale="layer")
            ctl = TargetDensity(
                0.2, allocation=allocation, gain=0.1, kp=4.0, max_factor=10.0, proportional=prop
            )
            ctl.update(net, opt)
            ctl.update(net, opt)  # the same density: the P term is 0 either way
            same = [g["lam"] for g in opt.param_groups]
            ctl.target = 0.25  # the goal moves, the density does not
            ctl.update(net, opt)
            lams[prop] = (same, [g["lam"] for g in opt.param_groups])
            d = ctl.history[-1][1]
        assert lams["error"][0] == lams["density"][0]  # a fixed goal: the same λ
        err, dens = (lams[p][1][0] / lams[p][0][0] for p in ("error", "density"))
        if allocation == "global":  # one density near 30 %: the goal from 20 % to 25 %
            e = math.log(d / 0.25)
            assert dens == pytest.approx(math.exp(0.1 * e))  # the integral term alone
            assert err == pytest.approx(math.exp(0.1 * e + 4.0 * (e - math.log(d / 0.2))))
        assert err < dens  # the error fell with the goal's rise: "error" cuts λ further


def test_proportional_state_round_trips_and_an_older_state_loads() -> None:
    net = _mlp()
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=1e-3, lam_scale="layer")
    ctl = TargetDensity(0.2, allocation="he", kp=2.0, proportional="density")
    ctl.update(net, opt)
    state = ctl.state_dict()
    assert state["goals"] and all(len(row) == 2 for row in state["goals"])
    again = TargetDensity(0.2, allocation="he", kp=2.0, proportional="density")
    again.load_state_dict(state)
    assert again.state_dict() == state
    old = {k: v for k, v in state.items() if k not in ("goals", "prev_goal")}
    older = TargetDensity(0.2, allocation="he", kp=2.0, proportional="density")
    older.load_state_dict(old)
    assert older._goals == {} and older._prev_goal is None
    older.update(net, opt)  # differences the error once, then the density
    assert older._goals
    with pytest.raises(ValueError, match="Invalid proportional value: 'measured'"):
        TargetDensity(0.2, proportional="measured")
