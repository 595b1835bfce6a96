"""Tests for groupings, param_groups, sparse_init_ and density counts."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sparseopt as so
from sparseopt.groups import group_dims, group_norms, group_size, num_groups


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 10),
    )


def test_group_dims_and_sizes() -> None:
    shape = (8, 3, 5, 5)
    assert group_dims(4, "filter") == (1, 2, 3)
    assert group_dims(4, "channel") == (0, 2, 3)
    assert group_dims(4, "kernel") == (2, 3)
    assert group_dims(2, "row") == (1,) and group_dims(2, "column") == (0,)
    assert group_size(shape, "filter") == 75 and num_groups(shape, "filter") == 8
    assert group_size(shape, "channel") == 200 and num_groups(shape, "channel") == 3
    assert group_size(shape, "kernel") == 25 and num_groups(shape, "kernel") == 24
    w = torch.arange(6.0).reshape(2, 3)
    torch.testing.assert_close(group_norms(w, "row").flatten(), w.norm(dim=1))
    torch.testing.assert_close(group_norms(w, "column").flatten(), w.norm(dim=0))


def test_param_groups_split_weights_from_biases_and_norms() -> None:
    net = _net()
    groups = so.param_groups(
        net, penalty="l1", lam=0.1, conv_penalty="group_l1", conv_groups="kernel", linear_lam=0.3
    )
    by_name = {g["name"]: g for g in groups}
    assert by_name["conv"]["param_names"] == ["0.weight"]
    assert by_name["conv"]["penalty"] == "group_l1" and by_name["conv"]["groups"] == "kernel"
    assert by_name["conv"]["lam"] == 0.1
    assert by_name["linear"]["param_names"] == ["4.weight"]
    assert by_name["linear"]["penalty"] == "l1" and by_name["linear"]["lam"] == 0.3
    assert sorted(by_name["unpenalised"]["param_names"]) == [
        "0.bias",
        "1.bias",
        "1.weight",
        "4.bias",
    ]
    assert by_name["unpenalised"]["penalty"] == "none"
    total = sum(len(g["params"]) for g in groups)
    assert total == len(list(net.parameters()))


def test_param_groups_group_penalty_defaults_to_filters_and_exclude() -> None:
    groups = so.param_groups(_net(), penalty="group_l1", exclude=["4"])
    by_name = {g["name"]: g for g in groups}
    assert by_name["conv"]["groups"] == "filter"
    assert "linear" not in by_name and "4.weight" in by_name["unpenalised"]["param_names"]
    with pytest.raises(ValueError, match="nope"):
        so.param_groups(_net(), exclude=["nope"])


def _mlp() -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Linear(12, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 8),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 3),
    )


def test_output_layer_is_the_last_conv_or_linear_unless_its_weight_is_tied() -> None:
    assert so.groups.output_layer(_net()) == "4"
    assert so.groups.output_layer(_mlp()) == "4"
    assert so.groups.output_layer(torch.nn.Sequential(torch.nn.ReLU())) is None
    tied = torch.nn.Sequential(torch.nn.Embedding(3, 8), torch.nn.Linear(8, 3, bias=False))
    tied[1].weight = tied[0].weight  # a language model's head: penalised, if at all, there
    assert so.groups.output_layer(tied) is None


@pytest.mark.parametrize("lam_scale", ["none", "layer"])
def test_a_filter_grouping_groups_the_output_layers_inputs_not_its_classes(lam_scale: str) -> None:
    groups = so.param_groups(_mlp(), penalty="group_l1", lam=0.1, lam_scale=lam_scale)
    grouping = {n: g["groups"] for g in groups for n in g["param_names"] if g["penalty"] != "none"}
    assert grouping == {"0.weight": "filter", "2.weight": "filter", "4.weight": "channel"}
    assert all(g["lam"] == 0.1 for g in groups if g["penalty"] != "none")
    before = so.param_groups(_mlp(), penalty="group_l1", lam=0.1, head_groups="filter")
    assert [g["groups"] for g in before] == ["filter", None]  # one group, rows everywhere
    assert len(before[0]["params"]) == 3
    # a channel grouping, an elementwise penalty and an excluded head are left as they are
    for kw in ({"groups": "channel"}, {"penalty": "l1"}, {"exclude": ["4"]}):
        out = so.param_groups(_mlp(), **{"penalty": "group_l1", "lam": 0.1, **kw})
        assert len([g for g in out if g["penalty"] != "none"]) == 1
    with pytest.raises(ValueError, match="'rows'"):
        so.param_groups(_mlp(), penalty="group_l1", head_groups="rows")


def test_the_output_layer_keeps_every_class_under_a_group_penalty() -> None:
    """Group ℓ1 at a λ that empties every filter-grouped layer cannot zero a class row of
    the output layer on its own: its groups are columns (inputs), each spanning every class."""
    net = _mlp()
    opt = so.create_optimizer(net, "proxsgd", lr=1.0, penalty="group_l1", lam=0.05)
    w = net[4].weight.detach()
    cols = group_norms(w, "channel").flatten()
    with torch.no_grad():  # one strong column, the others below the threshold
        w.mul_(1e-3)
        w[:, 0] = 1.0
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    w = net[4].weight.detach()
    assert (w[:, 0] != 0).all() and (w[:, 1:] == 0).all()  # a whole input column, every class
    assert (w != 0).any(1).all() and cols.numel() == 8


@pytest.mark.parametrize("seed", range(5))
def test_sparse_init_per_filter_draws_the_output_layer_per_input(seed: int) -> None:
    net = _mlp()
    gen = torch.Generator().manual_seed(seed)
    so.sparse_init_(net, density=0.2, groups="filter", head_groups="channel", generator=gen)
    head = net[4].weight.detach() != 0
    assert head.any() and (head.all(0) == head.any(0)).all()  # whole columns
    assert head.any(1).all()  # every class has a weight
    hidden = net[0].weight.detach() != 0
    assert (hidden.all(1) == hidden.any(1)).all()  # the other layers: whole rows
    gen = torch.Generator().manual_seed(seed)
    so.sparse_init_(net, density=0.2, groups="filter", head_groups="filter", generator=gen)
    rows = net[4].weight.detach() != 0
    assert (rows.all(1) == rows.any(1)).all()  # head_groups="filter": rows, as before


def test_the_output_layers_rule_follows_aliases_and_only_a_filter_grouping() -> None:
    """``row`` is ``filter`` (Linear vocabulary) for the start and the penalty alike; the
    default draw of the output layer is by its inputs; a channel draw is left alone; a
    bare layer is its own output layer; a bad head grouping is refused up front."""
    net = _mlp()
    so.sparse_init_(net, density=0.3, groups="row", generator=torch.Generator().manual_seed(0))
    head = net[4].weight.detach() != 0
    assert (head.all(0) == head.any(0)).all() and head.any(1).all()
    so.sparse_init_(
        net, density=0.3, groups="channel", head_groups="filter",
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    head = net[4].weight.detach() != 0
    assert (head.all(0) == head.any(0)).all()  # channels stay channels
    groups = so.param_groups(_mlp(), penalty="group_l1", lam=0.1, groups="row")
    assert [g["groups"] for g in groups] == ["row", "channel", None]
    bare = so.param_groups(torch.nn.Linear(4, 3), penalty="group_l1", lam=0.1)
    assert [(g["param_names"], g["groups"]) for g in bare] == [
        (["weight"], "channel"),
        (["bias"], None),
    ]
    with pytest.raises(ValueError, match="'rows'"):
        so.param_groups(_mlp(), penalty="l1", head_groups="rows")
    with pytest.raises(ValueError, match="'rows'"):
        so.sparse_init_(_mlp(), 0.5, head_groups="rows")


def test_output_layer_takes_no_other_layer_for_a_reparametrised_head() -> None:
    from torch.nn.utils import spectral_norm
    from torch.nn.utils.parametrizations import weight_norm

    for wrap in (spectral_norm, weight_norm):
        net = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
            wrap(torch.nn.Linear(8, 3)),
        )  # fmt: skip
        assert so.groups.output_layer(net) is None, wrap


@pytest.mark.parametrize("r", [0.05, 0.3, 1.0])
def test_sparse_init_density_and_he_variance(r: float) -> None:
    net = torch.nn.Linear(400, 300)
    bias = net.bias.detach().clone()
    so.sparse_init_(net, density=r, generator=torch.Generator().manual_seed(0))
    w = net.weight.detach()
    frac = (w != 0).float().mean().item()
    assert abs(frac - r) < 0.01
    # Var of the nonzero values = 2 / (fan_in * r): He scaling divided by the density
    nz = w[w != 0]
    assert nz.var().item() == pytest.approx(2 / (400 * r), rel=0.05)
    assert torch.equal(net.bias.detach(), bias)  # biases untouched


@pytest.mark.parametrize(
    ("shape", "r"), [((2000, 20), 0.01), ((500, 400), 0.05), ((300, 4, 3, 3), 0.02)]
)
def test_sparse_init_gives_every_unit_he_variance(shape: tuple[int, ...], r: float) -> None:
    """Each unit's pre-activation variance is He's 2·E[x²], also for units the floor filled."""
    layer = (
        torch.nn.Linear(shape[1], shape[0])
        if len(shape) == 2
        else torch.nn.Conv2d(shape[1], shape[0], 3)
    )
    x = torch.randn(4000, *shape[1:], generator=torch.Generator().manual_seed(1))
    outs = {}
    for scale in ("fan_in", "density"):
        so.sparse_init_(layer, r, scale=scale, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            z = x.flatten(1) @ layer.weight.flatten(1).T  # pre-activations without bias
        outs[scale] = z.var(0).mean().item()
    assert outs["fan_in"] == pytest.approx(2.0, rel=0.1)
    if shape[1] * r < 1:  # the paper's scaling inflates the rows that the floor filled
        assert outs["density"] > 1.3 * outs["fan_in"]
    with pytest.raises(ValueError, match="'nope'"):
        so.sparse_init_(layer, r, scale="nope")


def test_sparse_init_per_group_kills_whole_filters() -> None:
    net = _net()
    so.sparse_init_(net, density=0.5, groups="filter", generator=torch.Generator().manual_seed(1))
    w = net[0].weight.detach()
    alive = group_norms(w, "filter").flatten() != 0
    assert 0 < alive.sum() < 8
    assert ((w != 0).flatten(1).all(dim=1) == alive).all()  # live filters are fully dense


def test_sparse_init_rejects_bad_density() -> None:
    for bad in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="density"):
            so.sparse_init_(_net(), density=bad)


def test_density_counts_by_hand() -> None:
    net = _net()
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[2] = 1.0  # one live filter, all 3 input channels alive
        net[4].weight.zero_()
        net[4].weight[:, :5] = 1.0  # all 10 neurons alive, 5 of 128 inputs
    rep = so.density(net)
    conv, lin = rep.layers["0"], rep.layers["4"]
    assert (conv.nonzero, conv.filters_alive, conv.channels_alive) == (27, 1, 3)
    assert (lin.nonzero, lin.filters_alive, lin.channels_alive, lin.channels) == (50, 10, 5, 128)
    assert rep.weights == 8 * 27 + 1280 and rep.weights_nonzero == 77
    n_params = sum(p.numel() for p in net.parameters())
    dense_rest = n_params - rep.weights
    nonzero_rest = sum(
        int((p != 0).sum())
        for n, p in net.named_parameters()
        if not n.endswith(".weight") or n == "1.weight"
    )
    assert rep.params == n_params
    assert rep.nonzero == 77 + nonzero_rest
    assert rep.overall == pytest.approx(rep.nonzero / n_params)
    assert dense_rest > 0 and math.isclose(rep.weight_density, 77 / rep.weights)
    assert rep.to_dict()["layers"]["0"]["filters_alive"] == 1


def test_top_level_exports_the_engine_lazily() -> None:
    from sparseopt import config, engine

    assert so.TrainConfig is config.TrainConfig
    assert so.train is engine.train
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = so.Nope


def test_sparse_init_without_floor_never_leaves_a_layer_empty() -> None:
    # 64 kernels at density 1 %: most seeds draw none; one kernel is switched on instead.
    empty_draws = 0
    for seed in range(20):
        conv = torch.nn.Conv2d(1, 64, 5)
        gen = torch.Generator().manual_seed(seed)
        empty_draws += not bool((torch.rand(64, generator=gen) < 0.01).any())
        so.sparse_init_(
            conv,
            0.01,
            groups="kernel",
            floor=False,
            generator=torch.Generator().manual_seed(seed),
        )
        live = (conv.weight.flatten(1) != 0).any(1)
        assert 1 <= int(live.sum()) <= 3, seed
    assert empty_draws > 5  # the case the rule is for does occur
    big = torch.nn.Linear(1000, 100)  # non-empty draws are untouched: density stays r
    so.sparse_init_(big, 0.01, floor=False, generator=torch.Generator().manual_seed(0))
    assert abs(float((big.weight != 0).float().mean()) - 0.01) < 0.002


@settings(max_examples=40, deadline=None)
@given(
    out=st.integers(1, 40),
    cin=st.integers(1, 40),
    kernel=st.sampled_from([(), (1,), (3,), (2, 2), (5, 5)]),
    density=st.floats(1e-4, 1.0),
    distribution=st.sampled_from(["uniform", "erk"]),
    kernel_groups=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sparse_init_floor_keeps_every_unit_and_channel_alive(
    out: int,
    cin: int,
    kernel: tuple[int, ...],
    density: float,
    distribution: str,
    kernel_groups: bool,
    seed: int,
) -> None:
    if kernel:
        conv = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d}[len(kernel)]
        layer: torch.nn.Module = conv(cin, out, kernel)
    else:
        layer = torch.nn.Linear(cin, out)
    net = torch.nn.Sequential(layer, torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    shape = (cin, *(k + 2 for k in kernel))
    net(torch.zeros(1, *shape))  # materialise the lazy layer
    so.sparse_init_(
        net,
        density,
        groups="kernel" if kernel_groups and kernel else None,
        distribution=distribution,
        generator=torch.Generator().manual_seed(seed),
    )
    for module in (net[0], net[3]):
        w = module.weight.detach()
        if module is net[3] and kernel:  # reads the conv's map flattened: its channels
            w = w.view(3, out, -1)
        assert bool((w.flatten(1) != 0).any(1).all()), "an output unit has no weight"
        assert bool((w.transpose(0, 1).flatten(1) != 0).any(1).all()), "a dead input channel"


def test_sparse_init_floor_covers_a_flattened_conv_map_by_channel() -> None:
    """A two-class head on a flattened 64 × 4 × 4 map starts near the requested density,
    not at half its weights, and every channel of the map still feeds it."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 64, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64 * 16, 2)
    )
    net.train()
    so.sparse_init_(net, 0.01, generator=torch.Generator().manual_seed(0))
    head = net[3].weight.detach()
    assert float((head != 0).float().mean()) < 0.05  # 1024 of 2048 with a per-feature floor
    assert bool((head.view(2, 64, 16) != 0).flatten(2).any(2).any(0).all()), "a dead channel"
    assert bool((head != 0).any(1).all())
    assert net.training and net[0].training  # the detection leaves the modes alone
    # a module that mixes channels lies between: nothing is assumed, every feature feeds
    mixed = torch.nn.Sequential(
        torch.nn.Conv2d(1, 64, 3),
        torch.nn.Flatten(),
        torch.nn.LayerNorm(64 * 16),
        torch.nn.Linear(64 * 16, 2),
    )
    so.sparse_init_(mixed, 0.01, generator=torch.Generator().manual_seed(0))
    assert bool((mixed[3].weight != 0).any(0).all())
    # not a flattened map (the input features are units of their own): every one feeds
    mlp = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Linear(64, 2))
    so.sparse_init_(mlp, 0.01, generator=torch.Generator().manual_seed(0))
    assert bool((mlp[1].weight != 0).any(0).all())


class _ChannelsLast(torch.nn.Module):
    """A conv map flattened channels-last: its features are not grouped by channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3)
        self.bn = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Linear(8 * 16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.conv(x)).permute(0, 2, 3, 1).flatten(1))


class _TwoInputs(torch.nn.Module):
    """An image branch and a tabular Linear registered right after the convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 16, 3)
        self.tab = torch.nn.Linear(32, 64)
        self.out = torch.nn.Linear(16 * 16 + 64, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        img, tab = x[:, :36].view(-1, 1, 6, 6), x[:, 36:]
        return self.out(torch.cat([self.conv(img).flatten(1), self.tab(tab)], 1))


def test_flattened_channels_assumes_nothing_outside_a_sequential_tree() -> None:
    """A channels-last flatten, a tabular Linear after a convolution in module order (a
    custom forward, not a tree of Sequentials), no Conv/Linear at all: the per-feature
    floor, no error."""
    cl = _ChannelsLast()
    running = cl.bn.running_mean.clone()
    assert so.init.flattened_channels(cl) == {}
    assert torch.equal(cl.bn.running_mean, running)  # statistics untouched
    two = _TwoInputs()
    assert so.init.flattened_channels(two) == {}
    so.sparse_init_(two, 0.01, generator=torch.Generator().manual_seed(0))
    assert bool((two.tab.weight != 0).any(0).all())  # every tabular feature feeds
    so.sparse_init_(cl, 0.01, generator=torch.Generator().manual_seed(0))
    assert bool((cl.head.weight != 0).any(0).all())  # every channels-last feature feeds
    so.sparse_init_(torch.nn.Sequential(torch.nn.ReLU()), 0.1)  # no layer to draw
    from sparseopt.models import build_model

    lenet = build_model("lenet5", (1, 28, 28), 10)
    found = so.init.flattened_channels(lenet)
    assert [(tuple(m.weight.shape), c) for m, c in found.items()] == [((120, 400), 16)]


def test_sparse_init_floor_revives_lenet_conv1_and_erk_keeps_the_budget() -> None:
    # LeNet-5's first convolution at 1 %: without the floor most filters start empty.
    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(1, 6, 5)
    so.sparse_init_(conv, 0.01, floor=False, generator=gen)
    assert int((conv.weight.flatten(1) != 0).any(1).sum()) < 6
    so.sparse_init_(conv, 0.01, generator=torch.Generator().manual_seed(0))
    assert int((conv.weight.flatten(1) != 0).any(1).sum()) == 6
    shapes = [(6, 1, 5, 5), (16, 6, 5, 5), (120, 400), (84, 120), (10, 84)]
    dens = so.init.erk_densities(shapes, 0.05)
    sizes = [math.prod(s) for s in shapes]
    assert sum(d * n for d, n in zip(dens, sizes, strict=True)) == pytest.approx(0.05 * sum(sizes))
    assert dens[2] < 0.05 < min(dens[0], dens[4])  # small layers get more
    assert so.init.erk_densities(shapes, 0.5)[0] == 1.0  # capped at dense
    assert so.init.erk_densities(shapes, 1.0) == [1.0] * 5
    with pytest.raises(ValueError, match="distribution"):
        so.sparse_init_(conv, 0.1, distribution="gaussian")


def test_init_scale_benchmark_shows_the_realised_scaling_starting_lower(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "init_scale.py"
    spec = importlib.util.spec_from_file_location("init_scale", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--dataset", "digits", "--models", "mlp", "--densities", "0.01"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| mlp")]
    dense, fan_in, by_density = (float(v) for v in row[0].strip("| ").split(" | ")[2:])
    assert dense < fan_in < by_density  # the density-scaled start begins far above ln 10


def test_param_groups_and_sparse_init_refuse_a_bad_head_grouping_alike() -> None:
    from sparseopt.groups import param_groups
    from sparseopt.init import sparse_init_

    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    messages = []
    for call in (
        lambda: param_groups(net, penalty="group_l1", head_groups="classes"),
        lambda: sparse_init_(net, 0.5, head_groups="classes"),
    ):
        with pytest.raises(ValueError, match="Invalid head_groups value: 'classes'") as err:
            call()
        messages.append(str(err.value))
    assert messages[0] == messages[1]
