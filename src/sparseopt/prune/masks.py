"""Masks from a chosen support: zeroed state dicts, ``torch.nn.utils.prune`` and fine-tuning.

A *mask set* is a ``dict`` from full parameter names (``"features.conv1.weight"``) to
boolean tensors of the parameter's shape: True where the weight is kept. Masks come from

- the weights themselves (:func:`masks_from_weights`: the nonzero pattern),
- an optimizer's support (:func:`masks_from_optimizer`: e.g. supp Γ for SplitLBI, per
  group for group penalties),
- a point of a recorded solution path (:func:`sparseopt.path.SolutionPath.masks`).

They are exported two ways: as a plain state dict whose masked entries are zero
(:func:`masked_state_dict`, :func:`apply_masks_`) and through PyTorch's pruning
re-parametrisation :func:`torch.nn.utils.prune.custom_from_mask`
(:func:`attach_masks`), which keeps ``weight = weight_orig * weight_mask`` so that the
masked entries stay zero under any optimizer — the "fine-tune with the mask fixed" step
of DessiLBI's *simplify* (Fu et al., ICML 2020, arXiv 2007.02010), done by
:func:`finetune_masked`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from sparseopt.groups import is_attention, is_penalised, layer_weights

__all__ = [
    "Masks",
    "apply_masks_",
    "attach_masks",
    "detach_masks",
    "finetune_masked",
    "masked_state_dict",
    "masks_from_optimizer",
    "masks_from_weights",
    "mask_density",
]

#: Boolean keep-masks by full parameter name.
Masks = dict[str, Tensor]


def _split(name: str) -> tuple[str, str]:
    mod, _, attr = name.rpartition(".")
    return mod, attr


@torch.no_grad()
def masks_from_weights(model: nn.Module) -> Masks:
    """Keep-masks of every layer weight (:func:`sparseopt.groups.layer_weights`: Conv and
    Linear weights, attention projections): its nonzero pattern.

    Example:
        >>> lin = torch.nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     lin.weight[0] = 0
        >>> masks_from_weights(lin)["weight"].tolist()
        [[False, False], [True, True]]
    """
    return {w.param_name: w.param.detach() != 0 for w in layer_weights(model)}


@torch.no_grad()
def masks_from_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer) -> Masks:
    """Keep-masks of the penalised parameters: ``optimizer.support(p)``.

    For SplitLBI this is supp Γ (per group for group penalties), for RVSM the support
    of ``u``, for the other methods the nonzeros of the weights. Parameters in groups
    with penalty ``none`` get no mask (they are kept whole).

    Raises:
        TypeError: if the optimizer has no ``support`` method (a dense baseline).
    """
    support = getattr(optimizer, "support", None)
    if support is None:
        raise TypeError(
            f"{type(optimizer).__name__} has no support(p): masks need a sparseopt optimizer; "
            "use masks_from_weights(model) for a dense one"
        )
    names = {id(p): n for n, p in model.named_parameters()}
    out: Masks = {}
    for group in optimizer.param_groups:
        if not is_penalised(group):
            continue
        for p in group["params"]:
            if id(p) in names:
                out[names[id(p)]] = support(p).detach().clone()
    return out


def mask_density(masks: Mapping[str, Tensor]) -> float:
    """Fraction of True entries over all masks."""
    total = sum(m.numel() for m in masks.values())
    return sum(int(m.sum()) for m in masks.values()) / max(total, 1)


def _check(model: nn.Module, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    params = dict(model.named_parameters())
    for name, m in masks.items():
        if name not in params:
            raise ValueError(f"Invalid mask name: {name!r} is not a parameter of the model")
        if tuple(m.shape) != tuple(params[name].shape):
            raise ValueError(
                f"Invalid mask for {name!r}: shape {tuple(m.shape)} != parameter shape "
                f"{tuple(params[name].shape)}"
            )
    return params


@torch.no_grad()
def apply_masks_(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """Zero the masked-out entries of the parameters in place; return ``model``.

    Raises:
        ValueError: a mask names no parameter or has the wrong shape.
    """
    params = _check(model, masks)
    for name, m in masks.items():
        p = params[name]
        p.masked_fill_(~m.to(device=p.device, dtype=torch.bool), 0.0)
    return model


@torch.no_grad()
def masked_state_dict(model: nn.Module, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A copy of ``model.state_dict()`` with the masked-out weights zeroed (model untouched).

    Example:
        >>> lin = torch.nn.Linear(2, 1)
        >>> sd = masked_state_dict(lin, {"weight": torch.tensor([[True, False]])})
        >>> float(sd["weight"][0, 1])
        0.0
    """
    _check(model, masks)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, m in masks.items():
        sd[name].masked_fill_(~m.to(device=sd[name].device, dtype=torch.bool), 0.0)
    return sd


def attach_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """Re-parametrise every masked parameter with :func:`torch.nn.utils.prune.custom_from_mask`.

    Afterwards ``module.weight = module.weight_orig * module.weight_mask`` is recomputed
    on every forward, so the masked entries stay exactly zero whatever the optimizer
    does to ``weight_orig`` (optimizers must be built *after* attaching, on
    ``model.parameters()``). :func:`detach_masks` makes the masks permanent.

    Example:
        >>> lin = torch.nn.Linear(2, 1)
        >>> _ = attach_masks(lin, {"weight": torch.tensor([[True, False]])})
        >>> hasattr(lin, "weight_orig"), bool(lin.weight[0, 1] == 0)
        (True, True)
    """
    _check(model, masks)
    modules = dict(model.named_modules())
    for name, m in masks.items():
        mod_name, attr = _split(name)
        module = modules[mod_name]
        torch_prune.custom_from_mask(module, attr, m.to(device=getattr(module, attr).device))
    return model


def detach_masks(model: nn.Module) -> nn.Module:
    """Undo :func:`attach_masks`, keeping the masked values (``torch.nn.utils.prune.remove``)."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
    return model


def finetune_masked(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    batches: Callable[[], Iterable[tuple[Tensor, Tensor]]] | Iterable[tuple[Tensor, Tensor]],
    *,
    epochs: int = 1,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    device: torch.device | str | None = None,
) -> list[float]:
    """Fine-tune ``model`` with SGD while the masked-out weights stay zero.

    The masks are attached with :func:`attach_masks` for the duration and made
    permanent at the end, so the returned model has exactly the masks' support (or a
    subset of it). An attention's output projection is read by the attention without a
    call of its module (``nn.MultiheadAttention``), so no mask can be attached there: its
    weight is masked again after every step instead. This is the last step of DessiLBI's *simplify*: keep the weights in
    the chosen support and retrain them.

    Args:
        model: the network (trained in place).
        masks: keep-masks by parameter name.
        batches: an iterable of ``(x, y)`` batches (e.g. a ``DataLoader``), or a
            callable returning a fresh one per epoch.
        epochs: passes over ``batches``.
        lr, momentum, weight_decay: SGD hyperparameters.
        loss_fn: ``loss_fn(output, target)`` (default cross-entropy).
        device: where to train (default: the model's device).

    Returns:
        The mean training loss of each epoch.
    """
    loss_fn = loss_fn or nn.functional.cross_entropy
    if device is None:
        p0 = next(model.parameters(), None)
        device = p0.device if p0 is not None else torch.device("cpu")
    unread = {  # weights whose module the forward pass never calls
        f"{n}.out_proj.weight" if n else "out_proj.weight"
        for n, m in model.named_modules()
        if is_attention(m)
    }
    _check(model, masks)  # every mask, also those applied after each step
    direct = {k: v for k, v in masks.items() if k in unread}
    params = dict(model.named_parameters())
    direct_params = [(params[k], v.to(params[k].device)) for k, v in direct.items() if k in params]
    attach_masks(model, {k: v for k, v in masks.items() if k not in unread})
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)

    def remask() -> None:
        with torch.no_grad():
            for p, keep in direct_params:
                p.mul_(keep)

    remask()
    losses: list[float] = []
    was_training = model.training
    model.train()
    try:
        for _ in range(epochs):
            total, count = 0.0, 0
            data: Any = batches() if callable(batches) else batches
            for x, y in data:
                x, y = x.to(device), y.to(device)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
                remask()
                total += float(loss.detach()) * len(x)
                count += len(x)
            losses.append(total / max(count, 1))
    finally:
        model.train(was_training)
        detach_masks(model)
    return losses
