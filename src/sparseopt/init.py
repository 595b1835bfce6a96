r"""Sparse initialisation (Bungert, Roith, Tenbrinck & Burger, JMLR 2022, §4.1).

Bregman iterations follow an *inverse scale space*: they start sparse and let
weights enter the support over training. Their natural start is a sparse
network: for each layer weight (Conv, Linear, attention projections:
:func:`sparseopt.groups.layer_weights`) draw a mask :math:`M\sim\text{Bernoulli}(r_l)`
(elementwise, or per group so whole filters/channels are on or off) and set

.. math::
    W = \tilde W \odot M,\qquad \tilde W_{i\cdot} \sim \mathcal N\big(0,\ 2/n_i\big),

with :math:`n_i` the number of nonzero entries of output unit :math:`i` (its *realised*
fan-in: the row of a Linear weight, the filter of a convolution, after the draw and the
floor below). This is He (Kaiming-normal) initialisation of the sparse layer as drawn:
the variance of every unit's pre-activation equals the dense He initialisation's,
:math:`2\,\mathbb E[x^2]`, for each unit and each draw, not only on average. The paper
(``scale="density"``) uses :math:`\tilde W \sim \mathcal N(0,\ 2/(\text{fan\_in}\cdot r_l))`,
which matches only in expectation over the draw and not at all for the units the floor
fills (one entry where :math:`\text{fan\_in}\cdot r_l < 1`): on Fashion-MNIST at 1 %
it starts the ConvNet at a cross-entropy of 20.0 and LeNet-5 at 23.9 (dense: 2.3; mean
over seeds 0–7, ``benchmarks/init_scale.py --seeds 8``), the realised scaling at 3.6 and
3.9. Biases and every other parameter are left as they are
(dense).

**Layer densities** :math:`r_l` (``distribution``):

- ``uniform``: :math:`r_l = r` for every layer (the paper's choice);
- ``erk``: Erdős–Rényi-kernel densities (Evci et al., "Rigging the Lottery", ICML 2020):
  :math:`r_l = \min(1, \varepsilon\,(\sum_i s_i)/(\prod_i s_i))` for a weight of shape
  :math:`(s_1,\dots,s_k)`, with :math:`\varepsilon` chosen so that the network's
  overall weight density is :math:`r` (layers whose density would exceed 1 are dense
  and the rest is redistributed). Small layers — the first convolution, the
  classifier — get more, large ones less.

**Floor** (``floor=True``, the default): after the draw, every output unit (a row of
a Linear weight, a filter of a convolution) with no nonzero weight gets one, and so
does every input channel that feeds no output, at a uniformly chosen position. A Linear
layer that reads a flattened convolution map (its ``in_features`` is :math:`C k`,
:math:`k > 1`, for the :math:`C` output channels of the convolution before it, with only
per-channel modules and a ``Flatten`` between them in a tree of ``nn.Sequential``:
:func:`flattened_channels`) has the convolution's :math:`C`
channels as its input channels, each reaching it through :math:`k` positions (PyTorch
flattens ``(C, H, W)`` channel-major), as a convolution's input channel reaches it
through its kernel: every channel feeds at least one output through one of its
positions. Covering every position instead puts at least :math:`1/\text{out}` of the
layer's weights on from the start — half of a two-class head (the curve CNN's, on
64 × 4 × 8 features in the words task), which LinBreg and AdaBreg then kept (41–52 % of
that head at the end, against 8–10 % in magnitude pruning at the same density;
docs/recipes.md, round 33). With
a uniform 1 % draw, LeNet-5's first convolution (6 filters of 25 weights) would keep
about 2 of its 6 filters, and a Bregman method never revives a filter whose dual
variable starts at 0 far below the threshold; a network whose layer is empty passes
only its biases. The floor costs at most :math:`\text{out}+\text{in}` extra entries
per layer. For masks drawn per ``filter`` or ``channel`` group a floor would make the
layer dense, so there one group is switched on when the draw is empty (the rule for
``floor=False`` too); ``kernel`` groups (one per output/input pair) get the floor on
the kernel grid.

Reference: original code at github.com/TimRoith/BregmanLearning.
"""

from __future__ import annotations

import math

import torch

from sparseopt._sequential import leaves, next_layer
from sparseopt._validation import check_unit_interval
from sparseopt.groups import (
    HEAD_GROUPS,
    canonical_grouping,
    check_head_groups,
    group_dims,
    layer_weights,
    output_layer,
)

__all__ = [
    "DISTRIBUTIONS",
    "ELEMENTWISE",
    "SCALES",
    "erk_densities",
    "flattened_channels",
    "layer_floor_",
    "sparse_init_",
]

#: The ``groups`` of :func:`sparse_init_` that draws each entry on its own (as ``None``):
#: a run's ``init_groups`` says it where its config would otherwise draw per group.
ELEMENTWISE = "elementwise"

#: Layer-density rules of :func:`sparse_init_`.
DISTRIBUTIONS = ("uniform", "erk")

#: Variance rules of :func:`sparse_init_`: He over the realised fan-in of each unit
#: (``"fan_in"``, the default) or over the expected one, ``fan_in * r`` (``"density"``, the paper's).
SCALES = ("fan_in", "density")


def flattened_channels(model: torch.nn.Module) -> dict[torch.nn.Module, int]:
    """The Linear layers of ``model`` that read a convolution's map flattened, with the
    convolution's number of channels ``C`` (the input channels of their floor).

    In a tree of :class:`torch.nn.Sequential` (every reference architecture but ResNet),
    a Linear layer that follows a convolution with only per-channel modules and a
    ``Flatten`` between them reads each channel's ``k`` positions as one block of its
    ``in_features = C·k`` inputs (the rule :func:`sparseopt.prune.widen` uses,
    ``sparseopt._sequential``). Any other model, or a layer between which something else
    lies, is left out: each of its input features is then a channel of its own.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 2))
        >>> list(flattened_channels(net).values())
        [4]
    """
    try:
        named = leaves(model, "flattened_channels")
    except ValueError:  # not a tree of Sequentials: nothing is assumed
        return {}
    found: dict[torch.nn.Module, int] = {}
    for name, conv in named:
        if not isinstance(conv, torch.nn.modules.conv._ConvNd):
            continue
        try:
            chain = next_layer(named, name)
        except ValueError:
            continue
        fan, c = getattr(chain.nxt, "in_features", 0), conv.out_channels
        if chain.flatten and isinstance(chain.nxt, torch.nn.Linear) and fan > c and fan % c == 0:
            found[chain.nxt] = c
    return found


def erk_densities(shapes: list[tuple[int, ...]], density: float) -> list[float]:
    r"""Erdős–Rényi-kernel layer densities with overall density ``density``.

    Args:
        shapes: the weight shapes ``(out, in, *kernel)``.
        density: the requested fraction :math:`r` of nonzero weights over all layers.

    Returns:
        One density in (0, 1] per shape; :math:`\sum_l r_l n_l = r \sum_l n_l` up to
        rounding (exactly, unless every layer is dense).

    Example:
        >>> [round(d, 3) for d in erk_densities([(6, 1, 5, 5), (120, 400)], 0.05)]
        [0.508, 0.049]
    """
    sizes = [math.prod(s) for s in shapes]
    scores = [sum(s) / math.prod(s) for s in shapes]
    budget = density * sum(sizes)
    dense: set[int] = set()
    while True:
        free = [i for i in range(len(shapes)) if i not in dense]
        rest = budget - sum(sizes[i] for i in dense)
        denom = sum(scores[i] * sizes[i] for i in free)
        if not free or denom <= 0:
            return [1.0] * len(shapes)
        eps = rest / denom
        over = [i for i in free if eps * scores[i] > 1.0]
        if not over:
            return [1.0 if i in dense else max(eps * scores[i], 0.0) for i in range(len(shapes))]
        dense.update(over)


@torch.no_grad()
def layer_floor_(mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Give every output unit (dim 0) and input channel (dim 1) of ``mask`` one True entry.

    ``mask`` is a boolean tensor of shape ``(out, in, ...)`` (trailing dims may be 1);
    entries are only switched on, at uniformly drawn positions.

    Example:
        >>> m = layer_floor_(torch.zeros(3, 4, dtype=torch.bool), torch.Generator().manual_seed(0))
        >>> bool(m.any(1).all()) and bool(m.any(0).all())
        True
    """
    out, cin = mask.shape[0], mask.shape[1]
    rest = math.prod(mask.shape[2:])
    flat = mask.view(out, cin, rest)
    dead_rows = (~flat.flatten(1).any(1)).nonzero().flatten()
    if len(dead_rows):
        pick = torch.randint(cin * rest, (len(dead_rows),), generator=generator)
        flat.view(out, cin * rest)[dead_rows, pick] = True
    dead_cols = (~flat.transpose(0, 1).flatten(1).any(1)).nonzero().flatten()
    if len(dead_cols):
        pick = torch.randint(out * rest, (len(dead_cols),), generator=generator)
        flat[pick // rest, dead_cols, pick % rest] = True
    return mask


@torch.no_grad()
def sparse_init_(
    model: torch.nn.Module,
    density: float = 0.01,
    *,
    groups: str | None = None,
    conv_groups: str | None = None,
    linear_groups: str | None = None,
    head_groups: str | None = HEAD_GROUPS,
    distribution: str = "uniform",
    floor: bool = True,
    scale: str = "fan_in",
    generator: torch.Generator | None = None,
) -> torch.nn.Module:
    r"""Sparsely initialise every layer weight of ``model`` in place.

    Args:
        model: the network; its layer weights are overwritten — the weights the sparse
            optimizers penalise (:func:`sparseopt.groups.layer_weights`: Conv and Linear
            weights, ``nn.MultiheadAttention``'s projection weights, Hugging Face
            ``Conv1D`` weights, drawn as ``(out, in)``).
        density: probability :math:`r\in(0,1]` that an entry (or group) is nonzero
            (with ``erk``: the overall weight density).
        groups: draw the mask per group (``filter``, ``channel``, ``kernel``...) instead
            of elementwise (``None`` or :data:`ELEMENTWISE`); ``conv_groups``/
            ``linear_groups`` override it per layer type (``kernel`` applies to convs
            only).
        head_groups: where the draw is per ``filter``, the grouping of the model's output
            layer's draw instead (:func:`sparseopt.groups.output_layer`; default
            :data:`~sparseopt.groups.HEAD_GROUPS`, its inputs: a draw by rows leaves
            classes without a weight, and :func:`sparseopt.groups.param_groups` groups it
            the same way); ``"filter"`` or ``None`` draws it like the other layers.
        distribution: layer densities, ``uniform`` or ``erk`` (see the module docstring).
        floor: give every output unit and input channel at least one nonzero weight
            (elementwise and ``kernel`` masks; a Linear layer reading a flattened
            convolution map has that convolution's channels as input channels; see the
            module docstring).
        scale: ``"fan_in"``: each unit's nonzero weights have variance 2 / (its number of
            nonzero weights); ``"density"``: 2 / (fan_in · r), the paper's rule.
        generator: random generator, for reproducible masks and values.

    Returns:
        ``model``, for chaining.

    Example:
        >>> net = torch.nn.Linear(1000, 100)
        >>> _ = sparse_init_(net, density=0.1, generator=torch.Generator().manual_seed(0))
        >>> round((net.weight != 0).float().mean().item(), 2)
        0.1
    """
    r = check_unit_interval("density", density, closed_right=True)
    if r == 0:
        raise ValueError(f"Invalid density value: {density}; expected a number in (0, 1]")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"Invalid distribution value: {distribution!r}; expected one of {list(DISTRIBUTIONS)}"
        )
    if scale not in SCALES:
        raise ValueError(f"Invalid scale value: {scale!r}; expected one of {list(SCALES)}")
    if head_groups is None:
        head_groups = "filter"
    check_head_groups(head_groups)
    layers = layer_weights(model)  # the weights the optimizers penalise
    head_name = output_layer(model)
    head_weight = None if head_name is None else f"{head_name}.weight" if head_name else "weight"
    # the channels a Linear layer reads through a flattened convolution map (see Floor)
    channels = flattened_channels(model) if floor else {}
    if distribution == "erk":
        rates = erk_densities([tuple(lw.out_in().shape) for lw in layers], r)
    else:
        rates = [r] * len(layers)
    for lw, rate in zip(layers, rates, strict=True):
        module = lw.module
        if lw.kind == "conv":
            grp = conv_groups or groups
        else:
            grp = linear_groups or groups
            if grp == "kernel":
                grp = None
        if grp == ELEMENTWISE:
            grp = None
        if lw.param_name == head_weight and grp is not None and canonical_grouping(grp) == "filter":
            grp = head_groups
        w = lw.out_in()  # (out, in, *kernel): a Conv1D's weight through its transpose
        values = torch.randn(w.shape, generator=generator, dtype=w.dtype, device="cpu")
        dims = () if grp is None else group_dims(w.ndim, grp)
        mask_shape = tuple(1 if d in dims else s for d, s in enumerate(w.shape))
        mask = torch.rand(mask_shape, generator=generator, device="cpu") < rate
        if floor and 0 not in dims and 1 not in dims:  # elementwise or kernel groups
            chans = channels.get(module)
            view = mask if chans is None else mask.view(mask.shape[0], chans, -1)
            layer_floor_(view, generator)
        elif not bool(mask.any()):  # keep every layer connected: one group on
            pick = torch.randint(mask.numel(), (1,), generator=generator, device="cpu")
            mask.view(-1)[pick] = True
        full = mask.expand(w.shape)
        if scale == "density":
            std = math.sqrt(2.0 / (math.prod(w.shape[1:]) * rate))
        else:  # He over each unit's realised fan-in (units without weights: any value)
            fan = full.flatten(1).sum(1).clamp_(min=1).to(values.dtype)
            std = (2.0 / fan).sqrt_().view(-1, *([1] * (w.ndim - 1)))
        w.copy_((values * std * full).to(w.device))
    return model
