"""Oracle and property tests for sparseopt.penalties.

Oracles: brute-force grid argmin of ½(y-x)² + t·J(y) (elementwise penalties), radial
search along x_g for group penalties, autograd for subgradients away from kinks,
and firm non-expansiveness for the convex ones.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparseopt import penalties as P
from sparseopt.groups import group_dims, group_norms, group_size, num_groups

DTYPES = [torch.float32, torch.float64]
SHAPES = [(6, 4), (7, 5), (4, 3, 3, 3), (5, 3, 2, 3)]  # even/odd, 2-D and 4-D

ELEMENTWISE = {
    "l1": lambda y, lam: lam * np.abs(y),
    "l0": lambda y, lam: lam * (y != 0),
    "tl1_a0.5": lambda y, lam: lam * 1.5 * np.abs(y) / (0.5 + np.abs(y)),
    "tl1_a2": lambda y, lam: lam * 3.0 * np.abs(y) / (2.0 + np.abs(y)),
}


def _elementwise_penalty(key: str, lam: float) -> P.Penalty:
    if key.startswith("tl1"):
        return P.TL1(lam=lam, a=float(key.split("_a")[1]))
    return P.make_penalty(key, lam=lam)


def _grid_prox(x: np.ndarray, t: float, lam: float, key: str) -> np.ndarray:
    """Brute-force argmin over a fine grid containing 0 and x itself, per element."""
    grid = np.concatenate([np.linspace(-6.0, 6.0, 240001), [0.0]])
    out = np.empty_like(x)
    for i, xi in enumerate(x.ravel()):
        cand = np.concatenate([grid, [xi]])
        f = 0.5 * (cand - xi) ** 2 + t * ELEMENTWISE[key](cand, lam)
        out.ravel()[i] = cand[np.argmin(f)]
    return out


def _near_jump(x: np.ndarray, pen: P.Penalty, t: float) -> np.ndarray:
    """Points within 1e-3 of a discontinuity of the prox (ties between two minimisers)."""
    if isinstance(pen, P.L0):
        tau = math.sqrt(2 * t * pen.lam)
    elif isinstance(pen, P.TL1):
        tau = P.tl1_threshold_value(t * pen.lam, pen.a)
    else:
        return np.zeros(x.shape, dtype=bool)
    return np.abs(np.abs(x) - tau) < 1e-3


# ----------------------------------------------------------------- brute-force oracles


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("key", sorted(ELEMENTWISE))
@pytest.mark.parametrize("t", [0.05, 0.3, 1.0, 2.5])
def test_elementwise_prox_matches_grid_argmin(key: str, t: float, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=gen, dtype=torch.float64) * 2
    lam = 0.4
    pen = _elementwise_penalty(key, lam)
    got = pen.prox(x.to(dtype), t)
    assert got.dtype == dtype and got.shape == x.shape
    want = _grid_prox(x.numpy(), t, lam, key)
    ok = ~_near_jump(x.numpy(), pen, t)
    np.testing.assert_allclose(got.double().numpy()[ok], want[ok], atol=2e-4)


@pytest.mark.parametrize("a", [0.25, 1.0, 4.0])
@pytest.mark.parametrize("mu", [0.01, 0.1, 0.5, 3.0])
def test_tl1_sub_and_supercritical_regimes(a: float, mu: float) -> None:
    # Scalars across the threshold of both regimes, against a very fine grid.
    critical = a * a / (2 * (a + 1))
    tau = P.tl1_threshold_value(mu, a)
    if mu <= critical:
        assert tau == pytest.approx(mu * (a + 1) / a)
    else:
        assert tau == pytest.approx(math.sqrt(2 * mu * (a + 1)) - a / 2)
    xs = np.array([0.5 * tau, 0.99 * tau, 1.01 * tau, 1.5 * tau, tau + 2.0, -1.2 * tau])
    got = P.tl1_threshold(torch.tensor(xs, dtype=torch.float64), mu, a).numpy()
    for xi, gi in zip(xs, got, strict=True):
        grid = np.linspace(-abs(xi) - 1, abs(xi) + 1, 400001)
        grid = np.concatenate([grid, [0.0]])
        f = 0.5 * (grid - xi) ** 2 + mu * (a + 1) * np.abs(grid) / (a + np.abs(grid))
        assert gi == pytest.approx(grid[np.argmin(f)], abs=1e-4), (xi, gi)
        if abs(xi) <= tau:
            assert gi == 0.0


def test_l0_threshold_is_sqrt_2t_lambda() -> None:
    lam, t = 0.18, 0.5
    tau = math.sqrt(2 * t * lam)  # 0.4242...
    x = torch.tensor([tau - 1e-6, tau + 1e-6, -(tau + 1e-6), -(tau - 1e-6)], dtype=torch.float64)
    got = P.L0(lam=lam).prox(x, t)
    assert got.tolist() == [0.0, x[1].item(), x[2].item(), 0.0]


GROUP_CASES = [
    ("group_l1", "sqrt"),
    ("group_l1", "one"),
    ("group_l0", "one"),
    ("group_l0", "sqrt"),
    ("group_l0", "size"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("name", "weight"), GROUP_CASES)
@pytest.mark.parametrize("groups", ["filter", "channel", "kernel"])
def test_group_prox_matches_radial_search(
    name: str, weight: str, groups: str, shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    if groups == "kernel" and len(shape) == 2:
        pytest.skip("kernel groups need a conv weight")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    lam, t = 0.15, 1.0
    pen = P.make_penalty(name, lam=lam, groups=groups, group_weight=weight)
    got = pen.prox(x.to(dtype), t).double()
    assert got.shape == x.shape
    # The minimiser of ½‖y-x_g‖² + t·J(y) lies on the ray y = s·x_g/‖x_g‖ (J depends on
    # ‖y‖ only and decreases the distance); search s on a fine grid of [0, ‖x_g‖].
    dims = group_dims(x.ndim, groups)
    norms = group_norms(x, groups)
    size = group_size(shape, groups)
    w = {"sqrt": math.sqrt(size), "size": float(size), "one": 1.0}[weight]
    if name == "group_l0" and weight == "sqrt":  # group ℓ1's weight: group ℓ0 keeps "one"
        w = 1.0
    s = torch.linspace(0, 1, 200001, dtype=torch.float64)
    flat_norms = norms.flatten()
    for i, r in enumerate(flat_norms.tolist()):
        radii = s * r
        if name == "group_l1":
            f = 0.5 * (radii - r) ** 2 + t * lam * w * radii
        else:
            f = 0.5 * (radii - r) ** 2 + t * lam * w * (radii > 0)
        best = radii[f.argmin()].item()
        got_norm = group_norms(got, groups).flatten()[i].item()
        if name == "group_l0" and abs(r - math.sqrt(2 * t * lam * w)) < 1e-3:
            continue
        assert got_norm == pytest.approx(best, abs=1e-4 * max(r, 1.0))
    # direction preserved: prox(x)_g is a non-negative multiple of x_g
    ratio = (got * x).sum(dim=dims, keepdim=True)
    assert (ratio >= -1e-6).all()

    # perturbing the answer never lowers the objective (it is a minimiser)
    def objective(y: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((y - x) ** 2).sum() + t * pen.value(y)

    base = objective(got)
    for _ in range(5):
        pert = got + 1e-3 * torch.randn(shape, generator=gen, dtype=torch.float64)
        assert objective(pert) >= base - (1e-4 if dtype == torch.float32 else 1e-9)


# ----------------------------------------------------------------- property tests

ALL_PENALTIES = [
    P.L1(lam=0.3),
    P.L0(lam=0.3),
    P.TL1(lam=0.3, a=0.7),
    P.TL1(lam=0.3, a=5.0),
    P.GroupL1(lam=0.3, groups="filter"),
    P.GroupL1(lam=0.3, groups="channel", group_weight="one"),
    P.GroupL0(lam=0.3, groups="kernel"),
    P.GroupL0(lam=0.03, groups="filter", group_weight="size"),
    P.NoPenalty(),
]

tensors = st.builds(
    lambda seed, odd, four_d, scale: (
        torch.randn(
            (5 if odd else 4, 3, 3, 3) if four_d else (5 if odd else 4, 6),
            generator=torch.Generator().manual_seed(seed),
            dtype=torch.float64,
        )
        * scale
    ),
    st.integers(0, 2**31 - 1),
    st.booleans(),
    st.booleans(),
    st.floats(0.01, 10.0),
)


def _applies(pen: P.Penalty, x: torch.Tensor) -> bool:
    return not (pen.grouped and pen.groups == "kernel" and x.ndim < 3)


@settings(max_examples=40, deadline=None)
@given(x=tensors, t=st.floats(0.0, 5.0), idx=st.integers(0, len(ALL_PENALTIES) - 1))
def test_prox_properties(x: torch.Tensor, t: float, idx: int) -> None:
    pen = ALL_PENALTIES[idx]
    if not _applies(pen, x):
        return
    y = pen.prox(x, t)
    # shrinks: |prox(x)| <= |x| elementwise (group prox scales every entry by a factor in [0, 1])
    assert (y.abs() <= x.abs() + 1e-12).all()
    # sign preserved (or zero)
    assert (y * x >= 0).all()
    # prox(0) = 0
    assert (pen.prox(torch.zeros_like(x), t) == 0).all()
    # support agrees with the nonzeros of the output
    assert torch.equal(pen.support(y), y != 0) or pen.grouped
    if pen.grouped:
        assert torch.equal(pen.support(y), (group_norms(y, pen.groups) != 0).expand_as(y))
        assert torch.equal(pen.support(y) | (y == 0), torch.ones_like(y, dtype=torch.bool))
    # support shrinks as t grows
    y2 = pen.prox(x, t + 0.5)
    assert not (pen.support(y2) & ~pen.support(y)).any()


@settings(max_examples=40, deadline=None)
@given(x=tensors, seed=st.integers(0, 1000), t=st.floats(0.0, 3.0), idx=st.integers(0, 2))
def test_convex_prox_is_firmly_nonexpansive(x: torch.Tensor, seed: int, t: float, idx: int) -> None:
    pen = [
        P.L1(lam=0.4),
        P.GroupL1(lam=0.4, groups="filter"),
        P.GroupL1(lam=0.2, groups="channel"),
    ][idx]
    z = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    px, pz = pen.prox(x, t), pen.prox(z, t)
    lhs = ((px - pz) ** 2).sum()
    rhs = ((px - pz) * (x - z)).sum()
    assert lhs <= rhs + 1e-10


@pytest.mark.parametrize("pen", [P.L1(lam=0.5), P.GroupL1(lam=0.5, groups="channel")])
def test_moreau_identity_for_convex_penalties(pen: P.Penalty) -> None:
    # x = prox_{tJ}(x) + t·prox_{J*/t}(x/t); for a norm J*, the conjugate prox is the
    # projection onto the dual-norm ball, so x - prox_{tJ}(x) must lie in t·∂J(prox(x)).
    x = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = 0.7
    y = pen.prox(x, t)
    r = (x - y) / t
    sub = pen.subgrad(y)
    alive = pen.support(y)
    torch.testing.assert_close(r[alive], sub[alive])
    if isinstance(pen, P.L1):
        assert (r.abs() <= pen.lam + 1e-12).all()
    else:
        w = pen.weight(x.shape)
        assert (group_norms(r, pen.groups) <= pen.lam * w + 1e-9).all()


# ----------------------------------------------------------------- value, subgrad, in-place


@pytest.mark.parametrize("pen", ALL_PENALTIES[:-1], ids=lambda p: p.spec()["penalty"])
def test_subgrad_matches_autograd_away_from_zero(pen: P.Penalty) -> None:
    x = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x = x + 0.1 * torch.sign(x)  # stay away from the kink at 0
    if isinstance(pen, (P.L0, P.GroupL0)):
        g = torch.zeros_like(x)  # piecewise constant: gradient 0 off the kink
    else:
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(pen.value(x), x)
    torch.testing.assert_close(pen.subgrad(x.detach()), g)
    assert (pen.subgrad(torch.zeros_like(x)) == 0).all()


def test_values_by_hand() -> None:
    x = torch.tensor([[3.0, -4.0, 0.0], [0.0, 0.0, 0.0]])
    assert P.L1(lam=2.0).value(x).item() == 14.0
    assert P.L0(lam=2.0).value(x).item() == 4.0
    assert P.TL1(lam=1.0, a=1.0).value(x).item() == pytest.approx(2 * 3 / 4 + 2 * 4 / 5)
    assert P.GroupL1(lam=1.0, groups="row").value(x).item() == pytest.approx(5 * math.sqrt(3))
    assert P.GroupL1(lam=1.0, groups="row", group_weight="one").value(x).item() == 5.0
    assert P.GroupL0(lam=0.5, groups="column").value(x).item() == 1.0
    assert P.GroupL0(lam=0.5, groups="column", group_weight="size").value(x).item() == 2.0
    # group ℓ1's "sqrt" (the param groups' default) leaves group ℓ0 counting groups
    assert P.make_penalty("group_l0", lam=0.5, group_weight="sqrt") == P.GroupL0(lam=0.5)
    with pytest.raises(ValueError, match="expected 'one' or 'size' for group_l0"):
        P.GroupL0(lam=0.5, group_weight="sqrt")
    with pytest.raises(ValueError, match="expected 'sqrt' or 'one'"):
        P.GroupL1(lam=0.5, group_weight="size")
    assert P.NoPenalty().value(x).item() == 0.0
    assert num_groups(x.shape, "column") == 3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pen", ALL_PENALTIES, ids=lambda p: p.spec()["penalty"])
def test_inplace_and_foreach_agree_with_prox(pen: P.Penalty, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(5)
    xs = [torch.randn(s, generator=gen, dtype=dtype) for s in [(5, 3, 3, 3), (4, 2, 3, 3)]]
    want = [pen.prox(x, 0.8) for x in xs]
    one = xs[0].clone()
    assert pen.prox_(one, 0.8) is one
    torch.testing.assert_close(one, want[0], rtol=0, atol=0)
    many = [x.clone() for x in xs]
    pen.prox_foreach_(many, 0.8)
    for got, w in zip(many, want, strict=True):
        assert got.dtype == dtype
        torch.testing.assert_close(got, w, rtol=0, atol=0)


# ----------------------------------------------------------------- specs and errors


@pytest.mark.parametrize("pen", ALL_PENALTIES, ids=lambda p: p.spec()["penalty"])
def test_spec_round_trips_as_plain_data(pen: P.Penalty) -> None:
    spec = pen.spec()
    assert all(isinstance(v, (str, float)) for v in spec.values())
    assert P.from_spec(spec) == pen
    # plain data survives a weights_only torch.save/torch.load
    import io

    buf = io.BytesIO()
    torch.save(spec, buf)
    buf.seek(0)
    assert P.from_spec(torch.load(buf, weights_only=True)) == pen


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: P.L1(lam=-0.1), "-0.1"),
        (lambda: P.L0(lam=float("nan")), "nan"),
        (lambda: P.TL1(lam=1.0, a=0.0), "a value: 0.0"),
        (lambda: P.TL1(lam=1.0, a=-2), "a value: -2"),
        (lambda: P.L1(lam=1.0).prox(torch.ones(3), -0.5), "t value: -0.5"),
        (lambda: P.GroupL1(lam=1.0).prox(torch.ones(3), 1.0), "ndim=1"),
        (lambda: P.GroupL0(lam=1.0, groups="kernel").prox(torch.ones(3, 3), 1.0), "kernel"),
        (lambda: P.GroupL1(lam=1.0, groups="neuron"), "'neuron'"),
        (lambda: P.GroupL1(lam=1.0, group_weight="log"), "'log'"),
        (lambda: P.make_penalty("l2"), "'l2'"),
        (lambda: P.from_spec({"penalty": "scad", "lam": 1.0}), "'scad'"),
    ],
)
def test_bad_input_raises_value_error_naming_it(call, needle: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        call()
    assert needle in str(info.value)


def test_group_penalty_check_rejects_1d() -> None:
    with pytest.raises(ValueError, match="ndim=1"):
        P.GroupL1(lam=1.0).check(torch.ones(4))
    P.GroupL1(lam=1.0).check(torch.ones(4, 2))  # fine


def test_prox_keeps_dtype_and_device() -> None:
    for pen in ALL_PENALTIES:
        x = torch.randn(4, 3, 3, 3, dtype=torch.float32)
        y = pen.prox(x, 0.5)
        assert y.dtype == x.dtype and y.device == x.device
        if pen.is_zero or isinstance(pen, P.NoPenalty):
            assert torch.equal(y, x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prox_on_cuda_matches_cpu() -> None:
    x = torch.randn(8, 4, 3, 3)
    for pen in ALL_PENALTIES:
        torch.testing.assert_close(pen.prox(x.cuda(), 0.5).cpu(), pen.prox(x, 0.5))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["l1", "l0", "tl1", "group_l1", "group_l0", "none"])
def test_fused_prox_into_equals_prox(name: str, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(5)
    xs = [torch.randn(s, generator=gen, dtype=dtype) for s in [(5, 4, 3), (9, 2), (33, 17)]]
    pen = P.make_penalty(name, lam=0.37, groups="filter", a=2.0)
    for t in (0.0, 0.1, 1.3):
        for scale in (1.0, 2.5):
            outs = [torch.full_like(x, float("nan")) for x in xs]
            pen.prox_into_(outs, xs, t, scale=scale)
            inplace = [x.clone() for x in xs]
            pen.prox_into_(inplace, inplace, t, scale=scale)
            for x, o, i in zip(xs, outs, inplace, strict=True):
                expected = pen.prox(x, t) * scale
                if scale == 1.0 or not pen.grouped:
                    assert torch.equal(o, expected) and torch.equal(i, expected)
                else:  # the group factor absorbs the scale: equal up to rounding
                    torch.testing.assert_close(o, expected)
                    torch.testing.assert_close(i, expected)


# ------------------------------------------------- private kernels and their fallback


def _thresholds_and_ties(dtype: torch.dtype) -> tuple[torch.Tensor, float]:
    """Random entries plus entries exactly at ±τ, ±0, ±inf and NaN (odd size)."""
    gen = torch.Generator().manual_seed(3)
    tau = 0.3
    special = [tau, -tau, 0.0, -0.0, math.inf, -math.inf, math.nan]
    x = torch.cat(
        [torch.randn(1001, generator=gen, dtype=dtype), torch.tensor(special, dtype=dtype)]
    )
    return x, tau


def test_private_kernels_are_bound_when_available() -> None:
    # with this torch the one-pass kernels exist and pass the import-time check
    assert P._softshrink is not P._public_softshrink
    assert P._hardshrink is not P._public_hardshrink


def test_bind_kernel_falls_back_when_the_kernel_is_missing_or_wrong() -> None:
    assert P._bind_kernel("_C._nn.no_such_kernel", P._public_softshrink) is P._public_softshrink
    # a kernel with another meaning fails the import-time comparison
    assert P._bind_kernel("_C._nn.hardtanh", P._public_softshrink) is P._public_softshrink


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["l1", "l0"])
def test_forced_public_fallback_gives_the_same_bits(
    monkeypatch: pytest.MonkeyPatch, name: str, dtype: torch.dtype
) -> None:
    x, tau = _thresholds_and_ties(dtype)
    pen = P.make_penalty(name, lam=tau if name == "l1" else tau**2 / 2)  # threshold τ at t = 1
    fast_out, fast_inplace = torch.empty_like(x), x.clone()
    pen.prox_into_([fast_out], [x], 1.0)
    pen.prox_(fast_inplace, 1.0)
    monkeypatch.setattr(P, "_softshrink", P._public_softshrink)
    monkeypatch.setattr(P, "_hardshrink", P._public_hardshrink)
    slow_out, slow_inplace = torch.empty_like(x), x.clone()
    pen.prox_into_([slow_out], [x], 1.0)
    pen.prox_(slow_inplace, 1.0)
    for fast, slow in ((fast_out, slow_out), (fast_inplace, slow_inplace)):
        torch.testing.assert_close(fast, slow, rtol=0, atol=0, equal_nan=True)
    # and both are the reference prox (entries at exactly ±τ are dead)
    torch.testing.assert_close(slow_out, pen.prox(x, 1.0), rtol=0, atol=0, equal_nan=True)
    assert slow_out[1001:1003].eq(0).all()


def test_tl1_threshold_with_one_mu_per_entry_is_the_scalar_prox_entrywise() -> None:
    # μ spans 0, the subcritical (μ ≤ a²/(2(a+1))) and the supercritical regime
    from sparseopt.penalties import tl1_threshold, tl1_threshold_value

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(400, generator=gen, dtype=torch.float64) * 2
    mu = torch.rand(400, generator=gen, dtype=torch.float64) * 1.5
    mu[::7] = 0.0
    a = 0.8
    out = tl1_threshold(x, mu, a)
    expected = torch.stack([tl1_threshold(x[i : i + 1], float(mu[i]), a)[0] for i in range(len(x))])
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    taus = tl1_threshold_value(mu, a)
    scalar = torch.tensor([tl1_threshold_value(float(m), a) for m in mu], dtype=torch.float64)
    torch.testing.assert_close(taus, scalar, rtol=1e-14, atol=1e-15)
    crit = a * a / (2 * (a + 1))
    assert (mu < crit).any() and (mu > crit).any() and ((out == 0) & (x != 0)).any()
    torch.testing.assert_close(out[::7], x[::7], rtol=1e-12, atol=1e-12)  # μ = 0: the identity
