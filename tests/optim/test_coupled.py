"""Every sparse optimizer trains with coupled groups (attention heads, MLP neurons).

A packed model (:func:`sparseopt.coupled.pack_coupled`) holds one ``(G, |g|)``
parameter per head / neuron set, and the optimizers' ``filter`` group penalties act on
its rows, i.e. on the joint norms. The table runs every method, on both of its paths,
with ``group_l1`` and ``group_l0``; oracles for ProxSGD and LinBreg check the first step
against the coupled prox computed on the original, unpacked tensors.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

import sparseopt as so
from sparseopt.coupled import (
    coupled_norms,
    coupled_param_groups,
    coupled_prox,
    dead_groups,
    detect_coupled_groups,
    gather_blocks,
    pack_coupled,
    scatter_blocks,
    unpack_coupled,
    zero_groups_,
)
from sparseopt.prune.heads import shrink_coupled

# method -> (options, λ): from a start with every other head and neuron zero (a
# sparse start, Bungert et al. §4.1), λ at which some groups stay dead and some live
TABLE: dict[str, tuple[dict[str, Any], float]] = {
    "linbreg": ({"lr": 0.1, "momentum": 0.0}, 0.03),
    "adabreg": ({"lr": 1e-2}, 0.03),
    "splitlbi": ({"lr": 0.05, "kappa": 1.0, "nu": 10.0, "momentum": 0.0}, 0.01),
    "rda": ({"lr": 1.0}, 0.01),  # the recipe's adaptive metric, γ 100
    "rvsm": ({"lr": 0.05, "beta": 1.0, "momentum": 0.0}, 0.03),
    "proxsgd": ({"lr": 0.05, "momentum": 0.0}, 0.03),
}
assert set(TABLE) == {n for n in so.list_optimizers() if n not in ("sgd", "adam")}


class Tiny(nn.Module):
    """One encoder layer on 6 tokens of 5 features, mean-pooled into 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(5, 8)
        self.layer = nn.TransformerEncoderLayer(
            8, 4, dim_feedforward=12, dropout=0.0, batch_first=True
        )
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(self.embed(x)).mean(1))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(48, 6, 5, generator=gen, dtype=torch.float64)
    y = (x[:, :, 0].sum(1) > 0).long() + (x[:, 0, 1] > 0.5).long()
    return x, y


def _model(sparse: bool = False) -> Tiny:
    torch.manual_seed(0)
    model = pack_coupled(Tiny().double())
    if sparse:
        for cg in model.sparseopt_coupled.sets:
            zero_groups_(model, cg, range(0, cg.num_groups, 2))
    return model


def _optimizer(model: nn.Module, name: str, penalty: str, lam: float, **extra: Any) -> Any:
    options = TABLE[name][0]
    groups = coupled_param_groups(model, penalty=penalty, lam=lam)
    return so.create_optimizer(groups, name, **options, **extra)


def _train(model: nn.Module, opt: Any, steps: int) -> list[float]:
    x, y = _data()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("penalty", ["group_l1", "group_l0"])
@pytest.mark.parametrize("name", sorted(TABLE))
def test_trains_and_kills_whole_groups(name: str, penalty: str) -> None:
    model = _model(sparse=True)
    opt = _optimizer(model, name, penalty, TABLE[name][1])
    losses = _train(model, opt, 40)
    assert losses[-1] < losses[0]
    with opt.deployed():
        sets = model.sparseopt_coupled.sets
        dead = dead_groups(model, sets)
        live_entries = [
            int((p != 0).sum()) for p in model.sparseopt_coupled.packed
        ]  # a live group is nonzero somewhere; dead groups are exactly zero rows
    n_dead = sum(len(v) for v in dead.values())
    n_all = sum(cg.num_groups for cg in sets)
    assert 0 < n_dead < n_all, (dead, losses[-1])
    assert sum(live_entries) > 0
    # the deployable network shrinks to the same function
    opt.finalize()
    res = shrink_coupled(model, inputs=_data()[0][:4])
    assert res.max_abs_diff <= 1e-5
    assert sum(res.removed.values()) == n_dead


@pytest.mark.parametrize("name", sorted(TABLE))
def test_foreach_equals_for_loop(name: str) -> None:
    results = []
    for foreach in (False, True):
        model = _model(sparse=True)
        opt = _optimizer(model, name, "group_l1", TABLE[name][1], foreach=foreach)
        _train(model, opt, 5)
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def _first_step_reference(lam: float, lr: float, linbreg: bool) -> dict[str, torch.Tensor]:
    """θ₁ on the unpacked model from the coupled prox of the original tensors."""
    torch.manual_seed(0)
    ref = Tiny().double()
    sets = detect_coupled_groups(ref)
    x, y = _data()
    nn.functional.cross_entropy(ref(x), y).backward()
    params = dict(ref.named_parameters())
    out = {}
    for cg in sets:
        theta = [params[s.param].detach() for s in cg.slices]
        grads = [params[s.param].grad for s in cg.slices]
        if linbreg:  # δ = 1: v₀ = θ₀ + ∂J(θ₀) (joint), θ₁ = prox_J(v₀ − τg)
            size = cg.group_size
            n = coupled_norms(theta, cg)
            v = [
                t
                + scatter_blocks(
                    lam * size**0.5 * gather_blocks(t, s, cg.num_groups) / n[:, None],
                    s,
                    cg.num_groups,
                    t.shape,
                )
                - lr * g
                for t, s, g in zip(theta, cg.slices, grads, strict=True)
            ]
            new = coupled_prox(v, cg, "group_l1", 1.0, lam=lam)
        else:  # ProxSGD: θ₁ = prox_{τJ}(θ₀ − τg)
            new = coupled_prox(
                [t - lr * g for t, g in zip(theta, grads, strict=True)], cg, "group_l1", lr, lam=lam
            )
        out.update({s.param: v for s, v in zip(cg.slices, new, strict=True)})
    return out


@pytest.mark.parametrize("name", ["proxsgd", "linbreg"])
def test_first_step_is_the_coupled_prox(name: str) -> None:
    lam, lr = (3.0 if name == "proxsgd" else 0.3), 0.1
    model = _model()
    groups = coupled_param_groups(model, penalty="group_l1", lam=lam)
    extra = {"delta": 1.0} if name == "linbreg" else {}
    opt = so.create_optimizer(groups, name, lr=lr, momentum=0.0, **extra)
    _train(model, opt, 1)
    want = _first_step_reference(lam, lr, linbreg=name == "linbreg")
    got = copy.deepcopy(model)
    unpack_coupled(got)
    params = dict(got.named_parameters())
    for key, value in want.items():
        torch.testing.assert_close(params[key], value, atol=1e-10, rtol=1e-8)
    if name == "proxsgd":  # the step killed whole groups (LinBreg's dual starts at θ₀)
        dead = dead_groups(got, detect_coupled_groups(got))
        assert sum(len(v) for v in dead.values()) > 0
