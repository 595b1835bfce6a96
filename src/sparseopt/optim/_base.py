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

It holds the scaffolding every method shares, so that a method's own file holds only
its equations (see docs/optimizers.md, "Adding an optimizer"):

- the **hyperparameter schema** (:class:`Hyper`, the class attribute
  ``hyperparameters``): each method-specific hyperparameter's check and the value that
  param groups of older state dicts get; ``__init__`` turns the keyword arguments into
  ``defaults`` (penalty fields as plain data) and validates them, ``add_param_group``
  validates every group, ``__setstate__`` fills in missing keys;
- the **step loop**: :meth:`SparseOptimizer.step` gathers, for every set of param
  groups sharing penalty and hyperparameters, the parameters with a gradient, their
  gradients and the state lists named by ``state_keys`` (lazily created by
  ``_init_state``) into one :class:`StepBatch`, and hands it to the method's
  ``_update`` (which calls its functional step); state the functional creates (momentum
  buffers) is stored back;
- **one step-counter convention**: a method with ``counts_steps`` keeps ``step`` (a
  float32 0-d CPU tensor) per parameter; its functional receives the counters as
  ``state_steps`` and increments them first, once, with :func:`increment_steps_` (as
  ``torch.optim``'s functional API does);
- the **state-resizing hook** :func:`resize_parameter_` /
  :meth:`SparseOptimizer.resize_parameter_` (used when a layer is widened).

And the parts of the ``torch.optim`` contract every method shares: a learning rate may
be a number or a 1-element tensor (:func:`check_lr`, :func:`lr_value`); every
per-parameter state value is a tensor, ``step`` a float32 0-d CPU tensor, and a state
dict whose ``step`` is a plain number (an older format ``torch.optim`` still accepts)
is converted on loading; complex parameters are refused (:func:`check_real`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor

from sparseopt._validation import check_nonneg
from sparseopt.optim._functional import check_lr, check_real, new_step
from sparseopt.optim._schema import (
    COMMON_DEFAULTS,
    COMMON_HYPERPARAMETERS,
    PENALTY_DEFAULTS,
    REQUIRED,
    CommonKeywords,
    Hyper,
    penalty_defaults,
    recipe_lam,
)
from sparseopt.penalties import NoPenalty, Penalty, make_penalty

__all__ = ["SparseOptimizer", "StepBatch", "batch_key", "resize_parameter_", "resized_state"]


def batch_key(penalty: Any, group: dict[str, Any], fields: Iterable[str]) -> Any:
    """A dict key telling which param groups one functional call may step together.

    Groups with equal penalty and equal values of ``fields`` get equal keys (a tensor
    value, such as a tensor ``lr``, counts by the number it holds); a group with an
    unhashable value gets a key of its own.
    """
    key = (penalty, *[_key_value(group[f]) for f in fields])
    try:
        hash(key)
    except TypeError:
        return id(group)
    return key


def _key_value(value: Any) -> Any:
    return value.item() if isinstance(value, Tensor) and value.numel() == 1 else value


@dataclass(slots=True)
class StepBatch:
    """The tensors of the param groups stepped by one functional call.

    Attributes:
        group: the first of these param groups (its hyperparameters are everyone's).
        penalty: their penalty.
        hyper: the functional's keywords (``lr``, the functional hyperparameters,
            ``penalty``).
        state: per key of ``state_keys``, one entry per parameter (``None`` where the
            state has no such entry yet; the functional may fill it in).
        params, grads, steps: the parameters with a gradient, their gradients and (for
            methods with ``counts_steps``) their step counters.
        missing: the state keys that had a ``None`` entry.
    """

    group: dict[str, Any]
    penalty: Penalty
    hyper: dict[str, Any]
    state: dict[str, list[Any]]
    params: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)
    steps: list[Tensor] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)


def resized_state(state: Mapping[str, Any], old: Tensor, size: int, dim: int) -> dict[str, Any]:
    """``state`` of parameter ``old`` for a parameter resized to ``size`` along ``dim``.

    Tensors of ``old``'s shape are cut, or padded with zeros, along ``dim``; a per-group
    tensor (size 1 along ``dim``) is copied, 0-d tensors and other values are kept.

    Raises:
        ValueError: a state tensor of another shape.
    """
    out: dict[str, Any] = {}
    for key, value in state.items():
        if not isinstance(value, Tensor) or value.ndim == 0:
            out[key] = value
        elif value.shape == old.shape:
            shape = list(value.shape)
            shape[dim] = size
            new = value.new_zeros(shape)
            keep = min(size, value.shape[dim])
            new.narrow(dim, 0, keep).copy_(value.narrow(dim, 0, keep))
            out[key] = new
        elif value.ndim == old.ndim and value.shape[dim] == 1:
            out[key] = value.clone()  # a per-group quantity broadcast along dim
        else:
            raise ValueError(
                f"cannot resize optimizer state of shape {tuple(value.shape)} for a "
                f"parameter of shape {tuple(old.shape)}"
            )
    return out


@torch.no_grad()
def resize_parameter_(optimizer: torch.optim.Optimizer, old: Tensor, new: Tensor, dim: int) -> None:
    """Put ``new`` in the place of ``old`` in ``optimizer`` and carry its state over.

    ``new`` has ``old``'s shape but for ``dim``, where it is larger (a widened layer) or
    smaller. The state is resized by :func:`resized_state`; then a
    :class:`SparseOptimizer` sets whatever its new entries must satisfy (LinBreg and
    AdaBreg: the duals of the new entries reproduce the new weights). Works for any
    ``torch.optim`` optimizer; a tensor ``optimizer`` does not hold is ignored.
    """
    for group in optimizer.param_groups:
        for j, q in enumerate(group["params"]):
            if q is old:
                group["params"][j] = new
                state = optimizer.state.pop(old, None)
                if state:
                    optimizer.state[new] = resized_state(state, old, new.shape[dim], dim)
                    if isinstance(optimizer, SparseOptimizer):
                        optimizer._state_resized(group, new, dim, old.shape[dim])
                return


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

    A subclass sets ``hyperparameters`` (its schema, beside ``lr``, ``foreach``,
    ``maximize`` and the penalty fields), ``state_keys`` and ``counts_steps``, calls
    ``super().__init__(params, locals())`` from an ``__init__`` that lists every keyword
    (so signatures and ``--help`` show them), and implements ``_init_state`` and
    ``_update``. It may override :meth:`deployable`, :meth:`finalize`,
    :meth:`_lam_changed`, :meth:`_state_resized` and :meth:`_validate_group`.
    """

    #: The method's own hyperparameters (name -> :class:`Hyper`), in checking order.
    hyperparameters: ClassVar[Mapping[str, Hyper]] = MappingProxyType({})
    #: Per-parameter state gathered into :attr:`StepBatch.state`, in the functional's order.
    state_keys: ClassVar[tuple[str, ...]] = ()
    #: Whether the method keeps a ``step`` counter per parameter.
    counts_steps: ClassVar[bool] = True
    #: Inverse scale space methods (LinBreg, AdaBreg, SplitLBI): the support starts (nearly)
    #: empty and grows with the steps taken (an entry joins once its dual variable has
    #: gathered λ), so a too-sparse run wants a smaller λ or more steps, not a smaller lr.
    support_grows_with_steps: ClassVar[bool] = False
    #: The keywords ``__init__`` takes as ``**common`` (a :class:`CommonKeywords` subclass),
    #: and their defaults.
    common_keywords: ClassVar[type] = CommonKeywords
    common_defaults: ClassVar[Mapping[str, Any]] = COMMON_DEFAULTS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give a subclass ``__init__`` ending in ``**common`` the full signature.

        ``inspect.signature`` (so ``help``, the registry's accepted keywords and the
        command line) then lists every keyword of :class:`CommonKeywords` with its
        default, as if written out in each class.
        """
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        sig = inspect.signature(init)
        params = list(sig.parameters.values())
        if not params or params[-1].kind is not inspect.Parameter.VAR_KEYWORD:
            return
        hints = {
            k: getattr(h, "__forward_arg__", h)
            for base in reversed(cls.common_keywords.__mro__)
            for k, h in getattr(base, "__annotations__", {}).items()
        }
        common = [
            inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v, annotation=hints[k])
            for k, v in cls.common_defaults.items()
        ]
        init.__signature__ = sig.replace(parameters=params[:-1] + common)

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        """Validate ``defaults`` and build the optimizer.

        ``defaults`` may be the subclass ``__init__``'s ``locals()``: ``self``,
        ``params`` and ``__class__`` are dropped, the keywords in ``common`` (see
        :class:`CommonKeywords`) join the others with :data:`COMMON_DEFAULTS` for those
        not given, and the penalty fields (``penalty``, ``lam``, ``groups``, ``a``,
        ``group_weight``) are turned into plain data by :func:`penalty_defaults`
        (``lam=None``: the registry recipe's λ).

        Raises:
            TypeError: a keyword that is neither the method's nor a common one.
        """
        drop = ("self", "params", "__class__", "common")
        common = dict(defaults.get("common", {}))
        unknown = sorted(set(common) - set(self.common_defaults))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}.__init__() got an unexpected keyword argument {unknown[0]!r}"
            )
        defaults = {
            **{k: v for k, v in defaults.items() if k not in drop},
            **self.common_defaults,
            **common,
        }
        if all(k in defaults for k in PENALTY_DEFAULTS):
            fields = [defaults[k] for k in PENALTY_DEFAULTS]
            defaults.update(penalty_defaults(*fields, owner=type(self).__name__))
        self._check_hyperparameters(defaults)
        super().__init__(params, defaults)

    @classmethod
    def _schema(cls) -> dict[str, Hyper]:
        return {**cls.hyperparameters, **COMMON_HYPERPARAMETERS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore the optimizer (also the last part of :meth:`load_state_dict`).

        Param groups of older state dicts get the ``missing`` value of every
        hyperparameter they lack. A ``step`` that is not a floating-point tensor (a
        plain ``int`` or ``float``, the older format ``torch.optim`` still accepts, or
        an integer tensor) becomes the float32 0-d CPU tensor every method keeps, as in
        ``torch.optim.Adam``.
        """
        super().__setstate__(state)
        filled = {k: h.missing for k, h in self._schema().items() if h.missing is not REQUIRED}
        for group in self.param_groups:
            for key, value in filled.items():
                group.setdefault(key, value)
        for param_state in self.state.values():
            step = param_state.get("step")
            if step is not None and not (torch.is_tensor(step) and step.is_floating_point()):
                param_state["step"] = torch.tensor(float(step), dtype=torch.float32)

    def _check_hyperparameters(self, group: dict[str, Any]) -> None:
        """Validate ``lr`` and the schema's hyperparameters of ``group`` (``ValueError``)."""
        check_lr(group["lr"])
        for key, hyper in self.hyperparameters.items():
            if hyper.check is not None:
                hyper.check(hyper.label or key, group[key])
        self._validate_group(group)

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
        self._check_hyperparameters(group)

    def _validate_group(self, group: dict[str, Any]) -> None:
        """Hook: checks beyond the schema (several fields together); raise ``ValueError``."""

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

    # ------------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step.

        Param groups with equal penalty and hyperparameters (such as the "conv" and
        "linear" groups of :func:`sparseopt.param_groups`) share one functional call:
        every update is per tensor, so this only saves per-call overhead.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss.
        """
        loss = self._closure_loss(closure)
        for batch in self._batches():
            self._update(batch)
            for key in batch.missing:  # state the functional created (momentum buffers)
                for p, value in zip(batch.params, batch.state[key], strict=True):
                    if value is not None:
                        self.state[p][key] = value
        return loss

    def _batches(self) -> list[StepBatch]:
        """The parameters with a gradient and their state, one batch per functional call."""
        schema = self._schema()
        fields = ("lr", *(k for k, h in schema.items() if h.functional))
        batches: dict[Any, StepBatch] = {}
        for group in self.param_groups:
            penalty = self.penalty_of(group)
            key = batch_key(penalty, group, fields)
            batch = batches.get(key)
            if batch is None:
                hyper = {k: group[k] for k in fields}
                hyper["penalty"] = penalty
                state_lists: dict[str, list[Any]] = {k: [] for k in self.state_keys}
                batch = batches[key] = StepBatch(group, penalty, hyper, state_lists)
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                if self.counts_steps:
                    if "step" not in state:
                        state["step"] = new_step()
                    batch.steps.append(state["step"])
                self._init_state(group, penalty, p, state)
                batch.params.append(p)
                batch.grads.append(grad)
                for k, values in batch.state.items():
                    value = state.get(k)
                    if value is None:
                        batch.missing.add(k)
                    values.append(value)
        return [b for b in batches.values() if b.params]

    def _init_state(
        self, group: dict[str, Any], penalty: Penalty, p: Tensor, state: dict[str, Any]
    ) -> None:
        """Hook: create ``p``'s state lazily, before its first step (``step`` exists)."""

    def _update(self, batch: StepBatch) -> None:
        """Hook: the method's update of one batch (a call of its functional step)."""
        raise NotImplementedError

    # -------------------------------------------------------------- resizing state

    def resize_parameter_(self, old: Tensor, new: Tensor, dim: int) -> None:
        """Put ``new`` in the place of ``old`` and carry its state over (:func:`resize_parameter_`)."""
        resize_parameter_(self, old, new, dim)

    def _state_resized(self, group: dict[str, Any], p: Tensor, dim: int, old_size: int) -> None:
        """Hook: set the state of ``p``'s entries past ``old_size`` along ``dim`` (zeros so far)."""

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

        ``lam`` is the factor-free λ: a group with a per-layer factor (``lam_factor``,
        :func:`sparseopt.groups.param_groups` with ``lam_scale="fan_in"``) gets ``lam``
        times it, so the layers keep their ratios. Groups with penalty ``none`` are left
        alone. Methods with dual variables adjust them in :meth:`_lam_changed` so the
        primal iterate is unchanged.
        """
        lam = check_nonneg("lam", lam)
        indices = range(len(self.param_groups)) if group_indices is None else group_indices
        for i in indices:
            group = self.param_groups[i]
            old = self.penalty_of(group)
            if isinstance(old, NoPenalty):
                continue
            group["lam"] = lam * float(group.get("lam_factor", 1.0))
            with torch.no_grad():
                self._lam_changed(group, old, self.penalty_of(group))

    def _lam_changed(self, group: dict[str, Any], old: Penalty, new: Penalty) -> None:
        """Hook called by :meth:`set_lam` (under ``torch.no_grad()``) after a group's λ changed."""

    def _states_with(
        self, group: dict[str, Any], key: str
    ) -> Iterator[tuple[Tensor, dict[str, Any]]]:
        """The parameters of ``group`` whose state holds ``key``, with their state."""
        for p in group["params"]:
            state = self.state.get(p)
            if state is not None and key in state:
                yield p, state
