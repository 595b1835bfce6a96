"""Train a sparse network with PyTorch Lightning and sparseopt's SparsityCallback.

The data is the scikit-learn digits set embedded in sparseopt (no download) and the
model a LeNet-5. AdaBreg starts from a 2 %-dense network (sparse
initialisation) and the target-density controller steers λ towards 20 % of the
weights; validation runs on the deployable network, densities and λ go to the
Lightning logger (CSV here; TensorBoard works the same), the solution path to the log
directory, and the network is finalized at the end, then shrunk with sparseopt.prune.

    pip install "sparseopt[cli,lightning]"
    python examples/lightning_sparse.py            # about a minute on a laptop CPU
    python examples/lightning_sparse.py --smoke    # a few seconds (what the tests run)
    sparseopt path runs/lightning/logs/version_0 --within 0.02   # look at the path
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch import nn

import sparseopt as so
from sparseopt.data import load_dataset
from sparseopt.integrations.lightning import SparsityCallback
from sparseopt.models import build_model
from sparseopt.prune import shrink


class SparseClassifier(pl.LightningModule):
    """A classifier whose optimizer is a sparseopt optimizer with a cosine schedule."""

    def __init__(self, model: nn.Module, *, epochs: int) -> None:
        super().__init__()
        self.model, self.epochs = model, epochs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        # AdaBreg with the registry's recipe (lr, λ per penalty): conv weights group ℓ1
        # over filters, Linear weights ℓ1, biases and norms unpenalised
        opt = so.create_optimizer(self.model, "adabreg", conv_penalty="group_l1")
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs)
        return {"optimizer": opt, "lr_scheduler": sched}


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--target-density", type=float, default=0.2)
    parser.add_argument("--out", default="runs/lightning")
    parser.add_argument("--smoke", action="store_true", help="2 tiny epochs (for tests)")
    args = parser.parse_args(argv)
    epochs = 2 if args.smoke else args.epochs

    pl.seed_everything(0, verbose=False)
    data = load_dataset("digits", seed=0, val_fraction=0.15)
    loader = torch.utils.data.DataLoader
    train = loader(data.train, batch_size=64, shuffle=True)
    val = loader(data.val, batch_size=512)
    model = build_model("lenet5", data.input_shape, data.num_classes)
    so.sparse_init_(model, density=0.02)  # inverse scale space: start sparse, grow
    module = SparseClassifier(model, epochs=epochs)
    callback = SparsityCallback(target_density=args.target_density, control_every_n_steps=4)
    trainer = pl.Trainer(
        max_epochs=epochs,
        limit_train_batches=3 if args.smoke else None,
        accelerator="cpu",
        logger=pl.loggers.CSVLogger(args.out, name="logs"),
        callbacks=[callback],
        enable_progress_bar=not args.smoke,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=5,
    )
    trainer.fit(module, train, val)

    # finalize() ran: the parameters are the deployable network; shrink it for real
    rep = so.density(model)
    x_test, y_test = data.test.tensors
    small = shrink(model.eval(), x_test[:2]).model.eval()
    with torch.no_grad():
        acc = (small(x_test).argmax(1) == y_test).float().mean().item()
    n_before = sum(p.numel() for p in model.parameters())
    n_after = sum(p.numel() for p in small.parameters())
    result = {
        "val_acc": float(trainer.callback_metrics["val_acc"]),
        "weight_density": rep.weight_density,
        "test_acc_shrunk": acc,
        "params_before": n_before,
        "params_after": n_after,
    }
    print(
        f"val acc {result['val_acc']:.3f} at weight density {rep.weight_density:.1%}; "
        f"shrunk {n_before} -> {n_after} parameters, test acc {acc:.3f}; "
        f"path in {trainer.log_dir}"
    )
    return result


if __name__ == "__main__":
    main()
