"""Layer weights beyond ``nn.Linear``/``nn.Conv*``: ``nn.MultiheadAttention``'s projection
weights and Hugging Face ``Conv1D`` (GPT-2) are penalised, counted, drawn sparse and
pruned like Linear weights (:func:`sparseopt.groups.layer_weights`, the one list)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import sparseopt as so
from sparseopt.baselines import magnitude_masks, prunable_weights
from sparseopt.groups import layer_weights, param_groups
from sparseopt.init import sparse_init_
from sparseopt.metrics import density
from sparseopt.prune.masks import masks_from_weights


class Conv1D(nn.Module):
    """Hugging Face's ``transformers.pytorch_utils.Conv1D``: ``x @ W + b``, W ``(in, out)``
    (the same class name and ``nf`` attribute; the real one is tested below where
    transformers is installed)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.1)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.up = Conv1D(16, 8)  # 8 → 16, stored (8, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.attn(x, x, x, need_weights=False)
        return self.head(torch.relu(self.up(a))).mean(1)


def test_every_matrix_weight_is_a_layer_weight_with_its_out_in_view() -> None:
    net = Block()
    found = {w.name: w for w in layer_weights(net)}
    assert list(found) == ["attn.in_proj_weight", "attn.out_proj", "up", "head"]
    assert found["attn.in_proj_weight"].param_name == "attn.in_proj_weight"
    assert found["up"].param_name == "up.weight" and found["up"].transposed
    assert found["up"].out_in().shape == (16, 8)  # (out, in): the transpose
    assert not found["head"].transposed and found["head"].out_in() is net.head.weight
    # q/k/v apart where key and value widths differ
    apart = nn.MultiheadAttention(8, 2, kdim=4, vdim=6)
    assert [w.name for w in layer_weights(apart)] == [
        "q_proj_weight",
        "k_proj_weight",
        "v_proj_weight",
        "out_proj",
    ]


def test_param_groups_penalise_them_and_refuse_groups_over_a_conv1d() -> None:
    net = Block()
    groups = param_groups(net, penalty="l1", lam=0.1)
    penalised = {n for g in groups if g["penalty"] != "none" for n in g["param_names"]}
    assert penalised == {"attn.in_proj_weight", "attn.out_proj.weight", "up.weight", "head.weight"}
    with pytest.raises(ValueError, match=r"'up.weight' is a Hugging Face Conv1D.*coupled"):
        param_groups(net, penalty="group_l1", lam=0.1)
    # a group penalty on the conv layers only leaves the Conv1D elementwise: accepted
    assert param_groups(net, penalty="l1", conv_penalty="group_l1", lam=0.1)
    # λ per layer by fan-in reads a Conv1D's fan-in from its (out, in) view: 8, not 16
    scaled = param_groups(net, penalty="l1", lam=0.1, lam_scale="fan_in")
    factor = {g["param_names"][0]: g["lam_factor"] for g in scaled if "lam_factor" in g}
    assert factor["up.weight"] == pytest.approx(factor["attn.in_proj_weight"])  # fan-in 8


def test_density_counts_a_conv1d_by_its_output_units() -> None:
    net = Block()
    with torch.no_grad():
        net.up.weight[:, :5] = 0  # 5 of 16 output units dead: columns of (in, out)
        net.up.weight[2] = 0  # input feature 2 dead: a row
        net.attn.in_proj_weight[:4] = 0
    rep = density(net)
    up = rep.layers["up"]
    assert (up.shape, up.filters, up.filters_alive) == ((16, 8), 16, 11)
    assert (up.channels, up.channels_alive) == (8, 7)
    att = rep.layers["attn.in_proj_weight"]
    assert (att.filters, att.filters_alive, att.weights) == (24, 20, 24 * 8)
    expected = sum(w.param.numel() for w in layer_weights(net))
    assert rep.weights == expected == 24 * 8 + 8 * 8 + 8 * 16 + 16 * 3


def test_magnitude_pruning_and_masks_cover_the_same_weights() -> None:
    net = Block()
    names = set(prunable_weights(net))
    assert names == {w.param_name for w in layer_weights(net)} == set(masks_from_weights(net))
    masks = magnitude_masks(net, 0.25)
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == round(0.25 * density(net).weights)
    # with kinds, only those modules' weights (the old signature)
    assert set(prunable_weights(net, (nn.Linear,))) == {"attn.out_proj.weight", "head.weight"}


@pytest.mark.parametrize("seed", range(6))
def test_the_sparse_start_gives_every_unit_a_weight_in_attention_and_conv1d(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    nf, nx = (int(v) for v in torch.randint(2, 40, (2,), generator=gen))
    net = nn.Sequential(Conv1D(nf, nx), nn.MultiheadAttention(nf - nf % 2 or 2, 2))
    if nf % 2:  # MultiheadAttention needs an even width for two heads
        net[1] = nn.MultiheadAttention(nf + 1, 1)
    sparse_init_(net, 0.01, generator=torch.Generator().manual_seed(seed))
    for w in layer_weights(net):
        view = w.out_in()
        assert bool((view != 0).any(1).all()), w.name  # every output unit
        assert bool((view != 0).any(0).all()), w.name  # every input feature
    assert float((net[0].weight != 0).float().mean()) < 0.6 or min(nf, nx) <= 3


def test_an_optimizer_sparsifies_a_gpt2_and_the_counts_see_it() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(
        n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=8, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    before = density(model)
    # c_attn, c_proj (attention), c_fc, c_proj (MLP): the model's matrix weights
    assert before.weights == 16 * 48 + 16 * 16 + 16 * 64 + 64 * 16
    assert before.layers["transformer.h.0.attn.c_attn"].shape == (48, 16)
    opt = so.create_optimizer(model, "proxsgd", lr=0.1, penalty="l1", lam=0.05)  # std 0.02
    ids = torch.randint(0, 50, (4, 8))
    for _ in range(3):
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    after = density(model, opt)
    assert 0 < after.weight_density < before.weight_density == 1.0


def test_a_sharded_conv1d_is_still_one_and_pruned_attention_counts() -> None:
    """FSDP2's ``fully_shard`` swaps a module's class for ``FSDP<Name>`` (a subclass):
    the Conv1D is still known; the pruned attention of :mod:`sparseopt.prune.heads` (no
    ``nn.MultiheadAttention``) has its projections counted."""
    from sparseopt.groups import is_hf_conv1d, weight_kind
    from sparseopt.prune.heads import PrunedMultiheadAttention

    sharded = type("FSDPConv1D", (Conv1D,), {})(4, 3)
    assert is_hf_conv1d(sharded) and weight_kind(sharded, "weight") == "linear"
    assert not is_hf_conv1d(nn.Conv1d(2, 2, 1))  # torch's Conv1d is a convolution
    att = nn.MultiheadAttention(8, 2)
    q, k, v = att.in_proj_weight.detach().chunk(3)
    out = nn.Linear(4, 8)
    pruned = PrunedMultiheadAttention(q[:4], k[:4], v[:4], None, out, head_dim=4)
    names = {w.name for w in layer_weights(pruned)}
    assert {"q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj"} <= names


def test_the_controller_counts_a_conv1d_by_its_output_units() -> None:
    from sparseopt.control import _group_counts

    net = Block()
    with torch.no_grad():
        net.up.weight[:, 1:] = 0  # 15 of 16 output units dead
    opt = so.create_optimizer(net, "adabreg", lam_scale="layer")
    (up,) = [g for g in opt.param_groups if g.get("param_names") == ["up.weight"]]
    assert up["stored_in_out"] == ["up.weight"]
    counts = {tuple(p.shape): alive for _, found in _group_counts(opt) for _, alive, p in found}
    assert counts[(16, 8)] == 1 == density(net).layers["up"].filters_alive


def test_macs_of_an_attention_read_its_masked_projections() -> None:
    from sparseopt.metrics import count_macs

    torch.manual_seed(0)
    att = nn.Sequential(nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True))
    full = count_macs(att, (5, 8))
    name = "0.self_attn.in_proj_weight"
    masked = count_macs(att, (5, 8), masks={name: torch.zeros(24, 8, dtype=torch.bool)})
    layer = "0.self_attn"
    assert masked.layers[layer].sparse < full.layers[layer].sparse
    assert masked.layers[layer].dense == full.layers[layer].dense
    # 5 tokens: the output projection and the two products remain, 8·8·5 + 2·5·5·8
    assert masked.layers[layer].sparse == 8 * 8 * 5 + 2 * 5 * 5 * 8


def test_fine_tuning_keeps_an_attentions_output_projection_masked() -> None:
    """``nn.MultiheadAttention`` reads ``out_proj.weight`` without calling ``out_proj``:
    the mask is applied after each step (attaching it failed: "backward through the graph
    a second time")."""
    from sparseopt.prune.masks import finetune_masked

    torch.manual_seed(0)
    net = nn.Sequential(nn.TransformerEncoderLayer(8, 2, dim_feedforward=16), nn.Flatten(),
                        nn.Linear(40, 3))  # fmt: skip
    masks = magnitude_masks(net, 0.3)
    data = [(torch.randn(4, 5, 8), torch.randint(0, 3, (4,))) for _ in range(3)]
    losses = finetune_masked(net, masks, data, epochs=2, lr=0.05)
    assert len(losses) == 2
    params = dict(net.named_parameters())
    for name, keep in masks.items():
        assert bool((params[name][~keep] == 0).all()), name
    assert bool((params["0.self_attn.out_proj.weight"] != 0).any())


def test_resuming_a_checkpoint_whose_groups_moved_says_why(tmp_path) -> None:
    from sparseopt.engine.checkpoint import restore_weights
    from sparseopt.engine.errors import ConfigError

    net = Block()
    opt = so.create_optimizer(net, "adabreg")
    saved = copy.deepcopy(opt.state_dict())  # as read from a file: no list shared
    # as written before 2026-11-29: the attention's projection unpenalised
    linear = next(g for g in saved["param_groups"] if g["name"] == "linear")
    rest = next(g for g in saved["param_groups"] if g["name"] == "unpenalised")
    i = linear["param_names"].index("attn.in_proj_weight")
    rest["params"].append(linear["params"].pop(i))
    rest["param_names"].append(linear["param_names"].pop(i))
    ckpt = {"model": net.state_dict(), "optimizer": saved}
    with pytest.raises(ConfigError, match=r"attn.in_proj_weight: unpenalised → linear"):
        restore_weights(ckpt, tmp_path / "checkpoint.pt", net, opt)


def test_exclude_takes_an_attention_projection_by_its_layer_name() -> None:
    net = Block()
    groups = param_groups(net, penalty="l1", lam=0.1, exclude=["attn.in_proj_weight"])
    free = next(g for g in groups if g["penalty"] == "none")["param_names"]
    assert "attn.in_proj_weight" in free and "attn.out_proj.weight" not in free
    with pytest.raises(ValueError, match="no module or layer named"):
        param_groups(net, penalty="l1", lam=0.1, exclude=["attn.q_proj_weight"])


def test_only_a_linear_stored_in_out_is_read_transposed() -> None:
    """A torch convolution subclassed under the name ``Conv1D`` is a convolution; a class
    so named without Hugging Face's output width ``nf`` is not taken either."""
    from sparseopt.groups import is_hf_conv1d

    class Conv1D(nn.Conv1d):  # the name is the point
        pass

    net = nn.Sequential(Conv1D(2, 4, 3), nn.Flatten(), nn.Linear(8, 3))
    assert not is_hf_conv1d(net[0])
    first = layer_weights(net)[0]
    assert (first.name, first.kind, first.transposed) == ("0", "conv", False)
    assert param_groups(net, penalty="group_l1", lam=0.1)  # no refusal: rows are filters
    assert density(net).layers["0"].shape == (4, 2, 3)


def test_macs_count_a_conv1d_by_its_output_units_and_masks_are_checked() -> None:
    from sparseopt.metrics import count_macs
    from sparseopt.prune.masks import finetune_masked

    net = Block()
    macs = count_macs(net, (5, 8))
    assert macs.layers["up"].kind == "linear" and macs.layers["up"].dense == 8 * 16 * 5
    with torch.no_grad():
        net.up.weight[:, :4] = 0  # 4 of 16 output units dead
    assert count_macs(net, (5, 8)).layers["up"].sparse == 8 * 12 * 5
    # a mask that does not fit its weight is refused, also one applied after each step
    att = nn.Sequential(nn.TransformerEncoderLayer(8, 2, dim_feedforward=16))
    bad = {"0.self_attn.out_proj.weight": torch.ones(8, dtype=torch.bool)}
    with pytest.raises(ValueError, match="shape"):
        finetune_masked(att, bad, [(torch.randn(2, 5, 8), torch.zeros(2, dtype=torch.long))])
