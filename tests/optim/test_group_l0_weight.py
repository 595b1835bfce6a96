"""Group ℓ0 weighted by group size (``group_weight="size"``) in every optimizer.

On a tensor whose groups all have :math:`m` entries, :math:`\\lambda\\sum_g |g|\\,1[x_g\\ne0]`
is :math:`\\lambda m\\,\\#\\{g: x_g\\ne0\\}`: the optimizers' iterates with ``"size"`` at λ
must be the ones with the default ``"one"`` at :math:`\\lambda m`, through each method's
own prox path (RDA's adaptive metric included); the coupled prox's is
tests/test_coupled.py's radial search.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import sparseopt as so

#: (optimizer, its settings, λ): λ such that some groups die and some live in 6 steps.
CASES = [
    ("linbreg", {"lr": 0.5}, 0.03),
    ("adabreg", {"lr": 0.05}, 0.01),
    ("splitlbi", {"lr": 0.5}, 3e-4),
    ("rda", {"lr": 1.0}, 0.1),
    ("rda", {"lr": 0.5, "adaptive": False, "gamma": 2.0}, 0.03),
    ("rvsm", {"lr": 0.3}, 0.01),
    ("proxsgd", {"lr": 0.5}, 0.01),
]


def _run(name: str, settings: dict[str, Any], lam: float, weight: str) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8, 6, generator=gen, dtype=torch.float64) * 0.3)
    x = torch.randn(32, 6, generator=gen, dtype=torch.float64)
    y = torch.randn(32, 8, generator=gen, dtype=torch.float64)
    opt = so.create_optimizer(
        [w], name, penalty="group_l0", groups="filter", lam=lam, group_weight=weight, **settings
    )
    out = []
    for _ in range(6):
        opt.zero_grad()
        ((x @ w.T - y) ** 2).mean().backward()
        opt.step()
        deploy = getattr(opt, "deployable", None)
        out.append((deploy(w) if deploy else w).detach().clone())
    return out


@pytest.mark.parametrize(("name", "settings", "lam"), CASES, ids=lambda c: str(c))
def test_size_weight_is_lambda_times_the_group_size(
    name: str, settings: dict[str, Any], lam: float
) -> None:
    sized = _run(name, settings, lam, "size")
    counted = _run(name, settings, lam * 6, "one")
    for a, b in zip(sized, counted, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    alive = sized[-1].norm(dim=1).gt(0)
    assert 0 < int(alive.sum()) < 8, alive  # the penalty acted, and not on everything
    assert _run(name, settings, lam, "one")[-1].norm(dim=1).gt(0).sum() > alive.sum()


@pytest.mark.parametrize("name", ["linbreg", "adabreg", "splitlbi", "rda", "rvsm", "proxsgd"])
def test_group_l0_counts_groups_by_default_and_in_an_older_state_dict(name: str) -> None:
    w = torch.nn.Parameter(torch.randn(8, 6, dtype=torch.float64))
    opt = so.create_optimizer([w], name, penalty="group_l0", groups="filter", lam=0.01)
    assert opt.penalty_of(opt.param_groups[0]).group_weight == "one"  # as before 2026-11-28
    # a state dict saved before group ℓ0 had weights holds the param groups' "sqrt"
    state = opt.state_dict()
    state["param_groups"][0]["group_weight"] = "sqrt"
    opt.load_state_dict(state)
    assert opt.penalty_of(opt.param_groups[0]) == so.penalties.GroupL0(lam=0.01)
    sized = so.create_optimizer(
        [w], name, penalty="group_l0", groups="filter", lam=0.01, group_weight="size"
    )
    assert sized.penalty_of(sized.param_groups[0]).group_weight == "size"
