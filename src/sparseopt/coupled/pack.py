"""Packing coupled groups into one (G, |g|) parameter per set, so every optimizer's
row-wise group prox acts on the joint norms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sparseopt.groups import is_penalised

from ._core import (
    CONTAINER,
    CoupledGroups,
    _joint,
    _Packed,
    is_packed,
)
from .detect import detect_coupled_groups

# --------------------------------------------------------------------- packing


def packed_groups(model: nn.Module) -> list[CoupledGroups]:
    """The sets packed into ``model`` (in the order of its packed parameters)."""
    if not is_packed(model):
        return []
    return list(getattr(model, CONTAINER).sets)


@torch.no_grad()
def pack_coupled(model: nn.Module, sets: Sequence[CoupledGroups] | None = None) -> nn.Module:
    r"""Move every coupled set into one ``(G, |g|)`` parameter, in place; returns ``model``.

    The original parameters are deleted and rebuilt from the packed ones before every
    forward pass of ``model`` (a forward pre-hook), so training the packed parameters
    trains the network; see the module docstring for why this makes every optimizer
    act on the joint group norms. Call submodules only through ``model`` while packed.

    Args:
        model: the network.
        sets: the coupled sets (default: :func:`detect_coupled_groups`).

    Example:
        >>> layer = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True)
        >>> x = torch.randn(3, 5, 8)
        >>> layer.eval()(x).shape == pack_coupled(layer)(x).shape
        True
        >>> [tuple(p.shape) for p in layer.sparseopt_coupled.packed]
        [(16, 17), (2, 140)]
    """
    if is_packed(model):
        raise ValueError("Invalid model: already packed (unpack_coupled first)")
    sets = detect_coupled_groups(model) if sets is None else [cg.with_shapes(model) for cg in sets]
    params = dict(model.named_parameters())
    names = [s.param for cg in sets for s in cg.slices]
    if len(set(names)) != len(names):
        raise ValueError("Invalid groups: a parameter appears in two coupled slices")
    if len({cg.name for cg in sets}) != len(sets):
        raise ValueError("Invalid groups: two coupled sets have the same name")
    packed = [_joint([params[s.param] for s in cg.slices], cg).clone() for cg in sets]
    container = _Packed(sets, packed)
    for full in names:
        owner, _, attr = full.rpartition(".")
        module = model.get_submodule(owner)
        del module._parameters[attr]
    model.add_module(CONTAINER, container)
    container._root.append(model)
    container._hooks += [
        model.register_forward_pre_hook(container.refresh),
        model.register_forward_hook(container.release),
    ]
    container.release(model, (), None)
    return model


@torch.no_grad()
def unpack_coupled(model: nn.Module) -> nn.Module:
    """Undo :func:`pack_coupled` in place: ordinary parameters with the packed values."""
    if not is_packed(model):
        return model
    container: _Packed = getattr(model, CONTAINER)
    values = container.current()
    for hook in container._hooks:
        hook.remove()
    del model._modules[CONTAINER]
    for full, value in values.items():
        owner, _, attr = full.rpartition(".")
        module = model.get_submodule(owner)
        if attr in module.__dict__:
            del module.__dict__[attr]
        module.register_parameter(attr, nn.Parameter(value.detach().clone().contiguous()))
    return model


def coupled_param_groups(
    model: nn.Module,
    *,
    penalty: str = "group_l1",
    lam: float | None = None,
    group_weight: str | None = None,
    lam_by_kind: Mapping[str, float] | None = None,
    rest: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Param groups for a packed model: the coupled sets penalised, everything else not.

    The packed parameters form one group ``"coupled"`` with ``penalty`` (``group_l1``
    or ``group_l0``) and ``groups="filter"`` — the rows of a packed parameter are its
    coupled groups. The remaining parameters form one group ``"unpenalised"`` with
    penalty ``none``, or with the fields of ``rest`` (e.g. ``{"penalty": "l1", "lam":
    1e-4}``; then biases and norms still go unpenalised). ``lam=None`` leaves λ to the
    optimizer's recipe, as :func:`sparseopt.groups.param_groups` does. ``lam_by_kind``
    (e.g. ``{"head": 0.03}``) gives the sets of those kinds their own param group
    ``"coupled_<kind>"`` with that λ.
    """
    if not is_packed(model):
        raise ValueError("Invalid model: coupled_param_groups needs pack_coupled(model) first")
    if penalty not in ("group_l1", "group_l0"):
        raise ValueError(
            f"Invalid penalty value: {penalty!r}; coupled groups take 'group_l1' or 'group_l0'"
        )
    container: _Packed = getattr(model, CONTAINER)
    coupled = {id(p) for p in container.packed}
    by_kind = dict(lam_by_kind or {})
    buckets: dict[str, list[int]] = {}
    for i, cg in enumerate(container.sets):
        buckets.setdefault(cg.kind if cg.kind in by_kind else "", []).append(i)
    out = []
    for kind, indices in buckets.items():
        group: dict[str, Any] = {
            "name": f"coupled_{kind}" if kind else "coupled",
            "params": [container.packed[i] for i in indices],
            "param_names": [f"{CONTAINER}.packed.{i}" for i in indices],
            "penalty": penalty,
            "lam": by_kind[kind] if kind else lam,
            "groups": "filter",
        }
        if group_weight is not None:
            group["group_weight"] = group_weight
        out.append(group)
    others = [(n, p) for n, p in model.named_parameters() if id(p) not in coupled]
    if rest and is_penalised(rest):
        weights = [(n, p) for n, p in others if p.ndim >= 2]
        plain = [(n, p) for n, p in others if p.ndim < 2]
        if weights:
            out.append(
                {
                    "name": "rest",
                    "params": [p for _, p in weights],
                    "param_names": [n for n, _ in weights],
                    **rest,
                }
            )
        others = plain
    if others:
        out.append(
            {
                "name": "unpenalised",
                "params": [p for _, p in others],
                "param_names": [n for n, _ in others],
                "penalty": "none",
                "lam": 0.0,
                "groups": None,
            }
        )
    return out
