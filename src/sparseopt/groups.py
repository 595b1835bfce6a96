"""Structured groupings of a weight tensor: filters, input channels, kernels.

A grouping partitions a weight tensor of a Conv or Linear layer into disjoint
groups of entries. Group penalties (``group_l1``, ``group_l0``) act on the
Euclidean norm of each group, so a whole filter (output channel / neuron) or a
whole input channel dies at once, which is what makes a network physically
smaller (Bungert et al. 2022, §4; Fu et al., DessiLBI 2020).

For a weight ``W`` of shape ``(out, in, *kernel)`` (Conv) or ``(out, in)``
(Linear):

========== ========================================= =====================
grouping   one group                                 reduced dims
========== ========================================= =====================
filter     ``W[o]``: an output channel / neuron (row)  ``1, 2, ...``
channel    ``W[:, i]``: an input channel (column)      ``0, 2, 3, ...``
kernel     ``W[o, i]``: one spatial kernel             ``2, 3, ...`` (ndim ≥ 3)
row        alias of ``filter`` (Linear vocabulary)
column     alias of ``channel`` (Linear vocabulary)
========== ========================================= =====================

Everything here is vectorised: group norms are one reduction over the tensor,
never a Python loop over groups.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "COUPLED_GROUPINGS",
    "GROUPINGS",
    "HEAD_GROUPS",
    "ATTENTION_WEIGHTS",
    "LAM_SCALES",
    "STORED_IN_OUT",
    "LayerWeight",
    "base_lam",
    "canonical_grouping",
    "check_head_groups",
    "check_lam_scale",
    "group_dims",
    "group_lam",
    "group_norms",
    "group_size",
    "is_attention",
    "is_hf_conv1d",
    "is_penalised",
    "layer_kind",
    "layer_lam_factors",
    "layer_lams",
    "layer_weights",
    "module_params",
    "num_groups",
    "out_in_view",
    "output_layer",
    "param_groups",
    "weight_kind",
]

#: Every accepted grouping name, with its canonical meaning.
GROUPINGS: dict[str, str] = {
    "filter": "filter",
    "row": "filter",
    "channel": "channel",
    "column": "channel",
    "kernel": "kernel",
}


#: The grouping of the model's output layer where a group penalty (or a per-group sparse
#: start) groups by filter: its inputs, never its rows — the classes
#: (:func:`output_layer`, :func:`param_groups`, :func:`sparseopt.init.sparse_init_`).
HEAD_GROUPS = "channel"


#: Groupings that span several tensors (attention heads, MLP neurons): they are not a
#: per-tensor grouping but sets of coupled slices, see :mod:`sparseopt.coupled`.
COUPLED_GROUPINGS: tuple[str, ...] = ("head", "neuron")


def canonical_grouping(groups: str) -> str:
    """Return the canonical name (``filter``, ``channel`` or ``kernel``) of ``groups``.

    Raises:
        ValueError: if ``groups`` is not one of :data:`GROUPINGS` (for ``head`` and
            ``neuron``, naming :mod:`sparseopt.coupled`, where they live).
    """
    if isinstance(groups, str) and groups in COUPLED_GROUPINGS:
        raise ValueError(
            f"Invalid groups value: {groups!r} spans several tensors; use "
            "sparseopt.coupled (detect_coupled_groups, pack_coupled, coupled_param_groups)"
        )
    try:
        return GROUPINGS[groups]
    except (KeyError, TypeError):
        raise ValueError(
            f"Invalid groups value: {groups!r}; expected one of {sorted(GROUPINGS)}"
        ) from None


def check_head_groups(head_groups: str) -> str:
    """The canonical grouping of the output layer's ``head_groups`` (``filter``/``row``: its
    rows, ``channel``/``column``: its inputs; :data:`HEAD_GROUPS`), checked once for
    :func:`param_groups`, :func:`sparseopt.init.sparse_init_` and the run config.

    Raises:
        ValueError: not a filter or channel grouping (a head may be a Linear layer, which
            has no kernels), in one line naming ``head_groups``.
    """
    heads = [g for g, kind in GROUPINGS.items() if kind in ("filter", "channel")]
    if not isinstance(head_groups, str) or head_groups not in heads:
        raise ValueError(f"Invalid head_groups value: {head_groups!r}; expected one of {heads}")
    return GROUPINGS[head_groups]


def group_dims(ndim: int, groups: str) -> tuple[int, ...]:
    """Dimensions reduced to compute one group's norm for a tensor of ``ndim`` dims.

    Args:
        ndim: number of dimensions of the weight tensor (2 for Linear, 3-5 for Conv).
        groups: a grouping name (see :data:`GROUPINGS`).

    Raises:
        ValueError: for tensors with fewer than 2 dims, an unknown grouping, or
            ``kernel`` grouping on a 2-D tensor.

    Example:
        >>> group_dims(4, "filter"), group_dims(4, "channel"), group_dims(4, "kernel")
        ((1, 2, 3), (0, 2, 3), (2, 3))
    """
    kind = canonical_grouping(groups)
    if ndim < 2:
        raise ValueError(
            f"Invalid tensor for groups={groups!r}: a group penalty needs a weight with at "
            f"least 2 dims (out, in, ...), got ndim={ndim}"
        )
    if kind == "filter":
        return tuple(range(1, ndim))
    if kind == "channel":
        return (0, *range(2, ndim))
    if ndim < 3:
        raise ValueError(
            f"Invalid groups value: 'kernel' needs a conv weight with ndim >= 3, got ndim={ndim}"
        )
    return tuple(range(2, ndim))


def group_size(shape: torch.Size | tuple[int, ...], groups: str) -> int:
    """Number of entries in one group of a tensor of this ``shape``."""
    return math.prod(shape[d] for d in group_dims(len(shape), groups))


def num_groups(shape: torch.Size | tuple[int, ...], groups: str) -> int:
    """Number of groups a tensor of this ``shape`` is split into."""
    return math.prod(shape) // max(group_size(shape, groups), 1)


def group_norms(x: Tensor, groups: str) -> Tensor:
    """Euclidean norm of every group of ``x``, with ``keepdim`` so it broadcasts against ``x``.

    Example:
        >>> w = torch.ones(3, 2, 5, 5)
        >>> group_norms(w, "filter").shape
        torch.Size([3, 1, 1, 1])
    """
    return torch.linalg.vector_norm(x, dim=group_dims(x.ndim, groups), keepdim=True)


# ------------------------------------------------------------- parameter grouping

#: How λ is shared between layers: ``none`` (one param group and λ for every layer of a
#: kind), ``layer`` (one param group per layer, each starting from the same λ: what
#: :class:`sparseopt.control.TargetDensity` with ``allocation="he"`` steers layer by
#: layer) or ``fan_in`` (one group per layer, λ in proportion to its weights' scale, see
#: :func:`layer_lam_factors`).
LAM_SCALES = ("none", "layer", "fan_in")

#: Penalties whose threshold grows like √λ (ℓ0 keeps an entry above √(2tλ)); the others
#: (ℓ1, Tℓ1, group ℓ1) threshold at a multiple of λ.
_SQRT_THRESHOLD = ("l0", "group_l0")


def layer_lam_factors(weights: list[Tensor], penalties: list[str]) -> list[float]:
    r"""Per-layer λ factors that put every layer's threshold on its weights' own scale.

    A uniform λ treats layers unequally: the He scale of a layer's weights is
    :math:`\sigma_l = \sqrt{2/\text{fan\_in}_l}`, so a first convolution (fan-in 9) has
    weights ~6× larger than a third one (fan-in 288), and one threshold keeps nearly all
    of the first and nearly none of the third (an inverse scale space method such as
    SplitLBI lets an entry in after about λν/(lr·|W|) steps, which is ~6× longer there).
    Layer ``l`` gets :math:`c_l \propto \sigma_l^p` — :math:`p = 1` for penalties whose
    threshold is proportional to λ (ℓ1, Tℓ1, group ℓ1), :math:`p = 2` for ℓ0 and group ℓ0
    (threshold :math:`\sqrt{2t\lambda}`) — normalised so that the factors' mean over
    the weights is 1 (:math:`\sum_l n_l c_l = \sum_l n_l`): the penalty's total weight
    is the same as with one λ, only shared out by scale. For ℓ1 it is one λ on the
    weights in units of their He scale, :math:`\tilde W_l = W_l / \sigma_l`; the
    measurements that made it a recipe: docs/recipes.md, round 16.

    Args:
        weights: the penalised weight tensors (Conv: ``(out, in/groups, *kernel)``,
            Linear: ``(out, in)``); fan-in is the size of one output unit's slice.
        penalties: each weight's penalty name.

    The factors are computed once, from the shapes at the start (``grow_every`` widens
    layers later without changing them).

    Example:
        >>> w = [torch.zeros(16, 1, 3, 3), torch.zeros(2, 2048)]
        >>> [round(c, 3) for c in layer_lam_factors(w, ["l1", "l1"])]
        [10.204, 0.676]
    """
    if len(weights) != len(penalties):
        raise ValueError("layer_lam_factors: one penalty per weight")
    exps = [2.0 if p in _SQRT_THRESHOLD else 1.0 for p in penalties]
    # fan-in from the (global) shape: a sharded DTensor's shape is the whole tensor's
    raw = [
        (2.0 / max(math.prod(w.shape[1:]), 1)) ** (e / 2)
        for w, e in zip(weights, exps, strict=True)
    ]
    count = sum(w.numel() for w in weights)
    mean = sum(r * w.numel() for r, w in zip(raw, weights, strict=True)) / max(count, 1)
    return [r / mean if mean > 0 else 1.0 for r in raw]


def group_lam(group: dict[str, Any]) -> float:
    """A param group's λ before its per-layer factor (``lam_factor``, set by
    ``param_groups(lam_scale="fan_in")``; 1 without one): what ``set_lam`` takes."""
    return float(group["lam"]) / float(group.get("lam_factor", 1.0))


def check_lam_scale(lam_scale: Any) -> None:
    """Raise ``ValueError`` naming ``lam_scale`` unless it is one of :data:`LAM_SCALES`."""
    if lam_scale not in LAM_SCALES:
        raise ValueError(
            f"Invalid lam_scale value: {lam_scale!r}; expected one of {list(LAM_SCALES)}"
        )


def is_penalised(group: Mapping[str, Any]) -> bool:
    """Whether a param group carries a penalty: its ``penalty`` (a name, or a
    :class:`~sparseopt.penalties.Penalty` with its ``name``) is other than ``"none"`` (a
    group without the key, or with ``None``, has none).

    Example:
        >>> is_penalised({"penalty": "l1"}), is_penalised({"penalty": "none"}), is_penalised({})
        (True, False, False)
        >>> from sparseopt.penalties import make_penalty
        >>> is_penalised({"penalty": make_penalty("none")}), is_penalised({"penalty": None})
        (False, False)
    """
    penalty = group.get("penalty", "none")
    name = getattr(penalty, "name", penalty)
    return name is not None and name != "none"


def base_lam(param_groups: Iterable[dict[str, Any]]) -> float | None:
    """The run's λ: :func:`group_lam` of the first penalised group, as written; ``None``
    when no group is penalised."""
    for group in param_groups:
        if is_penalised(group) and "lam" in group:
            if "lam_factor" not in group:
                return float(group["lam"])
            # λ·c/c misses the λ as written by an ulp or two (0.00699… for 0.007): give
            # back the 12-digit number it is that close to, and any other λ unchanged
            lam = group_lam(group)
            short = float(f"{lam:.12g}")
            return short if abs(short - lam) <= 4 * math.ulp(lam) else lam
    return None


def layer_lams(model: torch.nn.Module, param_groups: Iterable[dict[str, Any]]) -> dict[str, float]:
    """λ acting on every layer whose weight is penalised: its group's ``lam``, with the
    per-layer factor (``lam_factor``) in. Keyed exactly as the metrics' ``layer_density``
    (:func:`sparseopt.metrics.density`): each layer weight (:func:`layer_weights`) under
    its layer name — a module's name for its ``weight`` (a shared weight under its first
    module's), the parameter's for an attention's ``in_proj_weight``; other penalised
    tensors (coupled packs, embeddings) have no entry.

    The metrics' ``lam`` is one number, the first penalised group's factor-free λ
    (:func:`base_lam`); where the groups hold a λ each (``lam_scale`` ``layer`` or
    ``fan_in``, a per-layer target-density controller) this is every layer's.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
        >>> groups = [
        ...     {"params": [net[0].weight], "penalty": "l1", "lam": 0.1},
        ...     {"params": [net[1].weight], "penalty": "l1", "lam": 0.2},
        ...     {"params": [net[0].bias, net[1].bias], "penalty": "none", "lam": 0.0},
        ... ]
        >>> layer_lams(net, groups)
        {'0': 0.1, '1': 0.2}
    """
    lam_of = {
        id(p): float(g["lam"])
        for g in param_groups
        if is_penalised(g) and "lam" in g
        for p in g["params"]
    }
    return {w.name: lam_of[id(w.param)] for w in layer_weights(model) if id(w.param) in lam_of}


def module_params(
    model: torch.nn.Module,
) -> Iterator[tuple[str, torch.nn.Module, str, torch.nn.Parameter]]:
    """``(module name, module, parameter name, parameter)`` for every parameter of
    ``model``, once: a parameter shared by several modules (tied weights) comes with the
    first that holds it, in ``named_modules`` order. The walk every per-layer view uses
    (:func:`param_groups`, :func:`layer_lams`, :func:`sparseopt.metrics.density`), so
    their layer names agree.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
        >>> net[1].weight = net[0].weight
        >>> [(m, n) for m, _, n, _ in module_params(net)]
        [('0', 'weight'), ('0', 'bias'), ('1', 'bias')]
    """
    seen: set[int] = set()
    for name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, module, p_name, p


def layer_kind(module: torch.nn.Module) -> str | None:
    """``"conv"``, ``"linear"`` or ``None``: the kind of a Conv/Linear module (the MAC
    count's layers, and the output layer's). Which parameters are layer weights — these
    modules' ``weight`` and the others of :func:`weight_kind` — is :func:`layer_weights`'."""
    if isinstance(module, torch.nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, torch.nn.Linear):
        return "linear"
    return None


#: The projection weights of ``torch.nn.MultiheadAttention`` (and so of every
#: ``nn.Transformer*Layer``): the fused query/key/value projection, or the three apart
#: where key and value widths differ. Each is a Linear weight in all but name — rows are
#: output units, columns input features — applied by the attention itself, not by an
#: ``nn.Linear`` (its output projection is one).
ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def is_hf_conv1d(module: torch.nn.Module) -> bool:
    """Hugging Face's ``Conv1D`` (GPT-2 and its kin): a Linear layer, ``x @ W + b``,
    whose weight is stored ``(in, out)`` — the transpose of ``nn.Linear``'s. Known by its
    class name anywhere in the class's bases, so also once FSDP2's ``fully_shard`` has
    swapped the class for ``FSDPConv1D`` (transformers is not imported), with its output
    width ``nf`` (a class of another library that is only named so is not taken)."""
    named = any(c.__name__ == "Conv1D" for c in type(module).__mro__)
    own = layer_kind(module) is None  # a torch convolution subclassed under that name is one
    return named and own and isinstance(getattr(module, "nf", None), int)


#: The param-group key listing the names of its weights stored ``(in, out)`` (Hugging Face
#: ``Conv1D``, :func:`param_groups`): whoever counts output units reads their transpose.
STORED_IN_OUT = "stored_in_out"


def out_in_view(group: Mapping[str, Any], index: int, p: Tensor) -> Tensor:
    """Parameter ``p``, the ``index``-th of param group ``group``, as ``(out, in, ...)``:
    its transpose where the group lists it in :data:`STORED_IN_OUT`, else itself."""
    flipped = group.get(STORED_IN_OUT)
    names = group.get("param_names") or []
    if flipped and index < len(names) and names[index] in flipped:
        return p.T
    return p


def is_attention(module: torch.nn.Module) -> bool:
    """``nn.MultiheadAttention`` or a module with its layout (the pruned one of
    :mod:`sparseopt.prune.heads`, ``q/k/v_proj_weight`` and an ``out_proj`` Linear): its
    projection weights (:data:`ATTENTION_WEIGHTS`) run as no ``nn.Linear`` call."""
    return isinstance(module, torch.nn.MultiheadAttention) or (
        isinstance(getattr(module, "out_proj", None), torch.nn.Linear)
        and getattr(module, "q_proj_weight", None) is not None
    )


def weight_kind(module: torch.nn.Module, p_name: str) -> str | None:
    """``"conv"`` or ``"linear"`` where parameter ``p_name`` of ``module`` is a layer
    weight (penalised by the sparse optimizers' param groups, counted by the weight
    density, pruned by the magnitude baseline), else ``None``: the ``weight`` of a
    Conv/Linear module or of a Hugging Face ``Conv1D``, and the projection weights of
    ``nn.MultiheadAttention`` and of modules with its layout (:data:`ATTENTION_WEIGHTS`,
    :func:`is_attention`).

    Example:
        >>> att = torch.nn.MultiheadAttention(8, 2)
        >>> [n for n, _ in att.named_parameters() if weight_kind(att, n)]
        ['in_proj_weight']
    """
    if p_name == "weight":
        kind = layer_kind(module)
        return "linear" if kind is None and is_hf_conv1d(module) else kind
    if p_name in ATTENTION_WEIGHTS and is_attention(module):
        return "linear"
    return None


class LayerWeight(NamedTuple):
    """One layer weight of a model (:func:`layer_weights`)."""

    name: str  # the layer's name: its module's for a ``weight``, else the parameter's
    param_name: str  # the parameter's full name (``named_parameters``)
    kind: str  # "conv" or "linear"
    module: torch.nn.Module
    param: torch.nn.Parameter
    transposed: bool  # stored (in, out): a Hugging Face Conv1D

    def out_in(self) -> Tensor:
        """The weight as ``(out, in, *kernel)``: a view, the transpose where stored
        ``(in, out)``; what every count of output units and input channels reads."""
        return self.param.T if self.transposed else self.param


def layer_weights(model: torch.nn.Module) -> list[LayerWeight]:
    """Every layer weight of ``model`` (:func:`weight_kind`), once, in
    :func:`module_params` order: the one list of what the sparse optimizers' param groups
    penalise (:func:`param_groups`), the metrics count
    (:func:`sparseopt.metrics.density`), the sparse start draws
    (:func:`sparseopt.init.sparse_init_`) and magnitude pruning prunes
    (:func:`sparseopt.baselines.magnitude_masks`, :mod:`sparseopt.prune.masks`). Each
    layer's name is its module's for a ``weight`` (as before attention weights counted)
    and the parameter's full name otherwise (``layers.0.self_attn.in_proj_weight``).

    Example:
        >>> layer = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
        >>> [(w.name, w.kind) for w in layer_weights(layer)]  # doctest: +NORMALIZE_WHITESPACE
        [('self_attn.in_proj_weight', 'linear'), ('self_attn.out_proj', 'linear'),
         ('linear1', 'linear'), ('linear2', 'linear')]
    """
    out = []
    for name, module, p_name, p in module_params(model):
        kind = weight_kind(module, p_name)
        if kind is None:
            continue
        full = f"{name}.{p_name}" if name else p_name
        own = p_name == "weight"
        out.append(
            LayerWeight(name if own else full, full, kind, module, p, own and is_hf_conv1d(module))
        )
    return out


def output_layer(model: torch.nn.Module) -> str | None:
    """The name of ``model``'s output layer: its last Conv/Linear module in
    ``named_modules`` order — registration order, not the order of the forward pass: the
    classifier of every reference model, a language model's head — or ``None`` when it
    has none, when that layer's weight is not a plain parameter of its own (tied to an
    earlier module's, e.g. an embedding, where it is penalised if at all; or
    reparametrised: spectral or weight norm), so that no other layer is taken for it. A
    model that registers its head before its body, or has several heads, is not
    understood: pass ``head_groups="filter"`` to :func:`param_groups` there, or group
    its layers yourself.

    A filter grouping does not group this layer's rows (:func:`param_groups`,
    ``head_groups``, :data:`HEAD_GROUPS`): its outputs are the model's, and a zero row is a
    class the network can no longer tell apart from the others — a collapse, not a
    smaller network.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> output_layer(net)
        '2'
    """
    last: tuple[str, torch.nn.Module] | None = None
    for name, module in model.named_modules():
        if layer_kind(module) is not None:
            last = (name, module)
    if last is None or not isinstance(getattr(last[1], "weight", None), torch.nn.Parameter):
        return None
    own = any(mod is last[1] and n == "weight" for _, mod, n, _ in module_params(model))
    return last[0] if own else None


def param_groups(
    model: torch.nn.Module,
    *,
    penalty: str = "l1",
    lam: float | None = None,
    groups: str | None = None,
    conv_penalty: str | None = None,
    conv_groups: str | None = None,
    conv_lam: float | None = None,
    linear_penalty: str | None = None,
    linear_groups: str | None = None,
    linear_lam: float | None = None,
    a: float | None = None,
    group_weight: str | None = None,
    lam_scale: str = "none",
    exclude: Iterable[str] = (),
    head_groups: str = HEAD_GROUPS,
) -> list[dict[str, Any]]:
    """Param groups for a sparse optimizer: layer weights penalised, the rest not.

    The layer weights are :func:`layer_weights`': the weights of Conv and Linear
    modules, the projection weights of ``nn.MultiheadAttention`` (``in_proj_weight``:
    Linear weights) and Hugging Face ``Conv1D`` weights (Linear weights stored
    ``(in, out)``; elementwise penalties only — a group penalty over them is refused:
    their rows are input features). Conv weights get ``conv_penalty`` (default
    ``penalty``) with ``conv_groups`` (default ``groups``), Linear weights
    ``linear_penalty``/``linear_groups`` likewise; biases, normalisation parameters and every other parameter go to one
    group with penalty ``none``, as do the weights of modules named in ``exclude``
    (exact module names, e.g. ``"classifier.4"``, or layer names as the metrics give them,
    e.g. ``"layers.0.self_attn.in_proj_weight"``). Empty groups are dropped.

    A group penalty (``group_l1``, ``group_l0``) without a grouping uses ``filter``
    (output channels / neurons). A filter grouping skips the model's output layer
    (:func:`output_layer`): its rows are the model's outputs — the classes — and a zero
    row cannot be removed, only make the network blind to a class (round 53 of
    docs/recipes.md: RVSM's group ℓ1 emptied both rows of the words CNN's two-class head;
    grouped by its inputs it learned there, round 56). That layer gets a group of its own
    whose grouping is ``head_groups``: ``"channel"`` (:data:`HEAD_GROUPS`) groups its
    input features — the
    structure a filter-pruned layer before it loses, as structured pruning keeps a
    classifier's outputs and prunes its inputs; ``"filter"`` groups its rows like every
    other layer (the behaviour before 2026-11-28).

    ``lam`` (and ``conv_lam``/``linear_lam``) left at ``None`` leaves the group's λ to
    the optimizer, which takes its registry recipe's λ of the group's penalty
    (:mod:`sparseopt.optim.registry`, the one source of every default).

    ``lam_scale="layer"`` gives every penalised layer a group of its own with the same
    λ (one λ per layer for a per-layer controller to move: the same iterates as
    ``"none"`` while λ is fixed). ``lam_scale="fan_in"`` gives every penalised layer a
    group of its own with λ times
    the layer's factor (:func:`layer_lam_factors`: in proportion to its weights' He
    scale, mean 1 over the weights of the layers that share a penalty), kept in the
    group as ``lam_factor``; the run's λ is then the factor-free one (:func:`base_lam`,
    and what ``set_lam`` takes). A λ left to the optimizer (``None``)
    cannot be scaled: give ``lam`` (:func:`sparseopt.create_optimizer` fills the recipe's).

    Every group carries a ``name`` key (``"conv"``, ``"linear"``, ``"unpenalised"``)
    and ``param_names`` (plain strings), which ``torch.optim`` keeps in ``state_dict``; a
    group holding Hugging Face ``Conv1D`` weights lists them in ``stored_in_out`` (their
    output units are columns: :data:`STORED_IN_OUT`).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(),
        ...                           torch.nn.Linear(4 * 6 * 6, 10))
        >>> [(g["name"], g["penalty"], len(g["params"])) for g in param_groups(
        ...     net, penalty="l1", conv_penalty="group_l1", conv_groups="kernel")]
        [('conv', 'group_l1', 1), ('linear', 'l1', 1), ('unpenalised', 'none', 2)]
    """
    check_lam_scale(lam_scale)
    check_head_groups(head_groups)  # filter or channel, or the one-line error
    excluded = set(exclude)
    weights = layer_weights(model)
    known = {name for name, _ in model.named_modules()} | {w.name for w in weights}
    unknown = excluded - known
    if unknown:
        raise ValueError(
            f"Invalid exclude value: no module or layer named {sorted(unknown)} in the model"
        )
    settings = {
        "conv": (
            conv_penalty or penalty,
            conv_groups or groups,
            lam if conv_lam is None else conv_lam,
        ),
        "linear": (
            linear_penalty or penalty,
            linear_groups or groups,
            lam if linear_lam is None else linear_lam,
        ),
    }
    buckets: dict[str, list[tuple[str, torch.nn.Parameter]]] = {
        "conv": [],
        "linear": [],
        "unpenalised": [],
    }
    head_module = output_layer(model)
    head = None if head_module is None else (f"{head_module}.weight" if head_module else "weight")
    layers = {w.param_name: w for w in weights}  # the weights penalised
    for mod_name, _module, p_name, p in module_params(model):
        full = f"{mod_name}.{p_name}" if mod_name else p_name
        # excluded by its module's name, or by its layer's (an attention's projection)
        if full in layers and not {mod_name, layers[full].name} & excluded:
            buckets[layers[full].kind].append((full, p))
        else:
            buckets["unpenalised"].append((full, p))
    for kind in ("conv", "linear"):
        pen = settings[kind][0]
        flipped = [n for n, _ in buckets[kind] if layers[n].transposed]
        if flipped and pen.startswith("group_"):
            raise ValueError(
                f"Invalid groups value: {flipped[0]!r} is a Hugging Face Conv1D weight, "
                "stored (in, out), whose rows are not its output units; penalise it "
                "elementwise (no groups), or group its heads and neurons with "
                "sparseopt.coupled (coupled_param_groups; docs/transformers.md)"
            )
    out: list[dict[str, Any]] = []
    factors: dict[str, float] = {}
    if lam_scale == "fan_in":
        # the penalised layers only, normalised among those that share a penalty
        kinds = [k for k in ("conv", "linear") if settings[k][0] != "none" and buckets[k]]
        missing = [k for k in kinds if settings[k][2] is None]
        if missing:
            raise ValueError(
                f"Invalid lam_scale value: 'fan_in' scales a given λ and the {missing[0]} "
                "weights have none; pass lam (or conv_lam/linear_lam), e.g. through "
                "sparseopt.create_optimizer, which fills the recipe's"
            )
        for pen in {settings[k][0] for k in kinds}:
            same = [(n, p) for k in kinds if settings[k][0] == pen for n, p in buckets[k]]
            # fan-in from each weight's (out, in) view (a Conv1D's transpose)
            c = layer_lam_factors([layers[n].out_in() for n, _ in same], [pen] * len(same))
            factors.update({n: f for (n, _), f in zip(same, c, strict=True)})
    for kind in ("conv", "linear"):
        if not buckets[kind]:
            continue
        pen, grp, lam_k = settings[kind]
        if pen.startswith("group_") and grp is None:
            grp = "filter"
        # one group per kind, or one per layer ("fan_in": with its λ factor)
        per_layer = pen != "none" and lam_scale != "none"
        chunks = [[np_] for np_ in buckets[kind]] if per_layer else [buckets[kind]]
        split = head is not None and pen.startswith("group_") and grp is not None
        split = split and canonical_grouping(grp) == "filter" != canonical_grouping(head_groups)
        if split and any(n == head for n, _ in buckets[kind]):
            # the output layer's rows are the model's outputs: its own group (see above)
            chunks = [
                part
                for chunk in chunks
                for part in (
                    [np_ for np_ in chunk if np_[0] != head],
                    [np_ for np_ in chunk if np_[0] == head],
                )
                if part
            ]
        for chunk in chunks:
            own = split and chunk[0][0] == head
            group: dict[str, Any] = {
                "name": kind,
                "params": [p for _, p in chunk],
                "param_names": [n for n, _ in chunk],
                "penalty": pen,
                "lam": lam_k,
                "groups": head_groups if own else grp,
            }
            flipped = [n for n, _ in chunk if layers[n].transposed]
            if flipped:  # read (out, in) through the transpose (the target-density controller)
                group[STORED_IN_OUT] = flipped
            if per_layer and lam_scale == "fan_in":
                f = factors[chunk[0][0]]
                group["lam"] = float(lam_k) * f  # type: ignore[arg-type]
                group["lam_factor"] = f
            if a is not None:
                group["a"] = a
            if group_weight is not None:
                group["group_weight"] = group_weight
            out.append(group)
    if buckets["unpenalised"]:
        out.append(
            {
                "name": "unpenalised",
                "params": [p for _, p in buckets["unpenalised"]],
                "param_names": [n for n, _ in buckets["unpenalised"]],
                "penalty": "none",
                "lam": 0.0,
                "groups": None,
            }
        )
    return out
