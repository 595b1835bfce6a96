"""SparsityCallback under a real (tiny, CPU) Lightning fit."""

from __future__ import annotations

import copy
import csv

import pytest
import torch
from torch import nn

pl = pytest.importorskip(
    "lightning.pytorch",
    reason='PyTorch Lightning is not installed: pip install "sparseopt[lightning]"',
)

import sparseopt as so  # noqa: E402
from sparseopt.integrations.lightning import SparsityCallback  # noqa: E402
from sparseopt.path import load_path  # noqa: E402


def _data(n: int, seed: int) -> torch.utils.data.TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return torch.utils.data.TensorDataset(x, y)


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        # two penalised groups with their own λ, one unpenalised, and a scheduler
        groups = so.param_groups(self, penalty="l1", lam=0.05)
        groups.insert(1, groups[0] | {"params": [groups[0]["params"].pop()], "lam": 0.02})
        groups[1]["param_names"] = [groups[0]["param_names"].pop()]
        opt = so.RVSM(groups, lr=0.2, beta=1.0, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": sched}

    def train_dataloader(self):
        return torch.utils.data.DataLoader(_data(64, 0), batch_size=16)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(_data(40, 1), batch_size=40)  # one batch


def _trainer(tmp_path, callbacks, max_epochs: int) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=pl.loggers.CSVLogger(tmp_path, name="logs", version=0),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )


def _val_loss(module: Tiny) -> float:
    x, y = _data(40, 1).tensors
    with torch.no_grad():
        return nn.functional.cross_entropy(module(x), y).item()


class _Grab(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        self.state = copy.deepcopy(trainer.optimizers[0].state_dict())


def test_fit_logs_evaluates_deployed_records_and_round_trips(tmp_path) -> None:
    module = Tiny()
    cb = SparsityCallback(target_density=0.5, control_every_n_steps=2, finalize=False)
    trainer = _trainer(tmp_path, [cb], max_epochs=2)
    trainer.fit(module)
    opt = trainer.optimizers[0]
    assert cb.optimizer is opt and len(opt.param_groups) == 3
    # densities logged through the Lightning logger
    metrics = trainer.callback_metrics
    for key in ("density", "weight_density", "lam", "layer_density/net.0", "layer_density/net.2"):
        assert key in metrics, key
    # each penalised layer's λ, as its own group holds it (the two differ)
    assert {k for k in metrics if k.startswith("layer_lam/")} == {
        "layer_lam/net.0",
        "layer_lam/net.2",
    }
    lam_of = {id(p): g["lam"] for g in opt.param_groups for p in g["params"]}
    for name in ("net.0", "net.2"):
        held = lam_of[id(module.get_submodule(name).weight)]
        assert float(metrics[f"layer_lam/{name}"]) == pytest.approx(held, rel=1e-6)
    assert float(metrics["layer_lam/net.0"]) != pytest.approx(float(metrics["layer_lam/net.2"]))
    expected = so.density(module, opt)
    assert float(metrics["weight_density"]) == pytest.approx(expected.weight_density)
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert sum(bool(r.get("weight_density")) for r in rows) == 2  # one per epoch
    # validation ran on the deployable network (u, not w)
    with opt.deployed():
        deployed = _val_loss(module)
    assert float(metrics["val_loss"]) == pytest.approx(deployed, rel=1e-6)
    assert _val_loss(module) != pytest.approx(deployed, rel=1e-6)
    # the controller moved λ of both penalised groups (their ratio kept)
    assert cb.controller is not None and len(cb.controller.history) == 4  # 8 steps / 2
    assert opt.param_groups[0]["lam"] != 0.05
    assert opt.param_groups[0]["lam"] / opt.param_groups[1]["lam"] == pytest.approx(2.5)
    # the path: the start and one point per epoch, with the validation metric
    path = load_path(tmp_path / "logs" / "version_0")
    assert [p["epoch"] for p in path.points] == [0, 1, 2]
    assert path.points[-1]["metrics"]["val_loss"] == pytest.approx(float(metrics["val_loss"]))

    # checkpoint save / restore round-trips the optimizer state
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = opt.state_dict()
    grab = _Grab()
    module2 = Tiny()
    cb2 = SparsityCallback(target_density=0.5, control_every_n_steps=2)
    trainer2 = _trainer(tmp_path, [cb2, grab], max_epochs=3)
    trainer2.fit(module2, ckpt_path=ckpt)
    assert grab.state["param_groups"] == saved["param_groups"]
    assert grab.state["state"].keys() == saved["state"].keys()
    for i, s in saved["state"].items():
        for k, v in s.items():
            torch.testing.assert_close(grab.state["state"][i][k], v, rtol=0, atol=0)
    assert cb2.controller.history[:4] == cb.controller.history
    assert [p["epoch"] for p in load_path(tmp_path / "logs" / "version_0").points] == [0, 1, 2, 3]
    # finalize (default): the parameters are the deployable network after fit
    opt2 = trainer2.optimizers[0]
    for p in module2.net.parameters():
        torch.testing.assert_close(p, opt2.deployable(p))


def test_a_dense_optimizer_is_refused(tmp_path) -> None:
    class Dense(Tiny):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = _trainer(tmp_path, [SparsityCallback()], max_epochs=1)
    with pytest.raises(TypeError, match="needs a sparseopt optimizer"):
        trainer.fit(Dense())


class _AdaBregTiny(Tiny):
    """Tiny with AdaBreg's recipe, per layer or per layer kind."""

    def __init__(self, lam_scale: str) -> None:
        super().__init__()
        self.lam_scale = lam_scale

    def configure_optimizers(self):
        return so.create_optimizer(self, "adabreg", lam_scale=self.lam_scale)


@pytest.mark.parametrize("lam_scale", ["layer", "none"])
def test_adabreg_preset_steers_per_layer_only_on_per_layer_groups(tmp_path, lam_scale) -> None:
    """The callback builds the controller with the optimizer's preset: AdaBreg's per-layer
    shares on one param group per layer; on one group per layer kind (what
    ``create_optimizer(model, "adabreg")`` gives) one density, with a warning."""
    import warnings

    cb = SparsityCallback(target_density=0.3, control_every_n_steps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, [cb], max_epochs=1).fit(_AdaBregTiny(lam_scale))
    fallback = [w for w in caught if "steering one density" in str(w.message)]
    assert cb.controller is not None and len(cb.controller.history) == 2  # 4 steps / 2
    if lam_scale == "layer":
        assert cb.controller.allocation == "he" and not fallback
        assert len(cb.controller.state_dict()["groups"]) == 2  # one loop per layer
    else:
        assert cb.controller.allocation == "global" and len(fallback) == 1
