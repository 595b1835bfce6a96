r"""Coupled groups: one group spans slices of several parameters (attention heads, MLP neurons).

Every grouping of :mod:`sparseopt.groups` lives inside one weight tensor. A
transformer's natural units do not: **attention head** :math:`h` is the rows
:math:`h d{:}(h+1)d` of the query, key and value projections (and of their biases)
*and* the columns :math:`h d{:}(h+1)d` of the output projection; **MLP neuron**
:math:`j` is row :math:`j` of the up-projection (and of the gate, and their biases)
*and* column :math:`j` of the down-projection. Removing such a unit removes all of its
slices at once, which is what makes a transformer smaller and faster (Michel, Levy &
Neubig, "Are Sixteen Heads Really Better than One?", NeurIPS 2019; Voita et al.,
ACL 2019).

A :class:`CoupledGroups` is a *set* of :math:`G` coupled groups of equal size (the
heads of one attention layer, the neurons of one MLP), described as plain data: a
list of :class:`Slice` (a parameter name, the dimension it is cut along and, for
fused projections, the number of chunks). Group :math:`g` of the set is, in every
slice, block :math:`g` of the dimension viewed as ``(chunks, G, block)``:

.. math::
    x_g = \big(W^{(1)}_{[g]}, \dots, W^{(S)}_{[g]}\big),\qquad
    \|x_g\|_2^2 = \sum_s \|W^{(s)}_{[g]}\|_2^2 .

The group penalties act on the joint norm, with the same weights as
:mod:`sparseopt.penalties` (:math:`w_g=\sqrt{|g|}`, :math:`|g|` the number of
entries of all slices of one group, or 1):

.. math::
    J(x) = \lambda\sum_g w_g\|x_g\|_2 \;(\texttt{group\_l1}),\qquad
    J(x) = \lambda\,\#\{g: x_g\neq 0\} \;(\texttt{group\_l0}),

and their prox is the group soft / hard threshold of the joint vector
(:func:`coupled_prox`).

**How every optimizer acts on the joint norms: packing.** :func:`pack_coupled` moves
the entries of each set into one parameter :math:`P\in\mathbb R^{G\times |g|}` (row
:math:`g` = group :math:`g`) registered under ``model.sparseopt_coupled``, deletes the
original parameters and, before every forward pass of the model, writes them back as
*views* (or, for fused projections, gathers) of :math:`P`, so gradients reach
:math:`P`. The ``filter`` grouping of :math:`P` (its rows) is then exactly the coupled
grouping, with the same :math:`\sqrt{|g|}` weights, so **every** optimizer of
:mod:`sparseopt.optim` — wherever it applies its prox (to :math:`\delta v` for the
Bregman methods, to :math:`\Gamma` for SplitLBI, to :math:`w_0-c_t\bar g_t` for RDA, to
:math:`u` for RVSM, after the step for ProxSGD), on its for-loop and ``foreach`` paths,
and its supports, subgradients and deployable networks — works on coupled groups
without a line of optimizer code: all their other operations are elementwise and do not
see the layout. :func:`coupled_param_groups` builds the param groups;
:func:`unpack_coupled` restores ordinary parameters (e.g. before
:func:`sparseopt.prune.heads.shrink_coupled`, or to save a plain state dict).

**Automatic detection** (:func:`detect_coupled_groups`) from the module structure:

===================================== ============================================= ==========
module                                head set (per layer)                          neuron set
===================================== ============================================= ==========
``nn.MultiheadAttention``             ``in_proj_weight``/``in_proj_bias`` rows       —
                                      (3 chunks: q, k, v; or ``q/k/v_proj_weight``),
                                      ``out_proj.weight`` columns
``nn.TransformerEncoderLayer`` /      its attention modules as above                ``linear1`` rows + bias,
``nn.TransformerDecoderLayer``                                                      ``linear2`` columns
HF BERT-style (``query/key/value`` +  q/k/v rows + biases, ``output.dense`` columns ``intermediate.dense`` rows + bias,
``output.dense``)                                                                   ``output.dense`` columns
HF GPT-2-style (``c_attn``, Conv1D)   fused ``c_attn`` columns + bias (3 chunks),   ``c_fc`` columns + bias,
                                      ``c_proj`` rows (Conv1D stores ``(in, out)``) ``c_proj`` rows
HF Llama-style (``q/k/v/o_proj``,     one group per **key/value head**: its k/v     ``gate_proj``/``up_proj`` rows
``gate/up/down_proj``)                rows and the q rows and o columns of the      (+ biases), ``down_proj``
                                      :math:`r = n_q/n_{kv}` query heads sharing it columns
===================================== ============================================= ==========

With grouped-query attention a query head cannot be removed on its own without
changing the ``n_q/n_kv`` repetition the attention kernels assume, and a key/value head
is only dead when all the query heads reading it are; so the group is the key/value
head together with its query heads (``r = 1`` — plain multi-head attention — gives one
group per head). GPT-2 cross-attention (``q_attn``) is not detected.

Example:
    >>> layer = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True)
    >>> sets = detect_coupled_groups(layer)
    >>> [(s.kind, s.num_groups, s.group_size) for s in sets]
    [('neuron', 16, 17), ('head', 2, 140)]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sparseopt.penalties import GroupL0, GroupL1, Penalty, make_penalty

__all__ = [
    "CONTAINER",
    "CoupledGroups",
    "Slice",
    "coupled_norms",
    "coupled_param_groups",
    "coupled_prox",
    "dead_groups",
    "detect_coupled_groups",
    "gather_blocks",
    "is_packed",
    "pack_coupled",
    "packed_groups",
    "scatter_blocks",
    "unpack_coupled",
    "zero_groups_",
]

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


def _row_penalty(penalty: str | Penalty, lam: float | None, group_weight: str) -> Penalty:
    pen = make_penalty(penalty, lam=lam, groups="filter", group_weight=group_weight)
    if isinstance(pen, (GroupL1, GroupL0)):
        # the rows of the packed (G, |g|) matrix are the coupled groups
        kwargs = {"lam": pen.lam, "groups": "filter"}
        if isinstance(pen, GroupL1):
            kwargs["group_weight"] = pen.group_weight
        return type(pen)(**kwargs)
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
    group_weight: str = "sqrt",
) -> list[Tensor]:
    r"""The prox of a coupled group penalty: :math:`\arg\min_y \tfrac12\|y-x\|^2 + tJ(y)`.

    With :math:`x_g` the joint vector of group :math:`g` over all slices,
    ``group_l1`` gives :math:`x_g\max(0, 1 - t\lambda w_g/\|x_g\|_2)` and ``group_l0``
    :math:`x_g\mathbf 1\{\|x_g\|_2 > \sqrt{2t\lambda}\}`; :math:`w_g=\sqrt{|g|}` counts
    the entries of all slices of the group (``group_weight="one"``: 1).

    Args:
        tensors: the parameters of ``cg.slices`` in order (not modified).
        cg: the coupled group set.
        penalty: ``"group_l1"``, ``"group_l0"`` or such a penalty object (its
            ``groups`` is ignored: the groups are ``cg``'s).
        t: prox step.
        lam, group_weight: for a penalty given by name.

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


# ------------------------------------------------------------------- detection


def _linear_like(m: Any) -> bool:
    return isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"


def _is_conv1d(m: Any) -> bool:
    return type(m).__name__ == "Conv1D"


def _rows(prefix: str, m: nn.Module, chunks: int = 1) -> list[Slice]:
    """Output units of a Linear (rows) or Conv1D (columns), with the bias."""
    out = [Slice(f"{prefix}.weight", 1 if _is_conv1d(m) else 0, chunks)]
    if getattr(m, "bias", None) is not None:
        out.append(Slice(f"{prefix}.bias", 0, chunks))
    return out


def _cols(prefix: str, m: nn.Module) -> list[Slice]:
    """Input units of a Linear (columns) or Conv1D (rows)."""
    return [Slice(f"{prefix}.weight", 0 if _is_conv1d(m) else 1)]


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _out_width(m: nn.Module) -> int:
    return m.weight.shape[1] if _is_conv1d(m) else m.weight.shape[0]


def _mha_heads(name: str, m: nn.MultiheadAttention) -> CoupledGroups:
    if m.bias_k is not None or m.add_zero_attn:
        raise ValueError(
            f"Invalid module {name!r}: MultiheadAttention with add_bias_kv or add_zero_attn "
            "has no coupled head groups here"
        )
    if m._qkv_same_embed_dim:
        slices = [Slice(_join(name, "in_proj_weight"), 0, 3)]
    else:
        slices = [Slice(_join(name, f"{x}_proj_weight")) for x in "qkv"]
    if m.in_proj_bias is not None:
        slices.append(Slice(_join(name, "in_proj_bias"), 0, 3))
    slices.append(Slice(_join(name, "out_proj.weight"), 1))
    return CoupledGroups(
        _join(name, "heads"), "head", m.num_heads, tuple(slices), name, "mha", (1, m.head_dim)
    )


def _detect_one(name: str, m: nn.Module) -> list[CoupledGroups]:
    # nn.MultiheadAttention (also inside nn.Transformer*Layer, found on its own)
    if isinstance(m, nn.MultiheadAttention):
        return [_mha_heads(name, m)]
    if isinstance(m, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        slices = (
            *_rows(_join(name, "linear1"), m.linear1),
            *_cols(_join(name, "linear2"), m.linear2),
        )
        width = m.linear1.out_features
        return [CoupledGroups(_join(name, "neurons"), "neuron", width, slices, name, "mlp")]
    out = []
    # BERT-style attention: self.query/key/value + output.dense
    sa, so = getattr(m, "self", None), getattr(m, "output", None)
    if (
        sa is not None
        and all(_linear_like(getattr(sa, x, None)) for x in ("query", "key", "value"))
        and _linear_like(getattr(so, "dense", None))
    ):
        d = int(sa.attention_head_size)
        heads = _out_width(sa.query) // d
        slices = [
            s
            for x in ("query", "key", "value")
            for s in _rows(_join(name, "self", x), getattr(sa, x))
        ]
        slices += _cols(_join(name, "output.dense"), so.dense)
        out.append(
            CoupledGroups(_join(name, "heads"), "head", heads, tuple(slices), name, "bert", (1, d))
        )
    # BERT-style MLP: intermediate.dense + output.dense (a BertLayer)
    inter = getattr(m, "intermediate", None)
    if _linear_like(getattr(inter, "dense", None)) and _linear_like(getattr(so, "dense", None)):
        slices = (
            *_rows(_join(name, "intermediate.dense"), inter.dense),
            *_cols(_join(name, "output.dense"), so.dense),
        )
        out.append(
            CoupledGroups(
                _join(name, "neurons"), "neuron", _out_width(inter.dense), slices, name, "mlp"
            )
        )
    # GPT-2-style attention: fused c_attn (Conv1D) + c_proj
    if (
        _linear_like(getattr(m, "c_attn", None))
        and _linear_like(getattr(m, "c_proj", None))
        and not getattr(m, "is_cross_attention", False)
    ):
        d = int(m.head_dim)
        heads = _out_width(m.c_attn) // (3 * d)
        slices = (
            *_rows(_join(name, "c_attn"), m.c_attn, 3),
            *_cols(_join(name, "c_proj"), m.c_proj),
        )
        out.append(CoupledGroups(_join(name, "heads"), "head", heads, slices, name, "gpt2", (1, d)))
    # GPT-2-style MLP: c_fc + c_proj
    if _linear_like(getattr(m, "c_fc", None)) and _linear_like(getattr(m, "c_proj", None)):
        slices = (*_rows(_join(name, "c_fc"), m.c_fc), *_cols(_join(name, "c_proj"), m.c_proj))
        out.append(
            CoupledGroups(_join(name, "neurons"), "neuron", _out_width(m.c_fc), slices, name, "mlp")
        )
    # Llama-style attention: q/k/v/o_proj, one group per key/value head
    if all(_linear_like(getattr(m, f"{x}_proj", None)) for x in "qkvo") and hasattr(m, "head_dim"):
        d = int(m.head_dim)
        n_q, n_kv = _out_width(m.q_proj) // d, _out_width(m.k_proj) // d
        if n_q % n_kv:
            raise ValueError(f"Invalid module {name!r}: {n_q} query heads for {n_kv} kv heads")
        slices = [
            s for x in "qkv" for s in _rows(_join(name, f"{x}_proj"), getattr(m, f"{x}_proj"))
        ]
        slices += _cols(_join(name, "o_proj"), m.o_proj)
        out.append(
            CoupledGroups(
                _join(name, "heads"), "head", n_kv, tuple(slices), name, "llama", (n_q // n_kv, d)
            )
        )
    # Llama-style MLP: (gate_proj,) up_proj, down_proj
    if _linear_like(getattr(m, "up_proj", None)) and _linear_like(getattr(m, "down_proj", None)):
        slices = []
        if _linear_like(getattr(m, "gate_proj", None)):
            slices += _rows(_join(name, "gate_proj"), m.gate_proj)
        slices += _rows(_join(name, "up_proj"), m.up_proj)
        slices += _cols(_join(name, "down_proj"), m.down_proj)
        out.append(
            CoupledGroups(
                _join(name, "neurons"), "neuron", _out_width(m.up_proj), tuple(slices), name, "mlp"
            )
        )
    return out


def detect_coupled_groups(
    model: nn.Module, kinds: Iterable[str] = ("head", "neuron"), *, exclude: Iterable[str] = ()
) -> list[CoupledGroups]:
    """Find the head and neuron sets of every supported module (see the module docstring).

    Args:
        model: the network (not packed).
        kinds: which kinds to return.
        exclude: module names whose sets are skipped (and whose submodules).

    Raises:
        ValueError: if two sets would share a parameter slice (e.g. an unsupported
            mixture of conventions) or a module's widths are inconsistent.
    """
    if is_packed(model):
        raise ValueError("Invalid model: detect_coupled_groups needs an unpacked model")
    wanted, skipped = set(kinds), tuple(exclude)
    out: list[CoupledGroups] = []
    for name, m in model.named_modules():
        if any(name == e or name.startswith(e + ".") for e in skipped):
            continue
        out += [cg for cg in _detect_one(name, m) if cg.kind in wanted]
    out = [cg.with_shapes(model) for cg in out]
    seen: dict[str, str] = {}
    for cg in out:
        for s in cg.slices:
            if s.param in seen:
                raise ValueError(
                    f"Invalid groups: {s.param!r} is in both {seen[s.param]!r} and {cg.name!r}"
                )
            seen[s.param] = cg.name
    return out


# --------------------------------------------------------------------- packing


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
    if rest and rest.get("penalty", "none") != "none":
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
