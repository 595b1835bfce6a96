"""The fused implementations (torch's fused Adam / SGD kernels) against the for-loop reference.

AdaBreg runs ``torch._fused_adam_`` on its dual, LinBreg and ProxSGD run
``torch._fused_sgd_`` (on the dual, or on the parameters), then the primal map or the
prox. They reorder the arithmetic inside one kernel, so they agree with the for-loop
reference up to rounding: checked in float64 (to 1e-12) and float32 (to 1e-5), over
mixed param groups (ℓ1, group ℓ1, ℓ0, no penalty), momentum, weight decay, δ, Nesterov,
dampening and maximize. Without the private kernels (a torch that moved them)
``fused=True`` falls back to the public ``foreach`` path, bit for bit.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sparseopt import AdaBreg, LinBreg, ProxSGD
from sparseopt.optim import _functional

TOL = {torch.float64: {"rtol": 1e-12, "atol": 1e-12}, torch.float32: {"rtol": 1e-5, "atol": 1e-6}}

CONFIGS: list[tuple[type, dict[str, Any]]] = [
    (AdaBreg, {"lr": 0.05, "lam": 0.1}),
    (AdaBreg, {"lr": 0.05, "lam": 0.1, "delta": 1.5, "weight_decay": 1e-2, "maximize": True}),
    (AdaBreg, {"lr": 0.05, "lam": 0.1, "betas": (0.8, 0.99), "eps": 1e-6}),
    (LinBreg, {"lr": 0.1, "lam": 0.1, "momentum": 0.0}),
    (LinBreg, {"lr": 0.1, "lam": 0.1, "momentum": 0.9}),
    (LinBreg, {"lr": 0.1, "lam": 0.1, "momentum": 0.5, "delta": 2.0, "weight_decay": 1e-2}),
    (ProxSGD, {"lr": 0.1, "lam": 0.5, "momentum": 0.9}),
    (ProxSGD, {"lr": 0.1, "lam": 0.5, "momentum": 0.0, "weight_decay": 1e-3}),
    (ProxSGD, {"lr": 0.1, "lam": 0.5, "momentum": 0.9, "nesterov": True}),
    (ProxSGD, {"lr": 0.1, "lam": 0.5, "momentum": 0.5, "dampening": 0.2, "maximize": True}),
]


def _groups(dtype: torch.dtype, seed: int = 0) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(seed)

    def mk(*shape: int) -> torch.nn.Parameter:
        return torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=dtype))

    return [
        {"params": [mk(6, 5), mk(4, 3, 3, 3)], "penalty": "l1"},
        {"params": [mk(5, 2, 3, 3)], "penalty": "group_l1", "groups": "filter", "lam": 0.3},
        {"params": [mk(7, 4)], "penalty": "l0", "lam": 0.01},
        {"params": [mk(7), mk(5)], "penalty": "none"},
    ]


def _run(cls: type, kw: dict[str, Any], dtype: torch.dtype, **impl: Any) -> list[torch.Tensor]:
    groups = _groups(dtype)
    opt = cls(groups, **kw, **impl)
    params = [p for g in groups for p in g["params"]]
    gen = torch.Generator().manual_seed(1)
    for _ in range(8):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
        opt.step()
    return [p.detach() for p in params] + [
        v for p in params for v in opt.state[p].values() if v.ndim > 0
    ]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("cls", "kw"), CONFIGS)
def test_fused_matches_for_loop_reference(cls: type, kw: dict[str, Any], dtype: torch.dtype):
    reference = _run(cls, kw, dtype, foreach=False)
    fused = _run(cls, kw, dtype, fused=True)
    assert len(fused) == len(reference)
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype])
    # the prox leaves exact zeros in the same places (an entry at the threshold may flip)
    n_params = sum(len(g["params"]) for g in _groups(dtype))
    flips = sum(
        int(((a == 0) != (b == 0)).sum()) for a, b in zip(fused[:n_params], reference, strict=False)
    )
    assert flips <= 1


@pytest.mark.parametrize(("cls", "kw"), CONFIGS[::3])
def test_default_is_fused_on_cpu_and_explicit_foreach_is_not(cls: type, kw: dict[str, Any]):
    dtype = torch.float64
    fused = _run(cls, kw, dtype, fused=True)
    assert all(torch.equal(a, b) for a, b in zip(_run(cls, kw, dtype), fused, strict=True))
    foreach = _run(cls, kw, dtype, foreach=True)
    unfused = _run(cls, kw, dtype, fused=False)
    assert all(torch.equal(a, b) for a, b in zip(unfused, foreach, strict=True))


@pytest.mark.parametrize(("cls", "kw"), CONFIGS)
def test_without_the_private_kernels_fused_falls_back_to_foreach(
    monkeypatch: pytest.MonkeyPatch, cls: type, kw: dict[str, Any]
) -> None:
    dtype = torch.float64
    foreach = _run(cls, kw, dtype, foreach=True)
    monkeypatch.setattr(_functional, "_FUSED_ADAM", None)
    monkeypatch.setattr(_functional, "_FUSED_SGD", None)
    fallback = _run(cls, kw, dtype, fused=True)
    for a, b in zip(fallback, foreach, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fused_is_a_param_group_setting_old_state_dicts_get_none() -> None:
    w = torch.nn.Parameter(torch.ones(3))
    opt = AdaBreg([w], lr=0.1, fused=False)
    assert opt.param_groups[0]["fused"] is False
    state = opt.state_dict()
    del state["param_groups"][0]["fused"]  # a state dict saved before the setting existed
    fresh = AdaBreg([w], lr=0.1, fused=False)
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["fused"] is None
