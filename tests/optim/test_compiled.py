"""The compiled steps (``compiled=True``: RDA, SplitLBI, RVSM, AdaBreg, LinBreg, ProxSGD)
against the for-loop reference.

Each compiled step is one ``torch.compile`` kernel per param-group batch; Inductor may
reorder and fuse the arithmetic, so it agrees with the for-loop reference up to rounding:
float64 to 1e-12, float32 to 1e-5 (as the fused paths, tests/optim/test_fused.py), after
several steps, over mixed param groups (ℓ1, ℓ0, none), momentum, Nesterov, dampening,
weight decay, maximize, δ, betas and eps, with a changing learning rate. Further:

- changing ``lr`` (a number, or a tensor under an lr scheduler) or λ (``set_lam``) builds
  no new kernel and no new Dynamo graph;
- where a kernel cannot be built (forced here) or the input is not supported (DTensor
  parameters, a penalty without a compiled prox) the step is the eager step bit for bit
  (``foreach``, or AdaBreg's, LinBreg's and ProxSGD's default fused step), with one
  warning, not one per step;
- state dicts move between compiled and eager optimizers and training continues alike;
  step hooks fire; the state holds tensors only.

Compiling costs about a second per kernel: the tests share a few layouts (two param
groups of small tensors, one kernel per group), so the file builds about 50 kernels.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch

from sparseopt import RDA, RVSM, AdaBreg, LinBreg, ProxSGD, SplitLBI
from sparseopt.optim import _compiled
from sparseopt.optim._base import SparseOptimizer


def _can_compile() -> bool:
    try:
        f = torch.compile(lambda x: (x.sqrt() + 1.0).sum(), fullgraph=True)
        return bool(torch.isfinite(f(torch.ones(4))))
    except Exception:  # no C++ compiler, an Inductor build problem...
        return False


needs_compiler = pytest.mark.skipif(
    not _can_compile(), reason="torch.compile cannot build a CPU kernel here"
)

TOL = {torch.float64: {"rtol": 1e-12, "atol": 1e-12}, torch.float32: {"rtol": 1e-5, "atol": 1e-6}}

#: (class, hyperparameters, penalty of the second param group)
CONFIGS: list[tuple[type[SparseOptimizer], dict[str, Any], str]] = [
    (RDA, {"lr": 0.3, "lam": 0.05, "gamma": 10.0, "adaptive": True}, "l0"),
    (RDA, {"lr": 0.3, "lam": 0.05, "gamma": 10.0, "weight_decay": 0.1, "maximize": True}, "none"),
    (RDA, {"lr": 0.3, "lam": 0.05, "gamma": 2.0, "adaptive": False}, "l0"),
    (SplitLBI, {"lr": 0.1, "lam": 0.5, "kappa": 1.5, "nu": 2.0, "momentum": 0.9}, "none"),
    (SplitLBI, {"lr": 0.1, "lam": 0.5, "nu": 2.0, "momentum": 0.0, "weight_decay": 1e-2}, "l0"),
    (
        SplitLBI,
        {"lr": 0.1, "lam": 0.5, "nu": 2.0, "momentum": 0.9, "nesterov": True, "maximize": True},
        "l0",
    ),
    (RVSM, {"lr": 0.1, "lam": 0.05, "beta": 1.0, "momentum": 0.9}, "l0"),
    (
        RVSM,
        {
            "lr": 0.1,
            "lam": 0.05,
            "beta": 2.0,
            "momentum": 0.5,
            "dampening": 0.2,
            "weight_decay": 1e-3,
            "maximize": True,
        },
        "none",
    ),
    (RVSM, {"lr": 0.1, "lam": 0.05, "beta": 0.0, "momentum": 0.0}, "l0"),
    (
        AdaBreg,
        {
            "lr": 0.1,
            "lam": 0.05,
            "delta": 2.0,
            "weight_decay": 0.1,
            "betas": (0.8, 0.99),
            "eps": 1e-6,
        },
        "l0",
    ),
    (AdaBreg, {"lr": 0.1, "lam": 0.05, "weight_decay": 0.05, "maximize": True}, "none"),
    (
        LinBreg,
        {"lr": 0.1, "lam": 0.05, "delta": 2.0, "momentum": 0.9, "weight_decay": 0.1},
        "l0",
    ),
    (
        LinBreg,
        {"lr": 0.1, "lam": 0.05, "momentum": 0.0, "weight_decay": 0.05, "maximize": True},
        "none",
    ),
    (
        ProxSGD,
        {"lr": 0.1, "lam": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
        "l0",
    ),
    (
        ProxSGD,
        {"lr": 0.1, "lam": 0.05, "momentum": 0.5, "dampening": 0.2, "maximize": True},
        "none",
    ),
]
IDS = [f"{cls.__name__}-{i}" for i, (cls, _, _) in enumerate(CONFIGS)]
#: The first configuration of each method.
FIRST = [0, 3, 6, 9, 11, 13]
#: float64 for every configuration, float32 for one per method (each compiles new kernels)
PARITY = [
    pytest.param(*CONFIGS[i], dtype, id=f"{IDS[i]}-{str(dtype)[6:]}")
    for dtype, indices in ((torch.float64, range(len(CONFIGS))), (torch.float32, FIRST))
    for i in indices
]


def _params(dtype: torch.dtype, seed: int = 0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(6, 5), (4, 3, 3), (7,), (5,)]
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]


def _make(
    cls: type[SparseOptimizer], kw: dict[str, Any], second: str, params: list[Any], **impl: Any
) -> Any:
    """Weights with ℓ1, the last two tensors with penalty ``second`` (its own λ)."""
    groups = [
        {"params": params[:2], "penalty": "l1", "lam": kw["lam"]},
        {"params": params[2:], "penalty": second, "lam": 0.01 if second == "l0" else None},
    ]
    if second == "none":
        del groups[1]["lam"]
    return cls(groups, **kw, **impl)


def _steps(opt: Any, params: list[Any], n: int, seed: int = 1, first: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    base = opt.defaults["lr"]
    for i in range(first, first + n):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        for group in opt.param_groups:
            group["lr"] = base * (1.0 + 0.1 * i)  # a schedule: new numbers, no new kernel
        opt.step()


def _result(opt: Any, params: list[Any]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params] + [
        v.clone() for p in params for v in opt.state[p].values() if v.ndim > 0
    ]


def _run(
    cls: type[SparseOptimizer], kw: dict[str, Any], second: str, dtype: torch.dtype, **impl: Any
) -> list[torch.Tensor]:
    params = _params(dtype)
    opt = _make(cls, kw, second, params, **impl)
    _steps(opt, params, 6)
    return _result(opt, params)


def _assert_close(a: list[torch.Tensor], b: list[torch.Tensor], dtype: torch.dtype) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, **TOL[dtype])


@pytest.fixture
def fresh_compiled_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """No earlier failure or warning of the compiled path counts in this test."""
    monkeypatch.setattr(_compiled, "_disabled", None)
    monkeypatch.setattr(_compiled, "_warned", set())


@needs_compiler
@pytest.mark.parametrize(("cls", "kw", "second", "dtype"), PARITY)
def test_compiled_matches_for_loop_reference(
    cls: type[SparseOptimizer], kw: dict[str, Any], second: str, dtype: torch.dtype
) -> None:
    reference = _run(cls, kw, second, dtype, foreach=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        compiled = _run(cls, kw, second, dtype, compiled=True)
    assert not [w for w in record if "compiled=True" in str(w.message)]  # no fallback
    _assert_close(compiled, reference, dtype)
    # the prox leaves exact zeros in the same places (an entry at the threshold may flip)
    flips = sum(
        int(((a == 0) != (b == 0)).sum()) for a, b in zip(compiled[:4], reference[:4], strict=True)
    )
    assert flips <= 1


@needs_compiler
def test_rda_parameters_without_a_gradient_keep_their_own_sums() -> None:
    """A parameter skipped in a step has other running sums: its own kernel call."""
    kw, dtype = CONFIGS[0][1], torch.float64
    results = []
    for impl in ({"foreach": False}, {"compiled": True}):
        params = _params(dtype)
        opt = _make(RDA, kw, "l0", params, **impl)
        _steps(opt, params, 2)
        params[1].grad = None  # skipped once
        opt.step()
        _steps(opt, params, 2, first=3)
        results.append(_result(opt, params))
    _assert_close(results[1], results[0], dtype)


@needs_compiler
def test_adabreg_bias_corrections_follow_each_parameters_own_step_count() -> None:
    """A parameter skipped in a step has a smaller step count: one kernel call mixes them."""
    kw, dtype = CONFIGS[9][1], torch.float64
    results = []
    for impl in ({"foreach": False}, {"compiled": True}):
        params = _params(dtype)
        opt = _make(AdaBreg, kw, "l0", params, **impl)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*compiled=True")  # no fallback
            _steps(opt, params, 2)
            params[1].grad = None  # skipped once
            opt.step()
            _steps(opt, params, 2, first=3)
        assert opt.state[params[1]]["step"] == 4 and opt.state[params[0]]["step"] == 5
        results.append(_result(opt, params))
    _assert_close(results[1], results[0], dtype)


def _scheduled(
    monkeypatch: pytest.MonkeyPatch,
    cls: type[SparseOptimizer],
    kw: dict[str, Any],
    second: str,
    **impl: Any,
) -> tuple[list[torch.Tensor], dict[str, int]]:
    """7 steps under an lr scheduler (tensor lr), a λ schedule and a hand-set lr.

    Returns the result and what steps 3 to 7 built (kernels, Dynamo graphs and frames)
    and how often they called a compiled kernel.
    """
    from torch._dynamo.utils import counters

    params = _params(torch.float64)
    lr = torch.tensor(kw["lr"], dtype=torch.float64)  # a tensor lr, set by the scheduler
    opt = _make(cls, {**kw, "lr": lr}, second, params, **impl)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    gen = torch.Generator().manual_seed(0)
    built: dict[str, int] = {"calls": 0}

    def counted(kernel: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            built["calls"] += 1
            return kernel(*args, **kwargs)

        return call

    for i in range(7):
        if i == 2:  # the first momentum step runs the eager path; the second compiles
            for key, kernel in list(_compiled._kernels.items()):  # count the calls from now
                monkeypatch.setitem(_compiled._kernels, key, counted(kernel))
            built |= {
                "kernels": -_compiled.compilations(),
                "graphs": -counters["stats"]["unique_graphs"],
                "frames": -counters["frames"]["total"],
            }
        if i >= 2:
            opt.set_lam(0.05 * i)  # a λ schedule (as target-density control sets it)
            opt.param_groups[1]["lr"] = 0.05 * i  # a number, changed by hand
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        opt.step()
        sched.step()
    built["kernels"] += _compiled.compilations()
    built["graphs"] += counters["stats"]["unique_graphs"]
    built["frames"] += counters["frames"]["total"]
    return _result(opt, params), built


@needs_compiler
@pytest.mark.parametrize(
    ("cls", "kw", "second"), [CONFIGS[i] for i in FIRST], ids=[IDS[i] for i in FIRST]
)
def test_new_lr_and_lambda_build_no_new_kernel(
    monkeypatch: pytest.MonkeyPatch, cls: type[SparseOptimizer], kw: dict[str, Any], second: str
) -> None:
    compiled, built = _scheduled(monkeypatch, cls, kw, second, compiled=True)
    assert built["kernels"] == 0  # no new kernel...
    assert built["graphs"] == 0  # ... and no new Dynamo graph (no recompilation)
    assert built["frames"] == 0  # Dynamo converted no new frame
    assert built["calls"] == 2 * 5  # the kernels ran: one call per param group and step
    reference, _ = _scheduled(monkeypatch, cls, kw, second, foreach=False)
    _assert_close(compiled, reference, torch.float64)


#: The second configuration of each method.
SECOND = [1, 4, 7, 10, 12, 14]


def _no_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kernel build fails as without a C++ compiler (an empty kernel cache)."""

    def no_compiler(fn: Any) -> Any:
        def kernel(*args: Any, **kwargs: Any) -> None:
            raise torch._inductor.exc.CppCompileError(["c++", "kernel.cpp"], "c++: not found")

        return kernel

    monkeypatch.setattr(_compiled, "_fresh_compiled", no_compiler)
    monkeypatch.setattr(_compiled, "_kernels", type(_compiled._kernels)())


@pytest.mark.parametrize(
    ("cls", "kw", "second"), [CONFIGS[i] for i in SECOND], ids=[IDS[i] for i in SECOND]
)
def test_a_kernel_that_cannot_be_built_falls_back_to_foreach_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch,
    fresh_compiled_state: None,
    cls: type[SparseOptimizer],
    kw: dict[str, Any],
    second: str,
) -> None:
    _no_compiler(monkeypatch)
    dtype = torch.float64
    foreach = _run(cls, kw, second, dtype, foreach=True)
    with pytest.warns(UserWarning, match="could not build") as record:
        fallback = _run(cls, kw, second, dtype, compiled=True, foreach=True)
    assert len([w for w in record if "compiled=True" in str(w.message)]) == 1  # not per step
    for a, b in zip(fallback, foreach, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert _compiled._disabled is not None  # off for the process: no retry every step


@pytest.mark.parametrize(
    ("cls", "kw", "second"), [CONFIGS[i] for i in FIRST[3:]], ids=[IDS[i] for i in FIRST[3:]]
)
def test_a_kernel_that_cannot_be_built_falls_back_to_the_default_fused_step(
    monkeypatch: pytest.MonkeyPatch,
    fresh_compiled_state: None,
    cls: type[SparseOptimizer],
    kw: dict[str, Any],
    second: str,
) -> None:
    """AdaBreg, LinBreg and ProxSGD: ``compiled=True`` alone falls back to their default."""
    _no_compiler(monkeypatch)
    dtype = torch.float64
    default = _run(cls, kw, second, dtype)  # the fused step on CPU
    with pytest.warns(UserWarning, match="could not build"):
        fallback = _run(cls, kw, second, dtype, compiled=True)
    for a, b in zip(fallback, default, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("cls", "kw", "second"),
    [
        (RDA, CONFIGS[0][1], "group_l1"),  # no compiled prox: the eager path
        (RVSM, CONFIGS[6][1], "tl1"),
        (SplitLBI, CONFIGS[3][1], "group_l0"),
        (AdaBreg, CONFIGS[9][1], "tl1"),
        (LinBreg, CONFIGS[11][1], "group_l1"),
        (ProxSGD, CONFIGS[13][1], "group_l0"),
    ],
)
def test_penalties_without_a_compiled_prox_take_the_foreach_step(
    fresh_compiled_state: None, cls: type[SparseOptimizer], kw: dict[str, Any], second: str
) -> None:
    dtype = torch.float64
    gen = torch.Generator().manual_seed(0)
    # a group penalty needs parameters of 2+ dims: one group with that penalty only
    results = []
    for impl in ({"foreach": True}, {"foreach": True, "compiled": True}):
        p = torch.nn.Parameter(torch.randn(4, 3, 2, generator=gen.manual_seed(0), dtype=dtype))
        opt = cls([{"params": [p], "penalty": second, "groups": "filter"}], **kw, **impl)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            _steps(opt, [p], 4)
        results.append(_result(opt, [p]))
        messages = [str(w.message) for w in record if "compiled=True" in str(w.message)]
        assert len(messages) == (1 if "compiled" in impl else 0)
    assert messages and f"penalty {second!r}" in messages[0]
    for a, b in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_dtensor_parameters_take_the_foreach_step(
    monkeypatch: pytest.MonkeyPatch, fresh_compiled_state: None
) -> None:
    cls, kw, second = CONFIGS[3]
    dtype = torch.float64
    foreach = _run(cls, kw, second, dtype, foreach=True)
    monkeypatch.setattr(_compiled, "is_dtensor", lambda t: True)  # as FSDP2's sharded params
    with pytest.warns(UserWarning, match="DTensor"):
        fallback = _run(cls, kw, second, dtype, compiled=True)
    for a, b in zip(fallback, foreach, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@needs_compiler
@pytest.mark.parametrize(
    ("cls", "kw", "second"), [CONFIGS[i] for i in FIRST], ids=[IDS[i] for i in FIRST]
)
@pytest.mark.parametrize("direction", ["compiled->eager", "eager->compiled"])
def test_state_dict_moves_between_compiled_and_eager(
    cls: type[SparseOptimizer], kw: dict[str, Any], second: str, direction: str
) -> None:
    """Save after 3 steps on one path, load into an optimizer on the other, 3 more steps.

    The ``compiled`` setting travels with the param groups (as ``foreach`` and ``fused``
    do in ``torch.optim``): the loading optimizer sets its own again after loading.
    """
    dtype = torch.float64
    first, then = (True, False) if direction == "compiled->eager" else (False, True)
    params = _params(dtype)
    opt = _make(cls, kw, second, params, compiled=first)
    _steps(opt, params, 3)
    state = copy.deepcopy(opt.state_dict())
    saved = [p.detach().clone() for p in params]
    assert all(g["compiled"] is first for g in state["param_groups"])
    for p_state in state["state"].values():
        assert all(isinstance(v, torch.Tensor) for v in p_state.values())
        if "step" in p_state:  # LinBreg counts no steps
            assert p_state["step"].dtype == torch.float32 and p_state["step"].ndim == 0
    _steps(opt, params, 3, seed=2, first=3)  # the run that was not interrupted

    resumed_params = _params(dtype)
    for p, q in zip(resumed_params, saved, strict=True):
        p.data.copy_(q)  # the parameters of the checkpoint
    resumed = _make(cls, kw, second, resumed_params, compiled=then)
    resumed.load_state_dict(state)
    for group in resumed.param_groups:
        group["compiled"] = then
    _steps(resumed, resumed_params, 3, seed=2, first=3)
    _assert_close(_result(resumed, resumed_params), _result(opt, params), dtype)


@needs_compiler
@pytest.mark.parametrize("index", [6, *FIRST[3:]], ids=[IDS[i] for i in [6, *FIRST[3:]]])
def test_step_hooks_fire_and_the_state_holds_tensors(index: int) -> None:
    cls, kw, second = CONFIGS[index]
    params = _params(torch.float64)
    opt = _make(cls, kw, second, params, compiled=True)
    calls: list[str] = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    _steps(opt, params, 3)
    assert calls == ["pre", "post"] * 3
    for p in params:
        assert all(isinstance(v, torch.Tensor) for v in opt.state[p].values())


def test_compiled_is_opt_in_validated_and_missing_in_old_state_dicts_is_none() -> None:
    before = _compiled.compilations()
    for cls in (RDA, SplitLBI, RVSM, AdaBreg, LinBreg, ProxSGD):
        w = torch.nn.Parameter(torch.ones(3))
        opt = cls([w], lr=0.1)
        assert opt.param_groups[0]["compiled"] is None  # the default: the eager path
        w.grad = torch.ones(3)
        opt.step()
        state = opt.state_dict()
        del state["param_groups"][0]["compiled"]  # saved before the setting existed
        fresh = cls([w], lr=0.1, compiled=True)
        fresh.load_state_dict(state)
        assert fresh.param_groups[0]["compiled"] is None
        with pytest.raises(ValueError, match="Invalid compiled value"):
            cls([w], lr=0.1, compiled="yes")
    assert _compiled.compilations() == before


def test_the_eager_path_does_not_import_dynamo() -> None:
    """``torch._dynamo``/``torch._inductor`` (about 1.2 s) load only when a step compiles
    (with torch's own wrappers kept from importing it, as the command does)."""
    import subprocess
    import sys

    code = (
        "import sys, torch; import sparseopt as so\n"
        "from sparseopt.cli._common import skip_dynamo_import; skip_dynamo_import()\n"
        "for name in ('rda', 'splitlbi', 'rvsm', 'adabreg', 'linbreg', 'proxsgd'):\n"
        "    w = torch.nn.Parameter(torch.ones(3)); w.grad = torch.ones(3)\n"
        "    so.create_optimizer([w], name).step()\n"
        "print(sorted(m for m in ('torch._dynamo', 'torch._inductor') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"
