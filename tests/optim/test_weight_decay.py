"""Weight decay on every optimizer, against a float64 reference of its documented update.

Factories such as timm's ``create_optimizer_v2`` always pass ``weight_decay``. LinBreg,
AdaBreg and RDA take it *decoupled* (the parameters shrink by ``1 - lr * wd`` before the
step, as in ``torch.optim.AdamW``, carried by the dual or the prox centre); ProxSGD,
RVSM and SplitLBI already took it *coupled* (L2 added to the loss gradient, as in
``torch.optim.SGD``) and keep that meaning.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import sparseopt as so

torch.set_default_dtype(torch.float32)

STEPS = 6
WD = 0.05


def soft(x: torch.Tensor, t: float) -> torch.Tensor:
    return torch.sign(x) * torch.clamp(x.abs() - t, min=0.0)


def _ref_linbreg(w0, grads, *, lr, lam, delta, momentum, wd, penalised):
    theta = w0.clone()
    v = theta / delta + lam * torch.sign(theta)
    b = torch.zeros_like(theta)
    for g in grads:
        if penalised:
            v = v - lr * wd * theta / delta
        else:
            theta = (1 - lr * wd) * theta
        b = momentum * b + (1 - momentum) * g
        if penalised:
            v = v - lr * b
            theta = delta * soft(v, lam)
        else:
            theta = theta - lr * delta * b
    return theta


def _ref_adabreg(w0, grads, *, lr, lam, delta, wd, penalised, betas=(0.9, 0.999), eps=1e-8):
    theta = w0.clone()
    v = theta / delta + lam * torch.sign(theta)
    m = torch.zeros_like(theta)
    s = torch.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        if penalised:
            v = v - lr * wd * theta / delta
        else:
            theta = (1 - lr * wd) * theta
        m = betas[0] * m + (1 - betas[0]) * g
        s = betas[1] * s + (1 - betas[1]) * g * g
        step = (m / (1 - betas[0] ** t)) / ((s / (1 - betas[1] ** t)).sqrt() + eps)
        if penalised:
            v = v - lr * step
            theta = delta * soft(v, lam)
        else:
            theta = theta - lr * delta * step
    return theta


def _ref_rda(w0, grads, *, lr, lam, gamma, wd, penalised, adaptive):
    assert not adaptive  # the reference is the plain (scalar-metric) variant
    w, center = w0.clone(), w0.clone()
    grad_sum = torch.zeros_like(w)
    lr_sum = lr_sq_sum = 0.0
    for g in grads:
        center = center - lr * wd * w
        grad_sum = grad_sum + lr * g
        lr_sum += lr
        lr_sq_sum += lr * lr
        c = lr_sq_sum**0.5 / gamma
        w = center - (c / lr_sum) * grad_sum
        if penalised:
            w = soft(w, c * lam)
    return w


def _ref_proxsgd(w0, grads, *, lr, lam, wd, penalised):
    theta = w0.clone()
    for g in grads:
        theta = theta - lr * (g + wd * theta)
        if penalised:
            theta = soft(theta, lr * lam)
    return theta


def _ref_rvsm(w0, grads, *, lr, lam, beta, wd, penalised):
    w = w0.clone()
    u = soft(w, lam / beta) if penalised else w
    for g in grads:
        w = w - lr * (g + wd * w) - (lr * beta * (w - u) if penalised else 0.0)
        u = soft(w, lam / beta) if penalised else w
    return u if penalised else w


def _ref_splitlbi(w0, grads, *, lr, lam, kappa, nu, wd, penalised):
    w = w0.clone()
    gamma = torch.zeros_like(w)
    v = torch.zeros_like(w)
    for g in grads:
        d = g + wd * w
        if penalised:
            v_new = v + (lr / nu) * (w - gamma)
            w = w - kappa * lr * (d + (w - gamma) / nu)
            v = v_new
            gamma = kappa * soft(v, lam)
        else:
            w = w - kappa * lr * d
    return w * (gamma != 0) if penalised else w  # the deployable network W ⊙ 1[Γ ≠ 0]


# name -> (optimizer kwargs, reference, what the reference returns: the deployable network)
CASES: dict[str, tuple[dict, Callable]] = {
    "linbreg": ({"lr": 0.2, "lam": 0.05, "delta": 1.5, "momentum": 0.8}, _ref_linbreg),
    "adabreg": ({"lr": 0.05, "lam": 0.05, "delta": 1.5}, _ref_adabreg),
    "rda": ({"lr": 0.7, "lam": 0.05, "gamma": 2.0, "adaptive": False}, _ref_rda),
    "proxsgd": ({"lr": 0.2, "lam": 0.05, "momentum": 0.0}, _ref_proxsgd),
    "rvsm": ({"lr": 0.2, "lam": 0.05, "beta": 2.0, "momentum": 0.0}, _ref_rvsm),
    "splitlbi": ({"lr": 0.2, "lam": 0.05, "kappa": 1.5, "nu": 2.0, "momentum": 0.0}, _ref_splitlbi),
}


def _data(n: int = 9) -> tuple[torch.Tensor, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(n, generator=gen, dtype=torch.float64)
    w0[::4] = 0.0  # some entries start dead
    grads = [0.5 * torch.randn(n, generator=gen, dtype=torch.float64) for _ in range(STEPS)]
    return w0, grads


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("penalty", ["l1", "none"])
@pytest.mark.parametrize("name", list(CASES))
def test_weight_decay_matches_reference(name: str, penalty: str, foreach: bool) -> None:
    kwargs, reference = CASES[name]
    w0, grads = _data()
    cls = so.get_optimizer_info(name).cls
    w = torch.nn.Parameter(w0.float().clone())
    opt = cls([w], penalty=penalty, weight_decay=WD, foreach=foreach, **kwargs)
    for g in grads:
        w.grad = g.float()
        opt.step()
    ref_kwargs = {k: v for k, v in kwargs.items() if k != "momentum"}
    if name == "linbreg":
        ref_kwargs["momentum"] = kwargs["momentum"]
    expected = reference(w0, grads, wd=WD, penalised=penalty != "none", **ref_kwargs)
    torch.testing.assert_close(opt.deployable(w).double(), expected, atol=2e-6, rtol=2e-5)
    # and the decay changed the result (the test would pass vacuously otherwise)
    assert not torch.allclose(
        expected, reference(w0, grads, wd=0.0, penalised=penalty != "none", **ref_kwargs)
    )


@pytest.mark.parametrize("penalty", ["none", "l1"])
@pytest.mark.parametrize("foreach", [False, True])
def test_adabreg_without_penalty_is_adamw(penalty: str, foreach: bool) -> None:
    w0, grads = _data()
    a = torch.nn.Parameter(w0.float().clone())
    b = torch.nn.Parameter(w0.float().clone())
    opt = so.AdaBreg([a], lr=0.05, penalty=penalty, lam=0.0, weight_decay=0.1, foreach=foreach)
    ref = torch.optim.AdamW([b], lr=0.05, weight_decay=0.1, foreach=foreach)
    for g in grads:
        a.grad, b.grad = g.float(), g.float()
        opt.step()
        ref.step()
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", list(CASES))
def test_factories_may_pass_weight_decay(name: str) -> None:
    """``create_optimizer(..., weight_decay=...)`` works for every optimizer; the default
    is the registry recipe's (AdaBreg's 0.05, round 64 of docs/recipes.md; else 0)."""
    net = torch.nn.Linear(4, 3)
    default = so.get_optimizer_info(name).defaults.get("weight_decay", 0.0)
    assert default == (0.05 if name == "adabreg" else 0.0)
    assert so.create_optimizer(net, name).param_groups[0]["weight_decay"] == default
    opt = so.create_optimizer(net, name, weight_decay=1e-2)
    assert all(g["weight_decay"] == 1e-2 for g in opt.param_groups)
    net(torch.randn(2, 4)).square().sum().backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in net.parameters())
    with pytest.raises(ValueError, match="weight_decay value: -1"):
        so.create_optimizer(net, name, weight_decay=-1.0)


@pytest.mark.parametrize("name", ["linbreg", "adabreg", "rda"])
def test_state_dict_without_weight_decay_loads(name: str) -> None:
    """State dicts saved before ``weight_decay`` existed load with weight_decay = 0."""
    w = torch.nn.Parameter(torch.randn(5))
    opt = so.get_optimizer_info(name).cls([w], lr=0.1)
    w.grad = torch.randn(5)
    opt.step()
    sd = opt.state_dict()
    for group in sd["param_groups"]:
        del group["weight_decay"]
    fresh = so.get_optimizer_info(name).cls([w], lr=0.1)
    fresh.load_state_dict(sd)
    assert all(g["weight_decay"] == 0.0 for g in fresh.param_groups)
    fresh.step()
