"""Oracles for ProxSGD: λ = 0 is ``torch.optim.SGD`` bit for bit; one step by hand; Lasso KKT."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sparseopt.optim.proxsgd import ProxSGD, proxsgd
from sparseopt.penalties import make_penalty

DTYPES = [torch.float32, torch.float64]
SHAPES = [(4, 3, 3, 3), (4,), (7, 5), (7,), (3, 7)]
SGD_CONFIGS = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.8, "dampening": 0.3, "weight_decay": 0.01},
    {"momentum": 0.9, "nesterov": True, "weight_decay": 0.05, "maximize": True},
    {"weight_decay": 0.1, "maximize": True},
]


def _params(dtype: torch.dtype, seed: int = 0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in SHAPES]


def _grads(dtype: torch.dtype, steps: int, seed: int = 1) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES] for _ in range(steps)]


def _run(opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[list[torch.Tensor]]):
    for gs in grads:
        for p, g in zip(params, gs, strict=True):
            p.grad = g.clone()
        opt.step()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("cfg", SGD_CONFIGS)
@pytest.mark.parametrize("pen", [{"lam": 0.0}, {"penalty": "none"}])
def test_without_penalty_is_torch_sgd_bitwise(
    cfg: dict[str, Any], foreach: bool, dtype: torch.dtype, pen: dict[str, Any]
) -> None:
    ours, ref = _params(dtype), _params(dtype)
    grads = _grads(dtype, 5)
    opt = ProxSGD(ours, lr=0.1, foreach=foreach, **pen, **{"momentum": 0.0, **cfg})
    sgd = torch.optim.SGD(ref, lr=0.1, foreach=foreach, **cfg)
    _run(opt, ours, grads)
    _run(sgd, ref, grads)
    for p, q in zip(ours, ref, strict=True):
        assert torch.equal(p, q)
        if cfg.get("momentum"):
            assert torch.equal(opt.state[p]["momentum_buffer"], sgd.state[q]["momentum_buffer"])
    assert float(opt.state[ours[0]]["step"]) == len(grads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("cfg", SGD_CONFIGS[1:4])
def test_group_penalty_with_zero_lam_and_unpenalised_group_is_torch_sgd(
    cfg: dict[str, Any], foreach: bool, dtype: torch.dtype
) -> None:
    ours, ref = _params(dtype), _params(dtype)
    grads = _grads(dtype, 4)
    groups = [
        {"params": [p for p in ours if p.ndim > 1], "penalty": "group_l1", "lam": 0.0},
        {"params": [p for p in ours if p.ndim == 1], "penalty": "none"},
    ]
    opt = ProxSGD(groups, lr=0.05, foreach=foreach, **{"momentum": 0.0, **cfg})
    sgd = torch.optim.SGD(ref, lr=0.05, foreach=foreach, **cfg)
    _run(opt, ours, grads)
    _run(sgd, ref, grads)
    for p, q in zip(ours, ref, strict=True):
        assert torch.equal(p, q)


def _soft(x: torch.Tensor, t: float) -> torch.Tensor:
    return torch.sign(x) * torch.clamp(x.abs() - t, min=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
def test_one_step_is_soft_threshold_of_sgd_step(foreach: bool, dtype: torch.dtype) -> None:
    params = _params(dtype)
    theta0 = [p.detach().clone() for p in params]
    (grads,) = _grads(dtype, 1)
    lr, lam = 0.3, 0.5
    _run(ProxSGD(params, lr=lr, penalty="l1", lam=lam, foreach=foreach), params, [grads])
    for p, t0, g in zip(params, theta0, grads, strict=True):
        expected = _soft(t0 - lr * g, lr * lam)
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=4 * torch.finfo(dtype).eps)
        assert torch.equal(p == 0, expected == 0)
    assert any((p == 0).any() for p in params)


@pytest.mark.parametrize("dtype", DTYPES)
def test_momentum_enters_before_the_prox(dtype: torch.dtype) -> None:
    (p,) = params = [torch.nn.Parameter(torch.tensor([1.0, -0.4, 0.05, 2.0], dtype=dtype))]
    g1 = torch.tensor([0.5, 1.0, -0.2, 0.0], dtype=dtype)
    g2 = torch.tensor([-1.0, 0.3, 0.1, 0.4], dtype=dtype)
    lr, lam, m = 0.2, 0.3, 0.9
    opt = ProxSGD(params, lr=lr, penalty="l1", lam=lam, momentum=m, weight_decay=0.1)
    _run(opt, params, [[g1], [g2]])
    theta0 = torch.tensor([1.0, -0.4, 0.05, 2.0], dtype=dtype)
    b1 = g1 + 0.1 * theta0
    theta1 = _soft(theta0 - lr * b1, lr * lam)
    b2 = m * b1 + (g2 + 0.1 * theta1)
    theta2 = _soft(theta1 - lr * b2, lr * lam)
    torch.testing.assert_close(p.detach(), theta2, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], b2, rtol=1e-6, atol=1e-7)


FUSED_CONFIGS = [
    {"momentum": 0.9},
    {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.8, "weight_decay": 0.01},
    {"momentum": 0.9, "nesterov": True, "weight_decay": 0.05, "maximize": True},
    {"momentum": 0.8, "dampening": 0.3},  # dampening: the two-pass buffer update
]


def _reference(
    theta0: list[torch.Tensor],
    grads: list[list[torch.Tensor]],
    lr: float,
    lam: float,
    *,
    momentum: float,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """ProxSGD with momentum written out: b ← μb + (1−ϱ)d (b₁ = d₁), θ ← soft(θ − τ·dir, τλ)."""
    theta = [t.clone() for t in theta0]
    bufs: list[torch.Tensor] = []
    for k, gs in enumerate(grads):
        for i, g in enumerate(gs):
            d = (-g if maximize else g) + weight_decay * theta[i]
            if k == 0:
                bufs.append(d.clone())
            else:
                bufs[i] = momentum * bufs[i] + (1 - dampening) * d
            direction = d + momentum * bufs[i] if nesterov else bufs[i]
            theta[i] = _soft(theta[i] - lr * direction, lr * lam)
    return theta, bufs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("cfg", FUSED_CONFIGS)
def test_penalised_momentum_matches_the_formula(
    cfg: dict[str, Any], foreach: bool, dtype: torch.dtype
) -> None:
    # Penalised groups update the buffer in one pass (torch.add(d, b, alpha=μ, out=b)):
    # the same formula as torch.optim.SGD's two passes, rounded once.
    params = _params(dtype)
    theta0 = [p.detach().clone() for p in params]
    grads = _grads(dtype, 6)
    lr, lam = 0.1, 0.3
    opt = ProxSGD(params, lr=lr, penalty="l1", lam=lam, foreach=foreach, **{"momentum": 0.0, **cfg})
    _run(opt, params, grads)
    theta, bufs = _reference(theta0, grads, lr, lam, **cfg)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-6, "atol": 1e-6}
    for p, t, b in zip(params, theta, bufs, strict=True):
        torch.testing.assert_close(p.detach(), t, **tol)
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], b, **tol)
    assert any((p == 0).any() for p in params)


@pytest.mark.parametrize("dtype", DTYPES)
def test_penalised_buffer_is_updated_in_one_pass(dtype: torch.dtype) -> None:
    (w,) = params = _params(dtype, seed=2)[:1]
    g1, g2 = (gs[0] for gs in _grads(dtype, 2))
    # a property of the foreach (and for-loop) path; the fused path runs torch's SGD kernel
    opt = ProxSGD(params, lr=0.1, lam=0.01, momentum=0.9, foreach=True)
    _run(opt, params, [[g1], [g2]])
    assert torch.equal(opt.state[w]["momentum_buffer"], torch.add(g2, g1, alpha=0.9))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("penalty", ["group_l1", "group_l0", "l0", "tl1"])
def test_one_step_is_prox_of_sgd_step(penalty: str, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(3)
    w = torch.nn.Parameter(torch.randn(6, 4, 3, generator=gen, dtype=dtype))
    g = torch.randn(6, 4, 3, generator=gen, dtype=dtype)
    with torch.no_grad():
        w[::2] *= 0.1  # small filters, that the group penalties remove
        g[::2] *= 0.1
    w0 = w.detach().clone()
    pen = make_penalty(penalty, lam=0.4, groups="filter", a=0.5)
    _run(ProxSGD([w], lr=0.5, penalty=pen), [w], [[g]])
    torch.testing.assert_close(w.detach(), pen.prox(w0 - 0.5 * g, 0.5), rtol=1e-6, atol=1e-7)
    if penalty.startswith("group"):
        dead = w.detach().flatten(1).norm(dim=1) == 0
        assert dead.any() and not dead.all()


def test_lasso_solution_satisfies_kkt() -> None:
    # Full-batch ProxSGD with lr = 1/L is ISTA: it converges to the Lasso solution, whose
    # optimality conditions we check: grad_i = -λ sign(w_i) on the support, |grad_i| <= λ off it.
    gen = torch.Generator().manual_seed(0)
    n, d = 80, 30
    A = torch.randn(n, d, generator=gen, dtype=torch.float64)
    x_true = torch.zeros(d, dtype=torch.float64)
    x_true[[1, 5, 11, 20]] = torch.tensor([2.0, -1.5, 1.0, 3.0], dtype=torch.float64)
    y = A @ x_true + 0.01 * torch.randn(n, generator=gen, dtype=torch.float64)
    lipschitz = torch.linalg.matrix_norm(A, ord=2).item() ** 2 / n
    lam = 0.05
    w = torch.nn.Parameter(torch.zeros(d, dtype=torch.float64))
    opt = ProxSGD([w], lr=1.0 / lipschitz, penalty="l1", lam=lam, momentum=0.0)
    for _ in range(3000):
        opt.zero_grad()
        (0.5 * (A @ w - y).pow(2).sum() / n).backward()
        opt.step()
    with torch.no_grad():
        grad = A.T @ (A @ w - y) / n
        on = w != 0
        torch.testing.assert_close(grad[on], -lam * torch.sign(w[on]), rtol=0, atol=1e-8)
        assert (grad[~on].abs() <= lam + 1e-8).all()
        assert torch.equal(on, x_true != 0)


def test_foreach_matches_for_loop_on_mixed_groups() -> None:
    for dtype in DTYPES:
        runs = []
        for foreach in (False, True):
            params = _params(dtype)
            groups = [
                {"params": [params[0]], "penalty": "group_l1", "groups": "channel", "lam": 0.3},
                {"params": [params[1], params[3]], "penalty": "none"},
                {"params": [params[2]], "penalty": "l1", "lam": 0.4},
                {"params": [params[4]], "penalty": "l0", "lam": 0.2, "weight_decay": 0.1},
            ]
            opt = ProxSGD(groups, lr=0.2, momentum=0.9, nesterov=True, foreach=foreach)
            _run(opt, params, _grads(dtype, 6))
            runs.append((params, opt))
        (pa, oa), (pb, ob) = runs
        for p, q in zip(pa, pb, strict=True):
            assert torch.equal(p, q)
            assert torch.equal(oa.state[p]["momentum_buffer"], ob.state[q]["momentum_buffer"])


def test_functional_api_and_set_lam() -> None:
    p = torch.tensor([1.0, 0.1, -0.3])
    step = torch.tensor(0.0)
    bufs: list[torch.Tensor | None] = [None]
    proxsgd(
        [p], [p.clone()], bufs, [step], lr=0.5, momentum=0.5, penalty=make_penalty("l1", lam=0.2)
    )
    torch.testing.assert_close(p, torch.tensor([0.4, 0.0, -0.05]))
    assert bufs[0] is not None and float(step) == 1.0
    # set_lam: the next prox uses the new λ, the parameter itself is not touched
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = ProxSGD([w], lr=1.0, penalty="l1", lam=0.1)
    opt.set_lam(0.5)
    assert torch.equal(w.detach(), torch.tensor([1.0, -1.0]))
    w.grad = torch.zeros(2)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.5, -0.5]))


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"lr": -0.1}, "-0.1"),
        ({"momentum": -0.5}, "momentum value: -0.5"),
        ({"dampening": -1.0}, "dampening value: -1.0"),
        ({"weight_decay": -2.0}, "weight_decay value: -2.0"),
        ({"nesterov": True, "momentum": 0.0}, "nesterov"),
        ({"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "dampening"),
        ({"lam": -1.0}, "-1.0"),
    ],
)
def test_invalid_hyperparameters(kw: dict[str, Any], needle: str) -> None:
    w = torch.nn.Parameter(torch.zeros(3, 2))
    with pytest.raises(ValueError, match=needle):
        ProxSGD([w], **{"lr": 0.1, **kw})
    opt = ProxSGD([w], lr=0.1)
    with pytest.raises(ValueError, match=needle):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2, 2))], **kw})
