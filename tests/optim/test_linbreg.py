"""LinBreg: exact reductions to SGD, foreach == for-loop, and Bregman behaviour.

Oracles: with no penalty (or λ = 0) LinBreg is ``torch.optim.SGD`` with learning rate
τδ, and with momentum β it is SGD with ``momentum=β, dampening=β`` (Bungert et al.,
JMLR 2022, Algorithms 1-2). Behaviour: inverse scale space from a sparse start,
exact support recovery on a noiseless sparse least-squares problem, λ changes that
keep θ, whole dead filters under group ℓ1.
"""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch

import sparseopt as so
from sparseopt.optim._bregman import init_dual, primal, primal_foreach
from sparseopt.optim.linbreg import LinBreg, linbreg
from sparseopt.penalties import L1, TL1, GroupL1, make_penalty

DTYPES = [torch.float32, torch.float64]
TIGHT = {
    torch.float32: {"rtol": 1e-6, "atol": 1e-6},
    torch.float64: {"rtol": 1e-13, "atol": 1e-13},
}


def _params(dtype: torch.dtype, seed: int = 0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(6, 3, 3, 3), (6,), (7, 5), (7,), (3, 7)]
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]


def _clone(params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def _set_grads(groups: list[list[torch.nn.Parameter]], gen: torch.Generator) -> None:
    for params in zip(*groups, strict=True):
        g = torch.randn(params[0].shape, generator=gen, dtype=params[0].dtype)
        for p in params:
            p.grad = g.clone()


def _mixed_groups(params: list[torch.nn.Parameter], **kw: object) -> list[dict[str, object]]:
    conv, conv_b, lin, lin_b, head = params
    return [
        {"params": [conv], "penalty": "group_l1", "groups": "filter", "lam": 0.3, **kw},
        {"params": [lin], "penalty": "l1", "lam": 0.5, **kw},
        {"params": [head], "penalty": "tl1", "lam": 0.2, "a": 2.0, **kw},
        {"params": [conv_b, lin_b], "penalty": "none", **kw},
    ]


# ------------------------------------------------------------------------- oracles


def _zero_momentum_buffers(ref: torch.optim.SGD, momentum: float) -> None:
    # LinBreg's buffer starts at 0 (Alg. 2); torch's SGD would start at the first gradient
    if momentum != 0:
        for group in ref.param_groups:
            for q in group["params"]:
                ref.state[q]["momentum_buffer"] = torch.zeros_like(q)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("delta", [1.0, 0.7])
@pytest.mark.parametrize("penalty", ["none", "l1"])
def test_without_penalty_equals_sgd(
    dtype: torch.dtype, foreach: bool, momentum: float, delta: float, penalty: str
) -> None:
    ps, qs = _params(dtype), _params(dtype)
    opt = LinBreg(
        ps, lr=0.05, delta=delta, momentum=momentum, penalty=penalty, lam=0.0, foreach=foreach
    )
    ref = torch.optim.SGD(
        qs, lr=0.05 * delta, momentum=momentum, dampening=momentum, foreach=foreach
    )
    _zero_momentum_buffers(ref, momentum)
    gen = torch.Generator().manual_seed(1)
    for _ in range(7):
        _set_grads([ps, qs], gen)
        opt.step()
        ref.step()
    for p, q in zip(ps, qs, strict=True):
        torch.testing.assert_close(p, q, **TIGHT[dtype])
        if delta == 1.0 and momentum == 0.0:  # same operations in the same order
            assert torch.equal(p, q)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_unpenalised_group_takes_exact_sgd_steps(dtype: torch.dtype, momentum: float) -> None:
    ps = _params(dtype)
    qs = _clone(ps)
    opt = LinBreg(_mixed_groups(ps), lr=0.1, delta=2.0, momentum=momentum)
    ref = torch.optim.SGD([qs[1], qs[3]], lr=0.2, momentum=momentum, dampening=momentum)
    _zero_momentum_buffers(ref, momentum)
    gen = torch.Generator().manual_seed(2)
    for _ in range(5):
        _set_grads([ps, qs], gen)
        opt.step()
        ref.step()
    for i in (1, 3):
        if momentum == 0.0:
            assert torch.equal(ps[i], qs[i])
        torch.testing.assert_close(ps[i], qs[i], **TIGHT[dtype])
    assert "dual" not in opt.state[ps[1]] and "dual" in opt.state[ps[2]]


@pytest.mark.parametrize("dtype", DTYPES)
def test_hand_computed_steps(dtype: torch.dtype) -> None:
    # delta = 2, lam = 0.5: v0 = theta/2 + 0.5 sign(theta); theta = 2 soft(v, 0.5)
    w = torch.nn.Parameter(torch.tensor([1.0, 0.0, -0.4, 0.0], dtype=dtype))
    opt = LinBreg([w], lr=0.5, lam=0.5, delta=2.0, momentum=0.0)
    w.grad = torch.tensor([0.2, -1.2, 0.0, 0.6], dtype=dtype)
    opt.step()
    v = torch.tensor([1.0 - 0.1, 0.6, -0.7, -0.3], dtype=dtype)
    torch.testing.assert_close(opt.state[w]["dual"], v)
    torch.testing.assert_close(w.detach(), torch.tensor([0.8, 0.2, -0.4, 0.0], dtype=dtype))
    assert w[3] == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_momentum_buffer_matches_paper_form(dtype: torch.dtype) -> None:
    # Alg. 2 with m_t = tau * b_t: v_t = v_{t-1} - m_t, m_t = beta m_{t-1} + (1 - beta) tau g_t,
    # m_0 = 0
    w = torch.nn.Parameter(torch.zeros(5, dtype=dtype))
    opt = LinBreg([w], lr=0.3, lam=0.1, momentum=0.8)
    gen = torch.Generator().manual_seed(3)
    v = torch.zeros(5, dtype=dtype)
    m = torch.zeros(5, dtype=dtype)  # m_0 = 0
    for _ in range(6):
        g = torch.randn(5, generator=gen, dtype=dtype)
        w.grad = g
        opt.step()
        m = 0.8 * m + 0.2 * 0.3 * g
        v = v - m
    torch.testing.assert_close(opt.state[w]["dual"], v)
    torch.testing.assert_close(w.detach(), torch.sign(v) * (v.abs() - 0.1).clamp(min=0))


# ------------------------------------------------------------ foreach == for-loop


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("delta", [1.0, 1.7])
@pytest.mark.parametrize("maximize", [False, True])
def test_foreach_equals_for_loop(
    dtype: torch.dtype, momentum: float, delta: float, maximize: bool
) -> None:
    ps = _params(dtype)
    qs = _clone(ps)
    kw = {"momentum": momentum, "delta": delta}
    loop = LinBreg(_mixed_groups(ps, **kw), lr=0.5, foreach=False, maximize=maximize, momentum=0.0)
    fast = LinBreg(_mixed_groups(qs, **kw), lr=0.5, foreach=True, maximize=maximize, momentum=0.0)
    gen = torch.Generator().manual_seed(4)
    for _ in range(6):
        _set_grads([ps, qs], gen)
        loop.step()
        fast.step()
    for p, q in zip(ps, qs, strict=True):
        assert torch.equal(p, q)
        s, t = loop.state[p], fast.state[q]
        assert s.keys() == t.keys()
        for key in s:
            assert torch.equal(s[key], t[key]), key
    assert (ps[2] == 0).any() and (ps[2] != 0).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("delta", [1.0, 0.3, 2.5])
@pytest.mark.parametrize("lam", [0.0, 1e-3, 0.4, 1.0 / 3.0])
def test_fused_l1_primal_map_equals_generic_prox(
    dtype: torch.dtype, delta: float, lam: float
) -> None:
    gen = torch.Generator().manual_seed(5)
    duals = [torch.randn(s, generator=gen, dtype=dtype) for s in [(33,), (4, 9), (2, 3, 5, 5)]]
    fast = [torch.empty_like(v) for v in duals]
    ref = [torch.empty_like(v) for v in duals]
    pen = L1(lam=lam)
    primal_foreach(fast, duals, pen, delta)
    for p, v in zip(ref, duals, strict=True):
        primal(p, v, pen, delta)
        torch.testing.assert_close(p, pen.prox(delta * v, delta), rtol=0, atol=0)
    for a, b in zip(fast, ref, strict=True):
        assert torch.equal(a, b)
        assert torch.equal(a == 0, b == 0)


def test_functional_api_with_no_penalty_needs_no_duals() -> None:
    p = torch.ones(3)
    g = torch.tensor([1.0, -2.0, 0.5])
    for foreach in (False, True):
        q = p.clone()
        bufs: list[torch.Tensor | None] = [None]
        linbreg([q], [g], [], bufs, lr=0.1, delta=2.0, momentum=0.5, foreach=foreach)
        # the buffer starts at 0: b_1 = (1 - 0.5) g
        torch.testing.assert_close(q, p - 0.2 * 0.5 * g)
        assert bufs[0] is not None and torch.equal(bufs[0], 0.5 * g)


# --------------------------------------------------------------- Bregman behaviour


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("penalty", [L1(lam=0.3), GroupL1(lam=0.3, groups="filter")])
@pytest.mark.parametrize("delta", [1.0, 0.5])
def test_dual_initialisation_reproduces_params(dtype: torch.dtype, penalty, delta: float) -> None:
    gen = torch.Generator().manual_seed(6)
    w = torch.randn(6, 4, 3, 3, generator=gen, dtype=dtype)
    w[::2] = 0  # dead filters
    w[1, 0] = 0
    v = init_dual(w, penalty, delta)
    theta = penalty.prox(delta * v, delta)
    torch.testing.assert_close(theta, w)
    assert torch.equal(theta == 0, w == 0)
    # a zero-gradient step leaves the parameters where they were
    p = torch.nn.Parameter(w.clone())
    opt = LinBreg([p], lr=0.1, penalty=penalty, delta=delta, momentum=0.0)
    p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(p.detach(), w)
    assert torch.equal(p == 0, w == 0)


def test_nonconvex_dual_initialisation_keeps_large_entries() -> None:
    w = torch.tensor([2.0, -0.1, 0.0, -3.0], dtype=torch.float64)
    pen = make_penalty("l0", lam=0.5)  # threshold sqrt(2 * delta * lam) = 1
    theta = pen.prox(init_dual(w, pen, 1.0), 1.0)
    assert theta.tolist() == [2.0, 0.0, 0.0, -3.0]
    pen = TL1(lam=0.1, a=1.0)
    theta = pen.prox(init_dual(w, pen, 1.0), 1.0)
    torch.testing.assert_close(theta[[0, 3]], w[[0, 3]])


class _MLP(torch.nn.Sequential):
    def __init__(self) -> None:
        super().__init__(
            torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
            torch.nn.Linear(64, 3),
        )  # fmt: skip


def _classification(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 20, generator=gen)
    y = (x[:, :3] * torch.tensor([1.0, -2.0, 0.5])).argmax(1)
    return x, y


def _weights_nnz(model: torch.nn.Module) -> tuple[int, int]:
    ws = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return sum(int((w != 0).sum()) for w in ws), sum(w.numel() for w in ws)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_inverse_scale_space_support_grows_from_sparse_init(momentum: float) -> None:
    torch.manual_seed(0)
    model = _MLP()
    so.sparse_init_(model, density=0.01, floor=False, generator=torch.Generator().manual_seed(0))
    x, y = _classification()
    opt = LinBreg(so.param_groups(model, lam=0.02), lr=0.1, momentum=momentum)
    nnz, total = _weights_nnz(model)
    counts = [nnz]
    assert 0.005 < nnz / total < 0.02
    losses = []
    for it in range(120):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if it % 20 == 19:
            counts.append(_weights_nnz(model)[0])
    # the support grows (inverse scale space), nearly monotonically, and stays sparse
    assert counts[-1] > 3 * counts[0]
    assert all(b >= 0.9 * a for a, b in itertools.pairwise(counts)), counts
    assert counts[-1] < 0.5 * total
    assert losses[-1] < 0.7 * losses[0]


def _sparse_least_squares(dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    m, n, k = 200, 100, 5
    a = torch.randn(m, n, generator=gen, dtype=dtype) / math.sqrt(m)
    x_true = torch.zeros(n, dtype=dtype)
    support = torch.randperm(n, generator=gen)[:k]
    signs = torch.sign(torch.randn(k, generator=gen, dtype=dtype))
    x_true[support] = (1 + torch.rand(k, generator=gen, dtype=dtype)) * signs
    return a, a @ x_true, x_true


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_recovers_the_support_of_a_sparse_least_squares_solution(
    dtype: torch.dtype, momentum: float
) -> None:
    a, y, x_true = _sparse_least_squares(dtype)
    lip = float(torch.linalg.matrix_norm(a, 2)) ** 2  # L of the gradient of ½‖Ax − y‖²
    x = torch.nn.Parameter(torch.zeros(100, dtype=dtype))
    # lr * delta = 1 / L < 2 / L; lam large enough that off-support duals stay inside
    opt = LinBreg([x], lr=1.0 / lip, lam=2.0, delta=1.0, momentum=momentum)
    sizes = []
    for it in range(600):
        x.grad = a.T @ (a @ x.detach() - y)
        opt.step()
        if it % 50 == 0:
            sizes.append(int((x != 0).sum()))
    assert sizes[0] <= 2 and sizes == sorted(sizes)  # starts empty and grows
    true_support = x_true != 0
    if dtype == torch.float64:
        assert torch.equal(x != 0, true_support)
    else:
        assert torch.equal(x.abs() > 1e-4, true_support)
    torch.testing.assert_close(x.detach(), x_true, rtol=0, atol=1e-5)


@pytest.mark.parametrize("penalty", ["l1", "group_l1", "l0"])
def test_set_lam_keeps_params_and_steps_stay_sane(penalty: str) -> None:
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    model.double()
    so.sparse_init_(model, density=0.3, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(64, 10, generator=gen, dtype=torch.float64)
    y = 0.8 * x[:, :2] - 0.5 * x[:, 2:4]
    groups = "row" if penalty == "group_l1" else None
    opt = LinBreg(
        so.param_groups(model, penalty=penalty, lam=0.02, groups=groups), lr=0.1, delta=1.5
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
    w = model[0].weight
    for lam in (0.2, 0.005, 0.0, 0.05):
        before = [p.detach().clone() for p in model.parameters()]
        opt.set_lam(lam)
        assert opt.param_groups[0]["lam"] == lam and opt.param_groups[-1]["penalty"] == "none"
        for p, b in zip(model.parameters(), before, strict=True):
            assert torch.equal(p, b)  # set_lam itself never touches the parameters
        # the duals now reproduce the same parameters under the new λ (for ℓ0: the
        # entries above the new hard threshold; smaller ones are cut at the next step)
        # each weight's own group's penalty (the output layer's groups are its inputs)
        pens = {id(q): opt.penalty_of(g) for g in opt.param_groups for q in g["params"]}
        for p, b in zip(model.parameters(), before, strict=True):
            if "dual" in opt.state[p]:
                theta = pens[id(p)].prox(1.5 * opt.state[p]["dual"], 1.5)
                keep = b.abs() > math.sqrt(2 * 1.5 * lam) if penalty == "l0" else b == b
                torch.testing.assert_close(theta[keep], b[keep], rtol=0, atol=1e-12)
                assert not theta[b == 0].any()
        if penalty == "l1":
            dead = w == 0
            assert (opt.state[w]["dual"][dead].abs() <= lam + 1e-15).all()
        loss = train(5)
        assert math.isfinite(loss)
    assert loss < 0.8 * first


def test_set_lam_rescales_dead_duals() -> None:
    w = torch.nn.Parameter(torch.tensor([0.0, 0.0, 1.0]))
    opt = LinBreg([w], lr=1.0, lam=1.0, momentum=0.0)
    w.grad = torch.tensor([-0.5, 0.8, 0.0])
    opt.step()
    torch.testing.assert_close(opt.state[w]["dual"], torch.tensor([0.5, -0.8, 2.0]))
    opt.set_lam(2.0)
    # dead duals keep their relative position to the threshold; live θ is kept
    torch.testing.assert_close(opt.state[w]["dual"], torch.tensor([1.0, -1.6, 3.0]))
    assert w.tolist() == [0.0, 0.0, 1.0]
    opt.set_lam(0.0)
    torch.testing.assert_close(opt.state[w]["dual"], torch.tensor([0.0, 0.0, 1.0]))
    opt.set_lam(0.5)  # from λ = 0 the dead duals are 0 and stay 0
    torch.testing.assert_close(opt.state[w]["dual"], torch.tensor([0.0, 0.0, 1.5]))


def test_group_l1_kills_whole_filters() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 12, 3)
    head = torch.nn.Linear(12, 4)
    model = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), head)  # fmt: skip
    so.sparse_init_(
        model, density=0.25, groups="filter", generator=torch.Generator().manual_seed(0)
    )
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, 8, 8, generator=gen)
    y = torch.randint(0, 4, (64,), generator=gen)
    groups = so.param_groups(model, penalty="group_l1", lam=0.05, groups="filter")
    opt = LinBreg(groups, lr=0.1, momentum=0.5)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    alive = (conv.weight != 0).flatten(1)
    # every filter is entirely alive or entirely zero, and both kinds occur
    assert torch.equal(alive.all(1), alive.any(1))
    assert 0 < int(alive.all(1).sum()) < 12
    assert torch.equal(opt.support(conv.weight), conv.weight != 0)


def test_finalize_keeps_params_and_resyncs_duals() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 6).double()
    so.sparse_init_(lin, density=0.5, generator=torch.Generator().manual_seed(0))
    x = torch.randn(32, 8, dtype=torch.float64)
    opt = LinBreg(so.param_groups(lin, lam=0.1), lr=0.1, momentum=0.9)
    for _ in range(10):
        opt.zero_grad()
        lin(x).pow(2).mean().backward()
        opt.step()
    w = lin.weight
    before = w.detach().clone()
    opt.finalize()
    assert torch.equal(w, before)
    torch.testing.assert_close(L1(lam=0.1).prox(opt.state[w]["dual"], 1.0), before)
    # prune a live weight by hand: finalize makes the dual agree, so it stays dead
    live = torch.nonzero(w.detach()).tolist()[0]
    with torch.no_grad():
        w[live[0], live[1]] = 0
    opt.finalize()
    assert opt.state[w]["dual"][live[0], live[1]] == 0
    assert L1(lam=0.1).prox(opt.state[w]["dual"], 1.0)[live[0], live[1]] == 0


def test_penalty_object_and_state_dict_weights_only() -> None:
    lin = torch.nn.Linear(4, 3)
    opt = LinBreg([lin.weight], lr=0.1, penalty=GroupL1(lam=0.2, groups="row"), momentum=0.5)
    assert opt.defaults["penalty"] == "group_l1" and opt.defaults["lam"] == 0.2
    assert opt.param_groups[0]["groups"] == "row"
    lin(torch.randn(5, 4)).sum().backward()
    opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert set(state["state"][0]) == {"dual", "momentum_buffer"}


def test_maximize_flips_the_gradient() -> None:
    p, q = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(4))
    a = LinBreg([p], lr=0.5, lam=0.1, maximize=True, momentum=0.0)
    b = LinBreg([q], lr=0.5, lam=0.1, momentum=0.0)
    g = torch.tensor([1.0, -0.05, 0.3, -2.0])
    p.grad, q.grad = g.clone(), -g
    a.step()
    b.step()
    assert torch.equal(p, q) and (p != 0).sum() == 3


# -------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"delta": 0.0}, "Invalid delta value: 0.0"),
        ({"delta": -1.0}, "Invalid delta value: -1.0"),
        ({"momentum": 1.0}, "Invalid momentum value: 1.0"),
        ({"momentum": -0.1}, "Invalid momentum value: -0.1"),
        ({"lr": -0.1}, "-0.1"),
        ({"lam": -1.0}, "Invalid lam value: -1.0"),
        ({"penalty": "l2"}, "'l2'"),
    ],
)
def test_invalid_hyperparameters(kw: dict[str, object], needle: str) -> None:
    lin, other = torch.nn.Linear(3, 2), torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=needle):
        LinBreg([lin.weight], **kw)
    opt = LinBreg([lin.weight])
    with pytest.raises(ValueError, match=needle):
        opt.add_param_group({"params": [other.weight], **kw})


def test_sparse_gradients_are_rejected() -> None:
    emb = torch.nn.Embedding(5, 2, sparse=True)
    opt = LinBreg(emb.parameters())
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_changing_delta_then_finalize_keeps_params() -> None:
    gen = torch.Generator().manual_seed(7)
    w = torch.nn.Parameter(torch.randn(5, 4, generator=gen, dtype=torch.float64))
    opt = LinBreg([w], lr=0.1, lam=0.3, delta=1.0, momentum=0.0)
    w.grad = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    opt.step()
    before = w.detach().clone()
    opt.param_groups[0]["delta"] = 3.0
    opt.finalize()
    w.grad = torch.zeros_like(w)
    opt.step()
    torch.testing.assert_close(w.detach(), before, rtol=0, atol=1e-14)
    assert torch.equal(w == 0, before == 0)
