"""AdaBreg: exact reduction to Adam, bias corrections, foreach == for-loop, behaviour.

Oracle: with no penalty (or λ = 0) and δ = 1 AdaBreg is ``torch.optim.Adam`` bit for
bit, and with any δ it is Adam with learning rate τδ (Bungert et al., JMLR 2022,
Algorithm 3, with both moments bias-corrected).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import sparseopt as so
from sparseopt.optim.adabreg import AdaBreg, adabreg
from sparseopt.penalties import L1

DTYPES = [torch.float32, torch.float64]


def _params(dtype: torch.dtype, seed: int = 0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(6, 3, 3, 3), (6,), (7, 5), (7,), (3, 7)]
    tensors = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    tensors[0][::3] = 0  # dead filters
    tensors[2][:, ::2] = 0  # sparse weights
    return [torch.nn.Parameter(t) for t in tensors]


def _clone(params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def _set_grads(groups: list[list[torch.nn.Parameter]], gen: torch.Generator) -> None:
    for params in zip(*groups, strict=True):
        g = torch.randn(params[0].shape, generator=gen, dtype=params[0].dtype)
        for p in params:
            p.grad = g.clone()


def _step_together(
    opts: list[torch.optim.Optimizer],
    groups: list[list[torch.nn.Parameter]],
    seed: int,
    steps: int,
) -> None:
    """``steps`` steps of every optimizer of ``opts``, each step on the same random
    gradients for the matching parameters of ``groups`` (:func:`_set_grads`)."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        _set_grads(groups, gen)
        for opt in opts:
            opt.step()


def _mixed_groups(params: list[torch.nn.Parameter], **kw: object) -> list[dict[str, object]]:
    conv, conv_b, lin, lin_b, head = params
    return [
        {"params": [conv], "penalty": "group_l1", "groups": "filter", "lam": 0.3, **kw},
        {"params": [lin], "penalty": "l1", "lam": 0.5, **kw},
        {"params": [head], "penalty": "l0", "lam": 0.05, **kw},
        {"params": [conv_b, lin_b], "penalty": "none", **kw},
    ]


# ------------------------------------------------------------------------- oracles


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("penalty", ["none", "l1"])
@pytest.mark.parametrize("maximize", [False, True])
def test_without_penalty_and_unit_delta_equals_adam_bitwise(
    dtype: torch.dtype, foreach: bool, penalty: str, maximize: bool
) -> None:
    ps, qs = _params(dtype), _params(dtype)
    opt = AdaBreg(
        ps, lr=0.01, betas=(0.8, 0.95), eps=1e-6, penalty=penalty, lam=0.0,
        foreach=foreach, maximize=maximize, weight_decay=0.0,
    )  # fmt: skip
    ref = torch.optim.Adam(
        qs, lr=0.01, betas=(0.8, 0.95), eps=1e-6, foreach=foreach, maximize=maximize
    )
    _step_together([opt, ref], [ps, qs], seed=1, steps=7)
    for p, q in zip(ps, qs, strict=True):
        assert torch.equal(p, q)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][key], ref.state[q][key])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("penalty", ["none", "l1"])
def test_without_penalty_equals_adam_with_lr_times_delta(
    dtype: torch.dtype, foreach: bool, penalty: str
) -> None:
    ps, qs = _params(dtype), _params(dtype)
    opt = AdaBreg(
        ps, lr=0.01, delta=0.3, penalty=penalty, lam=0.0, foreach=foreach, weight_decay=0.0
    )
    ref = torch.optim.Adam(qs, lr=0.003, foreach=foreach)
    _step_together([opt, ref], [ps, qs], seed=2, steps=7)
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-13, "atol": 1e-13}
    for p, q in zip(ps, qs, strict=True):
        torch.testing.assert_close(p, q, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ["fused", "foreach"])
def test_unpenalised_group_takes_exact_adam_steps(dtype: torch.dtype, impl: str) -> None:
    # the fused path runs torch's fused Adam kernel, the foreach path Adam's foreach ops
    ps = _params(dtype)
    qs = _clone(ps)
    opt = AdaBreg(_mixed_groups(ps), lr=0.02, weight_decay=0.0, **{impl: True})
    ref = torch.optim.Adam([qs[1], qs[3]], lr=0.02, **{impl: True})
    _step_together([opt, ref], [ps, qs], seed=3, steps=5)
    assert torch.equal(ps[1], qs[1]) and torch.equal(ps[3], qs[3])
    assert "dual" not in opt.state[ps[1]] and "dual" in opt.state[ps[2]]


@pytest.mark.parametrize("dtype", DTYPES)
def test_both_moments_are_bias_corrected(dtype: torch.dtype) -> None:
    # From theta = 0 (v = 0): after t steps with a constant gradient g, m_hat = g and
    # s_hat = g^2 exactly in exact arithmetic, so v_t = -t * lr * g / (|g| + eps).
    # Without the first-moment correction the first step would be 10x smaller.
    w = torch.nn.Parameter(torch.zeros(4, dtype=dtype))
    opt = AdaBreg([w], lr=0.1, lam=0.25, delta=2.0, eps=1e-8, weight_decay=0.0)
    g = torch.tensor([2.0, -0.5, 0.01, 0.0], dtype=dtype)
    for t in (1, 2, 3):
        w.grad = g.clone()
        opt.step()
        v = -t * 0.1 * g / (g.abs() + 1e-8)
        torch.testing.assert_close(opt.state[w]["dual"], v)
        theta = 2.0 * torch.sign(v) * (v.abs() - 0.25).clamp(min=0)
        torch.testing.assert_close(w.detach(), theta)
    assert w[3] == 0 and (w != 0).sum() == 3
    assert opt.state[w]["step"].item() == 3.0 and opt.state[w]["step"].dtype == torch.float32


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("delta", [1.0, 0.6])
@pytest.mark.parametrize("maximize", [False, True])
def test_foreach_equals_for_loop(dtype: torch.dtype, delta: float, maximize: bool) -> None:
    ps = _params(dtype)
    qs = _clone(ps)
    loop = AdaBreg(_mixed_groups(ps, delta=delta), lr=0.05, foreach=False, maximize=maximize)
    fast = AdaBreg(_mixed_groups(qs, delta=delta), lr=0.05, foreach=True, maximize=maximize)
    _step_together([loop, fast], [ps, qs], seed=4, steps=6)
    for p, q in zip(ps, qs, strict=True):
        assert torch.equal(p, q)
        s, t = loop.state[p], fast.state[q]
        assert s.keys() == t.keys()
        for key in s:
            assert torch.equal(s[key], t[key]), key
    assert (ps[2] == 0).any() and (ps[2] != 0).any()


@pytest.mark.parametrize("foreach", [False, True])
def test_without_penalty_the_default_is_adamw_bitwise(foreach: bool) -> None:
    """The recipe's decoupled weight decay (0.05, round 64 of docs/recipes.md): with
    J = 0 and δ = 1 AdaBreg's defaults take ``torch.optim.AdamW``'s steps."""
    ps, qs = _params(torch.float32), _params(torch.float32)
    opt = AdaBreg(ps, lr=0.01, penalty="none", foreach=foreach)
    assert opt.param_groups[0]["weight_decay"] == 0.05
    ref = torch.optim.AdamW(qs, lr=0.01, weight_decay=0.05, foreach=foreach)
    _step_together([opt, ref], [ps, qs], seed=1, steps=7)
    for p, q in zip(ps, qs, strict=True):
        assert torch.equal(p, q)


def test_functional_api_matches_class() -> None:
    p = torch.nn.Parameter(torch.tensor([0.0, 1.0, -2.0]))
    q = p.detach().clone()
    opt = AdaBreg([p], lr=0.1, lam=0.2, delta=1.5)
    pen = L1(lam=0.2)
    v = q / 1.5 + pen.subgrad(q)
    m, s, step = torch.zeros(3), torch.zeros(3), torch.zeros(())
    for g in ([1.0, 0.5, -0.5], [-0.3, 0.1, 0.2]):
        p.grad = torch.tensor(g)
        opt.step()
        adabreg([q], [torch.tensor(g)], [v], [m], [s], [step], lr=0.1, delta=1.5, penalty=pen)
    torch.testing.assert_close(p.detach(), q)
    torch.testing.assert_close(opt.state[p]["dual"], v)


# --------------------------------------------------------------- Bregman behaviour


def test_inverse_scale_space_support_grows_from_sparse_init() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 3),
    )  # fmt: skip
    so.sparse_init_(model, density=0.01, floor=False, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 20, generator=gen)
    y = (x[:, :3] * torch.tensor([1.0, -2.0, 0.5])).argmax(1)
    opt = AdaBreg(so.param_groups(model, lam=0.05), lr=1e-2)
    weights = [model[0].weight, model[2].weight, model[4].weight]

    def nnz() -> int:
        return sum(int((w != 0).sum()) for w in weights)

    total = sum(w.numel() for w in weights)
    counts = [nnz()]
    assert 0.005 < counts[0] / total < 0.02
    losses = []
    for it in range(100):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if it % 20 == 19:
            counts.append(nnz())
    assert counts[-1] > 3 * counts[0]
    assert all(b >= 0.9 * a for a, b in itertools.pairwise(counts)), counts
    assert counts[-1] < 0.5 * total
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("penalty", ["l1", "group_l1"])
def test_set_lam_keeps_params_and_moments(penalty: str) -> None:
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    model.double()
    so.sparse_init_(model, density=0.3, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(64, 10, generator=gen, dtype=torch.float64)
    y = 0.8 * x[:, :2] - 0.5 * x[:, 2:4]
    groups = "row" if penalty == "group_l1" else None
    opt = AdaBreg(
        so.param_groups(model, penalty=penalty, lam=0.02, groups=groups), lr=0.02, delta=2.0
    )

    def train(steps: int) -> float:
        loss = torch.tensor(0.0)
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
        return loss.item()

    first = train(1)
    train(29)
    for lam in (0.3, 0.0, 0.05):
        before = [p.detach().clone() for p in model.parameters()]
        moments = [opt.state[p]["exp_avg"].clone() for p in model.parameters()]
        opt.set_lam(lam)
        # each weight's own group's penalty (the output layer's groups are its inputs)
        pens = {id(q): opt.penalty_of(g) for g in opt.param_groups for q in g["params"]}
        for p, b, m in zip(model.parameters(), before, moments, strict=True):
            assert torch.equal(p, b) and torch.equal(opt.state[p]["exp_avg"], m)
            if "dual" in opt.state[p]:
                theta = pens[id(p)].prox(2.0 * opt.state[p]["dual"], 2.0)
                torch.testing.assert_close(theta, b, rtol=0, atol=1e-12)
                assert torch.equal(theta == 0, b == 0)
        loss = train(10)
        assert math.isfinite(loss)
    assert loss < 0.8 * first


def test_finalize_keeps_params() -> None:
    lin = torch.nn.Linear(6, 4)
    opt = AdaBreg(so.param_groups(lin, lam=0.3), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        lin(torch.randn(8, 6)).pow(2).mean().backward()
        opt.step()
    before = lin.weight.detach().clone()
    assert (before == 0).any()
    opt.finalize()
    assert torch.equal(lin.weight, before)
    dual = opt.state[lin.weight]["dual"]
    torch.testing.assert_close(L1(lam=0.3).prox(dual, 1.0), before)


# -------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"delta": 0.0}, "Invalid delta value: 0.0"),
        ({"betas": (1.0, 0.999)}, "1.0"),
        ({"betas": (0.9, -0.1)}, "-0.1"),
        ({"betas": 0.9}, "betas"),
        ({"eps": -1.0}, "Invalid epsilon value: -1.0"),
        ({"lr": -0.001}, "-0.001"),
        ({"lam": -1.0}, "Invalid lam value: -1.0"),
    ],
)
def test_invalid_hyperparameters(kw: dict[str, object], needle: str) -> None:
    lin, other = torch.nn.Linear(3, 2), torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=needle):
        AdaBreg([lin.weight], **kw)
    opt = AdaBreg([lin.weight])
    with pytest.raises(ValueError, match=needle):
        opt.add_param_group({"params": [other.weight], **kw})


def test_sparse_gradients_are_rejected() -> None:
    emb = torch.nn.Embedding(5, 2, sparse=True)
    opt = AdaBreg(emb.parameters())
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
