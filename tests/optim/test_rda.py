"""Oracles for RDA: dual averaging in closed form, argmin of the stated objective, sparsity."""

from __future__ import annotations

import copy
import io
import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch

from sparseopt.optim.rda import RDA, rda
from sparseopt.penalties import Penalty, make_penalty, soft_threshold

DTYPES = [torch.float32, torch.float64]
SHAPES = [(4, 3, 3, 3), (4,), (7, 5), (7,), (3, 7)]


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return (
        {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    )


def _params(dtype: torch.dtype, shapes: list[tuple[int, ...]] = SHAPES, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]


def _grads(dtype: torch.dtype, steps: int, shapes: list[tuple[int, ...]] = SHAPES, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen, dtype=dtype) for s in shapes] for _ in range(steps)]


def _set_grads(params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()


def _soft(x: torch.Tensor, t: Any) -> torch.Tensor:
    return torch.sign(x) * torch.clamp(x.abs() - t, min=0)


@dataclass(frozen=True)
class _Custom(Penalty):
    """A user's penalty: RDA's adaptive metric has no prox for it."""

    name: ClassVar[str] = "custom"
    lam: float = 0.1

    def prox(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return soft_threshold(x, t * self.lam)


# ------------------------------------------------------------ closed-form oracles


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("pen", [{"lam": 0.0}, {"penalty": "none"}])
@pytest.mark.parametrize("maximize", [False, True])
def test_without_penalty_is_dual_averaging(
    pen: dict[str, Any], foreach: bool, dtype: torch.dtype, maximize: bool
) -> None:
    params = _params(dtype)
    w0 = [p.detach().clone() for p in params]
    lr, gamma = 0.5, 3.0
    opt = RDA(params, lr=lr, gamma=gamma, foreach=foreach, maximize=maximize, **pen, adaptive=False)
    history = _grads(dtype, 6)
    sign = -1.0 if maximize else 1.0
    for t, grads in enumerate(history, start=1):
        _set_grads(params, grads)
        opt.step()
        for i, p in enumerate(params):
            mean = sum(gs[i] for gs in history[:t]) / t
            expected = w0[i] - (lr * math.sqrt(t) / gamma) * sign * mean
            torch.testing.assert_close(p.detach(), expected, **_tol(dtype))
    state = opt.state[params[0]]
    assert torch.equal(state["prox_center"], w0[0])
    assert state["step"] == 6 and float(state["lr_sum"]) == pytest.approx(3.0)
    assert float(state["lr_sq_sum"]) == pytest.approx(1.5)
    grad_sum = sum(lr * sign * gs[0] for gs in history)  # S = Σ a_k g_k (negated: maximize)
    torch.testing.assert_close(state["grad_sum"], grad_sum, **_tol(dtype))


@pytest.mark.parametrize("foreach", [False, True])
def test_varying_lr_weights_the_average_and_lr_zero_freezes(foreach: bool) -> None:
    dtype = torch.float64
    (w,) = params = _params(dtype, [(3, 4)])
    w0 = w.detach().clone()
    gamma, lam = 2.0, 0.3
    opt = RDA(params, penalty="l1", lr=1.0, gamma=gamma, lam=lam, foreach=foreach, adaptive=False)
    lrs = [1.0, 0.5, 0.25, 0.0, 0.0]
    history = [gs[0] for gs in _grads(dtype, len(lrs), [(3, 4)])]
    for t, (lr, g) in enumerate(zip(lrs, history, strict=True), start=1):
        opt.param_groups[0]["lr"] = lr
        before = w.detach().clone()
        _set_grads(params, [g])
        opt.step()
        a = torch.tensor(lrs[:t], dtype=dtype)
        avg = sum(ak * gk for ak, gk in zip(lrs[:t], history[:t], strict=True)) / a.sum()
        c = a.pow(2).sum().sqrt().item() / gamma
        torch.testing.assert_close(w.detach(), _soft(w0 - c * avg, c * lam), **_tol(dtype))
        state = opt.state[w]  # the state keeps the weighted sum S = Σ a_k g_k and Σ a_k
        torch.testing.assert_close(state["grad_sum"], avg * a.sum(), **_tol(dtype))
        assert float(state["lr_sum"]) == pytest.approx(float(a.sum())) and state["step"] == t
        if lr == 0.0:
            assert torch.equal(w, before)  # frozen, not pulled back to w0


def test_zero_lr_from_the_start_keeps_the_initial_weights() -> None:
    params = _params(torch.float32)
    w0 = [p.detach().clone() for p in params]
    opt = RDA(params, penalty="l1", lr=0.0, lam=0.5, gamma=2.0, adaptive=False)
    for grads in _grads(torch.float32, 3):
        _set_grads(params, grads)
        opt.step()
    for p, q in zip(params, w0, strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
def test_l1_iterate_is_soft_threshold_and_exactly_sparse(foreach: bool, dtype: torch.dtype) -> None:
    params = _params(dtype)
    w0 = [p.detach().clone() for p in params]
    lr, gamma, lam = 1.0, 4.0, 0.4
    opt = RDA(params, penalty="l1", lr=lr, gamma=gamma, lam=lam, foreach=foreach, adaptive=False)
    history = _grads(dtype, 4)
    for grads in history:
        _set_grads(params, grads)
        opt.step()
    c = lr * math.sqrt(4) / gamma
    for i, p in enumerate(params):
        z = w0[i] - c * sum(gs[i] for gs in history) / 4
        torch.testing.assert_close(p.detach(), _soft(z, c * lam), **_tol(dtype))
        assert torch.equal(p == 0, z.abs() <= c * lam)
    assert sum(int((p == 0).sum()) for p in params) > 0


def _objective(w: torch.Tensor, avg: torch.Tensor, w0: torch.Tensor, c: Any, pen) -> torch.Tensor:
    """⟨ḡ, w⟩ + λP(w) + ‖w − w0‖²/(2c), coordinatewise (separable penalties)."""
    return avg * w + pen(w) + (w - w0).pow(2) / (2 * c)


@pytest.mark.parametrize(
    "penalty",
    [
        ("l1", lambda x: 0.3 * x.abs()),
        ("l0", lambda x: 0.3 * (x != 0).double()),
        ("tl1", lambda x: 0.3 * 1.5 * x.abs() / (0.5 + x.abs())),
    ],
    ids=["l1", "l0", "tl1"],
)
def test_iterate_is_the_brute_force_argmin(penalty: tuple[str, Any]) -> None:
    name, value = penalty
    dtype = torch.float64
    w = torch.nn.Parameter(torch.linspace(-1.5, 1.5, 13, dtype=dtype))
    w0 = w.detach().clone()
    opt = RDA([w], lr=1.0, gamma=2.0, penalty=name, lam=0.3, a=0.5, adaptive=False)
    history = [g for (g,) in _grads(dtype, 3, [(13,)])]
    for g in history:
        _set_grads([w], [g])
        opt.step()
    avg, c = sum(history) / 3, math.sqrt(3) / 2.0
    grid = torch.linspace(-4, 4, 80_001, dtype=dtype)  # spacing 1e-4
    grid = torch.cat([grid, torch.zeros(1, dtype=dtype)])  # exactly 0 too
    for i in range(13):
        phi = _objective(grid, avg[i], w0[i], c, value)
        best = grid[phi.argmin()]
        assert abs(w[i].item() - best.item()) <= 2e-4
        mine = _objective(w.detach()[i : i + 1], avg[i], w0[i], c, value)
        assert mine.item() <= phi.min().item() + 1e-9


def test_group_l1_iterate_is_the_group_prox_and_the_argmin() -> None:
    dtype = torch.float64
    (w,) = params = _params(dtype, [(6, 3, 2)])
    with torch.no_grad():
        w[::2] *= 0.1
    w0 = w.detach().clone()
    pen = make_penalty("group_l1", lam=0.2, groups="filter")
    opt = RDA(params, lr=1.0, gamma=1.0, penalty=pen, adaptive=False)
    history = [g for (g,) in _grads(dtype, 2, [(6, 3, 2)])]
    for g in history:
        _set_grads(params, [0.1 * g])
        opt.step()
    avg, c = 0.1 * sum(history) / 2, math.sqrt(2)
    torch.testing.assert_close(w.detach(), pen.prox(w0 - c * avg, c), **_tol(dtype))
    dead = w.detach().flatten(1).norm(dim=1) == 0
    assert dead.any() and not dead.all()

    def objective(x: torch.Tensor) -> float:
        return float((avg * x).sum() + pen.value(x) + (x - w0).pow(2).sum() / (2 * c))

    # convex objective: no random perturbation may improve on the iterate
    gen = torch.Generator().manual_seed(7)
    best = objective(w.detach())
    for _ in range(200):
        assert best <= objective(
            w.detach() + 1e-3 * torch.randn(w.shape, generator=gen, dtype=dtype)
        )


# ---------------------------------------------------------------- adaptive variant


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("penalty", ["l1", "l0", "none"])
def test_adaptive_closed_form(penalty: str, foreach: bool, dtype: torch.dtype) -> None:
    params = _params(dtype)
    w0 = [p.detach().clone() for p in params]
    lrs, gamma, lam, eps = [0.5, 0.5, 0.2], 1.5, 0.3, 1e-3
    opt = RDA(
        params, gamma=gamma, lam=lam, penalty=penalty, adaptive=True, eps=eps, foreach=foreach
    )
    history = _grads(dtype, len(lrs))
    for lr, grads in zip(lrs, history, strict=True):
        opt.param_groups[0]["lr"] = lr
        _set_grads(params, grads)
        opt.step()
    a = torch.tensor(lrs, dtype=dtype)
    for i, p in enumerate(params):
        avg = sum(ak * gs[i] for ak, gs in zip(lrs, history, strict=True)) / a.sum()
        s = sum(ak**2 * gs[i] ** 2 for ak, gs in zip(lrs, history, strict=True))
        c = a.pow(2).sum() / (gamma * (eps + s.sqrt()))
        z = w0[i] - c * avg
        if penalty == "l1":
            expected = _soft(z, c * lam)
        elif penalty == "l0":
            expected = z * (z.abs() > (2 * c * lam).sqrt())
        else:
            expected = z
        tol = (
            {"rtol": 1e-10, "atol": 1e-12}
            if dtype == torch.float64
            else {"rtol": 1e-5, "atol": 1e-5}
        )
        torch.testing.assert_close(p.detach(), expected, **tol)
        if penalty != "none":
            assert torch.equal(p == 0, expected == 0)
    if penalty != "none":
        assert any((p == 0).any() for p in params)


GROUP_SHAPES = [(4, 3, 3, 3), (7, 5), (3, 7)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    ("penalty", "groups"),
    [("tl1", "filter"), ("group_l1", "filter"), ("group_l0", "filter"), ("group_l1", "channel")],
)
def test_adaptive_metric_penalties_are_the_scalar_prox_per_entry_or_group(
    penalty: str, groups: str, foreach: bool, dtype: torch.dtype
) -> None:
    """Oracle: each entry (tl1) or group (group penalties, metric from the group's largest s)
    is the penalty's own scalar-step prox at its c, computed one at a time."""
    params = _params(dtype, GROUP_SHAPES)
    w0 = [p.detach().clone() for p in params]
    lrs, gamma, lam, eps = [0.5, 0.5, 0.2], 1.5, 0.3, 1e-3
    lam = {"tl1": lam, "group_l1": 3.0, "group_l0": 4.0}[penalty]  # some of each dead
    pen = make_penalty(penalty, lam=lam, a=0.5, groups=groups)
    opt = RDA(params, gamma=gamma, penalty=pen, adaptive=True, eps=eps, foreach=foreach)
    history = _grads(dtype, len(lrs), GROUP_SHAPES)
    for lr, grads in zip(lrs, history, strict=True):
        opt.param_groups[0]["lr"] = lr
        _set_grads(params, grads)
        opt.step()
    a = torch.tensor(lrs, dtype=torch.float64)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    dead = alive = 0
    for i, p in enumerate(params):
        avg = sum(ak * gs[i] for ak, gs in zip(lrs, history, strict=True)) / a.sum().item()
        s = sum(ak**2 * gs[i] ** 2 for ak, gs in zip(lrs, history, strict=True))
        expected = torch.empty_like(p)
        if penalty == "tl1":
            for j in range(p.numel()):
                c = a.pow(2).sum().item() / (gamma * (eps + s.flatten()[j].sqrt().item()))
                z = w0[i].flatten()[j : j + 1] - c * avg.flatten()[j : j + 1]
                expected.view(-1)[j] = pen.prox(z, c)[0]
        else:  # one group at a time: filters are slices of dim 0, channels of dim 1
            dim = 0 if groups == "filter" else 1
            for k in range(p.shape[dim]):
                sl = (k,) if dim == 0 else (slice(None), k)
                c = a.pow(2).sum().item() / (gamma * (eps + s[sl].max().sqrt().item()))
                z = (w0[i][sl] - c * avg[sl]).unsqueeze(dim)
                expected[sl] = pen.prox(z, c).squeeze(dim)
        torch.testing.assert_close(p.detach(), expected, **tol)
        assert torch.equal(p.detach() == 0, expected == 0)
        dead += int((expected == 0).sum())
        alive += int((expected != 0).sum())
    assert dead > 0 and alive > 0  # the oracle checks both branches


def test_adaptive_tl1_is_the_brute_force_argmin() -> None:
    # min_x ḡ x + λ ρ_a(x) + (x - w0)² / (2c), c per entry from the AdaGrad metric
    dtype = torch.float64
    w = torch.nn.Parameter(torch.linspace(-1.5, 1.5, 13, dtype=dtype))
    w0 = w.detach().clone()
    gamma, lam, a = 0.7, 0.3, 0.5
    opt = RDA([w], lr=1.0, gamma=gamma, penalty="tl1", lam=lam, a=a, adaptive=True, eps=1e-10)
    history = [g for (g,) in _grads(dtype, 3, [(13,)])]
    for g in history:
        _set_grads([w], [g])
        opt.step()
    avg = sum(history) / 3
    c = 3 / (gamma * torch.stack(history).pow(2).sum(0).sqrt())

    def rho(x: torch.Tensor) -> torch.Tensor:
        return lam * (a + 1) * x.abs() / (a + x.abs())

    grid = torch.cat([torch.linspace(-4, 4, 80_001, dtype=dtype), torch.zeros(1, dtype=dtype)])
    for i in range(13):
        phi = _objective(grid, avg[i], w0[i], c[i].item(), rho)
        assert abs(w[i].item() - grid[phi.argmin()].item()) <= 2e-4
        mine = _objective(w.detach()[i : i + 1], avg[i], w0[i], c[i].item(), rho)
        assert mine.item() <= phi.min().item() + 1e-9


def test_adaptive_from_zero_is_duchi_et_al_rda_adagrad() -> None:
    # Duchi, Hazan & Singer (2011): x_{t+1,i} = sign(-ḡ_i) (η t / H_ii) [|ḡ_i| - λ]_+,
    # H_ii = δ + ||g_{1:t,i}||_2, here with η = lr / γ and x_0 = 0.
    dtype = torch.float64
    w = torch.nn.Parameter(torch.zeros(50, dtype=dtype))
    lr, gamma, lam, eps = 1.0, 0.5, 0.2, 1e-6
    opt = RDA([w], penalty="l1", lr=lr, gamma=gamma, lam=lam, adaptive=True, eps=eps)
    history = [g for (g,) in _grads(dtype, 5, [(50,)])]
    for g in history:
        _set_grads([w], [g])
        opt.step()
    t = len(history)
    avg = sum(history) / t
    H = eps + torch.stack(history).pow(2).sum(0).sqrt()
    expected = torch.sign(-avg) * (lr / gamma) * t / H * torch.clamp(avg.abs() - lam, min=0)
    torch.testing.assert_close(w.detach(), expected, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------- behaviour


@pytest.mark.parametrize(("adaptive", "gamma"), [(False, 0.3), (True, 1.0)])
def test_sparse_least_squares_reaches_the_sparse_solution(adaptive: bool, gamma: float) -> None:
    gen = torch.Generator().manual_seed(0)
    n, d = 100, 20
    A = torch.randn(n, d, generator=gen, dtype=torch.float64)
    x_true = torch.zeros(d, dtype=torch.float64)
    x_true[[2, 7, 11, 15]] = torch.tensor([1.5, -2.0, 1.0, 2.5], dtype=torch.float64)
    y = A @ x_true
    w = torch.nn.Parameter(0.1 * torch.randn(d, generator=gen, dtype=torch.float64))
    opt = RDA([w], penalty="l1", lam=0.01, gamma=gamma, adaptive=adaptive)
    for _ in range(2000):
        opt.zero_grad()
        (0.5 * (A @ w - y).pow(2).sum() / n).backward()
        opt.step()
    assert torch.equal(w != 0, x_true != 0)
    assert (w - x_true).abs().max() < 0.05


# ------------------------------------------------------------------ foreach, misc


def test_foreach_matches_for_loop_with_skipped_params() -> None:
    for dtype in DTYPES:
        for adaptive in (False, True):
            runs = []
            for foreach in (False, True):
                params = _params(dtype)
                groups: list[dict[str, Any]] = [
                    {"params": [params[2]], "penalty": "l1", "lam": 0.3},
                    {"params": [params[1], params[3]], "penalty": "none"},
                    {"params": [params[4]], "penalty": "l0", "lam": 0.1, "gamma": 3.0},
                ]
                if not adaptive:
                    groups.append({"params": [params[0]], "penalty": "group_l1", "lam": 0.2})
                else:
                    groups[0]["params"].append(params[0])
                opt = RDA(groups, lr=0.7, gamma=2.0, adaptive=adaptive, foreach=foreach)
                for k, grads in enumerate(_grads(dtype, 6)):
                    _set_grads(params, grads)
                    if k % 2:
                        params[2].grad = None  # a parameter skipped: its own step count
                    opt.step()
                runs.append((params, opt))
            (pa, oa), (pb, ob) = runs
            assert oa.state[pa[2]]["step"] == 3 and oa.state[pa[1]]["step"] == 6
            for p, q in zip(pa, pb, strict=True):
                assert torch.equal(p, q)
                for key, value in oa.state[p].items():
                    other = ob.state[q][key]
                    assert torch.equal(value, other) if torch.is_tensor(value) else value == other


@pytest.mark.parametrize("foreach", [False, True])
def test_groups_stepped_together_equal_separate_optimizers(foreach: bool) -> None:
    # Groups with equal settings share one functional call, even when their running
    # sums differ (a group added later): the result must not change.
    dtype = torch.float64
    joint_params, sep_params = _params(dtype), _params(dtype)
    joint = RDA(
        joint_params[:2], penalty="l1", lr=0.5, gamma=2.0, lam=0.2, foreach=foreach, adaptive=False
    )
    separate = [
        RDA(
            sep_params[:2],
            penalty="l1",
            lr=0.5,
            gamma=2.0,
            lam=0.2,
            foreach=foreach,
            adaptive=False,
        )
    ]
    for k, grads in enumerate(_grads(dtype, 6)):
        if k == 2:
            joint.add_param_group({"params": joint_params[2:]})
            separate.append(
                RDA(
                    sep_params[2:],
                    penalty="l1",
                    lr=0.5,
                    gamma=2.0,
                    lam=0.2,
                    foreach=foreach,
                    adaptive=False,
                )
            )
        if k == 4:  # the groups differ now: two calls
            joint.param_groups[0]["lr"] = separate[0].param_groups[0]["lr"] = 0.25
        for ps in (joint_params, sep_params):
            _set_grads(ps, grads)
        joint.step()
        for opt in separate:
            opt.step()
    for p, q in zip(joint_params, sep_params, strict=True):
        assert torch.equal(p, q)
    assert joint.state[joint_params[0]]["step"] == 6 and joint.state[joint_params[2]]["step"] == 4


def test_functional_api_and_set_lam() -> None:
    w = torch.tensor([1.0, 0.05])
    g_sum, w0 = torch.zeros(2), w.clone()
    sums, sq_sums = [torch.zeros((), dtype=torch.float64)], [torch.zeros((), dtype=torch.float64)]
    rda(
        [w],
        [torch.tensor([1.0, 0.0])],
        [g_sum],
        [w0],
        [],
        sums,
        sq_sums,
        lr=2.0,
        gamma=4.0,
        penalty="none",
    )
    torch.testing.assert_close(w, torch.tensor([0.5, 0.05]))
    assert sums[0].item() == 2.0 and sq_sums[0].item() == 4.0
    torch.testing.assert_close(g_sum, torch.tensor([2.0, 0.0]))  # S = a g
    for sum_sqs, needle in (([], "0 sum_sqs"), ([torch.zeros(2)], "built-in penalty")):
        with pytest.raises(ValueError, match=needle):
            rda(
                [w],
                [w],
                [g_sum],
                [w0],
                sum_sqs,
                sums,
                sq_sums,
                lr=1.0,
                gamma=1.0,
                adaptive=True,
                penalty=_Custom() if sum_sqs else "tl1",
            )
    # set_lam needs no state change: the next step recomputes the iterate with the new λ
    p = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = RDA([p], penalty="l1", lr=1.0, gamma=1.0, lam=0.1, adaptive=False)
    p.grad = torch.zeros(2)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.9, -0.9]))
    opt.set_lam(0.5)
    assert torch.equal(p.detach(), torch.tensor([0.9, -0.9]))
    opt.step()  # t = 2: soft(w0, sqrt(2) * 0.5)
    torch.testing.assert_close(p.detach(), _soft(torch.tensor([1.0, -1.0]), math.sqrt(2) * 0.5))


@pytest.mark.parametrize("adaptive", [False, True])
def test_state_dict_of_the_grad_avg_format_is_converted(adaptive: bool) -> None:
    # Earlier versions kept the mean ḡ = S / Σa_k ("grad_avg"), a float32 tensor step and
    # Python floats for the sums of learning rates.
    dtype = torch.float64
    runs = [_params(dtype), _params(dtype)]
    opts = [RDA(ps, penalty="l1", lr=0.5, gamma=2.0, lam=0.2, adaptive=adaptive) for ps in runs]
    history = _grads(dtype, 6)
    for ps, opt in zip(runs, opts, strict=True):
        for grads in history[:3]:
            _set_grads(ps, grads)
            opt.step()
    old = copy.deepcopy(opts[0].state_dict())  # state_dict() shares the live state dicts
    for state in old["state"].values():
        state["lr_sum"], state["lr_sq_sum"] = float(state["lr_sum"]), float(state["lr_sq_sum"])
        state["grad_avg"] = state.pop("grad_sum") / state["lr_sum"]
        state["step"] = torch.tensor(float(state["step"]))
    buf = io.BytesIO()
    torch.save(old, buf)
    buf.seek(0)
    twin = RDA(runs[1], penalty="l1", lr=0.5, gamma=2.0, lam=0.2, adaptive=adaptive)
    twin.load_state_dict(torch.load(buf, weights_only=True))
    state = twin.state[runs[1][0]]
    assert "grad_avg" not in state and state["step"].dtype == torch.float32 and state["step"] == 3
    assert state["lr_sum"].dtype == torch.float64 and float(state["lr_sum"]) == 1.5
    for grads in history[3:]:
        for ps, opt in ((runs[0], opts[0]), (runs[1], twin)):
            _set_grads(ps, grads)
            opt.step()
    for p, q in zip(*runs, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"gamma": 0.0}, "gamma value: 0.0"),
        ({"gamma": -1.0}, "gamma value: -1.0"),
        ({"eps": 0.0}, "eps value: 0.0"),
        ({"adaptive": 1}, "adaptive value: 1"),
        ({"lr": -1.0}, "-1.0"),
    ],
)
def test_invalid_hyperparameters(kw: dict[str, Any], needle: str) -> None:
    w = torch.nn.Parameter(torch.zeros(3, 2))
    with pytest.raises(ValueError, match=needle):
        RDA([w], **kw)
    opt = RDA([w])
    with pytest.raises(ValueError, match=needle):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2, 2))], **kw})


def test_state_dict_without_adaptive_loads_as_the_plain_variant() -> None:
    """Checkpoints saved when the plain variant was the default (no ``adaptive`` key)
    resume plain, although today's default is the adaptive metric."""
    params = _params(torch.float64)
    old = RDA(params, penalty="l1", lr=0.5, gamma=2.0, lam=0.2, adaptive=False)
    _set_grads(params, _grads(torch.float64, 1)[0])
    old.step()
    sd = old.state_dict()
    for group in sd["param_groups"]:
        del group["adaptive"]
    fresh = RDA(params, penalty="l1", lr=0.5, gamma=2.0, lam=0.2)
    assert fresh.param_groups[0]["adaptive"] is True
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["adaptive"] is False
    assert all("sum_sq" not in s for s in fresh.state.values())
    _set_grads(params, _grads(torch.float64, 1, seed=5)[0])
    fresh.step()  # a plain step: no sum_sq needed
    assert all("sum_sq" not in s for s in fresh.state.values())


@pytest.mark.parametrize("penalty", ["l1", "l0", "tl1", "group_l1", "group_l0"])
def test_adaptive_float16_with_a_never_seen_entry_stays_finite(penalty: str) -> None:
    # δ = 1e-10 rounds to 0 in float16: an entry whose gradient was always 0 gave 0/0
    w = torch.nn.Parameter(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)).half())
    opt = RDA([w], penalty=penalty)  # the recipe: adaptive
    for _ in range(3):
        w.grad = torch.randn(4, 5, generator=torch.Generator().manual_seed(1)).half()
        w.grad[1] = 0.0  # never any gradient
        opt.step()
    assert torch.isfinite(w).all(), w
    assert (w != 0).any()


def test_plain_variant_with_the_adaptive_gamma_warns() -> None:
    w = torch.nn.Parameter(torch.zeros(3, 2))
    with pytest.warns(UserWarning, match="pass gamma"):
        RDA([w], adaptive=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RDA([w], adaptive=False, gamma=2.0)
        RDA([w])
