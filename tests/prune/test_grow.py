"""Enlarging: widening is function-preserving, carries the optimizer, and training goes on."""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import sparseopt as so
from sparseopt.models import build_model
from sparseopt.prune import GrowCallback, grow_saturated, layer_saturation, widen


def _bn_convnet() -> nn.Sequential:
    torch.manual_seed(0)
    features = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 4, 3, padding=1),
            bn1=nn.BatchNorm2d(4),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(4, 6, 3, padding=1),
            bn2=nn.BatchNorm2d(6),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
        )
    )
    classifier = nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(), fc1=nn.Linear(6 * 4 * 4, 8), relu=nn.ReLU(), fc2=nn.Linear(8, 3)
        )
    )
    return nn.Sequential(OrderedDict(features=features, classifier=classifier))


@pytest.mark.parametrize("layer", ["features.conv1", "features.conv2", "classifier.fc1"])
@torch.no_grad()
def test_widen_preserves_outputs_with_bn_and_flatten(layer: str) -> None:
    net = _bn_convnet()
    for m in net.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    net.eval()
    x = torch.randn(5, 1, 16, 16)
    y = net(x)
    width = net.get_submodule(layer).weight.shape[0]
    widen(net, layer, 3)
    assert net.get_submodule(layer).weight.shape[0] == width + 3
    torch.testing.assert_close(net(x), y, atol=1e-6, rtol=0)
    assert net(x).shape == y.shape
    net.train()
    net(x)  # the training forward runs with the widened BN


@pytest.mark.parametrize(("name", "shape"), [("mlp", (1, 8, 8)), ("lenet5", (1, 8, 8))])
@torch.no_grad()
def test_widen_every_layer_of_reference_models(name: str, shape: tuple) -> None:
    torch.manual_seed(0)
    net = build_model(name, shape, 10).eval()
    x = torch.randn(4, *shape)
    y = net(x)
    for layer in layer_saturation(net):
        widen(net, layer, 2)
    torch.testing.assert_close(net(x), y, atol=1e-6, rtol=0)


def test_widen_rejects_output_layer_and_non_sequential() -> None:
    net = _bn_convnet()
    with pytest.raises(ValueError, match="last"):
        widen(net, "classifier.fc2", 1)
    with pytest.raises(ValueError, match="sequential"):
        widen(build_model("resnet18", (3, 8, 8), 10), "conv1", 1)
    with pytest.raises(ValueError, match="k value"):
        widen(net, "features.conv1", 0)


def _task(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 16, 16, generator=g)
    teacher = torch.randn(256, 3, generator=g)
    y = (x.flatten(1) @ teacher).argmax(1)
    return x, y


def _train(
    net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int
) -> list[float]:
    losses = []
    for i in range(steps):
        idx = slice((i * 32) % len(x), (i * 32) % len(x) + 32)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_splitlbi_grow_keeps_function_and_state_and_training_continues() -> None:
    net = _bn_convnet()
    x, y = _task()
    opt = so.create_optimizer(
        net, "splitlbi", lr=0.1, nu=1.0, lam=0.02, momentum=0.9, conv_penalty="group_l1"
    )
    _train(net, opt, x, y, 30)
    net.eval()
    with torch.no_grad():
        y_raw = net(x[:8])
        with opt.deployed():
            y_dep = net(x[:8])
    old_params = {id(p) for g in opt.param_groups for p in g["params"]}
    grown = grow_saturated(
        net, opt, tau=0.0, grow_by=0.5, generator=torch.Generator().manual_seed(1)
    )
    assert grown["features.conv1"] == (4, 6) and grown["classifier.fc1"] == (8, 12)
    with torch.no_grad():
        torch.testing.assert_close(net(x[:8]), y_raw, atol=1e-6, rtol=0)
        with opt.deployed():
            torch.testing.assert_close(net(x[:8]), y_dep, atol=1e-6, rtol=0)
    # the optimizer holds exactly the model's parameters, with state of matching shapes
    model_params = {id(p) for p in net.parameters()}
    opt_params = {id(p) for g in opt.param_groups for p in g["params"]}
    assert opt_params == model_params and opt_params != old_params
    w = net.features.conv1.weight
    state = opt.state[w]
    assert state["gamma"].shape == w.shape and state["dual"].shape == w.shape
    assert state["momentum_buffer"].shape == w.shape
    assert bool((state["gamma"][4:] == 0).all()) and bool((state["dual"][4:] == 0).all())
    assert bool((w[4:] != 0).any())  # new incoming weights are random
    assert net.classifier.fc1.weight.shape == (12, (6 + 3) * 16)
    assert bool((net.classifier.fc1.weight[:8, 96:] == 0).all())  # outgoing new columns zero
    assert bool((net.classifier.fc2.weight[:, 8:] == 0).all())
    net.train()
    before = sum(_train(net, opt, x, y, 4)) / 4
    after = sum(_train(net, opt, x, y, 40)[-4:]) / 4
    assert after < before
    assert bool((net.classifier.fc2.weight[:, 8:] != 0).any())  # the new units learn


def test_linbreg_grow_keeps_new_incoming_weights() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 2))
    opt = so.create_optimizer(net, "linbreg", lr=0.01, lam=0.01)
    x = torch.randn(8, 1, 4, 4)
    widen(net, "1", 3, optimizer=opt, init_scale=1.0)
    new_rows = net[1].weight[6:].detach().clone()
    opt.zero_grad()
    net(x).sum().backward()
    opt.step()
    # with a consistent dual the new weights move by a small step instead of vanishing
    assert bool((net[1].weight[6:] != 0).any())
    torch.testing.assert_close(net[1].weight[6:], new_rows, atol=0.05, rtol=0)


def test_saturation_and_callback() -> None:
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 2))
    with torch.no_grad():
        net[0].weight[:1] = 0  # 4/5 selected: not above 0.8
        net[2].weight[:0] = 0
    sat = layer_saturation(net)
    assert sat == {"0": pytest.approx(0.8), "2": pytest.approx(1.0)}
    cb = GrowCallback(every=2, tau=0.8, grow_by=2)
    trainer = SimpleNamespace(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1))
    metrics: dict = {}
    cb.on_epoch_end(trainer, 1, metrics)
    assert net[2].out_features == 5 and not cb.history
    cb.on_epoch_end(trainer, 2, metrics)
    assert net[2].out_features == 7 and net[0].out_features == 5
    assert cb.history == [(2, {"2": (5, 7)})] and metrics["grown"] == {"2": [5, 7]}
    with pytest.raises(ValueError, match="tau"):
        grow_saturated(net, tau=1.5)
