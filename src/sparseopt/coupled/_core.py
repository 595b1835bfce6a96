"""Coupled groups: the declaration, the block layout of their slices and the joint prox."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sparseopt.penalties import GroupL0, GroupL1, Penalty, make_penalty

#: Name of the submodule :func:`pack_coupled` adds to the model.
CONTAINER = "sparseopt_coupled"


@dataclass(frozen=True)
class Slice:
    """One parameter's share of a set of coupled groups.

    Attributes:
        param: the parameter's full name in the model (``model.named_parameters()``).
        dim: the dimension cut into groups (0 = rows of a Linear weight / a bias,
            1 = columns of a Linear weight; Conv1D stores ``(in, out)``, the other way).
        chunks: fused projections: the dimension is ``chunks`` equal parts (q, k, v)
            each cut into the ``G`` groups (GPT-2 ``c_attn``, ``in_proj_weight``).
    """

    param: str
    dim: int = 0
    chunks: int = 1


@dataclass(frozen=True)
class CoupledGroups:
    """A set of ``num_groups`` coupled groups of equal size (the heads of one layer, ...).

    Attributes:
        name: a label, by convention the module the set lives in, with the kind.
        kind: ``"head"`` or ``"neuron"`` (or any label for sets declared by hand).
        num_groups: :math:`G`.
        slices: the parameter slices (:class:`Slice`); group ``g`` is block ``g`` of each.
        module: the module the set belongs to ('' for sets declared by hand).
        arch: how :func:`sparseopt.prune.heads.shrink_coupled` removes groups:
            ``"mha"``, ``"bert"``, ``"gpt2"``, ``"llama"`` (heads), ``"mlp"`` (neurons:
            only Linear/Conv1D widths change) or ``""`` (declared by hand: the slices'
            Linear/Conv1D layers are narrowed, nothing else).
        group_shape: per group, e.g. ``(r, head_dim)`` (query heads per group, head
            size) for heads, ``()`` for neurons.
        sizes: parameter shapes at detection time (filled by :func:`detect_coupled_groups`
            and :meth:`with_shapes`).
    """

    name: str
    kind: str
    num_groups: int
    slices: tuple[Slice, ...]
    module: str = ""
    arch: str = ""
    group_shape: tuple[int, ...] = ()
    sizes: tuple[tuple[int, ...], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.num_groups < 1:
            raise ValueError(f"Invalid num_groups value: {self.num_groups}; expected >= 1")
        if not self.slices:
            raise ValueError(f"Invalid slices value: a coupled group set {self.name!r} needs one")

    def with_shapes(self, model: nn.Module) -> CoupledGroups:
        """This set with ``sizes`` read from ``model`` (and its slices checked)."""
        params = _params(model)
        shapes = []
        for s in self.slices:
            if s.param not in params:
                raise ValueError(f"Invalid slice: no parameter named {s.param!r} in the model")
            shape = tuple(params[s.param].shape)
            _check_slice(s, shape, self.num_groups)
            shapes.append(shape)
        return CoupledGroups(
            self.name,
            self.kind,
            self.num_groups,
            self.slices,
            self.module,
            self.arch,
            self.group_shape,
            tuple(shapes),
        )

    @property
    def group_size(self) -> int:
        """Entries of one group, over all slices (needs ``sizes``)."""
        return sum(math.prod(shape) for shape in self.sizes) // self.num_groups


def _params(model: nn.Module) -> dict[str, Tensor]:
    out = dict(model.named_parameters())
    container = getattr(model, CONTAINER, None)
    if isinstance(container, _Packed):  # packed parameters are reachable by their names
        out.update(container.current())
    return out


def _check_slice(s: Slice, shape: tuple[int, ...], num_groups: int) -> None:
    if not -len(shape) <= s.dim < len(shape):
        raise ValueError(f"Invalid dim value: {s.dim} for {s.param!r} of shape {shape}")
    n = shape[s.dim]
    if s.chunks < 1 or n % (s.chunks * num_groups):
        raise ValueError(
            f"Invalid slice: dim {s.dim} of {s.param!r} (size {n}) is not {s.chunks} chunk(s) "
            f"of {num_groups} equal groups"
        )


# ----------------------------------------------------------------- block layout


def gather_blocks(t: Tensor, s: Slice, num_groups: int) -> Tensor:
    """The entries of every group of slice ``s`` of ``t``: a ``(G, |g_s|)`` tensor.

    Row ``g`` holds block ``g`` of each of the ``chunks`` parts of dimension ``s.dim``
    (in chunk order), flattened. Differentiable; a view when ``chunks = 1`` and
    ``dim = 0`` on a contiguous tensor.

    Example:
        >>> w = torch.arange(12.0).reshape(6, 2)  # 3 chunks (q, k, v) of 2 groups of 1 row
        >>> gather_blocks(w, Slice("w", 0, chunks=3), 2)
        tensor([[ 0.,  1.,  4.,  5.,  8.,  9.],
                [ 2.,  3.,  6.,  7., 10., 11.]])
    """
    x = t.movedim(s.dim, 0)
    rest = x.shape[1:]
    block = x.shape[0] // (s.chunks * num_groups)
    return x.reshape(s.chunks, num_groups, block, *rest).transpose(0, 1).reshape(num_groups, -1)


def scatter_blocks(blocks: Tensor, s: Slice, num_groups: int, shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`gather_blocks`: the tensor of ``shape`` whose groups are ``blocks``."""
    dim = s.dim % len(shape)
    n = shape[dim]
    rest = [shape[i] for i in range(len(shape)) if i != dim]
    block = n // (s.chunks * num_groups)
    x = blocks.reshape(num_groups, s.chunks, block, *rest).transpose(0, 1).reshape(n, *rest)
    return x.movedim(0, dim)


def _joint(tensors: Sequence[Tensor], cg: CoupledGroups) -> Tensor:
    if len(tensors) != len(cg.slices):
        raise ValueError(
            f"Invalid tensors: {len(tensors)} given for the {len(cg.slices)} slices of {cg.name!r}"
        )
    return torch.cat(
        [gather_blocks(t, s, cg.num_groups) for t, s in zip(tensors, cg.slices, strict=True)],
        dim=1,
    )


def coupled_norms(tensors: Sequence[Tensor], cg: CoupledGroups) -> Tensor:
    r"""Joint Euclidean norms :math:`\|x_g\|_2` of the ``G`` groups (a ``(G,)`` tensor).

    ``tensors`` are the parameters of ``cg.slices``, in that order.
    """
    return torch.linalg.vector_norm(_joint(tensors, cg), dim=1)


def _row_penalty(penalty: str | Penalty, lam: float | None, group_weight: str | None) -> Penalty:
    pen = make_penalty(penalty, lam=lam, groups="filter", group_weight=group_weight)
    if isinstance(pen, (GroupL1, GroupL0)):
        # the rows of the packed (G, |g|) matrix are the coupled groups
        return type(pen)(lam=pen.lam, groups="filter", group_weight=pen.group_weight)
    raise ValueError(
        f"Invalid penalty value: {pen.name!r}; coupled groups take 'group_l1' or 'group_l0'"
    )


def coupled_prox(
    tensors: Sequence[Tensor],
    cg: CoupledGroups,
    penalty: str | Penalty,
    t: float,
    *,
    lam: float | None = None,
    group_weight: str | None = None,
) -> list[Tensor]:
    r"""The prox of a coupled group penalty: :math:`\arg\min_y \tfrac12\|y-x\|^2 + tJ(y)`.

    With :math:`x_g` the joint vector of group :math:`g` over all slices,
    ``group_l1`` gives :math:`x_g\max(0, 1 - t\lambda w_g/\|x_g\|_2)` and ``group_l0``
    :math:`x_g\mathbf 1\{\|x_g\|_2 > \sqrt{2t\lambda w_g}\}`, with :math:`|g|` the
    entries of all slices of the group: ``group_l1``'s default :math:`w_g=\sqrt{|g|}`
    (``group_weight="one"``: 1), ``group_l0``'s :math:`w_g = 1` (``"size"``: :math:`|g|`;
    :class:`~sparseopt.penalties.GroupL0`; group ℓ1's ``"sqrt"`` leaves it at 1).

    Args:
        tensors: the parameters of ``cg.slices`` in order (not modified).
        cg: the coupled group set.
        penalty: ``"group_l1"``, ``"group_l0"`` or such a penalty object (its
            ``groups`` is ignored: the groups are ``cg``'s).
        t: prox step.
        lam, group_weight: for a penalty given by name (``None``: the penalty's default).

    Returns:
        new tensors, one per slice.
    """
    pen = _row_penalty(penalty, lam, group_weight)
    joint = pen.prox(_joint(tensors, cg), t)
    out, start = [], 0
    for x, s in zip(tensors, cg.slices, strict=True):
        width = x.numel() // cg.num_groups
        out.append(scatter_blocks(joint[:, start : start + width], s, cg.num_groups, x.shape))
        start += width
    return out


@torch.no_grad()
def zero_groups_(model: nn.Module, cg: CoupledGroups, indices: Iterable[int]) -> None:
    """Set every slice of the groups ``indices`` of ``cg`` to zero in ``model``, in place.

    Works on packed models too (zeroes the rows of the packed parameter).
    """
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    container = getattr(model, CONTAINER, None)
    if isinstance(container, _Packed) and cg.name in container.index:
        container.packed[container.index[cg.name]][idx] = 0
        return
    params = _params(model)
    for s in cg.slices:
        p = params[s.param]
        blocks = gather_blocks(p, s, cg.num_groups).clone()
        blocks[idx] = 0
        p.copy_(scatter_blocks(blocks, s, cg.num_groups, p.shape))


@torch.no_grad()
def dead_groups(model: nn.Module, sets: Sequence[CoupledGroups]) -> dict[str, list[int]]:
    """For every set, the indices of its groups whose joint norm is exactly 0."""
    params = _params(model)
    out = {}
    for cg in sets:
        norms = coupled_norms([params[s.param] for s in cg.slices], cg)
        out[cg.name] = torch.nonzero(norms == 0).flatten().tolist()
    return out


class _Packed(nn.Module):
    """Holds the packed ``(G, |g|)`` parameter of every set and rebuilds the originals."""

    def __init__(self, sets: Sequence[CoupledGroups], packed: Sequence[Tensor]) -> None:
        super().__init__()
        self.sets = list(sets)
        self.index = {cg.name: i for i, cg in enumerate(self.sets)}
        self.packed = nn.ParameterList([nn.Parameter(p) for p in packed])
        self._root: list[nn.Module] = []  # not a submodule (no cycle)
        self._hooks: list[Any] = []  # the root's forward (pre-)hooks, removed on unpacking

    def current(self) -> dict[str, Tensor]:
        """Every packed original parameter, rebuilt from the packed ones (differentiable)."""
        out: dict[str, Tensor] = {}
        for cg, p in zip(self.sets, self.packed, strict=True):
            start = 0
            for s, shape in zip(cg.slices, cg.sizes, strict=True):
                width = math.prod(shape) // cg.num_groups
                out[s.param] = scatter_blocks(p[:, start : start + width], s, cg.num_groups, shape)
                start += width
        return out

    def refresh(self, _module: nn.Module, _args: Any) -> None:
        """Forward pre-hook of the root model: write the originals as attributes."""
        self._write(self.current())

    def release(self, _module: nn.Module, _args: Any, _output: Any) -> None:
        """Forward hook: keep detached views (the graph keeps its own references), so
        the model stays deep-copyable and holds no graph between passes."""
        self._write({k: v.detach() for k, v in self.current().items()})

    def _write(self, values: Mapping[str, Tensor]) -> None:
        root = self._root[0]
        for full, value in values.items():
            owner, _, attr = full.rpartition(".")
            setattr(root.get_submodule(owner), attr, value)


def is_packed(model: nn.Module) -> bool:
    """True if :func:`pack_coupled` packed ``model``."""
    return isinstance(getattr(model, CONTAINER, None), _Packed)
