"""Physical removal of dead heads and neurons: the shrunk model equals the masked one."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sparseopt.coupled import detect_coupled_groups, pack_coupled, zero_groups_
from sparseopt.prune.heads import PrunedMultiheadAttention, shrink_coupled


def _mask_some(model: nn.Module, seed: int = 0) -> dict[str, list[int]]:
    """Zero about half of the groups of every detected set (never all)."""
    gen = torch.Generator().manual_seed(seed)
    dead = {}
    for cg in detect_coupled_groups(model):
        k = max(1, cg.num_groups // 2)
        idx = torch.randperm(cg.num_groups, generator=gen)[:k].tolist()
        zero_groups_(model, cg, idx)
        dead[cg.name] = sorted(idx)
    return dead


@pytest.mark.parametrize("batch_first", [True, False])
def test_encoder_stack_shrinks_exactly(batch_first: bool) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(12, 4, dim_feedforward=10, batch_first=batch_first)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    dead = _mask_some(model)
    x = torch.randn(3, 5, 12) if batch_first else torch.randn(5, 3, 12)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[0, -2:] = True  # key padding exercised
    res = shrink_coupled(
        model, detect_coupled_groups(model), {"src": x, "src_key_padding_mask": pad}
    )
    assert res.max_abs_diff <= 1e-5
    assert res.removed == {k: len(v) for k, v in dead.items()}
    attn = res.model.layers[0].self_attn
    assert isinstance(attn, PrunedMultiheadAttention)
    assert attn.num_heads == 2 and attn.q_proj_weight.shape == (6, 12)
    assert res.model.layers[0].linear1.out_features == 5
    # the shrunk model keeps training (gradients reach every parameter)
    res.model.train()(x, src_key_padding_mask=pad).sum().backward()
    assert all(p.grad is not None for p in res.model.parameters())


def test_pruned_mha_equals_mha_without_pruning() -> None:
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    (cg,) = detect_coupled_groups(mha)
    q, k, v = mha.in_proj_weight.detach().chunk(3)
    pruned = PrunedMultiheadAttention(
        q,
        k,
        v,
        mha.in_proj_bias.detach(),
        copy.deepcopy(mha.out_proj),
        head_dim=4,
        batch_first=True,
    ).eval()
    x, y = torch.randn(2, 5, 8), torch.randn(2, 6, 8)
    pad = torch.tensor([[False] * 5 + [True], [False] * 6])
    mask = torch.triu(torch.ones(5, 6, dtype=torch.bool), diagonal=1)
    for kwargs in (
        {},
        {"key_padding_mask": pad},
        {"attn_mask": mask},
        {"average_attn_weights": False},
    ):
        want, want_w = mha(x, y, y, **kwargs)
        got, got_w = pruned(x, y, y, **kwargs)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(got_w, want_w, atol=1e-6, rtol=1e-5)
    assert cg.num_groups == 2


def test_shrink_packed_model_uses_its_sets() -> None:
    torch.manual_seed(2)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=6, batch_first=True).eval()
    sets = detect_coupled_groups(layer)
    pack_coupled(layer, sets)
    zero_groups_(layer, sets[0], [0, 2, 3])
    res = shrink_coupled(layer, inputs=torch.randn(2, 4, 8))
    assert res.removed == {sets[0].name: 3, sets[1].name: 0}
    assert res.max_abs_diff <= 1e-5
    assert res.model.linear1.out_features == 3
    assert [cg.num_groups for cg in res.sets] == [3, 2]
    assert not hasattr(res.model, "sparseopt_coupled")  # a plain model


def test_all_dead_keeps_one_zero_group() -> None:
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=6, batch_first=True).eval()
    sets = detect_coupled_groups(layer)
    for cg in sets:
        zero_groups_(layer, cg, range(cg.num_groups))
    res = shrink_coupled(layer, sets, torch.randn(2, 4, 8))
    assert res.max_abs_diff <= 1e-5
    assert [cg.num_groups for cg in res.sets] == [1, 1]


def _hf_models():
    tf = pytest.importorskip("transformers")
    bert = tf.BertModel(
        tf.BertConfig(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=12,
            vocab_size=30,
            max_position_embeddings=16,
        )
    )
    gpt2 = tf.GPT2Model(
        tf.GPT2Config(n_embd=16, n_layer=2, n_head=4, n_inner=12, vocab_size=30, n_positions=16)
    )
    llama = tf.LlamaModel(
        tf.LlamaConfig(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=12,
            vocab_size=30,
            max_position_embeddings=16,
        )
    )
    return {"bert": bert, "gpt2": gpt2, "llama": llama}


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_hf_models_shrink_exactly(kind: str) -> None:
    torch.manual_seed(3)
    model = _hf_models()[kind].eval()
    dead = _mask_some(model, seed=4)
    ids = torch.randint(0, 30, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, -3:] = 0
    sets = detect_coupled_groups(model)
    res = shrink_coupled(model, sets, {"input_ids": ids, "attention_mask": mask})
    assert res.max_abs_diff <= 1e-5
    assert res.removed == {k: len(v) for k, v in dead.items()}
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in res.model.parameters())
    assert after < before
    # the detected sets of the shrunk model are the narrowed ones
    again = {cg.name: cg.num_groups for cg in detect_coupled_groups(res.model)}
    assert again == {cg.name: cg.num_groups for cg in res.sets}


def test_root_mha_with_separate_kdim_shrinks_exactly() -> None:
    torch.manual_seed(5)
    mha = nn.MultiheadAttention(8, 4, kdim=5, vdim=3, batch_first=True).eval()
    (cg,) = detect_coupled_groups(mha)
    zero_groups_(mha, cg, [1, 2])
    q, kv_k, kv_v = torch.randn(2, 6, 8), torch.randn(2, 7, 5), torch.randn(2, 7, 3)
    # (need_weights=False: head-averaged weights average over the remaining heads)
    inputs = {"query": q, "key": kv_k, "value": kv_v, "need_weights": False}
    res = shrink_coupled(mha, [cg], inputs)
    assert isinstance(res.model, PrunedMultiheadAttention)
    assert res.model.num_heads == 2 and res.model.k_proj_weight.shape == (4, 5)
    assert res.max_abs_diff <= 1e-5
