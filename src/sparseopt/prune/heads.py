r"""Physical removal of dead attention heads and MLP neurons (coupled groups).

A coupled group (:mod:`sparseopt.coupled`) whose joint norm is zero contributes
nothing: a dead head has zero query, key and value rows *and* biases, so its values
are 0 and so is its output, whatever the attention pattern; its output-projection
columns are zero anyway. A dead neuron's down-projection column is zero, so its
activation never reaches the output. Removing those slices is therefore exact: the
shrunk model computes the masked model's function (up to floating-point reordering).

:func:`shrink_coupled` narrows the layers of every set:

- every slice is cut with ``index_select`` on the kept blocks (chunk by chunk for
  fused ``c_attn`` / ``in_proj_weight``), and ``nn.Linear`` / HF ``Conv1D`` width
  attributes are updated;
- BERT- and Llama-style attention compute the head count from the projection width
  (``view(..., -1, head_dim)``), so nothing else changes (a Llama group is one
  key/value head with its query heads, so ``num_key_value_groups`` is unchanged);
  ``num_attention_heads`` / ``all_head_size`` / ``num_heads`` attributes are updated
  where a module has them;
- GPT-2 attention gets ``split_size`` (the width ``c_attn`` output is split at) and
  ``num_heads``;
- ``nn.MultiheadAttention`` assumes ``num_heads · head_dim = embed_dim``, so it is
  replaced by :class:`PrunedMultiheadAttention`, the same computation with fewer heads
  (it keeps ``batch_first`` and accepts the same call, as ``nn.TransformerEncoderLayer``
  makes it).

Hugging Face's own ``prune_heads`` was removed in transformers 5, and Torch-Pruning's
dependency graph does not follow the reshape into heads, so the rebuild is ours.
A set keeps at least one group (a zero one if all are dead: removing the last head
would leave an empty ``view(..., -1, head_dim)``).

Example:
    >>> from sparseopt.coupled import detect_coupled_groups, zero_groups_
    >>> layer = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True)
    >>> sets = detect_coupled_groups(layer.eval())
    >>> zero_groups_(layer, sets[1], [0])  # head 0
    >>> x = torch.randn(2, 5, 8)
    >>> res = shrink_coupled(layer, sets, x)
    >>> res.removed, res.max_abs_diff < 1e-5
    ({'neurons': 0, 'self_attn.heads': 1}, True)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparseopt.coupled import (
    CoupledGroups,
    Slice,
    coupled_norms,
    packed_groups,
    unpack_coupled,
)
from sparseopt.groups import is_hf_conv1d

__all__ = ["CoupledShrinkResult", "PrunedMultiheadAttention", "shrink_coupled"]


@dataclass
class CoupledShrinkResult:
    """What :func:`shrink_coupled` did.

    Attributes:
        model: the shrunk model (a new one unless ``inplace=True``).
        sets: the coupled sets of the shrunk model (``num_groups`` updated).
        kept: per set name, the indices (in the original) of the groups kept.
        removed: per set name, the number of groups removed.
        max_abs_diff: largest output difference against the input model on the probe
            inputs (``nan`` without inputs).
    """

    model: nn.Module
    sets: list[CoupledGroups]
    kept: dict[str, list[int]] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    max_abs_diff: float = math.nan


class PrunedMultiheadAttention(nn.Module):
    r"""``nn.MultiheadAttention`` with ``num_heads`` heads of ``head_dim`` each, any ``embed_dim``.

    :math:`\mathrm{out} = W_o\,\mathrm{concat}_h\,\mathrm{softmax}(Q_hK_h^\top/\sqrt{d} + M)V_h + b_o`
    with :math:`Q = xW_q^\top + b_q` etc. and :math:`W_q\in\mathbb R^{hd\times E}`. Same call
    signature and return values as ``nn.MultiheadAttention`` (``need_weights`` returns the
    head-averaged weights unless ``average_attn_weights=False``: after pruning, the
    average of the remaining heads, not the original one); dropout on the
    attention weights in training mode. ``_qkv_same_embed_dim`` is ``False`` so that
    ``nn.TransformerEncoderLayer`` never takes its fused fast path (which needs
    ``num_heads · head_dim = embed_dim``).
    """

    _qkv_same_embed_dim = False

    def __init__(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        in_bias: Tensor | None,
        out_proj: nn.Linear,
        *,
        head_dim: int,
        dropout: float = 0.0,
        batch_first: bool = False,
    ) -> None:
        super().__init__()
        self.embed_dim = out_proj.out_features
        self.head_dim = head_dim
        self.num_heads = q.shape[0] // head_dim
        self.dropout = dropout
        self.batch_first = batch_first
        self.q_proj_weight = nn.Parameter(q)
        self.k_proj_weight = nn.Parameter(k)
        self.v_proj_weight = nn.Parameter(v)
        self.in_proj_bias = None if in_bias is None else nn.Parameter(in_bias)
        self.out_proj = out_proj

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """As ``nn.MultiheadAttention.forward``."""
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        # now (L, N, E)
        lq, n, _ = query.shape
        ls = key.shape[0]
        bq = bk = bv = None
        if self.in_proj_bias is not None:
            bq, bk, bv = self.in_proj_bias.chunk(3)
        h, d = self.num_heads, self.head_dim

        def heads(x: Tensor, w: Tensor, b: Tensor | None, length: int) -> Tensor:
            return F.linear(x, w, b).reshape(length, n, h, d).permute(1, 2, 0, 3)  # N,h,L,d

        q = heads(query, self.q_proj_weight, bq, lq)
        k = heads(key, self.k_proj_weight, bk, ls)
        v = heads(value, self.v_proj_weight, bv, ls)
        if is_causal and attn_mask is None:
            attn_mask = torch.ones(lq, ls, dtype=torch.bool, device=q.device).tril().logical_not()
        mask = torch.zeros(n, 1, lq, ls, dtype=q.dtype, device=q.device)
        if attn_mask is not None:
            am = attn_mask
            am = am.reshape(n, h, lq, ls) if am.dim() == 3 else am.reshape(1, 1, lq, ls)
            mask = mask + (
                torch.zeros_like(am, dtype=q.dtype).masked_fill(am, float("-inf"))
                if am.dtype == torch.bool
                else am.to(q.dtype)
            )
        if key_padding_mask is not None:
            kpm = key_padding_mask.reshape(n, 1, 1, ls)
            mask = mask + (
                torch.zeros_like(kpm, dtype=q.dtype).masked_fill(kpm, float("-inf"))
                if kpm.dtype == torch.bool
                else kpm.to(q.dtype)
            )
        scores = q @ k.transpose(-2, -1) / math.sqrt(d) + mask
        attn = scores.softmax(-1)
        if self.training and self.dropout > 0:
            attn = F.dropout(attn, self.dropout)
        out = (attn @ v).permute(2, 0, 1, 3).reshape(lq, n, h * d)
        out = self.out_proj(out)
        if self.batch_first and batched:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(1)
            attn = attn.squeeze(0)
        weights = None
        if need_weights:
            weights = attn.mean(dim=-3) if average_attn_weights else attn
        return out, weights


def _block_index(s_chunks: int, num_groups: int, block: int, keep: Tensor) -> Tensor:
    """Positions along a sliced dim of the blocks ``keep``, chunk by chunk."""
    offs = torch.arange(block)
    idx = [(c * num_groups + keep)[:, None] * block + offs[None, :] for c in range(s_chunks)]
    return torch.cat([i.flatten() for i in idx])


def _narrow_owner(module: nn.Module, attr: str, value: Tensor) -> None:
    module.register_parameter(attr, nn.Parameter(value))
    if attr != "weight":
        return
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = value.shape
    elif is_hf_conv1d(module):
        module.nf = value.shape[1]
        if hasattr(module, "nx"):
            module.nx = value.shape[0]


def _update_attention(module: nn.Module, cg: CoupledGroups, kept: int) -> None:
    r, d = cg.group_shape or (1, 1)
    heads = kept * r
    if cg.arch == "bert":
        sa = module.self
        sa.num_attention_heads = heads
        sa.all_head_size = heads * d
    elif cg.arch == "gpt2":
        module.split_size = heads * d
        module.num_heads = heads
    elif cg.arch == "llama":
        for name, value in (("num_heads", heads), ("num_key_value_heads", kept)):
            if hasattr(module, name):
                setattr(module, name, value)


def _replace_mha(model: nn.Module, name: str, mha: nn.MultiheadAttention) -> nn.Module:
    """Put a :class:`PrunedMultiheadAttention` in place of ``mha``; return the (new) root."""
    if mha._qkv_same_embed_dim:
        q, k, v = mha.in_proj_weight.detach().chunk(3)
    else:
        q, k, v = (getattr(mha, f"{x}_proj_weight").detach() for x in "qkv")
    bias = None if mha.in_proj_bias is None else mha.in_proj_bias.detach().clone()
    new = PrunedMultiheadAttention(
        q.clone(),
        k.clone(),
        v.clone(),
        bias,
        mha.out_proj,
        head_dim=mha.head_dim,
        dropout=mha.dropout,
        batch_first=mha.batch_first,
    ).train(mha.training)
    if not name:
        return new
    owner, _, attr = name.rpartition(".")
    setattr(model.get_submodule(owner) if owner else model, attr, new)
    return model


def _run(model: nn.Module, inputs: Any) -> list[Tensor]:
    if isinstance(inputs, Mapping):
        out = model(**inputs)
    elif isinstance(inputs, tuple):
        out = model(*inputs)
    else:
        out = model(inputs)
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [v for v in out.values() if isinstance(v, Tensor)]
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, (tuple, list)):
        return [v for v in out if isinstance(v, Tensor)]
    return []


@torch.no_grad()
def shrink_coupled(
    model: nn.Module,
    sets: Sequence[CoupledGroups] | None = None,
    inputs: Any = None,
    *,
    inplace: bool = False,
) -> CoupledShrinkResult:
    """Remove every coupled group whose joint norm is zero (heads, neurons), exactly.

    Args:
        model: the network (packed models are unpacked first, on the copy).
        sets: the coupled sets (default: those packed into ``model``).
        inputs: optional probe inputs (a tensor, a tuple of positional arguments or a
            dict of keyword arguments) to check the outputs: both models run in eval mode.
        inplace: shrink ``model`` itself instead of a deep copy.

    Returns:
        :class:`CoupledShrinkResult`.
    """
    if sets is None:
        sets = packed_groups(model)
        if not sets:
            raise ValueError("Invalid sets value: None for a model that is not packed")
    model = model if inplace else copy.deepcopy(model)
    unpack_coupled(model)
    reference = None
    if inputs is not None:
        was = model.training
        reference = _run(model.eval(), inputs)
        model.train(was)
    params = dict(model.named_parameters())
    result = CoupledShrinkResult(model, [])
    for cg in sets:
        tensors = [params[s.param] for s in cg.slices]
        norms = coupled_norms(tensors, cg)
        keep = torch.nonzero(norms != 0).flatten()
        if keep.numel() == 0:
            keep = torch.zeros(1, dtype=torch.long)
        result.kept[cg.name] = keep.tolist()
        result.removed[cg.name] = cg.num_groups - keep.numel()
        if keep.numel() == cg.num_groups:
            result.sets.append(cg)
            continue
        module = model.get_submodule(cg.module)  # "" is the model itself
        for s, t in zip(cg.slices, tensors, strict=True):
            block = t.shape[s.dim] // (s.chunks * cg.num_groups)
            idx = _block_index(s.chunks, cg.num_groups, block, keep)
            owner, _, attr = s.param.rpartition(".")
            _narrow_owner(
                model.get_submodule(owner), attr, t.detach().index_select(s.dim, idx).clone()
            )
        if cg.arch == "mha":
            model = result.model = _replace_mha(model, cg.module, module)
        elif cg.kind == "head":
            _update_attention(module, cg, keep.numel())
        slices = cg.slices
        if cg.arch == "mha":  # the replacement keeps q, k, v apart
            slices = tuple(s for s in slices if s.chunks == 1 or "bias" in s.param)
            qkv = tuple(Slice(f"{cg.module}.{x}_proj_weight".lstrip(".")) for x in "qkv")
            slices = qkv + tuple(s for s in slices if not s.param.endswith("_proj_weight"))
        params = dict(model.named_parameters())
        result.sets.append(
            CoupledGroups(
                cg.name, cg.kind, keep.numel(), slices, cg.module, cg.arch, cg.group_shape
            ).with_shapes(model)
        )
    if reference is not None:
        was = model.training
        model.eval()
        out = _run(model, inputs)
        model.train(was)
        result.max_abs_diff = max(
            (float((a - b).abs().max()) for a, b in zip(reference, out, strict=True)), default=0.0
        )
    return result
