"""Counts: density (weights / deployable / support / masks), parameters and MACs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparseopt as so
from sparseopt.metrics import count_macs, count_params, density, effective_weights


def _lenet_like() -> nn.Sequential:
    # conv 1->4 (3x3, pad 0) on 8x8 -> 6x6; pool -> 3x3; flatten 36; fc 36->5; fc 5->3
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(36, 5),
        nn.ReLU(),
        nn.Linear(5, 3),
    )


def test_macs_hand_computed_dense() -> None:
    net = _lenet_like()
    rep = count_macs(net, (1, 8, 8))
    conv = 4 * 1 * 9 * 36  # out * in * k * positions
    fc1 = 36 * 5
    fc2 = 5 * 3
    assert rep.layers["0"].dense == conv
    assert rep.layers["0"].positions == 36
    assert rep.layers["5"].dense == fc1
    assert rep.dense == conv + fc1 + fc2  # BN, ReLU, pooling: 0 MACs
    assert rep.sparse == rep.dense and rep.structured == rep.dense
    assert rep.flops_dense == 2 * rep.dense


def test_macs_credit_unstructured_and_structured_sparsity() -> None:
    net = _lenet_like()
    with torch.no_grad():
        net[0].weight[:2] = 0  # 2 of 4 filters dead
        net[0].weight[2, 0, 0, 0] = 0  # one more zero weight
        net[5].weight[:, :9] = 0  # first input channel's 9 features unused
    rep = count_macs(net, (1, 8, 8))
    nnz_conv = 2 * 9 - 1
    assert rep.layers["0"].sparse == nnz_conv * 36
    assert rep.layers["0"].structured == 2 * 1 * 9 * 36  # live filters x live channels x k
    assert rep.layers["5"].sparse == 5 * 27
    assert rep.layers["5"].structured == 5 * 27
    assert rep.sparse == nnz_conv * 36 + 5 * 27 + 15
    assert rep.density == pytest.approx(rep.sparse / rep.dense)


def test_macs_conv1d_strided_grouped_and_linear_on_sequences() -> None:
    conv = nn.Conv1d(4, 6, kernel_size=3, stride=2, padding=1, groups=2)  # L=10 -> 5
    assert count_macs(conv, (4, 10)).dense == 6 * 2 * 3 * 5
    lin = nn.Linear(7, 3)  # applied to (T=4, 7) per sample: 4 positions
    assert count_macs(lin, (4, 7)).dense == 4 * 7 * 3


def test_macs_shrunk_model_counts_exactly() -> None:
    net = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    small = nn.Sequential(nn.Linear(10, 3), nn.ReLU(), nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert count_macs(net, (10,)).dense == 80 + 32 + 8
    assert count_macs(small, (10,)).dense == 30 + 12 + 8


def test_macs_leave_mode_and_bn_stats_untouched() -> None:
    net = _lenet_like().train()
    before = net[1].running_mean.clone()
    count_macs(net, (1, 8, 8))
    assert net.training
    assert torch.equal(net[1].running_mean, before)


def test_density_structure_filters_neurons_channels() -> None:
    net = _lenet_like()
    with torch.no_grad():
        net[0].weight[:3] = 0
        net[5].weight[:2] = 0
        net[7].weight[:, 4] = 0
    s = density(net).structure()
    assert (s["filters"], s["filters_alive"]) == (4, 1)
    assert (s["neurons"], s["neurons_alive"]) == (8, 6)
    assert s["channels"] == 1 + 36 + 5
    assert s["channels_alive"] == 1 + 36 + 4


def test_density_sources_with_splitlbi() -> None:
    net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = so.create_optimizer(net, "splitlbi", lr=0.1)
    # before any step Γ = 0: the deployable network and the support are empty
    assert density(net, opt).weight_density == 0.0
    assert density(net, opt, source="support").weight_density == 0.0
    assert density(net, opt, source="weights").weight_density == 1.0
    assert count_params(net, opt).nonzero == 4 + 2  # only the biases survive
    with pytest.raises(ValueError, match="source"):
        density(net, opt, source="gamma")


def test_density_with_masks() -> None:
    net = nn.Linear(4, 2)
    mask = torch.tensor([[True, False, False, False], [True, True, False, False]])
    rep = density(net, masks={"weight": mask})
    assert rep.weights_nonzero == 3
    assert count_params(net, masks={"weight": mask}) == so.metrics.ParamCount(10, 5)
    assert set(effective_weights(net)) == {"weight", "bias"}


def test_count_macs_counts_attention_and_predicts_the_shrunk_transformer() -> None:
    """Attention projections and products are counted (they are no nn.Linear calls);
    after dead heads and neurons are removed, the dense count equals the masked model's
    structured count."""
    import copy

    from sparseopt.coupled import detect_coupled_groups, zero_groups_
    from sparseopt.prune.heads import shrink_coupled

    torch.manual_seed(0)
    e, h, n, f = 16, 4, 5, 32  # embedding, heads, positions, feed-forward width
    layer = torch.nn.TransformerEncoderLayer(e, h, f, dropout=0.0, batch_first=True).eval()
    rep = count_macs(layer, (n, e))
    assert rep.layers["self_attn"].kind == "attention"
    assert rep.layers["self_attn"].dense == 4 * n * e * e + 2 * n * n * e  # q, k, v, out; QKᵀ, AV
    assert rep.dense == rep.layers["self_attn"].dense + 2 * n * e * f
    sets = detect_coupled_groups(layer)
    with torch.no_grad():
        for s in sets:
            zero_groups_(layer, s, [0, 1])
    masked = count_macs(layer, (n, e))
    shrunk = shrink_coupled(copy.deepcopy(layer), sets).model
    after = count_macs(shrunk, (n, e))
    assert after.dense == masked.structured < rep.dense


def test_layer_lams_are_named_as_layer_density() -> None:
    """``layer_lam`` and ``layer_density`` share their names: Conv/Linear weights keyed by
    module (a bare layer by ""), an attention's fused projection by its parameter's name,
    a weight tied to an embedding under its first module (no entry, as in the
    densities), other penalised tensors (the embedding) left out."""
    from sparseopt.groups import layer_lams

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.conv = torch.nn.Conv1d(4, 4, 3)
            self.attn = torch.nn.MultiheadAttention(4, 2)
            self.head = torch.nn.Linear(4, 10)
            self.head.weight = self.emb.weight  # tied
            self.fc = torch.nn.Linear(4, 4)

    net = Net()
    penalised = [p for p in net.parameters() if p.ndim >= 2]
    groups = [
        {"params": [p], "penalty": "l1", "lam": 0.1 * (i + 1)} for i, p in enumerate(penalised)
    ]
    lams = layer_lams(net, groups)
    layers = {"conv", "attn.in_proj_weight", "attn.out_proj", "fc"}
    assert set(lams) == set(density(net).layers) == layers
    lam_of = {id(g["params"][0]): g["lam"] for g in groups}
    assert lams == {
        "conv": lam_of[id(net.conv.weight)],
        "attn.in_proj_weight": lam_of[id(net.attn.in_proj_weight)],
        "attn.out_proj": lam_of[id(net.attn.out_proj.weight)],
        "fc": lam_of[id(net.fc.weight)],
    }
    bare = torch.nn.Linear(3, 2)
    group = [{"params": [bare.weight], "penalty": "l0", "lam": 0.5}]
    assert layer_lams(bare, group) == {"": 0.5} and set(density(bare).layers) == {""}
    assert layer_lams(bare, [{**group[0], "penalty": "none"}]) == {}
