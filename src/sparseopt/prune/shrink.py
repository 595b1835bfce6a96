"""Physical removal of dead filters, input channels and neurons (*simplify*).

A group-sparse network stores zeros; :func:`shrink` turns it into a smaller **dense**
network that computes the same function, so the MAC savings become real speed-ups.
Coupled layers (a conv and its BatchNorm, the next layer's input channels, the
flattened features of a Linear, every layer on a ResNet residual stream) are found with
Torch-Pruning's dependency graph (Fang, Ma, Song, Mi, Wang, "DepGraph: Towards Any
Structural Pruning", CVPR 2023, arXiv 2301.12900; github.com/VainF/Torch-Pruning):
``DependencyGraph().build_dependency(model, example_inputs)`` and, per group of coupled
channels, ``get_pruning_group(layer, prune_*_out_channels, idxs).prune()``.

**When is a channel dead?** Let channel :math:`i` of a pruning group be produced by the
Conv/Linear layers :math:`P` (their output channel / row :math:`i`) and consumed by the
layers :math:`C` (their input channel / column :math:`i`; after a ``Flatten``, the
block of features of channel :math:`i`). Between them only channel-wise operations may
occur (BatchNorm, activations, pooling, flatten, residual additions within the group).
Channel :math:`i` is removed, exactly, in two cases:

1. **unused** — every consumer's weights on it are zero: :math:`W_c[:, i] = 0` for all
   :math:`c \\in C`. Whatever the channel carries, it contributes nothing.
2. **constant** — every producer's weights on it are zero: :math:`W_p[i] = 0` for all
   :math:`p \\in P`. The channel is then *not* zero in general: it carries the constant
   :math:`a_i = \\phi(\\ldots\\phi(b_i)\\ldots)` obtained by pushing the bias through the
   channel-wise chain (e.g. :math:`\\mathrm{ReLU}(\\gamma (b_i-\\mu)/\\sigma + \\beta)` for
   conv-BN-ReLU, in eval mode). Its contribution to a consumer is folded into the
   consumer's bias,

   .. math::
       b_c \\leftarrow b_c + \\sum_{\\text{taps}} W_c[:, i, \\ldots]\\, a_i ,

   which is exact for a Linear consumer and for a convolution without zero padding
   (or with ``padding_mode`` other than ``"zeros"``): there every output position sees
   the whole kernel over constant inputs. A zero-padded convolution sees zeros at the
   border instead, so the contribution is not a constant: such a channel is removed
   only if :math:`a_i = 0` (e.g. the ReLU clips it), and otherwise **kept** (counted in
   :attr:`ShrinkPlan.kept_constant`). A consumer without a bias gets one.

The constants :math:`a_i` are measured, not derived: one forward pass on a random probe
batch records every consumer's input, and a channel counts as constant only if its
value is identical over the batch and all positions (which also guards against any
mixing operation that the rule does not allow). Layers whose output is the network's
output are never shrunk, and a layer keeps at least one channel. Only Conv (``groups=1``), Linear, BatchNorm and parameter-free
channel-wise operations are handled; a group containing anything else is left alone.
Removal happens in eval mode; the result is checked: :attr:`ShrinkResult.max_abs_diff`
is the largest output difference on the probe batch.

The pruning is recorded as a :class:`ShrinkPlan` (plain data, JSON): :func:`apply_plan`
replays it on a freshly built model, so a shrunk state dict can be loaded again.

Example:
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> with torch.no_grad():
    ...     net[0].weight[:5] = 0  # 5 dead neurons (their biases still pass through ReLU)
    >>> res = shrink(net, torch.randn(2, 4))
    >>> res.model[0].out_features, res.max_abs_diff < 1e-6
    (3, True)
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sparseopt._sequential import is_layer
from sparseopt.prune.masks import apply_masks_

__all__ = ["ShrinkPlan", "ShrinkResult", "apply_plan", "shrink"]


@dataclass
class ShrinkPlan:
    """What :func:`shrink` did, as plain data (JSON round trip with ``to_dict``/``from_dict``).

    Attributes:
        history: Torch-Pruning's pruning history, ``[module_name, is_out_channel, idxs]``
            per pruned group (replayable with ``DependencyGraph.load_pruning_history``).
        added_bias: names of modules that got a bias to absorb folded constants.
        removed: per root layer, how many output channels / neurons were removed.
        kept_constant: per root layer, weight-dead channels kept because their nonzero
            constant feeds a zero-padded convolution. (When every channel of a layer
            is removable, one is kept anyway so that no layer becomes empty.)
        widths: per root layer, ``[before, after]`` output widths.
        folded: number of (channel, consumer) constants folded into biases.
    """

    history: list[list[Any]] = field(default_factory=list)
    added_bias: list[str] = field(default_factory=list)
    removed: dict[str, int] = field(default_factory=dict)
    kept_constant: dict[str, int] = field(default_factory=dict)
    widths: dict[str, list[int]] = field(default_factory=dict)
    folded: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-data dict."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShrinkPlan:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the plan as JSON (atomically: a temporary file, then renamed)."""
        from sparseopt.prune._files import atomic_write

        text = json.dumps(self.to_dict(), indent=1)
        return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ShrinkPlan:
        """Read a plan written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass
class ShrinkResult:
    """The shrunk model, the plan and the output check.

    Attributes:
        model: the smaller dense model (in the training mode of the input model).
        plan: the :class:`ShrinkPlan`.
        max_abs_diff: max |masked(x) − shrunk(x)| over a random probe batch (eval mode);
            NaN when an output is not finite, so that ``max_abs_diff <= tol`` fails.
    """

    model: nn.Module
    plan: ShrinkPlan
    max_abs_diff: float


def _is_conv(m: Any) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd)


def _foldable(m: nn.Module) -> bool:
    """Whether a constant input channel's contribution to ``m`` is a constant per output."""
    if isinstance(m, nn.Linear):
        return True
    if not _is_conv(m) or m.groups != 1 or m.transposed:
        return False
    if m.padding_mode != "zeros":
        return True
    pad = m.padding
    if isinstance(pad, str):
        return pad == "valid" or all(k == 1 for k in m.kernel_size)
    return all(int(p) == 0 for p in pad)


def _as_tuple(x: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    return (x,) if isinstance(x, Tensor) else tuple(x)


def _flat_outputs(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat_outputs(o)]
    return []


def _output_layers(model: nn.Module, inputs: tuple[Tensor, ...]) -> list[nn.Module]:
    """Conv/Linear modules whose output tensor is (part of) the model's output."""
    produced: dict[int, nn.Module] = {}
    handles = [
        m.register_forward_hook(lambda mod, _i, o: produced.__setitem__(id(o), mod))
        for m in model.modules()
        if is_layer(m)
    ]
    try:
        with torch.no_grad():
            outs = _flat_outputs(model(*inputs))
    finally:
        for h in handles:
            h.remove()
    return [produced[id(o)] for o in outs if id(o) in produced]


def _probe(
    model: nn.Module, inputs: tuple[Tensor, ...]
) -> tuple[dict[nn.Module, tuple[Tensor, Tensor]], Tensor]:
    """Per Conv/Linear module: (is-constant mask, value) of each input channel; and the output."""
    seen: dict[nn.Module, list[Tensor]] = {}

    def pre_hook(mod: nn.Module, args: tuple[Any, ...]) -> None:
        seen.setdefault(mod, []).append(args[0].detach())

    handles = [m.register_forward_pre_hook(pre_hook) for m in model.modules() if is_layer(m)]
    try:
        with torch.no_grad():
            out = model(*inputs)
    finally:
        for h in handles:
            h.remove()
    result: dict[nn.Module, tuple[Tensor, Tensor]] = {}
    for mod, xs in seen.items():
        x = xs[0]
        xf = (
            x.transpose(0, 1).reshape(x.shape[1], -1)
            if _is_conv(mod)
            else x.reshape(-1, x.shape[-1]).T
        )
        const = (xf == xf[:, :1]).all(1)
        if len(xs) > 1:  # called more than once (weight sharing): never fold
            const = torch.zeros_like(const)
        result[mod] = (const, xf[:, 0].clone())
    outs = _flat_outputs(out)
    return result, torch.cat([o.reshape(-1) for o in outs]) if outs else torch.zeros(0)


def _rows_zero(w: Tensor) -> Tensor:
    return (w.detach().flatten(1) == 0).all(1)


def _cols_zero(w: Tensor) -> Tensor:
    return (w.detach().transpose(0, 1).flatten(1) == 0).all(1)


def _module_of(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name) if name else model


def _add_bias(module: nn.Module) -> None:
    w = module.weight
    module.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device))


@torch.no_grad()
def _probe_batch(inputs: tuple[Tensor, ...], seed: int) -> tuple[Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for x in inputs:
        if not x.is_floating_point():
            out.append(x)
            continue
        shape = (max(2, x.shape[0]), *x.shape[1:]) if x.ndim > 0 else x.shape
        out.append(torch.randn(shape, generator=gen, dtype=x.dtype).to(x.device))
    return tuple(out)


def shrink(
    model: nn.Module,
    example_inputs: Tensor | Sequence[Tensor],
    *,
    masks: dict[str, Tensor] | None = None,
    ignored_layers: Iterable[nn.Module | str] = (),
    inplace: bool = False,
    seed: int = 0,
) -> ShrinkResult:
    """Remove dead filters / input channels / neurons, keeping the function exactly.

    See the module docstring for the rule. The model is first masked (``masks``, if
    given), put in eval mode for the analysis and the removal, and returned in its
    original mode.

    Args:
        model: the (group-)sparse network; copied unless ``inplace``.
        example_inputs: a batch for tracing (its shape and dtype are used; a random
            probe batch of that shape, at least 2 samples, checks constancy).
        masks: keep-masks by parameter name applied before shrinking.
        ignored_layers: modules (or their names) never shrunk as roots, on top of the
            output layers.
        inplace: shrink ``model`` itself.
        seed: seed of the probe batch.

    Returns:
        A :class:`ShrinkResult` (model, plan, output check).

    Raises:
        ImportError: Torch-Pruning is not installed (``pip install torch-pruning``).
    """
    try:
        import torch_pruning as tp
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "shrink needs Torch-Pruning: pip install torch-pruning (or 'sparseopt[cli]')"
        ) from err

    m = model if inplace else copy.deepcopy(model)
    if masks:
        apply_masks_(m, masks)
    inputs = _as_tuple(example_inputs)
    was_training = m.training
    m.eval()
    names = {mod: n for n, mod in m.named_modules()}
    ignored = [_module_of(m, x) if isinstance(x, str) else x for x in ignored_layers]
    ignored += _output_layers(m, inputs)
    probe = _probe_batch(inputs, seed)
    consts, before = _probe(m, probe)

    with torch.enable_grad():
        dg = tp.DependencyGraph().build_dependency(m, example_inputs=inputs, verbose=False)
    allowed = {tp.ops.OPTYPE.CONV, tp.ops.OPTYPE.LINEAR, tp.ops.OPTYPE.BN}
    allowed |= {tp.ops.OPTYPE.ELEMENTWISE, tp.ops.OPTYPE.RESHAPE, tp.ops.OPTYPE.PRELU}
    plan = ShrinkPlan()
    decisions: list[tuple[nn.Module, Any, list[int]]] = []
    bias_delta: dict[nn.Module, Tensor] = {}
    groups = list(
        dg.get_all_groups(
            ignored_layers=ignored, root_module_types=(nn.modules.conv._ConvNd, nn.Linear)
        )
    )
    for group in groups:
        items = list(group.items)
        root_module, root_handler = items[0].dep.target.module, items[0].dep.handler
        n = len(items[0].idxs)
        ok = True
        for it in items:
            t = it.dep.target.type
            mod = it.dep.target.module
            if t not in allowed or (_is_conv(mod) and (mod.groups != 1 or mod.transposed)):
                ok = False
        if not ok:
            continue
        dead_rows = torch.ones(n, dtype=torch.bool)
        unused = torch.ones(n, dtype=torch.bool)
        fold_ok = torch.ones(n, dtype=torch.bool)
        n_prod = n_cons = 0
        folds: list[tuple[nn.Module, Tensor, Tensor, Tensor]] = []
        for it in items:
            mod, handler = it.dep.target.module, it.dep.handler
            if not is_layer(mod):
                continue
            idxs = torch.as_tensor(list(it.idxs), dtype=torch.long)
            roots = torch.as_tensor(list(it.root_idxs), dtype=torch.long)
            if dg.is_out_channel_pruning_fn(handler):
                n_prod += 1
                dead_rows[roots[~_rows_zero(mod.weight)[idxs]]] = False
            elif dg.is_in_channel_pruning_fn(handler):
                n_cons += 1
                unused[roots[~_cols_zero(mod.weight)[idxs]]] = False
                const, val = consts.get(mod, (None, None))
                if const is None:
                    fold_ok[roots] = False
                    continue
                c, v = const[idxs], val[idxs]
                good = c & ((v == 0) | _foldable(mod))
                fold_ok[roots[~good]] = False
                folds.append((mod, idxs, v, roots))
        if n_prod == 0 or n_cons == 0:
            continue
        constant = dead_rows & fold_ok
        remove = unused | constant
        name = names.get(root_module, "?")
        plan.kept_constant[name] = int((dead_rows & ~remove).sum())
        if bool(remove.all()):  # keep one channel: layers must not become empty
            remove[int(torch.nonzero(remove)[0])] = False
        plan.removed[name] = int(remove.sum())
        plan.widths[name] = [n, n - int(remove.sum())]
        if not bool(remove.any()):
            continue
        for mod, idxs, v, roots in folds:
            sel = remove[roots] & (v != 0) & ~unused[roots]
            if not bool(sel.any()):
                continue
            w = mod.weight.detach()
            cols = w[:, idxs[sel]]  # (out, k, *kernel)
            contrib = (cols.flatten(2).sum(2) if cols.ndim > 2 else cols) @ v[sel].to(w.dtype)
            bias_delta[mod] = bias_delta.get(mod, torch.zeros_like(contrib)) + contrib
            plan.folded += int(sel.sum())
        decisions.append((root_module, root_handler, torch.nonzero(remove).flatten().tolist()))

    with torch.no_grad():
        for mod, delta in bias_delta.items():
            if mod.bias is None:
                _add_bias(mod)
                plan.added_bias.append(names[mod])
            mod.bias.add_(delta)
    for root_module, handler, idxs in decisions:
        dg.get_pruning_group(root_module, handler, idxs).prune()
    plan.history = [[str(a), bool(b), [int(i) for i in c]] for a, b, c in dg.pruning_history()]
    _, after = _probe(m, probe)
    if before.shape != after.shape or not before.numel():
        diff = float("inf")
    elif not (bool(torch.isfinite(before).all()) and bool(torch.isfinite(after).all())):
        diff = float("nan")  # equal NaNs are no evidence of equal functions
    else:
        diff = float((before - after).abs().max())
    m.train(was_training)
    return ShrinkResult(m, plan, diff)


def apply_plan(
    model: nn.Module, plan: ShrinkPlan, example_inputs: Tensor | Sequence[Tensor]
) -> nn.Module:
    """Replay a :class:`ShrinkPlan` on a freshly built model (in place), e.g. to load a
    shrunk state dict.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> with torch.no_grad():
        ...     net[0].weight[:5] = 0
        >>> res = shrink(net, torch.randn(2, 4))
        >>> fresh = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> _ = apply_plan(fresh, res.plan, torch.randn(2, 4))
        >>> fresh.load_state_dict(res.model.state_dict())
        <All keys matched successfully>
    """
    import torch_pruning as tp

    for name in plan.added_bias:
        mod = _module_of(model, name)
        if mod.bias is None:
            _add_bias(mod)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            dg = tp.DependencyGraph().build_dependency(
                model, example_inputs=_as_tuple(example_inputs), verbose=False
            )
        dg.load_pruning_history([list(h) for h in plan.history])
    finally:
        model.train(was_training)
    return model
