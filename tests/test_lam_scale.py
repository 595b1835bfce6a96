"""λ per layer by fan-in (``lam_scale="fan_in"``): the factors, the param groups, the
optimizer and config plumbing, and a run that reports the factor-free λ."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from engine_helpers import tiny
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sparseopt as so
from sparseopt.config import TrainConfig
from sparseopt.control import LamWarmup, TargetDensity
from sparseopt.engine import Trainer
from sparseopt.engine.errors import ConfigError
from sparseopt.groups import base_lam, layer_lam_factors, param_groups


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 3)
    )


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(
        st.tuples(st.integers(1, 9), st.integers(1, 40), st.sampled_from([1, 3, 5])),
        min_size=1,
        max_size=4,
    ),
    pens=st.lists(st.sampled_from(["l1", "l0", "tl1", "group_l1", "group_l0"]), min_size=4),
)
def test_factors_follow_the_he_scale_with_mean_one_over_the_weights(
    shapes: list[tuple[int, int, int]], pens: list[str]
) -> None:
    ws = [torch.zeros(o, i, k, k) if k > 1 else torch.zeros(o, i) for o, i, k in shapes]
    pens = pens[: len(ws)]
    c = layer_lam_factors(ws, pens)
    n = [w.numel() for w in ws]
    # the penalty's total weight is that of one λ
    assert sum(ci * ni for ci, ni in zip(c, n, strict=True)) == pytest.approx(sum(n))
    for a in range(len(ws)):
        for b in range(len(ws)):
            # c_a / c_b = (σ_a / σ_b)^p, σ = √(2 / fan-in), p = 2 for the ℓ0 family
            pa = 2 if pens[a] in ("l0", "group_l0") else 1
            pb = 2 if pens[b] in ("l0", "group_l0") else 1
            ra = (2 / ws[a][0].numel()) ** (pa / 2)
            rb = (2 / ws[b][0].numel()) ** (pb / 2)
            assert c[a] / c[b] == pytest.approx(ra / rb)


def test_one_layer_keeps_its_lambda_and_conv1_gets_more_than_the_classifier() -> None:
    (only,) = layer_lam_factors([torch.zeros(5, 7)], ["l1"])
    assert only == pytest.approx(1.0)
    c = layer_lam_factors([torch.zeros(16, 1, 3, 3), torch.zeros(2, 2048)], ["l1", "l1"])
    assert c[0] / c[1] == pytest.approx(math.sqrt(2048 / 9))


def test_param_groups_give_each_layer_its_group_and_factor() -> None:
    net = _net()
    plain = param_groups(net, lam=0.1)
    scaled = param_groups(net, lam=0.1, lam_scale="fan_in")
    assert [g["name"] for g in plain] == ["conv", "linear", "unpenalised"]
    assert [g["name"] for g in scaled] == ["conv", "conv", "linear", "unpenalised"]
    pen = [g for g in scaled if g["penalty"] != "none"]
    assert [g["param_names"] for g in pen] == [["0.weight"], ["2.weight"], ["4.weight"]]
    factors = layer_lam_factors([g["params"][0] for g in pen], ["l1"] * 3)
    for g, f in zip(pen, factors, strict=True):
        assert g["lam_factor"] == pytest.approx(f)
        assert g["lam"] == pytest.approx(0.1 * f)
    assert pen[0]["lam"] > pen[1]["lam"] > pen[2]["lam"]  # fan-in 9 < 36 < 128
    assert base_lam(scaled) == pytest.approx(0.1) and base_lam(plain) == pytest.approx(0.1)
    # the λ as written, not λ·c/c's last bit (metrics.csv and summary.json show it): on
    # the digits MLP 0.007·c/c is 0.006999999999999999 for fc1
    mlp = nn.Sequential(nn.Linear(64, 200), nn.ReLU(), nn.Linear(200, 80), nn.Linear(80, 10))
    for lam in (0.007, 0.03, 0.45, 4e-5):
        assert base_lam(param_groups(mlp, lam=lam, lam_scale="fan_in")) == lam
    # conv_lam / linear_lam are scaled too
    per_kind = param_groups(net, lam=0.1, linear_lam=0.5, lam_scale="fan_in")
    assert per_kind[2]["lam"] == pytest.approx(0.5 * per_kind[2]["lam_factor"])


def test_param_groups_refuse_an_unknown_scale_and_a_lambda_left_to_the_optimizer() -> None:
    with pytest.raises(ValueError, match="Invalid lam_scale value: 'depth'"):
        param_groups(_net(), lam=0.1, lam_scale="depth")
    with pytest.raises(ValueError, match="pass lam"):
        param_groups(_net(), lam_scale="fan_in")


def test_create_optimizer_scales_the_recipes_lambda_and_needs_a_model() -> None:
    net = _net()
    opt = so.create_optimizer(net, "splitlbi", lam_scale="fan_in")
    recipe = so.get_optimizer_info("splitlbi").lam["l1"]
    assert base_lam(opt.param_groups) == pytest.approx(recipe)
    assert len(opt.param_groups) == 4
    # plain params carry no layers: "none" is fine, an asked scale refused (named)
    params = list(net.parameters())
    assert len(so.create_optimizer(params, "splitlbi", lam_scale="none").param_groups) == 1
    with pytest.raises(ValueError, match="without a model: lam_scale='fan_in'"):
        so.create_optimizer(params, "splitlbi", lam_scale="fan_in")
    with pytest.raises(ValueError, match="dense optimizer 'sgd': lam_scale='fan_in'"):
        so.create_optimizer(net, "sgd", lam_scale="fan_in")


def test_a_recipes_scale_applies_with_a_model_and_is_dropped_without(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dataclasses import replace
    from types import MappingProxyType

    from sparseopt.optim.registry import OPTIMIZERS

    info = OPTIMIZERS["rvsm"]
    scaled = replace(info, defaults=MappingProxyType({**info.defaults, "lam_scale": "fan_in"}))
    monkeypatch.setitem(OPTIMIZERS, "rvsm", scaled)
    net = _net()
    assert len(so.create_optimizer(net, "rvsm").param_groups) == 4  # one per layer
    assert len(so.create_optimizer(net.parameters(), "rvsm").param_groups) == 1
    assert TrainConfig(optimizer="rvsm").resolve().lam_scale == "fan_in"


def test_per_layer_groups_step_exactly_like_hand_built_groups() -> None:
    """The scaled run is the algorithm with per-layer λ, nothing else: the same iterates
    as the optimizer given, by hand, λ·σ_l / mean(σ) per layer (σ_l = √(2/fan-in))."""
    torch.manual_seed(0)
    a, b = _net(), _net()
    b.load_state_dict(a.state_dict())
    hp = {"lr": 0.5, "nu": 1.0}  # Γ's support grows within the five steps
    opt_a = so.create_optimizer(a, "splitlbi", lam=0.05, lam_scale="fan_in", **hp)
    weights = [b[0].weight, b[2].weight, b[4].weight]
    sigma = [math.sqrt(2 / (w.numel() / w.shape[0])) for w in weights]
    mean = sum(s * w.numel() for s, w in zip(sigma, weights, strict=True)) / sum(
        w.numel() for w in weights
    )
    by_hand = [
        {"params": [w], "lam": 0.05 * s / mean, "penalty": "l1"}
        for w, s in zip(weights, sigma, strict=True)
    ]
    rest = [p for n, p in b.named_parameters() if not n.endswith("weight")]
    opt_b = so.create_optimizer(
        [*by_hand, {"params": rest, "penalty": "none", "lam": 0.0}], "splitlbi", **hp
    )
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 3, (6,))
    for _ in range(5):
        for net, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-7)
    for wa, w in zip([a[0].weight, a[2].weight, a[4].weight], weights, strict=True):
        # Γ partly in, partly out in every layer: λ decided the support
        torch.testing.assert_close(opt_a.gamma(wa), opt_b.gamma(w), rtol=0, atol=1e-7)
        assert bool((opt_b.gamma(w) != 0).any()) and bool((opt_b.gamma(w) == 0).any())


def test_unpenalised_layers_and_other_penalties_do_not_move_the_factors() -> None:
    net = _net()
    # Conv weights unpenalised: the one penalised layer keeps its λ, the convs no factor
    groups = param_groups(net, linear_lam=0.1, conv_penalty="none", lam_scale="fan_in")
    conv = [g for g in groups if g["name"] == "conv"]
    assert len(conv) == 1 and conv[0]["penalty"] == "none" and "lam_factor" not in conv[0]
    (linear,) = [g for g in groups if g["name"] == "linear"]
    assert linear["lam_factor"] == pytest.approx(1.0) and linear["lam"] == pytest.approx(0.1)
    # ℓ0 on the convs, ℓ1 on the classifier: each penalty is normalised on its own
    mixed = param_groups(net, conv_penalty="l0", conv_lam=1e-3, linear_lam=1e-2, lam_scale="fan_in")
    conv = [g for g in mixed if g["name"] == "conv"]
    n = [g["params"][0].numel() for g in conv]
    assert sum(g["lam_factor"] * k for g, k in zip(conv, n, strict=True)) == pytest.approx(sum(n))
    assert conv[0]["lam_factor"] / conv[1]["lam_factor"] == pytest.approx(36 / 9)  # σ²
    assert mixed[2]["lam_factor"] == pytest.approx(1.0)


def test_set_lam_and_the_controllers_work_on_the_factor_free_lambda() -> None:
    net = _net()
    opt = so.create_optimizer(net, "rvsm", lam=1e-3, lam_scale="fan_in")
    pen = [g for g in opt.param_groups if g["penalty"] != "none"]
    ratios = [g["lam"] / pen[0]["lam"] for g in pen]
    opt.set_lam(2e-3)
    assert base_lam(opt.param_groups) == pytest.approx(2e-3)
    assert [g["lam"] / pen[0]["lam"] for g in pen] == pytest.approx(ratios)
    warm = LamWarmup(opt, 0.5)
    warm.set_step(opt, step=1, total=4)
    assert base_lam(opt.param_groups) == pytest.approx(1e-3)
    assert [g["lam"] / pen[0]["lam"] for g in pen] == pytest.approx(ratios)
    ctl = TargetDensity(0.01)
    assert ctl.update(net, opt) == pytest.approx(base_lam(opt.param_groups))
    assert ctl.history[-1][2] == pytest.approx(base_lam(opt.param_groups))


def test_target_density_keeps_the_layers_ratios() -> None:
    net = _net()
    opt = so.create_optimizer(net, "rvsm", lam=1e-3, lam_scale="fan_in")
    ctl = TargetDensity(0.01)
    ctl.update(net, opt)
    pen = [g for g in opt.param_groups if g["penalty"] != "none"]
    bases = [g["lam"] / g["lam_factor"] for g in pen]
    assert bases[0] != pytest.approx(1e-3)  # λ moved
    assert bases == pytest.approx([bases[0]] * len(bases))


def test_config_resolves_the_recipes_scale_and_coupled_refuses_one() -> None:
    assert TrainConfig(optimizer="rvsm").resolve().lam_scale == "none"
    # the Bregman recipes' groups per layer serve their per-layer target; with a λ given,
    # one group per layer kind
    assert TrainConfig(optimizer="linbreg").resolve().lam_scale == "layer"
    assert TrainConfig(optimizer="linbreg", lam=0.05).resolve().lam_scale == "none"
    assert TrainConfig(optimizer="sgd").resolve().lam_scale is None
    with pytest.raises(ValueError, match="Invalid lam_scale value: 'fan_in'"):
        TrainConfig(optimizer="adabreg", coupled="head", lam_scale="fan_in").resolve()


def test_a_run_reports_the_factor_free_lambda(tmp_path: Path) -> None:
    cfg = tiny(tmp_path / "run", optimizer="linbreg", lam=0.07, lam_scale="fan_in")
    with Trainer(cfg) as t:
        t.fit()
    log = (tmp_path / "run" / "log.txt").read_text().splitlines()[0]
    assert "λ=0.07" in log and "λ per layer by fan-in" in log
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["metrics"]["lam"] == pytest.approx(0.07)
    assert summary["config"]["lam_scale"] == "fan_in"


def test_a_bad_scale_is_a_config_error(tmp_path: Path) -> None:
    cfg = tiny(tmp_path / "run", optimizer="linbreg", lam_scale="depth")
    with pytest.raises(ConfigError, match="lam_scale"):
        Trainer(cfg)


@pytest.mark.parametrize(("flag", "value"), [("--lam-scale", "depth"), ("--lam-scale", "FAN_IN")])
def test_bad_values_are_one_line_and_exit_2(
    flag: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sparseopt.cli import main

    code = main(["train", flag, value, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and value in err[0], err
    assert not (tmp_path / "x").exists()


def test_base_lam_leaves_a_lambda_of_more_digits_alone() -> None:
    mlp = nn.Sequential(nn.Linear(64, 200), nn.ReLU(), nn.Linear(200, 80), nn.Linear(80, 10))
    lam = 0.0123456789012345
    got = base_lam(param_groups(mlp, lam=lam, lam_scale="fan_in"))
    assert got == pytest.approx(lam, rel=1e-15) and got != float(f"{lam:.12g}")
