"""The hyperparameter schema shared by every sparse optimizer.

- :data:`PENALTY_DEFAULTS` and :func:`penalty_defaults`: the penalty fields every param
  group carries as plain data (a :class:`~sparseopt.penalties.Penalty` object becomes
  its spec; ``lam=None`` takes the registry recipe's λ, :func:`recipe_lam`);
- :class:`CommonKeywords` and :data:`COMMON_DEFAULTS`: the keywords every optimizer
  takes besides ``lr`` and its own;
- :class:`Hyper` and :data:`COMMON_HYPERPARAMETERS`: one schema entry per
  hyperparameter (its check, and the value older state dicts get).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypedDict

from sparseopt.penalties import Penalty

__all__ = [
    "COMMON_DEFAULTS",
    "COMMON_HYPERPARAMETERS",
    "PENALTY_DEFAULTS",
    "REQUIRED",
    "CommonKeywords",
    "Hyper",
    "penalty_defaults",
    "recipe_lam",
]


#: Penalty fields every sparse optimizer's param groups carry.
PENALTY_DEFAULTS: dict[str, Any] = {
    "penalty": "l1",
    "lam": 1e-3,
    "groups": None,
    "a": 1.0,
    "group_weight": "sqrt",
}


def recipe_lam(optimizer: str, penalty: Any) -> float | None:
    """The registry recipe's λ of ``penalty`` for the optimizer named ``optimizer``.

    ``None`` for a penalty object or ``none``, or a class the registry does not know
    (a user's subclass under another name).
    """
    from sparseopt.optim.registry import get_optimizer_info

    try:
        info = get_optimizer_info(optimizer)
    except ValueError:
        return None
    return info.default_lam(penalty)


def penalty_defaults(
    penalty: str | Penalty | None,
    lam: float | None,
    groups: str | None,
    a: float,
    group_weight: str,
    *,
    owner: str | None = None,
) -> dict[str, Any]:
    """The plain-data penalty fields of an optimizer's defaults.

    A :class:`Penalty` object is turned into its spec (its own fields win over ``lam``
    etc.), so ``defaults`` never holds an object. ``lam=None`` takes the registry
    recipe's λ of ``penalty`` for the optimizer class named ``owner`` (the one source of
    every default).
    """
    if lam is None:
        lam = recipe_lam(owner or "", penalty if isinstance(penalty, str) else "l1")
        if lam is None:
            lam = recipe_lam(owner or "", "l1") or PENALTY_DEFAULTS["lam"]
    out: dict[str, Any] = {
        **PENALTY_DEFAULTS,
        "penalty": "none" if penalty is None else penalty,
        "lam": lam,
        "groups": groups,
        "a": a,
        "group_weight": group_weight,
    }
    if isinstance(penalty, Penalty):
        out.update(penalty.spec())
    return out


class CommonKeywords(TypedDict, total=False):
    """The keywords every sparse optimizer takes besides ``lr`` and its own.

    Defaults in :data:`COMMON_DEFAULTS`; a subclass ``__init__`` takes them as
    ``**common: Unpack[CommonKeywords]`` and its signature (``inspect.signature``,
    ``help``) lists them with their defaults.
    """

    penalty: str | Penalty | None
    lam: float | None
    groups: str | None
    a: float
    group_weight: str
    foreach: bool | None
    maximize: bool


#: The default of each of :class:`CommonKeywords` (``lam=None``: the registry recipe's λ).
COMMON_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "penalty": "l1",
        "lam": None,
        "groups": None,
        "a": 1.0,
        "group_weight": "sqrt",
        "foreach": None,
        "maximize": False,
    }
)

#: ``Hyper.missing`` of a hyperparameter every saved param group holds.
REQUIRED: Any = object()


@dataclass(frozen=True)
class Hyper:
    """One entry of a method's hyperparameter schema.

    Attributes:
        check: ``check(label, value)`` raises ``ValueError`` naming the offending value
            (e.g. :func:`~sparseopt._validation.check_positive`); ``None``: any value.
        label: the name in error messages (default: the key).
        missing: the value given to param groups of state dicts saved before the key
            existed (``REQUIRED``: none; such a state dict cannot be loaded).
        functional: whether the method's functional step takes it as a keyword.
    """

    check: Callable[[str, Any], Any] | None = None
    label: str | None = None
    missing: Any = REQUIRED
    functional: bool = True


#: The hyperparameters every method has besides ``lr`` and the penalty fields.
COMMON_HYPERPARAMETERS: Mapping[str, Hyper] = MappingProxyType(
    {"foreach": Hyper(missing=None), "maximize": Hyper(missing=False)}
)
