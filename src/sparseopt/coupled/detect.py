"""Automatic detection of attention heads and MLP neurons as coupled groups."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from sparseopt.groups import is_hf_conv1d

from ._core import (
    CoupledGroups,
    Slice,
    is_packed,
)

# ------------------------------------------------------------------- detection


def _linear_like(m: Any) -> bool:
    return isinstance(m, nn.Linear) or is_hf_conv1d(m)


def _rows(prefix: str, m: nn.Module, chunks: int = 1) -> list[Slice]:
    """Output units of a Linear (rows) or Conv1D (columns), with the bias."""
    out = [Slice(f"{prefix}.weight", 1 if is_hf_conv1d(m) else 0, chunks)]
    if getattr(m, "bias", None) is not None:
        out.append(Slice(f"{prefix}.bias", 0, chunks))
    return out


def _cols(prefix: str, m: nn.Module) -> list[Slice]:
    """Input units of a Linear (columns) or Conv1D (rows)."""
    return [Slice(f"{prefix}.weight", 0 if is_hf_conv1d(m) else 1)]


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _out_width(m: nn.Module) -> int:
    return m.weight.shape[1] if is_hf_conv1d(m) else m.weight.shape[0]


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
