"""Machinery shared by every sparseopt optimizer.

:class:`SparseOptimizer` is a :class:`torch.optim.Optimizer` whose param groups carry
a penalty as plain data (``penalty``, ``lam``, ``groups``, ``a``, ``group_weight``), so
``state_dict()`` loads with ``torch.load(weights_only=True)``. A :class:`Penalty`
object given by the user is turned into those fields on entry.

It also gives every method one uniform view of the **deployable sparse network**
(the weights the method would ship: W masked by supp Γ for SplitLBI, u for RVSM, the
parameters themselves for the others) without disturbing the training state:

- :meth:`SparseOptimizer.deployable` — the deployable value of one parameter;
- :meth:`SparseOptimizer.support` — its support (elementwise or per group);
- :meth:`SparseOptimizer.deployed` — a context manager that temporarily loads the
  deployable network into the parameters (for evaluation) and restores them after;
- :meth:`SparseOptimizer.finalize` — makes the deployable network permanent;
- :meth:`SparseOptimizer.set_lam` — changes λ, letting methods keep their dual
  variables consistent (used by target-density control).

and the parts of the ``torch.optim`` contract every method shares: a learning rate may
be a number or a 1-element tensor (:func:`check_lr`, :func:`lr_value`); every
per-parameter state value is a tensor, ``step`` a float32 0-d CPU tensor, and a state
dict whose ``step`` is a plain number (an older format ``torch.optim`` still accepts)
is converted on loading; complex parameters are refused (:func:`check_real`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from sparseopt._validation import check_nonneg
from sparseopt.penalties import NoPenalty, Penalty, make_penalty

__all__ = [
    "PENALTY_DEFAULTS",
    "SparseOptimizer",
    "check_lr",
    "check_real",
    "group_by_device_dtype",
    "increment_steps_",
    "lr_value",
    "new_step",
    "penalty_defaults",
    "recipe_lam",
    "resolve_foreach",
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


def check_lr(lr: Any) -> float | Tensor:
    """Validate a learning rate: a finite number >= 0, or a 1-element real tensor holding one.

    As in ``torch.optim``, a tensor learning rate (0-d, or of shape ``(1,)``, ``(1, 1)``,
    ...) is accepted and kept as it is (lr schedulers update it in place); a tensor with
    more or fewer elements is refused with ``"Tensor lr must be 1-element"``.

    Returns:
        ``lr`` itself.

    Raises:
        ValueError: naming the offending value.

    Example:
        >>> check_lr(torch.tensor([0.1]))
        tensor([0.1000])
        >>> check_lr(torch.tensor([0.1, 0.2]))
        Traceback (most recent call last):
        ...
        ValueError: Invalid learning rate value: a tensor of shape (2,); Tensor lr must be 1-element
    """
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError(
                f"Invalid learning rate value: a tensor of shape {tuple(lr.shape)}; "
                "Tensor lr must be 1-element"
            )
        if lr.is_complex() or lr.dtype == torch.bool:
            raise ValueError(
                f"Invalid learning rate value: {lr!r}; a tensor lr must hold a real number"
            )
        check_nonneg("learning rate", lr.item())
        return lr
    check_nonneg("learning rate", lr)
    return lr


def lr_value(lr: float | Tensor) -> float:
    """The learning rate as a Python number (``lr.item()`` for a 1-element tensor).

    Every step reads its tensor learning rate once, as ``torch.optim`` does in eager mode
    (``param.add_(grad, alpha=-lr)`` with a tensor ``lr`` converts it the same way), so a
    tensor ``lr`` gives exactly the trajectory of the number it holds.
    """
    return lr.item() if isinstance(lr, Tensor) else lr


def check_real(optimizer: str, params: Iterable[Tensor]) -> None:
    """Refuse complex parameters with a ``ValueError`` naming the optimizer and the dtype.

    The penalties are defined on real entries (sign, soft/hard thresholds) and the
    adaptive methods square gradients entrywise, so a complex parameter has no defined
    update here. Its real and imaginary parts can be trained as one real parameter of
    shape ``(..., 2)``, read in ``forward`` through :func:`torch.view_as_complex`.
    """
    for p in params:
        if p.is_complex():
            raise ValueError(
                f"Invalid parameter dtype: {p.dtype} (shape {tuple(p.shape)}); {optimizer} "
                "does not support complex parameters: train the real and imaginary parts as "
                "a real parameter of shape (..., 2) and use torch.view_as_complex in forward"
            )


def new_step() -> Tensor:
    """A new step counter: a float32 0-d CPU tensor holding 0 (as ``torch.optim.Adam``'s)."""
    return torch.zeros((), dtype=torch.float32)


def resolve_foreach(foreach: bool | None, tensors: Sequence[Tensor]) -> bool:
    """Decide between the ``foreach`` and the for-loop implementation.

    An explicit ``True``/``False`` wins. By default the multi-tensor path is used for
    dense (strided, real floating) tensors on any device: on CPU it is as fast or
    faster than the loop for networks of many small tensors, and on CUDA it is what
    ``torch.optim`` picks too.
    """
    if foreach is not None:
        return foreach
    if torch.jit.is_scripting():
        return False
    return all(t.layout == torch.strided and t.is_floating_point() for t in tensors)


#: Added to CPU step counters: a 0-d tensor (with ``alpha``) skips the slow scalar path.
_ONE = torch.ones((), dtype=torch.float32, device="cpu")


def increment_steps_(state_steps: list[Tensor]) -> None:
    """Add 1 to the 0-d step counters ``state_steps`` in place (one ``foreach`` call).

    As ``torch.optim.Adam`` does: CPU counters get a 0-d CPU tensor with ``alpha``,
    which avoids wrapping the Python number once per tensor; other devices get ``1``.
    """
    if not state_steps:
        return
    if state_steps[0].is_cpu:
        torch._foreach_add_(state_steps, _ONE, alpha=1.0)
    else:
        torch._foreach_add_(state_steps, 1)


def group_by_device_dtype(
    *tensorlists: Sequence[Tensor],
) -> list[tuple[list[Tensor], ...]]:
    """Split parallel lists of tensors into buckets sharing device and dtype of the first list.

    ``torch._foreach_*`` kernels need every tensor of one call on one device and dtype.

    Example:
        >>> a = [torch.zeros(2), torch.zeros(2, dtype=torch.float64), torch.ones(3)]
        >>> [len(b[0]) for b in group_by_device_dtype(a, a)]
        [2, 1]
    """
    first = tensorlists[0]
    if first and all(t.device == first[0].device and t.dtype == first[0].dtype for t in first):
        return [tuple(list(lst) for lst in tensorlists)]  # the usual case: one bucket
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(first):
        buckets.setdefault((t.device, t.dtype), []).append(i)
    return [tuple([lst[i] for i in idx] for lst in tensorlists) for idx in buckets.values()]


@functools.lru_cache(maxsize=256)
def _penalty_from_fields(
    penalty: str | None,
    lam: float | None,
    a: float | None,
    groups: str | None,
    group_weight: str | None,
) -> Penalty:
    return make_penalty(penalty or "none", lam=lam, a=a, groups=groups, group_weight=group_weight)


class SparseOptimizer(torch.optim.Optimizer):
    """Base class of the sparse optimizers (see the module docstring).

    Subclasses pass ``defaults`` that include :data:`PENALTY_DEFAULTS`, implement
    ``step`` and may override :meth:`deployable`, :meth:`finalize` and
    :meth:`_lam_changed`.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        check_lr(defaults.get("lr", 0.0))
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore the optimizer (also the last part of :meth:`load_state_dict`).

        A ``step`` that is not a floating-point tensor (a plain ``int`` or ``float``, the
        older format ``torch.optim`` still accepts, or an integer tensor) becomes the
        float32 0-d CPU tensor every method keeps, as in ``torch.optim.Adam``.
        """
        super().__setstate__(state)
        for param_state in self.state.values():
            step = param_state.get("step")
            if step is not None and not (torch.is_tensor(step) and step.is_floating_point()):
                param_state["step"] = torch.tensor(float(step), dtype=torch.float32)

    # ------------------------------------------------------------------ param groups

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group, normalising its penalty to plain data and validating it.

        Raises:
            ValueError: invalid penalty name or value, a negative ``lr`` (or a tensor
                ``lr`` with other than one element), a complex parameter, or a group
                penalty on a parameter it cannot act on (e.g. a 1-D bias). The optimizer
                is left as it was.
        """
        pen = param_group.get("penalty", self.defaults.get("penalty"))
        if isinstance(pen, Penalty):
            param_group.update(pen.spec())
        elif param_group.get("lam") is None:
            # a group with a penalty of its own but no λ takes the recipe's λ of that
            # penalty (the optimizer's λ is on the scale of its own default penalty)
            lam = None
            if pen != self.defaults.get("penalty"):
                lam = recipe_lam(type(self).__name__, pen)
            if lam is not None:
                param_group["lam"] = lam
            else:
                param_group.pop("lam", None)  # the optimizer's λ fills it in
        super().add_param_group(param_group)
        try:
            self._check_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()  # leave the optimizer as it was
            raise

    def _check_group(self, group: dict[str, Any]) -> None:
        """Validate the group just added and store its canonical penalty spec."""
        check_real(type(self).__name__, group["params"])
        check_lr(group["lr"])
        penalty = self.penalty_of(group)
        # store the canonical plain-data spec back (e.g. ints -> floats, defaults filled)
        group.update(penalty.spec())
        for p in group["params"]:
            try:
                penalty.check(p)
            except ValueError as err:
                raise ValueError(
                    f"{err} (parameter of shape {tuple(p.shape)} in a param group with "
                    f"penalty={penalty.name!r}; put biases and norms in a group with penalty='none')"
                ) from None
        self._validate_group(group)

    def _validate_group(self, group: dict[str, Any]) -> None:
        """Hook: validate method-specific hyperparameters of one group (raise ``ValueError``)."""

    @staticmethod
    def penalty_of(group: dict[str, Any]) -> Penalty:
        """The :class:`~sparseopt.penalties.Penalty` described by a param group's fields.

        Penalties are frozen and built from plain data, so one object per spec is
        memoised and reused across steps.
        """
        fields = tuple(group.get(k) for k in ("penalty", "lam", "a", "groups", "group_weight"))
        try:
            return _penalty_from_fields(*fields)
        except TypeError:  # an unhashable value (e.g. a tensor λ): build it directly
            return _penalty_from_fields.__wrapped__(*fields)

    @staticmethod
    def _closure_loss(closure: Callable[[], Any] | None) -> Any:
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    # ------------------------------------------------------------ deployable network

    def deployable(self, p: Tensor) -> Tensor:
        """The value parameter ``p`` takes in the deployable sparse network.

        The base implementation returns ``p`` itself (methods whose iterates are
        sparse). Never modifies the training state.
        """
        return p

    @torch.no_grad()
    def support(self, p: Tensor) -> Tensor:
        """Boolean mask of the live entries of ``p`` in the deployable network.

        Uses the param group's penalty (per group for group penalties); parameters
        without a penalty are entirely alive.
        """
        pen = self.penalty_of(self._group_of(p))
        if isinstance(pen, NoPenalty):
            return torch.ones_like(p, dtype=torch.bool)
        return pen.support(self.deployable(p))

    def _group_of(self, p: Tensor) -> dict[str, Any]:
        """The param group holding ``p`` (``ValueError`` for a foreign tensor)."""
        for group in self.param_groups:
            if any(q is p for q in group["params"]):
                return group
        raise ValueError("p is not a parameter of this optimizer")

    @contextlib.contextmanager
    def deployed(self) -> Iterator[None]:
        """Temporarily load the deployable sparse network into the parameters.

        Example:
            >>> model = torch.nn.Linear(4, 2)
            >>> opt = SparseOptimizer(model.parameters(), {"lr": 0.1, **PENALTY_DEFAULTS})
            >>> with opt.deployed():
            ...     _ = model(torch.zeros(1, 4))  # evaluate the sparse network
        """
        saved: list[tuple[Tensor, Tensor]] = []
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    d = self.deployable(p)
                    if d is not p:
                        saved.append((p, p.detach().clone()))
                        p.copy_(d)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, value in saved:
                    p.copy_(value)

    @torch.no_grad()
    def finalize(self) -> None:
        """Make the deployable sparse network permanent in the parameters.

        Subclasses that keep other variables (Γ, u, duals) keep them consistent with
        the new parameters.
        """
        for group in self.param_groups:
            for p in group["params"]:
                d = self.deployable(p)
                if d is not p:
                    p.copy_(d)

    def set_lam(self, lam: float, group_indices: Iterable[int] | None = None) -> None:
        """Set λ of the penalised param groups (all, or those in ``group_indices``).

        Groups with penalty ``none`` are left alone. Methods with dual variables
        adjust them in :meth:`_lam_changed` so the primal iterate is unchanged.
        """
        lam = check_nonneg("lam", lam)
        indices = range(len(self.param_groups)) if group_indices is None else group_indices
        for i in indices:
            group = self.param_groups[i]
            old = self.penalty_of(group)
            if isinstance(old, NoPenalty):
                continue
            group["lam"] = lam
            self._lam_changed(group, old, self.penalty_of(group))

    def _lam_changed(self, group: dict[str, Any], old: Penalty, new: Penalty) -> None:
        """Hook called by :meth:`set_lam` after a group's λ changed."""
