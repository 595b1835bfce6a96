"""Coupled groups (heads, neurons): joint prox, detection per module kind, packing.

Oracles: a radial brute-force search for the prox of the joint vector (as
tests/test_penalties.py does for single tensors); hand-written index sets of every
head and neuron; a natively smaller Hugging Face Llama for "zeroing = removing".
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from sparseopt.coupled import (
    CoupledGroups,
    Slice,
    coupled_norms,
    coupled_param_groups,
    coupled_prox,
    dead_groups,
    detect_coupled_groups,
    gather_blocks,
    pack_coupled,
    packed_groups,
    scatter_blocks,
    unpack_coupled,
    zero_groups_,
)
from sparseopt.penalties import make_penalty

DTYPES = [torch.float32, torch.float64]


def _hand_set() -> tuple[list[torch.Tensor], CoupledGroups]:
    """Three tensors cut into 3 groups (rows, columns, a 2-chunk fused vector); group 2 small."""
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(6, 5, generator=gen, dtype=torch.float64)  # 3 groups of 2 rows
    c = torch.randn(2, 9, generator=gen, dtype=torch.float64)  # 3 groups of 3 columns
    fused = torch.randn(12, generator=gen, dtype=torch.float64)  # 2 chunks of 3 groups of 2
    cg = CoupledGroups("hand", "head", 3, (Slice("a", 0), Slice("c", 1), Slice("f", 0, chunks=2)))
    out = []
    for x, s in zip((a, c, fused), cg.slices, strict=True):
        blocks = gather_blocks(x, s, 3).clone()
        blocks[2] *= 0.05
        out.append(scatter_blocks(blocks, s, 3, x.shape))
    return out, cg


def test_gather_scatter_roundtrip_and_layout() -> None:
    w = torch.arange(24.0).reshape(4, 6)
    s = Slice("w", 1, chunks=3)  # columns: 3 chunks of 2 groups of 1 column
    blocks = gather_blocks(w, s, 2)
    assert blocks.shape == (2, 12)
    # group 0 holds columns 0, 2, 4 (the first column of each chunk)
    assert torch.equal(blocks[0], w[:, [0, 2, 4]].T.reshape(-1))
    assert torch.equal(scatter_blocks(blocks, s, 2, w.shape), w)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("name", "weight"),
    [
        ("group_l1", "sqrt"),
        ("group_l1", "one"),
        ("group_l0", "one"),
        ("group_l0", "sqrt"),
        ("group_l0", "size"),
    ],
)
@pytest.mark.parametrize("t", [0.3, 1.0])
def test_coupled_prox_matches_radial_search(
    name: str, weight: str, t: float, dtype: torch.dtype
) -> None:
    tensors, cg = _hand_set()
    lam = 0.6
    got = coupled_prox([x.to(dtype) for x in tensors], cg, name, t, lam=lam, group_weight=weight)
    assert [g.shape for g in got] == [x.shape for x in tensors]
    assert all(g.dtype == dtype for g in got)
    got = [g.double() for g in got]
    size = sum(x.numel() for x in tensors) // cg.num_groups
    assert size == 10 + 6 + 4
    w = {"sqrt": math.sqrt(size), "size": float(size), "one": 1.0}[weight]  # |g| joint
    if name == "group_l0" and weight == "sqrt":  # group ℓ1's weight: group ℓ0 keeps "one"
        w = 1.0

    # joint vector of group g, written out by hand from the slice definitions
    def joint(ts: list[torch.Tensor], g: int) -> torch.Tensor:
        a, c, f = ts
        return torch.cat(
            [
                a[2 * g : 2 * g + 2].reshape(-1),
                c[:, 3 * g : 3 * g + 3].T.reshape(-1),
                f[2 * g : 2 * g + 2],
                f[6 + 2 * g : 6 + 2 * g + 2],
            ]
        )

    s = torch.linspace(0, 1, 200001, dtype=torch.float64)
    for g in range(cg.num_groups):
        x_g, y_g = joint(tensors, g), joint(got, g)
        r = x_g.norm().item()
        radii = s * r
        if name == "group_l1":
            f = 0.5 * (radii - r) ** 2 + t * lam * w * radii
        else:
            f = 0.5 * (radii - r) ** 2 + t * lam * w * (radii > 0)
        best = radii[f.argmin()].item()
        if name == "group_l0" and abs(r - math.sqrt(2 * t * lam * w)) < 1e-3:
            continue
        tol = 1e-4 * max(r, 1.0) if dtype == torch.float64 else 1e-4 * max(r, 1.0) + 1e-5
        assert y_g.norm().item() == pytest.approx(best, abs=tol)
        # the minimiser lies on the ray through x_g
        assert torch.allclose(y_g, x_g * (y_g.norm() / r), atol=1e-5)
    # the small group dies, the others live (not all at group ℓ0's 20-fold weight, t 1)
    dead = (coupled_norms(got, cg) == 0).tolist()
    assert dead[2] and (dead[:2] == [False, False] or (weight, t) == ("size", 1.0))


def test_coupled_prox_equals_packed_row_prox() -> None:
    # what every optimizer does on a packed parameter: the row-wise group prox
    tensors, cg = _hand_set()
    pen = make_penalty("group_l1", lam=0.5, groups="filter")
    packed = torch.cat(
        [gather_blocks(x, s, 3) for x, s in zip(tensors, cg.slices, strict=True)], dim=1
    )
    rows = pen.prox(packed, 0.7)
    want = coupled_prox(tensors, cg, pen, 0.7)
    start = 0
    for x, s, w in zip(tensors, cg.slices, want, strict=True):
        width = x.numel() // 3
        torch.testing.assert_close(scatter_blocks(rows[:, start : start + width], s, 3, x.shape), w)
        start += width


def test_coupled_prox_refuses_elementwise_penalty() -> None:
    tensors, cg = _hand_set()
    with pytest.raises(ValueError, match="'l1'"):
        coupled_prox(tensors, cg, "l1", 1.0, lam=0.1)


def test_slice_validation_names_the_problem() -> None:
    lin = nn.Linear(4, 6)
    with pytest.raises(ValueError, match="size 6"):
        CoupledGroups("x", "head", 4, (Slice("weight", 0),)).with_shapes(lin)
    with pytest.raises(ValueError, match="'nope'"):
        CoupledGroups("x", "head", 2, (Slice("nope", 0),)).with_shapes(lin)


# ----------------------------------------------------------------- detection


def _ids(model: nn.Module) -> dict[str, torch.Tensor]:
    """Give every parameter entry of ``model`` a unique id (its value); return them."""
    start = 0
    out = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.arange(start, start + p.numel(), dtype=p.dtype).reshape(p.shape))
            out[name] = p.detach().clone()
            start += p.numel()
    return out


def _check_groups(model: nn.Module, cg: CoupledGroups, expected: list[set[float]]) -> None:
    params = dict(model.named_parameters())
    tensors = [params[s.param] for s in cg.slices]
    joint = torch.cat(
        [gather_blocks(t, s, cg.num_groups) for t, s in zip(tensors, cg.slices, strict=True)], 1
    )
    assert joint.shape[0] == len(expected)
    for g, want in enumerate(expected):
        got = joint[g].tolist()
        assert len(got) == len(set(got)) == len(want)
        assert set(got) == want, g
    # together the groups cover the slices' tensors exactly
    covered = set().union(*expected)
    assert covered == {v for t in tensors for v in t.reshape(-1).tolist()}


def _vals(t: torch.Tensor) -> set[float]:
    return set(t.reshape(-1).tolist())


def test_detect_mha_and_encoder_layer() -> None:
    layer = nn.TransformerEncoderLayer(12, 3, dim_feedforward=10, batch_first=True).double()
    ids = _ids(layer)
    sets = {cg.kind: cg for cg in detect_coupled_groups(layer)}
    d, e = 4, 12
    w, b, o = (
        ids["self_attn.in_proj_weight"],
        ids["self_attn.in_proj_bias"],
        ids["self_attn.out_proj.weight"],
    )
    heads = []
    for h in range(3):
        rows = [c * e + h * d + j for c in range(3) for j in range(d)]  # q, k, v rows
        heads.append(_vals(w[rows]) | _vals(b[rows]) | _vals(o[:, h * d : (h + 1) * d]))
    _check_groups(layer, sets["head"], heads)
    neurons = [
        _vals(ids["linear1.weight"][j])
        | _vals(ids["linear1.bias"][j])
        | _vals(ids["linear2.weight"][:, j])
        for j in range(10)
    ]
    _check_groups(layer, sets["neuron"], neurons)
    # out_proj.bias and linear2.bias are shared by all groups: in none
    assert all(
        "out_proj.bias" not in s.param and "linear2.bias" not in s.param
        for cg in sets.values()
        for s in cg.slices
    )


def test_detect_mha_with_separate_kdim() -> None:
    mha = nn.MultiheadAttention(8, 2, kdim=5, vdim=3).double()
    ids = _ids(mha)
    (cg,) = detect_coupled_groups(mha)
    heads = []
    for h in range(2):
        r = slice(4 * h, 4 * h + 4)
        rows = [c * 8 + 4 * h + j for c in range(3) for j in range(4)]
        heads.append(
            _vals(ids["q_proj_weight"][r])
            | _vals(ids["k_proj_weight"][r])
            | _vals(ids["v_proj_weight"][r])
            | _vals(ids["in_proj_bias"][rows])
            | _vals(ids["out_proj.weight"][:, r])
        )
    _check_groups(mha, cg, heads)


def test_detect_hf_bert() -> None:
    tf = pytest.importorskip("transformers")
    cfg = tf.BertConfig(
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=6,
        vocab_size=11,
        max_position_embeddings=8,
    )
    model = tf.BertModel(cfg).double()
    ids = _ids(model)
    sets = {cg.kind: cg for cg in detect_coupled_groups(model)}
    p = "encoder.layer.0.attention."
    heads = []
    for h in range(2):
        r = slice(4 * h, 4 * h + 4)
        v = _vals(ids[p + "output.dense.weight"][:, r])
        for x in ("query", "key", "value"):
            v |= _vals(ids[f"{p}self.{x}.weight"][r]) | _vals(ids[f"{p}self.{x}.bias"][r])
        heads.append(v)
    _check_groups(model, sets["head"], heads)
    q = "encoder.layer.0."
    neurons = [
        _vals(ids[q + "intermediate.dense.weight"][j])
        | _vals(ids[q + "intermediate.dense.bias"][j])
        | _vals(ids[q + "output.dense.weight"][:, j])
        for j in range(6)
    ]
    _check_groups(model, sets["neuron"], neurons)


def test_detect_hf_gpt2_fused_c_attn() -> None:
    tf = pytest.importorskip("transformers")
    cfg = tf.GPT2Config(n_embd=8, n_layer=1, n_head=2, n_inner=6, vocab_size=11, n_positions=8)
    model = tf.GPT2Model(cfg).double()
    ids = _ids(model)
    sets = {cg.kind: cg for cg in detect_coupled_groups(model)}
    heads = []
    for h in range(2):
        cols = [c * 8 + 4 * h + j for c in range(3) for j in range(4)]  # Conv1D: (in, out)
        heads.append(
            _vals(ids["h.0.attn.c_attn.weight"][:, cols])
            | _vals(ids["h.0.attn.c_attn.bias"][cols])
            | _vals(ids["h.0.attn.c_proj.weight"][4 * h : 4 * h + 4])
        )
    _check_groups(model, sets["head"], heads)
    neurons = [
        _vals(ids["h.0.mlp.c_fc.weight"][:, j])
        | _vals(ids["h.0.mlp.c_fc.bias"][j])
        | _vals(ids["h.0.mlp.c_proj.weight"][j])
        for j in range(6)
    ]
    _check_groups(model, sets["neuron"], neurons)


def _llama(tf, heads: int = 4, kv: int = 2, inter: int = 6, bias: bool = True):
    cfg = tf.LlamaConfig(
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=2,
        intermediate_size=inter,
        vocab_size=11,
        attention_bias=bias,
        mlp_bias=bias,
        max_position_embeddings=16,
    )
    return tf.LlamaModel(cfg)


def test_detect_hf_llama_grouped_query_attention() -> None:
    tf = pytest.importorskip("transformers")
    model = _llama(tf).double()  # 4 query heads share 2 kv heads: r = 2, head_dim 2
    ids = _ids(model)
    sets = {cg.kind: cg for cg in detect_coupled_groups(model)}
    p = "layers.0.self_attn."
    groups = []
    for j in range(2):
        kv = slice(2 * j, 2 * j + 2)
        q = slice(4 * j, 4 * j + 4)  # query heads 2j and 2j+1
        v = (
            _vals(ids[p + "o_proj.weight"][:, q])
            | _vals(ids[p + "q_proj.weight"][q])
            | _vals(ids[p + "q_proj.bias"][q])
        )
        for x in "kv":
            v |= _vals(ids[f"{p}{x}_proj.weight"][kv]) | _vals(ids[f"{p}{x}_proj.bias"][kv])
        groups.append(v)
    _check_groups(model, sets["head"], groups)
    assert sets["head"].group_shape == (2, 2)
    m = "layers.0.mlp."
    neurons = [
        set().union(
            *(
                _vals(ids[f"{m}{x}_proj.weight"][j]) | _vals(ids[f"{m}{x}_proj.bias"][j])
                for x in ("gate", "up")
            )
        )
        | _vals(ids[m + "down_proj.weight"][:, j])
        for j in range(6)
    ]
    _check_groups(model, sets["neuron"], neurons)


def test_zeroing_llama_groups_equals_a_natively_smaller_model() -> None:
    # Removing kv group 1 (query heads 2, 3) and neurons {0, 4} by hand, into a Llama
    # built with 1 kv head, 2 query heads and 4 neurons, gives the masked model's output.
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    big = _llama(tf, bias=False).double().eval()
    sets = {cg.kind: cg for cg in detect_coupled_groups(big)}
    masked = copy.deepcopy(big)
    zero_groups_(masked, sets["head"], [1])
    zero_groups_(masked, sets["neuron"], [0, 4])
    small = _llama(tf, heads=2, kv=1, inter=4, bias=False).double().eval()
    keep_n = [1, 2, 3, 5]
    sd = {k: v.clone() for k, v in big.state_dict().items()}
    a, m = "layers.0.self_attn.", "layers.0.mlp."
    sd[a + "q_proj.weight"] = sd[a + "q_proj.weight"][:4]
    sd[a + "k_proj.weight"] = sd[a + "k_proj.weight"][:2]
    sd[a + "v_proj.weight"] = sd[a + "v_proj.weight"][:2]
    sd[a + "o_proj.weight"] = sd[a + "o_proj.weight"][:, :4]
    for x in ("gate", "up"):
        sd[f"{m}{x}_proj.weight"] = sd[f"{m}{x}_proj.weight"][keep_n]
    sd[m + "down_proj.weight"] = sd[m + "down_proj.weight"][:, keep_n]
    small.load_state_dict(sd)
    ids = torch.randint(0, 11, (2, 7))
    with torch.no_grad():
        want = small(input_ids=ids).last_hidden_state
        got = masked(input_ids=ids).last_hidden_state
        full = big(input_ids=ids).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    assert (full - want).abs().max() > 1e-3  # the removed groups mattered
    assert dead_groups(masked, list(sets.values())) == {
        sets["head"].name: [1],
        sets["neuron"].name: [0, 4],
    }


# ----------------------------------------------------------------- packing


def test_pack_keeps_function_and_gradients() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        8, 2, dim_feedforward=6, dropout=0.0, batch_first=True
    ).double()
    ref = copy.deepcopy(layer)
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    ref(x).square().sum().backward()
    sets = detect_coupled_groups(layer)
    pack_coupled(layer)
    assert packed_groups(layer) == sets
    out = layer(x)
    torch.testing.assert_close(out, ref(x))
    out.square().sum().backward()
    # the packed gradient is the original gradients, gathered into groups
    grads = dict((n, p.grad) for n, p in ref.named_parameters())
    for cg, p in zip(sets, layer.sparseopt_coupled.packed, strict=True):
        want = torch.cat([gather_blocks(grads[s.param], s, cg.num_groups) for s in cg.slices], 1)
        torch.testing.assert_close(p.grad, want)
    # a copy is independent and equal; unpacking restores ordinary parameters
    twin = copy.deepcopy(layer)
    torch.testing.assert_close(twin(x), out)
    unpack_coupled(layer)
    assert sorted(n for n, _ in layer.named_parameters()) == sorted(
        n for n, _ in ref.named_parameters()
    )
    torch.testing.assert_close(layer(x), ref(x))


def test_packed_param_groups_and_dead_groups() -> None:
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=6, batch_first=True)
    sets = detect_coupled_groups(layer)
    pack_coupled(layer, sets)
    groups = coupled_param_groups(layer, penalty="group_l0", lam=0.1)
    assert [g["name"] for g in groups] == ["coupled", "unpenalised"]
    assert groups[0]["groups"] == "filter" and len(groups[0]["params"]) == 2
    n_all = sum(1 for _ in layer.parameters())
    assert sum(len(g["params"]) for g in groups) == n_all
    zero_groups_(layer, sets[1], [1])
    assert dead_groups(layer, sets)[sets[1].name] == [1]
    split = coupled_param_groups(layer, lam=0.1, lam_by_kind={"head": 0.3})
    assert [(g["name"], g["lam"], len(g["params"])) for g in split[:2]] == [
        ("coupled", 0.1, 1),
        ("coupled_head", 0.3, 1),
    ]
    assert split[1]["params"][0] is layer.sparseopt_coupled.packed[1]  # the head set
    with pytest.raises(ValueError, match="'l1'"):
        coupled_param_groups(layer, penalty="l1")
    with pytest.raises(ValueError, match="already packed"):
        pack_coupled(layer)


@pytest.mark.parametrize("name", ["head", "neuron"])
def test_per_tensor_grouping_names_the_coupled_api(name: str) -> None:
    with pytest.raises(ValueError, match=r"sparseopt\.coupled"):
        make_penalty("group_l1", lam=0.1, groups=name)
