"""The generic optimizer suite, run over one table of every sparseopt optimizer.

Modelled on PyTorch's ``optim_db`` and optax's ``_OPTIMIZERS_UNDER_TEST``: each entry
names the class, several valid configurations (covering penalties, groupings and
momentum) and invalid ones with the text the ``ValueError`` must contain. The
method-specific oracles (reductions to SGD/Adam, hand-computed steps) live in the
per-method test files.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import sparseopt as so
from sparseopt.optim import resized_state
from sparseopt.optim._base import SparseOptimizer


@dataclass
class OptimCase:
    name: str
    valid: list[dict[str, Any]]
    invalid: list[tuple[dict[str, Any], str]] = field(default_factory=list)

    @property
    def cls(self) -> type[SparseOptimizer]:
        return so.get_optimizer_info(self.name).cls


GROUP = {"penalty": "group_l1", "groups": "filter"}

CASES = [
    OptimCase(
        "linbreg",
        [
            {"lr": 0.1, "lam": 0.01},
            {"lr": 0.1, "lam": 0.01, "momentum": 0.9},
            {"lr": 0.05, "lam": 0.01, "delta": 2.0, **GROUP},
            {"lr": 0.1, "lam": 0.01, "penalty": "tl1", "a": 1.0},
        ],
        [
            ({"lr": -1.0}, "-1.0"),
            ({"lr": 0.1, "delta": 0.0}, "delta"),
            ({"lr": 0.1, "momentum": 1.5}, "1.5"),
            ({"lr": 0.1, "lam": -2.0}, "-2.0"),
            ({"lr": 0.1, "penalty": "l3"}, "'l3'"),
        ],
    ),
    OptimCase(
        "adabreg",
        [
            {"lr": 1e-2, "lam": 0.01},
            {"lr": 1e-2, "lam": 0.01, "delta": 0.5, **GROUP},
            {"lr": 1e-2, "lam": 0.01, "penalty": "l0", "betas": (0.8, 0.99)},
        ],
        [
            ({"lr": -1e-3}, "-0.001"),
            ({"lr": 1e-3, "betas": (1.0, 0.999)}, "1.0"),
            ({"lr": 1e-3, "eps": -1.0}, "-1.0"),
            ({"lr": 1e-3, "delta": -1.0}, "-1.0"),
        ],
    ),
    OptimCase(
        "splitlbi",
        [
            {"lr": 0.05, "lam": 0.5, "kappa": 1.0, "nu": 10.0},
            {"lr": 0.05, "lam": 0.5, "kappa": 2.0, "nu": 10.0, "momentum": 0.9},
            {"lr": 0.05, "lam": 0.5, "kappa": 1.0, "nu": 10.0, **GROUP},
        ],
        [
            ({"lr": 0.1, "kappa": 0.0}, "kappa"),
            ({"lr": 0.1, "nu": -1.0}, "-1.0"),
            ({"lr": -0.1}, "-0.1"),
        ],
    ),
    OptimCase(
        "rda",
        [
            {"lam": 1e-3, "gamma": 10.0},
            {"lam": 1e-3, "gamma": 10.0, "adaptive": True},
            {"lam": 1e-3, "gamma": 10.0, **GROUP},
        ],
        [
            ({"gamma": 0.0}, "gamma"),
            ({"gamma": 1.0, "lam": -1.0}, "-1.0"),
        ],
    ),
    OptimCase(
        "rvsm",
        [
            {"lr": 0.1, "lam": 1e-3, "beta": 1.0, "penalty": "l0"},
            {"lr": 0.1, "lam": 1e-3, "beta": 1.0, "penalty": "tl1", "a": 1.0, "momentum": 0.9},
            {
                "lr": 0.1,
                "lam": 1e-3,
                "beta": 1.0,
                "penalty": "l1",
                "nesterov": True,
                "momentum": 0.9,
            },
            {"lr": 0.1, "lam": 1e-3, "beta": 1.0, "penalty": "group_l0", "groups": "filter"},
        ],
        [
            ({"lr": 0.1, "beta": -1.0}, "-1.0"),
            ({"lr": 0.1, "momentum": -0.5}, "-0.5"),
            ({"lr": 0.1, "penalty": "tl1", "a": 0.0}, "a value"),
        ],
    ),
    OptimCase(
        "proxsgd",
        [
            {"lr": 0.1, "lam": 1e-2},
            {"lr": 0.1, "lam": 1e-2, "momentum": 0.9, "nesterov": True},
            {"lr": 0.1, "lam": 1e-2, **GROUP},
        ],
        [
            ({"lr": -0.1}, "-0.1"),
            ({"lr": 0.1, "momentum": -1.0}, "-1.0"),
            ({"lr": 0.1, "weight_decay": -1.0}, "-1.0"),
        ],
    ),
]

VALID = [pytest.param(c, kw, id=f"{c.name}-{i}") for c in CASES for i, kw in enumerate(c.valid)]
INVALID = [
    pytest.param(c, kw, needle, id=f"{c.name}-bad{i}")
    for c in CASES
    for i, (kw, needle) in enumerate(c.invalid)
]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class Net(torch.nn.Module):
    """A small conv + MLP net with biases and a norm, odd and even sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 5, 3)
        self.norm = torch.nn.BatchNorm2d(5)
        self.fc1 = torch.nn.Linear(5 * 4 * 4, 12)
        self.fc2 = torch.nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.conv(x)))
        return self.fc2(torch.relu(self.fc1(h.flatten(1))))


def _data(device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 2, 6, 6, generator=gen, dtype=dtype)
    y = torch.randint(0, 3, (32,), generator=gen)
    return x.to(device), y.to(device)


def _model(device: str = "cpu", dtype: torch.dtype = torch.float64, seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net().to(device=device, dtype=dtype)


def _build(case: OptimCase, model: torch.nn.Module, kw: dict[str, Any], **extra: Any) -> Any:
    return so.create_optimizer(model, case.name, **kw, **extra)


def _loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(x), y)


def _train(opt: Any, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    loss = torch.tensor(0.0)
    for _ in range(steps):
        opt.zero_grad()
        loss = _loss(model, x, y)
        loss.backward()
        opt.step()
    return float(loss.detach())


def _state_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every per-parameter state value, in a fixed order (all of them are tensors)."""
    out = []
    for group in opt.param_groups:
        for p in group["params"]:
            for key in sorted(opt.state[p]):
                value = opt.state[p][key]
                assert torch.is_tensor(value), (key, value)
                out.append(value)
    return out


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("case", "kw"), VALID)
def test_loss_decreases(case: OptimCase, kw: dict[str, Any], device: str) -> None:
    model = _model(device)
    x, y = _data(device, torch.float64)
    opt = _build(case, model, kw)
    with torch.no_grad():
        first = float(_loss(model, x, y))
    _train(opt, model, x, y, 60)
    with torch.no_grad():
        last = float(_loss(model, x, y))  # the training iterate goes downhill
    assert last < 0.9 * first, (first, last)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("case", "kw"), VALID)
def test_foreach_matches_for_loop(
    case: OptimCase, kw: dict[str, Any], dtype: torch.dtype, device: str
) -> None:
    x, y = _data(device, dtype)
    models = [_model(device, dtype) for _ in range(2)]
    opts = [_build(case, m, kw, foreach=f) for m, f in zip(models, (False, True), strict=True)]
    # Both paths get model 0's gradients. On an H100 two independent backward passes left
    # AdaBreg's conv bias 0.0145 apart after 8 steps of lr 0.01: that bias sits before a
    # BatchNorm, so its gradient is rounding noise, which a normalised step turns into ±lr.
    for _ in range(8):
        for o in opts:
            o.zero_grad()
        _loss(models[0], x, y).backward()
        for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
            q.grad = p.grad.clone()
        for o in opts:
            o.step()
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(p, q, **tol)
        assert torch.equal(p == 0, q == 0) or dtype == torch.float32
    s0, s1 = _state_tensors(opts[0]), _state_tensors(opts[1])
    assert len(s0) == len(s1) > 0
    for a, b in zip(s0, s1, strict=True):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize(("case", "kw"), VALID)
def test_state_dict_round_trip_in_lock_step(case: OptimCase, kw: dict[str, Any]) -> None:
    x, y = _data("cpu", torch.float64)
    model = _model()
    opt = _build(case, model, kw)
    _train(opt, model, x, y, 3)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    twin = copy.deepcopy(model)
    twin_opt = _build(case, twin, kw)
    twin_opt.load_state_dict(loaded)
    for _ in range(4):
        _train(opt, model, x, y, 1)
        _train(twin_opt, twin, x, y, 1)
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            assert torch.equal(p, q)
    assert twin_opt.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


@pytest.mark.parametrize(("case", "kw"), VALID)
def test_param_groups_behave_like_separate_optimizers(case: OptimCase, kw: dict[str, Any]) -> None:
    x, y = _data("cpu", torch.float64)
    a, b = _model(), _model()
    joint = _build(case, a, kw)
    # one optimizer per param group, each with that group's settings
    separate = []
    for group in joint.param_groups:
        names = group["param_names"]
        params = dict(b.named_parameters())
        single = {k: v for k, v in group.items() if k not in ("params", "param_names")}
        single["params"] = [params[n] for n in names]
        # the group dict holds every hyperparameter, so it overrides the class defaults
        separate.append(type(joint)([single], lr=single["lr"]))
    assert len(separate) > 1  # the model has penalised and unpenalised groups
    for _ in range(5):
        # the same loss on two copies: one optimizer with every group, one per group
        joint.zero_grad()
        _loss(a, x, y).backward()
        joint.step()
        for opt in separate:
            opt.zero_grad()
        _loss(b, x, y).backward()
        for opt in separate:
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert any(
        not torch.equal(p, p0) for p, p0 in zip(a.parameters(), _model().parameters(), strict=True)
    )


@pytest.mark.parametrize(("case", "kw"), VALID)
def test_lr_scheduler_equals_manual_lr(case: OptimCase, kw: dict[str, Any]) -> None:
    x, y = _data("cpu", torch.float64)
    a, b = _model(), _model()
    opt_a, opt_b = _build(case, a, kw), _build(case, b, kw)
    sched = torch.optim.lr_scheduler.StepLR(opt_a, step_size=2, gamma=0.5)
    base = [g["lr"] for g in opt_b.param_groups]
    for epoch in range(6):
        for g, lr0 in zip(opt_b.param_groups, base, strict=True):
            g["lr"] = lr0 * 0.5 ** (epoch // 2)
        _train(opt_a, a, x, y, 1)
        _train(opt_b, b, x, y, 1)
        sched.step()
    assert opt_a.param_groups[0]["lr"] == pytest.approx(base[0] * 0.125)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize(("case", "kw"), VALID)
def test_closure_is_evaluated_and_returned(case: OptimCase, kw: dict[str, Any]) -> None:
    x, y = _data("cpu", torch.float64)
    a, b = _model(), _model()
    opt_a, opt_b = _build(case, a, kw), _build(case, b, kw)
    calls = []

    def closure() -> torch.Tensor:
        opt_a.zero_grad()
        loss = _loss(a, x, y)
        loss.backward()
        calls.append(float(loss.detach()))
        return loss

    for _ in range(3):
        ret = opt_a.step(closure)
        assert float(ret.detach()) == calls[-1]
        _train(opt_b, b, x, y, 1)
    assert len(calls) == 3
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(("case", "kw"), VALID)
def test_params_without_grad_are_skipped(case: OptimCase, kw: dict[str, Any]) -> None:
    x, y = _data("cpu", torch.float64)
    model = _model()
    model.fc2.weight.requires_grad_(False)
    frozen = model.fc2.weight.detach().clone()
    opt = _build(case, model, kw)
    _train(opt, model, x, y, 3)
    assert torch.equal(model.fc2.weight, frozen)
    assert len(opt.state[model.fc2.weight]) == 0
    assert len(opt.state[model.fc1.weight]) > 0


@pytest.mark.parametrize(("case", "kw"), VALID)
def test_deployed_network_is_sparse_and_restored(case: OptimCase, kw: dict[str, Any]) -> None:
    x, y = _data("cpu", torch.float64)
    model = _model()
    # Bregman methods reproduce a dense start; start sparse, as they are meant to
    so.sparse_init_(model, density=0.5, groups=kw.get("groups"))
    opt = _build(case, model, {**kw, "lam": 0.5})
    _train(opt, model, x, y, 10)
    before = [p.detach().clone() for p in model.parameters()]
    with opt.deployed():
        inside = [p.detach().clone() for p in model.parameters()]
        for p in model.parameters():
            torch.testing.assert_close(p, opt.deployable(p), rtol=0, atol=0)
            mask = opt.support(p)
            assert mask.dtype == torch.bool and mask.shape == p.shape
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, b)
    # with a strong penalty every deployable penalised weight contains exact zeros
    penalised_ids = {id(q) for g in opt.param_groups if g["penalty"] != "none" for q in g["params"]}
    penalised = [i for i, p in enumerate(model.parameters()) if id(p) in penalised_ids]
    assert len(penalised) == 3  # conv, fc1 and fc2 weights; biases and the norm are not
    assert all((inside[i] == 0).any() for i in penalised)
    # support is where the deployable weights are nonzero (for elementwise penalties)
    w = model.fc1.weight
    if opt.param_groups[0]["penalty"] in ("l1", "l0", "tl1"):
        assert torch.equal(opt.support(w), opt.deployable(w) != 0)
    opt.finalize()
    for p, d in zip(model.parameters(), inside, strict=True):
        torch.testing.assert_close(p.detach(), d, rtol=0, atol=0)


@pytest.mark.parametrize(("case", "kw", "needle"), INVALID)
def test_invalid_hyperparameters_raise_value_error(
    case: OptimCase, kw: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ValueError) as info:
        case.cls(_model().parameters(), **kw)
    assert needle in str(info.value)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_invalid_values_in_an_added_param_group(case: OptimCase) -> None:
    model = _model()
    opt = case.cls([model.fc1.weight], **case.valid[0])
    bad_kw, needle = case.invalid[0]
    with pytest.raises(ValueError) as info:
        opt.add_param_group({"params": [model.fc2.weight], **bad_kw})
    assert needle in str(info.value)
    with pytest.raises(ValueError, match="ndim=1"):
        opt.add_param_group({"params": [model.fc2.bias], "penalty": "group_l1"})


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_sparse_gradients_are_rejected(case: OptimCase) -> None:
    emb = torch.nn.Embedding(10, 4, sparse=True)
    opt = case.cls([emb.weight], **case.valid[0])
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match=r"(?i)sparse"):
        opt.step()


def test_registry_lists_and_builds_every_optimizer() -> None:
    names = so.list_optimizers()
    assert names[:6] == ["linbreg", "adabreg", "splitlbi", "rda", "rvsm", "proxsgd"]
    assert {"sgd", "adam"} <= set(names) and "sgd" not in so.list_optimizers(sparse_only=True)
    for name in names:
        opt = so.create_optimizer(_model(), name)
        assert isinstance(opt, torch.optim.Optimizer)
    assert isinstance(so.create_optimizer(_model(), "Split-LBI"), so.SplitLBI)
    with pytest.raises(ValueError, match="linbreg"):
        so.create_optimizer(_model(), "lbfgs-sparse")
    with pytest.raises(ValueError, match="'kappa'"):
        so.create_optimizer(_model(), "linbreg", kappa=1.0)
    with pytest.raises(ValueError, match="lam"):
        so.create_optimizer(_model(), "adam", lam=0.1)


def test_top_level_names_are_the_registry_classes() -> None:
    for attr, name in [
        ("LinBreg", "linbreg"),
        ("AdaBreg", "adabreg"),
        ("SplitLBI", "splitlbi"),
        ("RDA", "rda"),
        ("RVSM", "rvsm"),
        ("ProxSGD", "proxsgd"),
    ]:
        cls: Callable[..., Any] = getattr(so, attr)
        assert cls is so.get_optimizer_info(name).cls
        assert issubclass(cls, SparseOptimizer)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("case", "kw"), VALID)
def test_cuda_matches_cpu(case: OptimCase, kw: dict[str, Any]) -> None:
    runs = []
    for device in ("cpu", "cuda"):
        x, y = _data(device, torch.float64)
        model = _model(device)
        _train(_build(case, model, kw), model, x, y, 5)
        runs.append([p.detach().cpu() for p in model.parameters()])
    for p, q in zip(*runs, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------ resizing a parameter


@pytest.mark.parametrize(("case", "kw"), VALID)
def test_resize_parameter_carries_state_and_training_goes_on(
    case: OptimCase, kw: dict[str, Any]
) -> None:
    x, y = _data("cpu", torch.float64)
    model = _model()
    opt = _build(case, model, kw)
    _train(opt, model, x, y, 3)
    old = model.fc1.weight
    before = {k: v.clone() for k, v in opt.state[old].items() if torch.is_tensor(v)}
    rows = torch.randn(2, old.shape[1], dtype=old.dtype, generator=torch.Generator().manual_seed(1))
    new = torch.nn.Parameter(torch.cat([old.detach(), rows]))
    opt.resize_parameter_(old, new, 0)
    assert old not in opt.state and any(q is new for g in opt.param_groups for q in g["params"])
    state = opt.state[new]
    assert state.keys() == before.keys()
    for key, value in before.items():
        if value.ndim == 0:
            assert torch.equal(state[key], value)  # counters and running sums are kept
            continue
        assert state[key].shape == new.shape
        assert torch.equal(state[key][:12], value)  # old rows unchanged
        if key != "dual" or case.name == "splitlbi":
            assert state[key][12:].eq(0).all()  # new rows start from zero state
    group = next(g for g in opt.param_groups if any(q is new for q in g["params"]))
    pen = opt.penalty_of(group)
    if case.name in ("linbreg", "adabreg") and pen.convex:
        # the new rows' dual reproduces their weights through the primal map
        delta = group["delta"]
        torch.testing.assert_close(pen.prox(state["dual"][12:] * delta, delta), rows)
    # shrinking back cuts the state to the old shape
    back = torch.nn.Parameter(new.detach()[:12].clone())
    opt.resize_parameter_(new, back, 0)
    for key, value in before.items():
        assert opt.state[back][key].shape == value.shape
    model.fc1.weight = back
    assert math.isfinite(_train(opt, model, x, y, 2))


def test_resized_state_refuses_state_of_another_shape() -> None:
    with pytest.raises(ValueError, match="cannot resize optimizer state of shape"):
        resized_state({"m": torch.zeros(3, 4)}, torch.zeros(5, 4), 7, 0)
    per_group = torch.ones(5, 1)
    out = resized_state({"g": per_group, "step": torch.tensor(2.0)}, torch.zeros(5, 4), 7, 1)
    assert torch.equal(out["g"], per_group) and out["g"] is not per_group
    assert float(out["step"]) == 2.0
