r"""Sparse initialisation (Bungert, Roith, Tenbrinck & Burger, JMLR 2022, §4.1).

Bregman iterations follow an *inverse scale space*: they start sparse and let
weights enter the support over training. Their natural start is a sparse
network: for each Conv/Linear weight draw a mask :math:`M\sim\text{Bernoulli}(r)`
(elementwise, or per group so whole filters/channels are on or off) and set

.. math::
    W = \tilde W \odot M,\qquad \tilde W \sim \mathcal N\big(0,\ 2/(\text{fan\_in}\cdot r)\big),

i.e. He (Kaiming-normal) scaling divided by the density :math:`r`, so the
variance of each pre-activation matches the dense He initialisation. Biases and
every other parameter are left as they are (dense).

A layer whose draw comes out empty (likely when it has fewer than about :math:`1/r`
groups: the first convolution of a ConvNet has 64 kernels, empty with probability
:math:`0.99^{64}\approx 0.53` at :math:`r = 0.01`) gets one group switched on, chosen
uniformly, so that no layer disconnects the network at the start: an all-zero layer
passes only its bias, and with AdaBreg's normalised bias steps the next ReLUs can die
before any weight enters the support (observed on the Fashion-MNIST ConvNet with
kernel groups). Non-empty draws are left untouched.

Reference: original code at github.com/TimRoith/BregmanLearning.
"""

from __future__ import annotations

import math

import torch

from sparseopt._validation import check_unit_interval
from sparseopt.groups import group_dims

__all__ = ["sparse_init_"]


@torch.no_grad()
def sparse_init_(
    model: torch.nn.Module,
    density: float = 0.01,
    *,
    groups: str | None = None,
    conv_groups: str | None = None,
    linear_groups: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.nn.Module:
    r"""Sparsely initialise every Conv/Linear weight of ``model`` in place.

    Args:
        model: the network; its Conv and Linear weights are overwritten.
        density: probability :math:`r\in(0,1]` that an entry (or group) is nonzero.
        groups: draw the mask per group (``filter``, ``channel``, ``kernel``...) instead
            of elementwise; ``conv_groups``/``linear_groups`` override it per layer type
            (``kernel`` applies to convs only).
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
    for module in model.modules():
        if isinstance(module, torch.nn.modules.conv._ConvNd):
            grp = conv_groups or groups
        elif isinstance(module, torch.nn.Linear):
            grp = linear_groups or groups
            if grp == "kernel":
                grp = None
        else:
            continue
        w = module.weight
        fan_in = math.prod(w.shape[1:])
        std = math.sqrt(2.0 / (fan_in * r))
        values = torch.randn(w.shape, generator=generator, dtype=w.dtype, device="cpu") * std
        if grp is None:
            mask_shape = w.shape
        else:
            dims = group_dims(w.ndim, grp)
            mask_shape = tuple(1 if d in dims else s for d, s in enumerate(w.shape))
        mask = torch.rand(mask_shape, generator=generator, device="cpu") < r
        if not bool(mask.any()):  # keep every layer connected: one group on
            pick = torch.randint(mask.numel(), (1,), generator=generator, device="cpu")
            mask.view(-1)[pick] = True
        w.copy_((values * mask).to(w.device))
    return model
