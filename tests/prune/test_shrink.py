"""Physical shrinking: the small dense model computes what the masked model computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparseopt.metrics import count_macs
from sparseopt.models import build_model
from sparseopt.prune import ShrinkPlan, apply_plan, shrink

pytest.importorskip("torch_pruning")

ATOL = 1e-5


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def _kill_filters(model: nn.Module, frac: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Zero a random ``frac`` of the filters/neurons of every layer but the output one;
    randomise BatchNorm (eval statistics and affine) so dead filters carry constants."""
    dead: dict[str, torch.Tensor] = {}
    layers = _layers(model)
    for name, m in layers[:-1]:
        d = torch.rand(m.weight.shape[0], generator=gen) < frac
        d[0] = False  # never the whole layer
        m.weight[d] = 0
        if m.bias is not None:
            m.bias.normal_(generator=gen)
        dead[name] = d
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.normal_(generator=gen)
            m.bias.normal_(generator=gen)
    return dead


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    ("name", "shape"),
    [("mlp", (1, 8, 8)), ("lenet5", (1, 28, 28)), ("convnet", (1, 28, 28))],
)
def test_shrink_equals_masked_and_removes_every_dead_filter(name: str, shape: tuple) -> None:
    # No zero-padded conv consumes a dead filter here: every dead filter's constant is folded.
    gen = torch.Generator().manual_seed(0)
    model = build_model(name, shape, 10).eval()
    dead = _kill_filters(model, 0.5, gen)
    res = shrink(model, torch.randn(2, *shape))
    small = res.model.eval()
    x = torch.randn(8, *shape, generator=gen)
    torch.testing.assert_close(small(x), model(x), atol=ATOL, rtol=0)
    assert res.max_abs_diff <= ATOL
    for (lname, m), (_, s) in zip(_layers(model)[:-1], _layers(small)[:-1], strict=True):
        assert s.weight.shape[0] == int((~dead[lname]).sum()), lname
        assert m.weight.shape[0] == len(dead[lname])  # the original is untouched
    assert res.plan.folded > 0
    assert _params(small) < _params(model)
    assert count_macs(small, shape).dense < count_macs(model, shape).dense


def _bn_constant(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """Output of relu(bn(conv)) on a dead filter: relu(γ (b − μ)/√(σ² + ε) + β)."""
    b = conv.bias if conv.bias is not None else torch.zeros_like(bn.bias)
    z = (b - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    return torch.relu(z)


@torch.no_grad()
def test_shrink_vgg16_bn_rule_for_padded_consumers() -> None:
    gen = torch.Generator().manual_seed(1)
    shape = (3, 16, 16)
    model = build_model("vgg16", shape, 10).eval()
    dead = _kill_filters(model, 0.5, gen)
    convs = [(n, m) for n, m in model.features.named_children() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.features.children() if isinstance(m, nn.BatchNorm2d)]
    with torch.enable_grad():
        res = shrink(model, torch.randn(2, *shape))
    small = res.model.eval()
    x = torch.randn(4, *shape, generator=gen)
    torch.testing.assert_close(small(x), model(x), atol=ATOL, rtol=0)
    small_convs = [m for m in small.features.children() if isinstance(m, nn.Conv2d)]
    for i, ((cname, conv), bn, sconv) in enumerate(zip(convs, bns, small_convs, strict=True)):
        d = dead[f"features.{cname}"]
        if i < len(convs) - 1:
            # consumer is a zero-padded 3x3 conv: only constants clipped to 0 by ReLU go
            removable = d & (_bn_constant(conv, bn) == 0)
        else:
            removable = d  # the last conv feeds the Linear classifier: folded
        assert sconv.out_channels == conv.out_channels - int(removable.sum()), cname
        assert res.plan.kept_constant[f"features.{cname}"] == int((d & ~removable).sum())
    assert _params(small) < _params(model)


@torch.no_grad()
def test_shrink_resnet18_and_replay_plan() -> None:
    gen = torch.Generator().manual_seed(2)
    shape = (3, 16, 16)
    model = build_model("resnet18", shape, 10).eval()
    _kill_filters(model, 0.5, gen)
    # make half of the blocks' inner filters inert: zero BN shift, zero mean
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            inert = torch.rand(m.num_features, generator=gen) < 0.5
            m.bias[inert] = 0
            m.running_mean[inert] = 0
    with torch.enable_grad():
        res = shrink(model, torch.randn(2, *shape))
    small = res.model.eval()
    x = torch.randn(4, *shape, generator=gen)
    torch.testing.assert_close(small(x), model(x), atol=ATOL, rtol=0)
    assert small.layer1[0].conv1.out_channels < 64
    assert _params(small) < 0.9 * _params(model)
    # replay the plan on a fresh model and load the shrunk weights
    plan = ShrinkPlan.from_dict(res.plan.to_dict())
    fresh = build_model("resnet18", shape, 10)
    with torch.enable_grad():
        apply_plan(fresh, plan, torch.randn(2, *shape))
    fresh.load_state_dict(small.state_dict())
    torch.testing.assert_close(fresh.eval()(x), small(x))


@torch.no_grad()
def test_unused_inputs_are_removed_even_when_producers_live() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 2))
    net[2].weight[:, [1, 3, 4]] = 0  # hidden units 1, 3, 4 feed nothing
    res = shrink(net, torch.randn(2, 6))
    assert res.model[0].out_features == 5
    assert res.plan.widths["0"] == [8, 5]
    x = torch.randn(16, 6)
    torch.testing.assert_close(res.model(x), net(x), atol=ATOL, rtol=0)


@torch.no_grad()
def test_constant_into_padded_conv_is_kept_and_zero_constant_removed() -> None:
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1), nn.Flatten()
    )
    net[0].weight[1:3] = 0
    net[0].bias[1] = 0.7  # constant 0.7 into a zero-padded conv: not foldable, kept
    net[0].bias[2] = -0.3  # ReLU clips it to 0: removable
    res = shrink(net, torch.randn(2, 2, 5, 5))
    assert res.model[0].out_channels == 3
    assert res.plan.kept_constant["0"] == 1
    x = torch.randn(3, 2, 5, 5)
    torch.testing.assert_close(res.model(x), net(x), atol=ATOL, rtol=0)


@torch.no_grad()
def test_fold_creates_a_bias_when_the_consumer_has_none() -> None:
    net = nn.Sequential(
        nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3, bias=False), nn.ReLU(), nn.Linear(3, 2)
    )
    net[0].weight[:4] = 0
    net[0].bias.fill_(0.5)
    res = shrink(net, torch.randn(2, 4))
    assert res.model[2].bias is not None and "2" in res.plan.added_bias
    assert res.model[0].out_features == 2
    x = torch.randn(5, 4)
    torch.testing.assert_close(res.model(x), net(x), atol=ATOL, rtol=0)


def test_shrink_applies_masks_and_keeps_training_mode() -> None:
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).train()
    mask = torch.ones(6, 4, dtype=torch.bool)
    mask[:3] = False
    res = shrink(net, torch.randn(2, 4), masks={"0.weight": mask})
    assert res.model.training
    assert res.model[0].out_features == 3
    assert net[0].out_features == 6 and bool((net[0].weight != 0).all())  # copy by default
