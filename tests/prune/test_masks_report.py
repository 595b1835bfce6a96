"""Masks (state dict, torch.nn.utils.prune, fine-tuning) and the before/after report."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparseopt as so
from sparseopt.prune import (
    apply_masks_,
    attach_masks,
    compare_models,
    detach_masks,
    finetune_masked,
    freeze_for_inference,
    mask_density,
    masked_state_dict,
    masks_from_optimizer,
    masks_from_weights,
    measure_latency,
    save_artifacts,
    shrink,
)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _mask(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < 0.5


def test_masked_state_dict_and_apply_agree() -> None:
    net = _net()
    masks = {"0.weight": _mask((8, 6))}
    sd = masked_state_dict(net, masks)
    assert bool((sd["0.weight"][~masks["0.weight"]] == 0).all())
    assert torch.equal(sd["0.weight"][masks["0.weight"]], net[0].weight[masks["0.weight"]])
    assert bool((net[0].weight != 0).all())  # the model is untouched
    apply_masks_(net, masks)
    assert torch.equal(net.state_dict()["0.weight"], sd["0.weight"])
    assert masks_from_weights(net)["0.weight"].equal(masks["0.weight"])
    assert mask_density(masks) == pytest.approx(float(masks["0.weight"].float().mean()))


def test_bad_masks_raise() -> None:
    net = _net()
    with pytest.raises(ValueError, match="not a parameter"):
        apply_masks_(net, {"9.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        apply_masks_(net, {"0.weight": torch.ones(2, 2, dtype=torch.bool)})


def test_custom_from_mask_keeps_zeros_under_sgd() -> None:
    net = _net()
    mask = _mask((8, 6), 1)
    attach_masks(net, {"0.weight": mask})
    assert hasattr(net[0], "weight_orig") and hasattr(net[0], "weight_mask")
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(4, 6)).pow(2).sum().backward()
        opt.step()
    detach_masks(net)
    assert not hasattr(net[0], "weight_orig")
    assert bool((net[0].weight[~mask] == 0).all())
    assert bool((net[0].weight[mask] != 0).all())


def test_masks_from_splitlbi_support_are_supp_gamma() -> None:
    net = _net()
    opt = so.create_optimizer(net, "splitlbi", lr=0.5, nu=1.0, lam=0.05)
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(
            net(torch.randn(16, 6)), torch.randint(0, 3, (16,))
        ).backward()
        opt.step()
    masks = masks_from_optimizer(net, opt)
    assert set(masks) == {"0.weight", "2.weight"}
    for name, p in net.named_parameters():
        if name in masks:
            assert torch.equal(masks[name], opt.gamma(p) != 0)
    with pytest.raises(TypeError, match="support"):
        masks_from_optimizer(net, torch.optim.SGD(net.parameters(), lr=0.1))


def test_finetune_masked_lowers_the_loss_and_keeps_the_support() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 6)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    net = _net()
    masks = {"0.weight": _mask((8, 6), 2)}
    apply_masks_(net, masks)
    losses = finetune_masked(net, masks, [(x, y)] * 4, epochs=5, lr=0.1)
    assert losses[-1] < losses[0]
    assert bool((net[0].weight[~masks["0.weight"]] == 0).all())
    assert not hasattr(net[0], "weight_mask")


@torch.no_grad()
def test_report_and_artifacts(tmp_path: object) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 4))
    net[0].weight[:6] = 0
    net.eval()
    res = shrink(net, torch.randn(2, 1, 8, 8))
    rep = compare_models(net, res.model, (1, 8, 8), batch_sizes=(1, 4), repeats=2)
    assert rep.after.params < rep.before.params
    assert rep.before.macs / rep.after.macs == pytest.approx(4.0, rel=0.05)
    assert set(rep.after.latency) >= {"cpu@1", "cpu@4"}
    assert rep.after.file_bytes < rep.before.file_bytes
    assert "parameters" in rep.table() and rep.to_dict()["mac_ratio"] > 3
    x = torch.randn(3, 1, 8, 8)
    paths = save_artifacts(res.model, x[:1], tmp_path)  # type: ignore[arg-type]
    sd = torch.load(paths["state_dict"], weights_only=True)
    assert sd["0.weight"].shape[0] == 2
    if "export" in paths:
        loaded = torch.export.load(paths["export"]).module()
    else:  # pragma: no cover - torch.export unavailable
        loaded = torch.jit.load(paths["torchscript"])
    torch.testing.assert_close(loaded(x[:1]), res.model(x[:1]))


def _conv_bn_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 16, 4),
    )
    with torch.no_grad():  # non-trivial running statistics so that folding matters
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-1, 1)
    return net


@pytest.mark.parametrize("optimize", [True, False])
def test_freeze_for_inference_same_function(optimize: bool) -> None:
    net = _conv_bn_net().train()
    frozen = freeze_for_inference(net, torch.randn(2, 1, 8, 8), optimize=optimize)
    assert net.training  # mode restored
    assert list(frozen.parameters()) == []  # weights are constants now
    x = torch.randn(5, 1, 8, 8)  # another batch size than the example
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), net.eval()(x), atol=1e-5, rtol=1e-5)
    assert "batch_norm" not in str(frozen.graph)  # folded into the convolution
    assert measure_latency(frozen, (1, 8, 8), 4, repeats=2) > 0


def test_freeze_for_inference_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="example_inputs"):
        freeze_for_inference(_conv_bn_net(), [1, 2])  # type: ignore[arg-type]


@torch.no_grad()
def test_compare_models_frozen_and_frozen_artifact(tmp_path: object) -> None:
    net = _conv_bn_net().eval()
    net[0].weight[:5] = 0
    net[0].bias[:5] = 0
    net[1].bias[:5] = 0
    res = shrink(net, torch.randn(2, 1, 8, 8))
    rep = compare_models(net, res.model, (1, 8, 8), batch_sizes=(2,), repeats=1, frozen=True)
    assert set(rep.after.latency) == {"cpu@2", "cpu-frozen@2"}
    assert "cpu-frozen@2" in rep.speedups()
    paths = save_artifacts(res.model, torch.randn(2, 1, 8, 8), tmp_path, export=False, frozen=True)  # type: ignore[arg-type]
    assert set(paths) == {"state_dict", "frozen"}
    loaded = torch.jit.optimize_for_inference(torch.jit.load(paths["frozen"]))
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(loaded(x), net(x), atol=1e-5, rtol=1e-5)


def test_prune_command_latency_defaults_are_the_library_defaults() -> None:
    import argparse
    import inspect

    from sparseopt.cli.prune import add_prune_arguments
    from sparseopt.prune.report import LATENCY_BATCH_SIZES, LATENCY_REPEATS

    parser = argparse.ArgumentParser()
    add_prune_arguments(parser)
    args = parser.parse_args(["RUN"])
    assert (args.repeats, args.batch_sizes) == (LATENCY_REPEATS, [1, 256]) == (7, [1, 256])
    defaults = inspect.signature(compare_models).parameters
    assert defaults["repeats"].default == LATENCY_REPEATS
    assert defaults["batch_sizes"].default == LATENCY_BATCH_SIZES == (1, 256)
    assert inspect.signature(measure_latency).parameters["repeats"].default == 7
    helps = parser.format_help()
    assert "(default 1 256)" in helps and "default 7)" in helps
