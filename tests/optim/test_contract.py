"""The parts of the ``torch.optim`` contract that PyTorch's own ``optim_db`` tests check.

Every optimizer, on the for-loop and the ``foreach`` path:

- loads a state dict whose ``step`` is a plain number (an older format ``torch.optim``
  still accepts; SplitLBI and RDA wrote a plain ``int``, RDA plain floats for its sums)
  and continues exactly as from the tensor form;
- takes a 1-element tensor ``lr`` (0-, 1- or 2-dimensional) and follows the trajectory
  of the number it holds, also under an lr scheduler; other tensors are refused;
- keeps only tensors in its per-parameter state, so the ``foreach`` = for-loop check
  compares every state value, and a float32 state dict round trip is exact;
- refuses complex parameters at construction with a ``ValueError`` naming the dtype
  and the optimizer.

The hyperparameters are spelled out here (never the library defaults).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from typing import Any

import pytest
import torch

import sparseopt as so
from sparseopt.optim._base import SparseOptimizer

CASES: dict[str, tuple[type[SparseOptimizer], dict[str, Any]]] = {
    "LinBreg": (so.LinBreg, {"lr": 0.1, "lam": 0.01, "momentum": 0.9}),
    "AdaBreg": (so.AdaBreg, {"lr": 0.01, "lam": 0.01}),
    "SplitLBI": (
        so.SplitLBI,
        {"lr": 0.05, "lam": 0.5, "kappa": 1.0, "nu": 10.0, "momentum": 0.9},
    ),
    # lr 0.3: its running sums are not float32 numbers (a cast to float32 would show)
    "RDA": (so.RDA, {"lr": 0.3, "lam": 1e-3, "gamma": 10.0, "adaptive": True}),
    "RVSM": (so.RVSM, {"lr": 0.1, "lam": 1e-3, "beta": 1.0, "momentum": 0.9}),
    "ProxSGD": (so.ProxSGD, {"lr": 0.1, "lam": 1e-2, "momentum": 0.9}),
}
NAMES = list(CASES)
FOREACH = [pytest.param(False, id="for-loop"), pytest.param(True, id="foreach")]


def _model(dtype: torch.dtype = torch.float64) -> torch.nn.Sequential:
    torch.manual_seed(0)
    layers = [torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)]
    return torch.nn.Sequential(*layers).to(dtype)


def _make(name: str, model: torch.nn.Module, foreach: bool | None = None, **kw: Any) -> Any:
    """The optimizer ``name``: weights penalised, biases in a group with penalty none."""
    cls, base = CASES[name]
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    groups = [{"params": weights}, {"params": biases, "penalty": "none"}]
    return cls(groups, **{**base, "foreach": foreach, **kw})


def _train(opt: Any, model: torch.nn.Module, steps: int) -> None:
    first = next(model.parameters())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 6, generator=gen, dtype=first.dtype).to(first.device)
    y = torch.randint(0, 3, (16,), generator=gen).to(first.device)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _states(opt: Any) -> list[dict[str, Any]]:
    return [opt.state[p] for g in opt.param_groups for p in g["params"]]


def _assert_same_run(
    models: tuple[torch.nn.Module, torch.nn.Module],
    opts: tuple[Any, Any],
    check: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> None:
    """Parameters and every state value of two runs are equal (bitwise by default)."""

    def equal(a: torch.Tensor, b: torch.Tensor) -> None:
        assert a.dtype == b.dtype and a.device == b.device
        assert torch.equal(a, b)

    check = check or equal
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        check(p.detach(), q.detach())
    states = [_states(o) for o in opts]
    assert len(states[0]) == len(states[1])
    for s, t in zip(*states, strict=True):
        assert s.keys() == t.keys()
        for key in s:
            assert torch.is_tensor(s[key]) and torch.is_tensor(t[key]), key
            check(s[key], t[key])


def _saved_and_loaded(state_dict: dict[str, Any]) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ------------------------------------------------------------------ plain-number step


@pytest.mark.parametrize("number", [int, float])
@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("name", NAMES)
def test_a_plain_number_step_loads_and_continues_as_the_tensor_form(
    name: str, foreach: bool, number: type
) -> None:
    model = _model()
    opt = _make(name, model, foreach)
    _train(opt, model, 3)
    tensor_form = copy.deepcopy(opt.state_dict())
    plain = copy.deepcopy(tensor_form)
    with_step = 0
    for state in plain["state"].values():
        if "step" in state:
            state["step"] = number(state["step"].item())
            with_step += 1
        for key in ("lr_sum", "lr_sq_sum"):  # RDA's earlier format: plain floats
            if key in state:
                state[key] = float(state[key])
    assert with_step == (0 if name == "LinBreg" else 4)  # LinBreg keeps no counter
    runs = []
    for state_dict in (tensor_form, plain):
        twin = copy.deepcopy(model)
        twin_opt = _make(name, twin, foreach)
        twin_opt.load_state_dict(_saved_and_loaded(state_dict))
        for state in _states(twin_opt):
            if name != "LinBreg":
                step = state["step"]
                assert step.dtype == torch.float32 and step.shape == () and step.is_cpu
                assert step.item() == 3.0
        runs.append((twin, twin_opt))
    for twin, twin_opt in runs:
        _train(twin_opt, twin, 4)
    _train(opt, model, 4)
    (a, opt_a), (b, opt_b) = runs
    _assert_same_run((a, b), (opt_a, opt_b))  # plain form = tensor form
    _assert_same_run((model, a), (opt, opt_a))  # = never saved
    if name != "LinBreg":
        assert all(s["step"].item() == 7.0 for s in _states(opt_b))


# ------------------------------------------------------------------------ tensor lr


@pytest.mark.parametrize("shape", [(), (1,), (1, 1)], ids=["0-d", "1-d", "2-d"])
@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("name", NAMES)
def test_a_one_element_tensor_lr_gives_the_float_trajectory(
    name: str, foreach: bool, shape: tuple[int, ...]
) -> None:
    lr = CASES[name][1]["lr"]
    lr_tensor = torch.full(shape, lr, dtype=torch.float64)
    a, b = _model(), _model()
    opt_a = _make(name, a, foreach)
    opt_b = _make(name, b, foreach, lr=lr_tensor)
    assert all(g["lr"] is lr_tensor for g in opt_b.param_groups)  # kept, not converted
    _train(opt_a, a, 5)
    _train(opt_b, b, 5)
    _assert_same_run((a, b), (opt_a, opt_b))
    # a float32 tensor holds the float32 rounding of lr: the same run up to that rounding
    c = _model()
    opt_c = _make(name, c, foreach, lr=torch.full(shape, lr, dtype=torch.float32))
    _train(opt_c, c, 5)
    for p, q in zip(a.parameters(), c.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("name", NAMES)
def test_a_tensor_lr_follows_an_lr_scheduler_like_a_float_lr(name: str, foreach: bool) -> None:
    lr = CASES[name][1]["lr"]
    a, b = _model(), _model()
    opt_a = _make(name, a, foreach)
    lr_tensor = torch.tensor(lr, dtype=torch.float64)
    opt_b = _make(name, b, foreach, lr=lr_tensor)
    scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5) for o in (opt_a, opt_b)]
    for _ in range(6):
        _train(opt_a, a, 1)
        _train(opt_b, b, 1)
        for sched in scheds:
            sched.step()
    assert opt_b.param_groups[0]["lr"] is lr_tensor  # updated in place
    assert lr_tensor.item() == opt_a.param_groups[0]["lr"] == lr * 0.125
    _assert_same_run((a, b), (opt_a, opt_b))
    # and the state dict, with its tensor lr, loads with weights_only=True
    loaded = _saved_and_loaded(opt_b.state_dict())
    assert torch.is_tensor(loaded["param_groups"][0]["lr"])


@pytest.mark.parametrize("shape", [(2,), (1, 2), (0,)])
@pytest.mark.parametrize("name", NAMES)
def test_a_tensor_lr_with_other_than_one_element_is_refused(
    name: str, shape: tuple[int, ...]
) -> None:
    cls, base = CASES[name]
    model = _model()
    bad = torch.full(shape, 0.1)
    with pytest.raises(ValueError, match=r"Tensor lr must be 1-element"):
        cls(model.parameters(), **{**base, "lr": bad})
    opt = _make(name, model)
    extra = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=rf"shape \({shape[0]},"):
        opt.add_param_group({"params": [extra], "lr": bad})
    assert len(opt.param_groups) == 2  # the optimizer is left as it was


@pytest.mark.parametrize("name", NAMES)
def test_a_negative_or_non_real_tensor_lr_is_refused(name: str) -> None:
    cls, base = CASES[name]
    with pytest.raises(ValueError, match=r"learning rate value: -0\.5"):
        cls(_model().parameters(), **{**base, "lr": torch.tensor([-0.5])})
    with pytest.raises(ValueError, match="real number"):
        cls(_model().parameters(), **{**base, "lr": torch.tensor(True)})


# --------------------------------------------------------------- state is tensors


@pytest.mark.parametrize("name", NAMES)
def test_every_state_value_is_a_tensor_and_foreach_matches_the_for_loop(name: str) -> None:
    models = (_model(), _model())
    opts = (_make(name, models[0], foreach=False), _make(name, models[1], foreach=True))
    for model, opt in zip(models, opts, strict=True):
        _train(opt, model, 6)
    keys = set()
    for state in _states(opts[0]):
        keys |= state.keys()
        assert all(torch.is_tensor(v) for v in state.values()), state
        if "step" in state:
            assert state["step"].dtype == torch.float32 and state["step"].shape == ()
            assert state["step"].item() == 6.0
    assert keys  # every method keeps some state

    def close(a: torch.Tensor, b: torch.Tensor) -> None:
        assert a.dtype == b.dtype and a.device == b.device
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

    _assert_same_run(models, opts, check=close)  # compares every key of every state


@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("name", NAMES)
def test_a_float32_state_dict_round_trip_is_exact(name: str, foreach: bool) -> None:
    # torch casts loaded state tensors (but ``step``) to the parameter's dtype; RDA's
    # float64 running sums of learning rates must come back exactly all the same
    model = _model(torch.float32)
    opt = _make(name, model, foreach)
    _train(opt, model, 3)
    twin = copy.deepcopy(model)
    twin_opt = _make(name, twin, foreach)
    twin_opt.load_state_dict(_saved_and_loaded(opt.state_dict()))
    if name == "RDA":
        for state in _states(twin_opt):
            assert state["lr_sum"].dtype == state["lr_sq_sum"].dtype == torch.float64
    _assert_same_run((model, twin), (opt, twin_opt))
    _train(opt, model, 4)
    _train(twin_opt, twin, 4)
    _assert_same_run((model, twin), (opt, twin_opt))


# ------------------------------------------------------------------ complex params


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("name", NAMES)
def test_complex_parameters_are_refused_at_construction(name: str, dtype: torch.dtype) -> None:
    cls, base = CASES[name]
    z = torch.nn.Parameter(torch.zeros(4, 3, dtype=dtype))
    for groups in ([z], [{"params": [z], "penalty": "none"}]):
        with pytest.raises(ValueError) as info:
            cls(groups, **base)
        assert str(dtype) in str(info.value) and name in str(info.value)
        assert "complex" in str(info.value)
    opt = _make(name, _model())
    with pytest.raises(ValueError, match=str(dtype)):
        opt.add_param_group({"params": [z]})
    assert len(opt.param_groups) == 2 and all(z is not p for p in opt.param_groups[-1]["params"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("foreach", FOREACH)
@pytest.mark.parametrize("name", NAMES)
def test_cuda_parameters_keep_cpu_counters_through_a_plain_step_round_trip(
    name: str, foreach: bool
) -> None:
    lr = torch.tensor(CASES[name][1]["lr"], dtype=torch.float64)
    model = _model().cuda()
    opt = _make(name, model, foreach, lr=lr)
    _train(opt, model, 3)
    plain = copy.deepcopy(opt.state_dict())
    for state in plain["state"].values():
        if "step" in state:
            state["step"] = int(state["step"].item())
    twin = copy.deepcopy(model)
    twin_opt = _make(name, twin, foreach, lr=lr.clone())
    twin_opt.load_state_dict(_saved_and_loaded(plain))
    for state in _states(twin_opt):
        for key in ("step", "lr_sum", "lr_sq_sum"):
            if key in state:
                assert state[key].is_cpu and state[key].shape == ()
    _train(opt, model, 4)
    _train(twin_opt, twin, 4)
    _assert_same_run((model, twin), (opt, twin_opt))
