"""Registry and factory of optimizers (timm style).

One frozen :class:`OptimizerInfo` per method: its name, class, a one-line
description, recommended defaults and whether it is a sparse method. The command
line only calls :func:`create_optimizer` and :func:`list_optimizers`; it never
switches on names.

Example:
    >>> import sparseopt as so
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> opt = so.create_optimizer(model, "linbreg", lr=0.1, lam=0.01)
    >>> [g["penalty"] for g in opt.param_groups]
    ['l1', 'none']
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from sparseopt.groups import param_groups

__all__ = [
    "OPTIMIZERS",
    "PARAM_GROUP_KEYS",
    "OptimizerInfo",
    "create_optimizer",
    "get_optimizer_info",
    "list_optimizers",
]

#: Keywords :func:`create_optimizer` routes to :func:`sparseopt.groups.param_groups`
#: when it is given a model.
PARAM_GROUP_KEYS = (
    "penalty",
    "lam",
    "groups",
    "a",
    "group_weight",
    "conv_penalty",
    "conv_groups",
    "conv_lam",
    "linear_penalty",
    "linear_groups",
    "linear_lam",
    "exclude",
)


@dataclass(frozen=True)
class OptimizerInfo:
    """One registry entry.

    Attributes:
        name: registry name (lower case).
        target: ``"module:Class"`` of the optimizer class.
        description: one line for ``--help`` and ``list_optimizers``.
        defaults: recommended keyword defaults, applied under the user's keywords.
        sparse: whether the method takes a penalty (``False`` for dense baselines).
        reference: the paper.
    """

    name: str
    target: str
    description: str
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    sparse: bool = True
    reference: str = ""

    @property
    def cls(self) -> type[torch.optim.Optimizer]:
        """The optimizer class."""
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def accepted_keywords(self) -> set[str]:
        """Keyword arguments the class's ``__init__`` takes (besides ``params``)."""
        sig = inspect.signature(self.cls.__init__)
        return {n for n in sig.parameters if n not in ("self", "params")}


def _info(
    name: str, target: str, description: str, reference: str = "", **kw: Any
) -> OptimizerInfo:
    sparse = kw.pop("sparse", True)
    return OptimizerInfo(name, target, description, MappingProxyType(kw), sparse, reference)


#: Every registered optimizer by name.
OPTIMIZERS: dict[str, OptimizerInfo] = {
    info.name: info
    for info in (
        _info(
            "linbreg",
            "sparseopt.optim.linbreg:LinBreg",
            "Linearized Bregman iterations (inverse scale space), optional momentum",
            "Bungert et al., JMLR 23 (2022), Alg. 1-2",
            lr=0.1,
        ),
        _info(
            "adabreg",
            "sparseopt.optim.adabreg:AdaBreg",
            "Adam-type linearized Bregman iterations",
            "Bungert et al., JMLR 23 (2022), Alg. 3",
            lr=1e-3,
        ),
        _info(
            "splitlbi",
            "sparseopt.optim.splitlbi:SplitLBI",
            "Split linearized Bregman iterations (S2-LBI / DessiLBI)",
            "Fu et al., arXiv 1904.10873; DessiLBI, ICML 2020",
        ),
        _info(
            "rda",
            "sparseopt.optim.rda:RDA",
            "l1-regularized dual averaging with the initial weights as prox centre",
            "Xiao, JMLR 11 (2010); He et al., Comput. Optim. Appl. 77 (2020)",
        ),
        _info(
            "rvsm",
            "sparseopt.optim.rvsm:RVSM",
            "Relaxed variable splitting with l0 / l1 / transformed-l1 (and group) penalties",
            "Dinh & Xin, arXiv 1812.05719; Xue & Xin, WCGO 2019",
        ),
        _info(
            "proxsgd",
            "sparseopt.optim.proxsgd:ProxSGD",
            "Proximal SGD (Lasso baseline), optional momentum",
            "Parikh & Boyd (2014)",
            lr=0.1,
        ),
        _info(
            "sgd",
            "torch.optim:SGD",
            "Dense SGD baseline (torch.optim.SGD)",
            sparse=False,
            lr=0.1,
        ),
        _info(
            "adam",
            "torch.optim:Adam",
            "Dense Adam baseline (torch.optim.Adam)",
            sparse=False,
            lr=1e-3,
        ),
    )
}


def list_optimizers(*, sparse_only: bool = False) -> list[str]:
    """Registered optimizer names, sparse methods first (in registry order)."""
    return [n for n, info in OPTIMIZERS.items() if info.sparse or not sparse_only]


def get_optimizer_info(name: str) -> OptimizerInfo:
    """The registry entry for ``name`` (case-insensitive, ``-``/``_`` ignored).

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    try:
        return OPTIMIZERS[key]
    except KeyError:
        raise ValueError(
            f"Invalid optimizer name: {name!r}; expected one of {list_optimizers()}"
        ) from None


def create_optimizer(
    model_or_params: torch.nn.Module | Iterable[Any], name: str, **kwargs: Any
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` for a model or an iterable of params / param groups.

    Given a model, sparse methods get param groups from
    :func:`sparseopt.groups.param_groups` (Conv/Linear weights penalised, biases and
    norms not) built from the keywords in :data:`PARAM_GROUP_KEYS`; the remaining
    keywords go to the optimizer. Registry defaults apply under ``kwargs``.

    Raises:
        ValueError: unknown optimizer name, a keyword the optimizer does not take
            (named), or a penalty given to a dense baseline.
    """
    info = get_optimizer_info(name)
    merged = {**info.defaults, **kwargs}
    group_kw = {k: merged.pop(k) for k in PARAM_GROUP_KEYS if k in merged}
    if not info.sparse:
        penalised = {k: v for k, v in group_kw.items() if v not in (None, "none", 0, 0.0, ())}
        if penalised:
            raise ValueError(
                f"Invalid keywords for the dense optimizer {info.name!r}: {sorted(penalised)} "
                "(it takes no penalty)"
            )
        group_kw = {}
    if isinstance(model_or_params, torch.nn.Module):
        params: Any = (
            param_groups(model_or_params, **{k: v for k, v in group_kw.items() if v is not None})
            if info.sparse
            else model_or_params.parameters()
        )
    else:
        params = model_or_params
        merged.update({k: v for k, v in group_kw.items() if k in info.accepted_keywords()})
        unknown_group = set(group_kw) - info.accepted_keywords()
        if unknown_group:
            raise ValueError(
                f"Invalid keywords for {info.name!r} without a model: {sorted(unknown_group)} "
                "(per-layer settings need a model, or build the param groups yourself)"
            )
    accepted = info.accepted_keywords()
    unknown = set(merged) - accepted
    if unknown:
        raise ValueError(
            f"Invalid keywords for optimizer {info.name!r}: {sorted(unknown)}; "
            f"it takes {sorted(accepted)}"
        )
    return info.cls(params, **merged)
