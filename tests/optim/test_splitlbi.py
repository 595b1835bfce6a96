"""Tests of SplitLBI (S²-LBI / DessiLBI): exact oracles and path behaviour."""

from __future__ import annotations

import io

import pytest
import torch
from torch.testing import assert_close

from sparseopt.optim.splitlbi import SplitLBI, splitlbi
from sparseopt.penalties import make_penalty

DTYPES = [torch.float32, torch.float64]
EXACT = {"atol": 0.0, "rtol": 0.0}


def _reference_run(w0, grads, *, lr, kappa, nu, penalty, momentum=0.0, weight_decay=0.0):
    """The update written literally from the formulas, in float64."""
    w = w0.double().clone()
    gamma = torch.zeros_like(w)
    v = torch.zeros_like(w)
    buf = None
    pen = make_penalty(penalty)
    for g in grads:
        d = g.double() + weight_decay * w
        if momentum != 0:
            buf = d.clone() if buf is None else momentum * buf + d
            d = buf
        w_old = w
        w = w_old - kappa * lr * (d + (w_old - gamma) / nu)
        v = v + (lr / nu) * (w_old - gamma)
        gamma = kappa * pen.prox(v, 1.0)
    return w, gamma, v


def _step_with(opt, params, grads):
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    opt.step()


# ----------------------------------------------------------------- exact oracles


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
def test_one_step_by_hand_exact(dtype, foreach):
    # dyadic numbers: every operation is exact, so the optimizer must match to the bit
    lr, kappa, nu, lam = 0.5, 2.0, 4.0, 0.5  # κα = 1, α/ν = 1/8, κα/ν = 1/4
    w = torch.nn.Parameter(torch.tensor([1.5, -0.25, 2.0, 0.0, -3.0], dtype=dtype))
    opt = SplitLBI([w], lr=lr, kappa=kappa, nu=nu, lam=lam, foreach=foreach)
    state_v = torch.tensor([0.75, -0.5, 0.25, 1.0, -2.0], dtype=dtype)
    w.grad = torch.zeros_like(w)
    opt.step()  # creates the state; then plant a known (W, Γ, V)
    with torch.no_grad():
        w.copy_(torch.tensor([1.5, -0.25, 2.0, 0.0, -3.0]))
    opt.state[w]["dual"].copy_(state_v)
    opt.state[w]["gamma"].copy_(kappa * make_penalty("l1", lam=lam).prox(state_v, 1.0))
    gamma_old = opt.state[w]["gamma"].clone()
    assert_close(gamma_old, torch.tensor([0.5, 0.0, 0.0, 1.0, -3.0], dtype=dtype), **EXACT)

    g = torch.tensor([0.5, 1.0, -0.25, 2.0, 0.125], dtype=dtype)
    w_old = w.detach().clone()
    w.grad = g.clone()
    opt.step()
    # by hand: W − κα(g + (W − Γ)/ν), V + (α/ν)(W − Γ), Γ = κ·soft(V, λ)
    r = w_old - gamma_old  # [1, -0.25, 2, -1, 0]
    w_exp = w_old - 1.0 * (g + r / 4.0)
    v_exp = state_v + r / 8.0
    gamma_exp = 2.0 * torch.sign(v_exp) * (v_exp.abs() - lam).clamp_min(0)
    assert_close(w.detach(), w_exp, **EXACT)
    assert_close(opt.state[w]["dual"], v_exp, **EXACT)
    assert_close(opt.state[w]["gamma"], gamma_exp, **EXACT)
    assert_close(
        w.detach(), torch.tensor([0.75, -1.1875, 1.75, -1.75, -3.125], dtype=dtype), **EXACT
    )
    assert opt.state[w]["step"] == 2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    ("penalty", "shape"), [("l1", (7, 5)), ("group_l1", (6, 3, 3, 3)), ("tl1", (9,))]
)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_trajectory_matches_formulas(dtype, foreach, penalty, shape, momentum):
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(shape, generator=gen, dtype=torch.float64)
    grads = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(6)]
    kw = {"lr": 0.3, "kappa": 1.7, "nu": 0.9, "momentum": momentum, "weight_decay": 0.01}
    pen = {"penalty": penalty, "lam": 0.4, "groups": "filter"}
    w_ref, gamma_ref, v_ref = _reference_run(w0, grads, penalty=make_penalty(**pen), **kw)
    assert gamma_ref.count_nonzero() > 0  # the check is not vacuous

    w = torch.nn.Parameter(w0.to(dtype))
    opt = SplitLBI([w], foreach=foreach, **pen, **kw)
    for g in grads:
        _step_with(opt, [w], [g.to(dtype)])
    tol = {"atol": 1e-12, "rtol": 1e-12} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}
    assert_close(w.detach().double(), w_ref, **tol)
    assert_close(opt.state[w]["dual"].double(), v_ref, **tol)
    assert_close(opt.gamma(w).double(), gamma_ref, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "sgd_kw",
    [
        {"momentum": 0.0},
        {"momentum": 0.9},
        {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
        {"momentum": 0.5, "dampening": 0.3, "maximize": True},
    ],
)
def test_no_penalty_is_sgd_with_rate_kappa_lr(dtype, foreach, sgd_kw):
    gen = torch.Generator().manual_seed(1)
    shapes = [(4, 3), (4,), (2, 3, 3, 3)]
    init = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    ps = [torch.nn.Parameter(x.clone()) for x in init]
    qs = [torch.nn.Parameter(x.clone()) for x in init]
    lr, kappa = 0.05, 3.0
    opt = SplitLBI(ps, lr=lr, kappa=kappa, penalty="none", foreach=foreach, **sgd_kw)
    ref = torch.optim.SGD(qs, lr=kappa * lr, foreach=foreach, **sgd_kw)
    for _ in range(5):
        grads = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
        _step_with(opt, ps, grads)
        _step_with(ref, qs, grads)
    for p, q in zip(ps, qs, strict=True):
        assert_close(p, q, **EXACT)
        assert "gamma" not in opt.state[p] and "dual" not in opt.state[p]
        assert opt.gamma(p) is None
        assert opt.deployable(p) is p


# --------------------------------------------------------------------- the path


def _least_squares(seed=0, n=200, p=100, k=5, noise=0.0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, p, generator=gen, dtype=torch.float64)
    beta = torch.zeros(p, dtype=torch.float64)
    support = torch.randperm(p, generator=gen)[:k]
    signs = torch.sign(torch.randn(k, generator=gen, dtype=torch.float64))
    beta[support] = (1.0 + torch.rand(k, generator=gen, dtype=torch.float64)) * signs
    y = X @ beta + noise * torch.randn(n, generator=gen, dtype=torch.float64)
    return X.to(dtype), y.to(dtype), set(support.tolist())


@pytest.mark.parametrize("dtype", DTYPES)
def test_gamma_starts_empty_and_support_grows(dtype):
    X, y, _ = _least_squares(noise=0.5, dtype=dtype)  # noisy: the path ends up overfitting
    n = X.shape[0]
    w = torch.nn.Parameter(torch.zeros(X.shape[1], dtype=dtype))
    lam = 1.0
    opt = SplitLBI([w], lr=0.1, kappa=2.0, nu=1.0, lam=lam)
    assert opt.gamma(w) is None
    assert not opt.deployable(w).any()  # the path starts from the empty network
    sizes = []
    for _ in range(300):
        w.grad = X.T @ (X @ w.detach() - y) / n
        opt.step()
        v, gamma = opt.state[w]["dual"], opt.gamma(w)
        if v.abs().max() <= lam:  # inverse scale space: nothing enters before |V| > λ
            assert not gamma.any()
        assert_close(gamma, 2.0 * torch.nn.functional.softshrink(v, lam), **EXACT)
        sizes.append(int(gamma.count_nonzero()))
    assert sizes[:3] == [0, 0, 0]
    assert 0 < max(sizes[:100]) < sizes[-1]
    assert w.detach().count_nonzero() > sizes[-1]  # W is dense, Γ is sparse


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_least_squares_support_recovery(dtype):
    X, y, true_support = _least_squares(dtype=dtype)
    n = X.shape[0]
    L = torch.linalg.eigvalsh((X.T @ X / n).double()).max().item()
    nu, kappa = 1.0, 10.0
    lr = 1.0 / (kappa * (L + 1.0 / nu))  # κα below 2 / (L + 1/ν)
    w = torch.nn.Parameter(torch.zeros(X.shape[1], dtype=dtype))
    opt = SplitLBI([w], lr=lr, kappa=kappa, nu=nu, lam=1.0)
    path = []
    for t in range(150):
        w.grad = X.T @ (X @ w.detach() - y) / n
        opt.step()
        if t % 3 == 0:
            path.append(set(torch.nonzero(opt.gamma(w)).flatten().tolist()))
    assert path[0] == set()
    hits = [i for i, s in enumerate(path) if s == true_support]
    assert hits, f"true support never selected along the path: {path}"
    # the true variables enter first: no false positive before the support is found
    assert all(s <= true_support for s in path[: hits[0]])
    assert path[-1] == true_support


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
def test_group_penalty_kills_whole_filters(dtype, foreach):
    gen = torch.Generator().manual_seed(2)
    target = torch.randn(8, 3, 3, 3, generator=gen, dtype=dtype)
    target[::2] *= 0.05  # even filters weak, odd filters strong
    w = torch.nn.Parameter(torch.zeros_like(target))
    opt = SplitLBI(
        [w], lr=0.2, nu=1.0, penalty="group_l1", lam=1.0, groups="filter", foreach=foreach
    )
    for _ in range(40):
        w.grad = w.detach() - target
        opt.step()
    gamma = opt.gamma(w)
    alive = gamma.flatten(1).ne(0).any(1)
    assert alive.tolist() == [False, True] * 4
    assert (gamma.flatten(1).ne(0).all(1) == alive).all()  # live filters are live throughout
    deployed = opt.deployable(w)
    assert not deployed[~alive].any()
    assert_close(deployed[alive], w.detach()[alive], **EXACT)
    assert w.detach()[~alive].ne(0).all()  # W itself stays dense
    assert_close(opt.support(w), alive.view(8, 1, 1, 1).expand_as(w))
    assert_close(
        gamma,
        make_penalty("group_l1", lam=1.0, groups="filter").prox(opt.state[w]["dual"], 1.0),
        atol=1e-6,
        rtol=1e-6,
    )


# ------------------------------------------------------------ deployable network


def _trained_linear(deploy="masked", steps=30):
    torch.manual_seed(3)
    model = torch.nn.Linear(6, 4)
    groups = [
        {"params": [model.weight]},
        {"params": [model.bias], "penalty": "none"},
    ]
    opt = SplitLBI(groups, lr=0.5, nu=1.0, lam=1.0, deploy=deploy)
    x = torch.randn(32, 6)
    target = x @ torch.tensor([[2.0, 0, 0, 0, 0, -3.0]] * 4).T
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), target).backward()
        opt.step()
    return model, opt, x


def test_deployed_context_and_finalize():
    model, opt, x = _trained_linear()
    mask = opt.gamma(model.weight) != 0
    assert mask.any() and not mask.all()
    w_before = model.weight.detach().clone()
    b_before = model.bias.detach().clone()
    with opt.deployed():
        assert_close(model.weight.detach(), w_before * mask, **EXACT)
        assert_close(model.bias.detach(), b_before, **EXACT)
        out_deployed = model(x).detach()
    assert_close(model.weight.detach(), w_before, **EXACT)  # restored
    assert_close(opt.support(model.weight), mask)

    v_before = opt.state[model.weight]["dual"].clone()
    g_before = opt.gamma(model.weight).clone()
    opt.finalize()
    assert (model.weight.detach()[~mask] == 0).all()  # exact zeros
    assert_close(model.weight.detach()[mask], w_before[mask], **EXACT)
    assert_close(model(x).detach(), out_deployed, **EXACT)
    # V and Γ untouched, Γ = κ·prox(V) still holds
    assert_close(opt.state[model.weight]["dual"], v_before, **EXACT)
    assert_close(opt.gamma(model.weight), g_before, **EXACT)


def test_deploy_gamma():
    model, opt, _ = _trained_linear(deploy="gamma")
    gamma = opt.gamma(model.weight)
    assert_close(opt.deployable(model.weight), gamma, **EXACT)
    assert opt.deployable(model.weight) is not gamma
    opt.finalize()
    assert_close(model.weight.detach(), gamma, **EXACT)


@pytest.mark.parametrize("deploy", ["masked", "gamma"])
def test_deployable_before_first_step_is_empty(deploy):
    model = torch.nn.Linear(3, 2)
    opt = SplitLBI(
        [{"params": [model.weight]}, {"params": [model.bias], "penalty": "none"}],
        deploy=deploy,
    )
    assert_close(opt.deployable(model.weight), torch.zeros(2, 3), **EXACT)
    assert opt.deployable(model.bias) is model.bias
    with pytest.raises(ValueError, match="not a parameter"):
        opt.deployable(torch.zeros(2))
    with pytest.raises(ValueError, match="not a parameter"):
        opt.gamma(torch.zeros(2))


@pytest.mark.parametrize("penalty", ["l1", "group_l1"])
def test_set_lam_recomputes_gamma_from_dual(penalty):
    torch.manual_seed(4)
    w = torch.nn.Parameter(torch.randn(5, 4))
    opt = SplitLBI([w], lr=0.5, kappa=1.5, nu=1.0, penalty=penalty, lam=1.0, groups="row")
    target = torch.randn(5, 4) * torch.tensor([3.0, 0.2, 2.0, 0.1, 1.0]).view(5, 1)
    for _ in range(5):
        w.grad = w.detach() - target
        opt.step()
    v = opt.state[w]["dual"].clone()
    w_before = w.detach().clone()
    old_support = opt.gamma(w) != 0
    opt.set_lam(0.3)
    assert opt.param_groups[0]["lam"] == 0.3
    expected = 1.5 * make_penalty(penalty, lam=0.3, groups="row").prox(v, 1.0)
    assert_close(opt.gamma(w), expected, atol=1e-6, rtol=1e-6)
    assert_close(opt.state[w]["dual"], v, **EXACT)  # V is unchanged
    assert_close(w.detach(), w_before, **EXACT)
    new_support = opt.gamma(w) != 0
    assert new_support.sum() > old_support.sum()  # smaller λ, larger support
    assert not (old_support & ~new_support).any()


# ------------------------------------------------------------ foreach == for-loop


def _mixed_groups(dtype):
    gen = torch.Generator().manual_seed(5)

    def mk(*s):
        return torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype))

    return [
        {"params": [mk(6, 5), mk(4, 2, 3, 3), mk(7)], "penalty": "l1", "lam": 0.2},
        {"params": [mk(4, 3, 3, 3), mk(5, 6)], "penalty": "group_l1", "groups": "filter"},
        {"params": [mk(3), mk(4, 4)], "penalty": "none", "momentum": 0.5, "dampening": 0.2},
        {"params": [mk(8, 3)], "penalty": "tl1", "lam": 0.3, "a": 0.5, "nesterov": True},
        {"params": [mk(5, 2)], "penalty": "l0", "lam": 0.05, "maximize": True, "dampening": 0.1},
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_foreach_matches_for_loop(dtype):
    kw = {"lr": 0.1, "kappa": 1.5, "nu": 2.0, "momentum": 0.9, "weight_decay": 1e-3}
    groups_a, groups_b = _mixed_groups(dtype), _mixed_groups(dtype)
    opt_a = SplitLBI(groups_a, foreach=False, **kw)
    opt_b = SplitLBI(groups_b, foreach=True, **kw)
    params_a = [p for g in groups_a for p in g["params"]]
    params_b = [p for g in groups_b for p in g["params"]]
    gen = torch.Generator().manual_seed(6)
    for t in range(8):
        grads = [torch.randn(p.shape, generator=gen, dtype=dtype) * 3 for p in params_a]
        if t == 3:  # a parameter without a gradient is skipped
            grads[1] = None
        for pa, pb, g in zip(params_a, params_b, grads, strict=True):
            pa.grad = None if g is None else g.clone()
            pb.grad = None if g is None else g.clone()
        opt_a.step()
        opt_b.step()
    assert any(opt_a.gamma(p).count_nonzero() for p in params_a if opt_a.gamma(p) is not None)
    assert opt_a.state[params_a[1]]["step"] == 7  # skipped once
    assert opt_a.state[params_a[0]]["step"] == 8
    for pa, pb in zip(params_a, params_b, strict=True):
        assert_close(pa, pb, **EXACT)
        sa, sb = opt_a.state[pa], opt_b.state[pb]
        assert sa.keys() == sb.keys()
        for key in sa:
            assert_close(sa[key], sb[key], **EXACT)


def test_functional_matches_class():
    gen = torch.Generator().manual_seed(7)
    w0 = torch.randn(6, 4, generator=gen)
    grads = [torch.randn(6, 4, generator=gen) for _ in range(3)]
    w = torch.nn.Parameter(w0.clone())
    opt = SplitLBI([w], lr=0.2, lam=0.1, nu=1.0, momentum=0.9)
    p, gamma, dual = w0.clone(), torch.zeros(6, 4), torch.zeros(6, 4)
    bufs = [None]
    for g in grads:
        _step_with(opt, [w], [g])
        splitlbi([p], [g], bufs, [gamma], [dual], lr=0.2, kappa=1.0, nu=1.0,
                 momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0,
                 maximize=False, penalty=make_penalty("l1", lam=0.1))  # fmt: skip
    assert_close(p, w.detach(), **EXACT)
    assert_close(gamma, opt.gamma(w), **EXACT)
    assert_close(bufs[0], opt.state[w]["momentum_buffer"], **EXACT)
    with pytest.raises(ValueError, match="one gamma and one dual"):
        splitlbi([p], [g], [None], [], [], lr=0.1, kappa=1.0, nu=1.0, momentum=0.0,
                 dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False,
                 penalty="l1")  # fmt: skip


# ------------------------------------------------------------------ misc behaviour


def test_state_dict_round_trip_weights_only():
    model, opt, x = _trained_linear(steps=5)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    model2 = torch.nn.Linear(6, 4)
    model2.load_state_dict(model.state_dict())
    opt2 = SplitLBI(
        [{"params": [model2.weight]}, {"params": [model2.bias], "penalty": "none"}],
        lr=0.5,
        nu=1.0,
    )
    opt2.load_state_dict(state)
    assert_close(opt2.gamma(model2.weight), opt.gamma(model.weight), **EXACT)
    for o, m in ((opt, model), (opt2, model2)):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    assert_close(model2.weight, model.weight, **EXACT)
    assert_close(opt2.state[model2.weight]["dual"], opt.state[model.weight]["dual"], **EXACT)


def test_sparse_gradient_rejected():
    emb = torch.nn.Embedding(5, 3, sparse=True)
    opt = SplitLBI(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kappa": 0.0}, "Invalid kappa value: 0.0"),
        ({"kappa": -1.0}, "Invalid kappa value: -1.0"),
        ({"nu": 0.0}, "Invalid nu value: 0.0"),
        ({"nu": float("inf")}, "Invalid nu value: inf"),
        ({"momentum": -0.1}, "Invalid momentum value: -0.1"),
        ({"dampening": -0.5}, "Invalid dampening value: -0.5"),
        ({"weight_decay": -1e-4}, "Invalid weight_decay value: -0.0001"),
        ({"nesterov": True, "momentum": 0.0}, "Invalid nesterov value: True"),
        ({"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "Invalid nesterov value"),
        ({"deploy": "dense"}, "Invalid deploy value: 'dense'"),
        ({"lr": -0.1}, "Invalid learning rate value: -0.1"),
        ({"lam": -1.0}, "Invalid lam value: -1.0"),
        ({"penalty": "l3"}, "Invalid penalty value: 'l3'"),
    ],
)
def test_invalid_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SplitLBI([torch.nn.Parameter(torch.zeros(2, 2))], **kwargs)


def test_invalid_group_override():
    w = torch.nn.Parameter(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="Invalid nu value: -2"):
        SplitLBI([{"params": [w], "nu": -2}])
    opt = SplitLBI([w])
    with pytest.raises(ValueError, match="Invalid kappa value: 0"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "kappa": 0})
