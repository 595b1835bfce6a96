"""Oracles for RVSM: β = 0 or λ = 0 is ``torch.optim.SGD``; steps by hand; u is the sparse network."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sparseopt.optim.rvsm import RVSM, rvsm
from sparseopt.penalties import make_penalty

DTYPES = [torch.float32, torch.float64]
SHAPES = [(4, 3, 3, 3), (4,), (7, 5), (7,), (3, 7)]
SGD_CONFIGS = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.8, "dampening": 0.3, "weight_decay": 0.01},
    {"momentum": 0.9, "nesterov": True, "weight_decay": 0.05, "maximize": True},
]
PENALTIES = [
    {"penalty": "l1", "lam": 0.3},
    {"penalty": "l0", "lam": 0.1},
    {"penalty": "tl1", "lam": 0.2, "a": 0.7},
    {"penalty": "group_l1", "lam": 0.2, "groups": "filter"},
    {"penalty": "group_l0", "lam": 0.3, "groups": "filter"},
]


def _params(dtype: torch.dtype, shapes: list[tuple[int, ...]] = SHAPES, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]


def _grads(dtype: torch.dtype, steps: int, shapes: list[tuple[int, ...]] = SHAPES, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen, dtype=dtype) for s in shapes] for _ in range(steps)]


def _run(opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[list[torch.Tensor]]):
    for gs in grads:
        for p, g in zip(params, gs, strict=True):
            p.grad = g.clone()
        opt.step()


def _groups(params: list[torch.Tensor], pen: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"params": [p for p in params if p.ndim > 1], **pen},
        {"params": [p for p in params if p.ndim == 1], "penalty": "none"},
    ]


# ------------------------------------------------------------------ SGD oracles


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("cfg", SGD_CONFIGS)
@pytest.mark.parametrize("pen", [PENALTIES[0], PENALTIES[1], PENALTIES[4]])
def test_beta_zero_is_torch_sgd_and_u_is_w(
    pen: dict[str, Any], cfg: dict[str, Any], foreach: bool, dtype: torch.dtype
) -> None:
    ours, ref = _params(dtype), _params(dtype)
    grads = _grads(dtype, 5)
    opt = RVSM(_groups(ours, pen), lr=0.1, beta=0.0, foreach=foreach, **{"momentum": 0.0, **cfg})
    sgd = torch.optim.SGD(ref, lr=0.1, foreach=foreach, **cfg)
    _run(opt, ours, grads)
    _run(sgd, ref, grads)
    for p, q in zip(ours, ref, strict=True):
        assert torch.equal(p, q)
        assert torch.equal(opt.u_of(p), p)
        if cfg.get("momentum"):
            assert torch.equal(opt.state[p]["momentum_buffer"], sgd.state[q]["momentum_buffer"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("cfg", SGD_CONFIGS[1:3])
def test_zero_lam_is_torch_sgd(cfg: dict[str, Any], foreach: bool, dtype: torch.dtype) -> None:
    ours, ref = _params(dtype), _params(dtype)
    grads = _grads(dtype, 4)
    opt = RVSM(
        ours, lr=0.1, beta=2.0, penalty="tl1", lam=0.0, foreach=foreach, **{"momentum": 0.0, **cfg}
    )
    sgd = torch.optim.SGD(ref, lr=0.1, foreach=foreach, **cfg)
    _run(opt, ours, grads)
    _run(sgd, ref, grads)
    for p, q in zip(ours, ref, strict=True):
        assert torch.equal(p, q)


# ----------------------------------------------------------------- steps by hand


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("pen", PENALTIES, ids=lambda d: d["penalty"])
def test_one_step_by_hand(pen: dict[str, Any], foreach: bool, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(2)
    w = torch.nn.Parameter(torch.randn(5, 4, 2, generator=gen, dtype=dtype))
    g = torch.randn(5, 4, 2, generator=gen, dtype=dtype)
    with torch.no_grad():
        w[::2] *= 0.05  # some small filters, which the penalties remove
        g[::2] *= 0.05
    w0 = w.detach().clone()
    lr, beta = 0.3, 2.0
    penalty = make_penalty(pen["penalty"], **{k: v for k, v in pen.items() if k != "penalty"})
    u0 = penalty.prox(w0, 1 / beta)
    opt = RVSM([w], lr=lr, beta=beta, foreach=foreach, **pen)
    torch.testing.assert_close(opt.deployable(w), u0, rtol=0, atol=0)  # before any step
    _run(opt, [w], [[g]])
    w1 = w0 - lr * g - lr * beta * (w0 - u0)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(w.detach(), w1, **tol)
    u1 = penalty.prox(w.detach(), 1 / beta)
    torch.testing.assert_close(opt.u_of(w), u1, **tol)
    assert torch.equal(opt.u_of(w) == 0, u1 == 0)
    assert (u1 == 0).any() and (u1 != 0).any()


@pytest.mark.parametrize("foreach", [False, True])
def test_two_steps_with_momentum_by_hand(foreach: bool) -> None:
    dtype = torch.float64
    w0 = torch.tensor([1.0, -0.05, 0.3, -2.0], dtype=dtype)
    w = torch.nn.Parameter(w0.clone())
    g1 = torch.tensor([0.5, 1.0, -0.2, 0.0], dtype=dtype)
    g2 = torch.tensor([-1.0, 0.3, 0.1, 0.4], dtype=dtype)
    lr, beta, lam, m, wd = 0.2, 0.5, 0.05, 0.9, 0.1
    opt = RVSM(
        [w], lr=lr, beta=beta, lam=lam, momentum=m, nesterov=True, weight_decay=wd, foreach=foreach
    )
    _run(opt, [w], [[g1], [g2]])

    def soft(x: torch.Tensor) -> torch.Tensor:  # prox of (λ/β)|.|
        return torch.sign(x) * torch.clamp(x.abs() - lam / beta, min=0)

    u0 = soft(w0)
    b1 = g1 + wd * w0
    d1 = (g1 + wd * w0) + m * b1
    w1 = w0 - lr * d1 - lr * beta * (w0 - u0)
    u1 = soft(w1)
    b2 = m * b1 + (g2 + wd * w1)
    d2 = (g2 + wd * w1) + m * b2
    w2 = w1 - lr * d2 - lr * beta * (w1 - u1)
    torch.testing.assert_close(w.detach(), w2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(opt.u_of(w), soft(w2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(opt.state[w]["momentum_buffer"], b2, rtol=1e-12, atol=1e-12)


def test_functional_api() -> None:
    w = torch.tensor([1.0, 0.05, -3.0])
    pen = make_penalty("l0", lam=0.02)  # beta = 0.5: hard threshold at sqrt(2 * 0.02 / 0.5)
    u = pen.prox(w, 2.0)
    step = torch.tensor(0.0)
    rvsm([w], [torch.ones(3)], [None], [u], [step], lr=0.1, beta=0.5, penalty=pen)
    torch.testing.assert_close(w, torch.tensor([0.9, 0.05 - 0.1 - 0.0025, -3.1]))
    torch.testing.assert_close(u, torch.tensor([0.9, 0.0, -3.1]))
    assert float(step) == 1.0
    with pytest.raises(ValueError, match="u tensors"):
        rvsm([w, w], [w, w], [None, None], [u], [step, step], lr=0.1, beta=0.5, penalty=pen)


# ------------------------------------------------------------- deployable network


def test_deployable_u_finalize_and_set_lam() -> None:
    gen = torch.Generator().manual_seed(4)
    lin = torch.nn.Linear(6, 5).double()
    opt = RVSM(
        [
            {"params": [lin.weight], "penalty": "l0", "lam": 0.02},
            {"params": [lin.bias], "penalty": "none"},
        ],
        lr=0.1,
        beta=1.0,
        momentum=0.0,  # a zero-gradient step after finalize moves nothing without momentum
    )
    assert opt.u_of(lin.bias) is lin.bias and opt.deployable(lin.bias) is lin.bias
    x = torch.randn(20, 6, generator=gen, dtype=torch.float64)
    for _ in range(5):
        opt.zero_grad()
        lin(x).pow(2).mean().backward()
        opt.step()
    u = opt.u_of(lin.weight)
    assert u is opt.state[lin.weight]["u"]
    assert (u == 0).any() and (lin.weight != 0).all()  # u is sparse, w is dense
    d = opt.deployable(lin.weight)
    assert torch.equal(d, u) and d is not u
    assert torch.equal(opt.support(lin.weight), u != 0)
    w_before = lin.weight.detach().clone()
    with opt.deployed():
        assert torch.equal(lin.weight, u)
    assert torch.equal(lin.weight, w_before)
    # set_lam recomputes u = prox(w) with the new λ, w unchanged
    opt.set_lam(0.08)
    assert torch.equal(opt.u_of(lin.weight), make_penalty("l0", lam=0.08).prox(w_before, 1.0))
    assert torch.equal(lin.weight, w_before)
    # finalize: w <- u, u kept; the coupling force is then zero
    u_kept = opt.u_of(lin.weight).clone()
    opt.finalize()
    assert torch.equal(lin.weight, u_kept) and torch.equal(opt.u_of(lin.weight), u_kept)
    lin.weight.grad.zero_()
    lin.bias.grad.zero_()
    opt.step()  # zero gradient, zero coupling, hard threshold is idempotent: nothing moves
    assert torch.equal(lin.weight, u_kept) and torch.equal(opt.u_of(lin.weight), u_kept)


# --------------------------------------------------------------------- behaviour


def _sparse_regression(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    n, d = 100, 40
    A = torch.randn(n, d, generator=gen, dtype=torch.float64)
    x_true = torch.zeros(d, dtype=torch.float64)
    x_true[[2, 7, 19, 30, 33]] = torch.tensor([1.5, -2.0, 1.0, 2.5, -1.2], dtype=torch.float64)
    return A, A @ x_true, x_true


@pytest.mark.parametrize(
    ("pen", "tol"),
    [
        ({"penalty": "l0", "lam": 0.02}, 1e-6),
        ({"penalty": "tl1", "lam": 0.02, "a": 0.5}, 0.05),
        ({"penalty": "l1", "lam": 0.01}, 0.05),
    ],
    ids=["l0", "tl1", "l1"],
)
def test_sparse_least_squares_recovers_the_support(pen: dict[str, Any], tol: float) -> None:
    A, y, x_true = _sparse_regression()
    w = torch.nn.Parameter(0.1 * torch.randn(A.shape[1], dtype=torch.float64))
    opt = RVSM([w], lr=0.3, beta=1.0, momentum=0.5, **pen)
    for _ in range(600):
        opt.zero_grad()
        (0.5 * (A @ w - y).pow(2).mean()).backward()
        opt.step()
    u = opt.u_of(w)
    assert torch.equal(u != 0, x_true != 0)
    assert (u - x_true).abs().max() < tol
    assert 0.5 * (A @ u - y).pow(2).mean() < tol


@pytest.mark.parametrize("penalty", ["group_l0", "group_l1"])
def test_group_versions_remove_whole_filters(penalty: str) -> None:
    gen = torch.Generator().manual_seed(1)
    n, d_in, d_out = 200, 12, 8
    X = torch.randn(n, d_in, generator=gen, dtype=torch.float64)
    W_true = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    W_true[[1, 4, 5, 6]] = 0  # dead output neurons (filters)
    Y = X @ W_true.T + 0.05 * torch.randn(n, d_out, generator=gen, dtype=torch.float64)
    W = torch.nn.Parameter(0.1 * torch.randn(d_out, d_in, generator=gen, dtype=torch.float64))
    lam = 0.05 if penalty == "group_l0" else 0.01
    opt = RVSM([W], lr=0.3, beta=1.0, penalty=penalty, lam=lam, groups="filter", momentum=0.5)
    for _ in range(300):
        opt.zero_grad()
        (0.5 * (X @ W.T - Y).pow(2).sum() / n).backward()
        opt.step()
    u = opt.u_of(W)
    alive = u.norm(dim=1) != 0
    assert torch.equal(alive, W_true.norm(dim=1) != 0)
    assert (u[alive] != 0).all()  # groups live or die as a whole
    assert (W[~alive] != 0).any()  # while w itself stays dense
    assert (u - W_true).abs().max() < 0.1


# ------------------------------------------------------------------ foreach, errors


def test_foreach_matches_for_loop_on_mixed_groups() -> None:
    for dtype in DTYPES:
        runs = []
        for foreach in (False, True):
            params = _params(dtype)
            groups = [
                {"params": [params[0]], "penalty": "group_l1", "groups": "channel", "lam": 0.3},
                {"params": [params[1], params[3]], "penalty": "none"},
                {"params": [params[2]], "penalty": "l1", "lam": 0.4},
                {"params": [params[4]], "penalty": "l0", "lam": 0.2, "beta": 0.5},
            ]
            opt = RVSM(groups, lr=0.2, beta=2.0, momentum=0.9, weight_decay=0.01, foreach=foreach)
            _run(opt, params, _grads(dtype, 6))
            runs.append((params, opt))
        (pa, oa), (pb, ob) = runs
        for p, q in zip(pa, pb, strict=True):
            assert torch.equal(p, q)
            assert torch.equal(oa.u_of(p), ob.u_of(q))
            assert torch.equal(oa.state[p]["momentum_buffer"], ob.state[q]["momentum_buffer"])


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"beta": -1.0}, "beta value: -1.0"),
        ({"beta": float("nan")}, "beta"),
        ({"momentum": -0.5}, "momentum value: -0.5"),
        ({"weight_decay": -1.0}, "weight_decay value: -1.0"),
        ({"nesterov": True, "momentum": 0.0}, "nesterov"),
        ({"penalty": "tl1", "a": 0.0}, "a value"),
    ],
)
def test_invalid_hyperparameters(kw: dict[str, Any], needle: str) -> None:
    w = torch.nn.Parameter(torch.zeros(3, 2))
    with pytest.raises(ValueError, match=needle):
        RVSM([w], **{"lr": 0.1, **kw})
    opt = RVSM([w], lr=0.1)
    with pytest.raises(ValueError, match=needle):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2, 2))], **kw})


def test_the_split_condition_of_a_functional_step() -> None:
    from sparseopt.optim._functional import SGDScalars
    from sparseopt.optim.rvsm import _Scalars

    sgd = SGDScalars(0.0, 0.0, 0.0, False, False)
    l1, zero = make_penalty("l1", lam=0.1), make_penalty("l1", lam=0.0)
    assert _Scalars(0.1, 1.0, sgd, l1).split
    assert not _Scalars(0.1, 0.0, sgd, l1).split  # β = 0: u = w, the step is SGD
    assert not _Scalars(0.1, 1.0, sgd, zero).split  # λ = 0 likewise
    assert not _Scalars(0.1, 1.0, sgd, make_penalty("none")).split
