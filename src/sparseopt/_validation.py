"""Hyperparameter checks shared by penalties and optimizers.

Every check raises ``ValueError`` naming the parameter and the offending value,
in the style of ``torch.optim`` (``Invalid learning rate: -1``).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_betas", "check_nonneg", "check_positive", "check_unit_interval"]


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Invalid {name} value: {value!r}; expected a number")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"Invalid {name} value: {value}; expected a finite number")
    return value


def check_nonneg(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a finite number >= 0, else raise ``ValueError``."""
    v = _number(name, value)
    if v < 0:
        raise ValueError(f"Invalid {name} value: {value}; expected a finite number >= 0")
    return v


def check_positive(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else raise ``ValueError``."""
    v = _number(name, value)
    if v <= 0:
        raise ValueError(f"Invalid {name} value: {value}; expected a finite number > 0")
    return v


def check_unit_interval(name: str, value: Any, *, closed_right: bool = False) -> float:
    """Return ``value`` if it lies in [0, 1) (or [0, 1] with ``closed_right``)."""
    v = _number(name, value)
    if v < 0 or v > 1 or (v == 1 and not closed_right):
        interval = "[0, 1]" if closed_right else "[0, 1)"
        raise ValueError(f"Invalid {name} value: {value}; expected a number in {interval}")
    return v


def check_betas(betas: Any) -> tuple[float, float]:
    """Validate Adam-style ``betas``: a pair of numbers in [0, 1)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"Invalid betas value: {betas!r}; expected a pair (beta1, beta2)")
    return (
        check_unit_interval("beta1 in betas", betas[0]),
        check_unit_interval("beta2 in betas", betas[1]),
    )
