"""The refit phase (:mod:`sparseopt.engine.refit`): the last epochs fine-tune the support
the sparse optimizer found, with the pruning baseline's SGD, and resume exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from engine_helpers import StopAfter, assert_same_state, tiny, without_time

from sparseopt.baselines import FINETUNE_LR_FACTOR
from sparseopt.config import TrainConfig
from sparseopt.engine import ConfigError, Trainer, TrainingInterrupted, load_checkpoint, train
from sparseopt.engine.refit import refit_epochs, refit_optimizer_settings
from sparseopt.optim.registry import get_optimizer_info


@pytest.mark.parametrize(
    ("epochs", "fraction", "expected"),
    [(20, 0.2, 4), (15, 0.2, 3), (30, 0.2, 6), (10, 0.3, 3), (3, 0.2, 1), (2, 0.9, 1),
     (1, 0.5, 0), (10, 0.0, 0), (10, None, 0), (100, 0.29, 29)],
)  # fmt: skip
def test_refit_epochs_are_the_floor_of_the_fraction_with_a_sparse_epoch_before(
    epochs: int, fraction: float | None, expected: int
) -> None:
    assert refit_epochs(epochs, fraction) == expected


def test_refit_runs_the_pruning_baselines_fine_tuning() -> None:
    sgd = get_optimizer_info("sgd").defaults
    assert refit_optimizer_settings() == {
        "lr": pytest.approx(sgd["lr"] * FINETUNE_LR_FACTOR),
        "momentum": sgd["momentum"],
    }


class Watch:
    """Records, after every step, the optimizer's class and the zero pattern of fc1."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, torch.Tensor]] = []

    def on_step_end(self, trainer: Trainer, step: int | None = None, *_: Any) -> None:
        w = trainer.model.state_dict()["fc1.weight"]
        self.steps.append((type(trainer.optimizer).__name__, w == 0))


@pytest.mark.parametrize("optimizer", ["splitlbi", "rda", "rvsm", "linbreg"])
def test_refit_fixes_the_deployable_support_and_fine_tunes_the_rest(
    tmp_path: Path, optimizer: str
) -> None:
    """5 epochs with refit 0.4: epochs 1-3 sparse, 4-5 SGD on the support of epoch 3's
    deployable network (SplitLBI's W masked by supp Γ, RVSM's u), which never changes."""
    watch = Watch()
    kw = {"optimizer": optimizer, "epochs": 5, "refit": 0.4, "schedule": "cosine"}
    res = train(tiny(tmp_path / "r", **kw), callbacks=[watch])
    names = [n for n, _ in watch.steps]
    assert names[:9] == [names[0]] * 9 and names[0] != "SGD" and names[9:] == ["SGD"] * 6
    first = watch.steps[9][1]
    assert all(torch.equal(z, first) for _, z in watch.steps[9:])  # the zeros stay put
    rows = res.history
    assert [r["lam"] is None for r in rows[1:]] == [False, False, False, True, True]
    lr = refit_optimizer_settings(res.config.refit_lr)["lr"]  # the recipe's (rda) or 0.002
    assert rows[4]["lr"] == pytest.approx(lr) and rows[5]["lr"] == pytest.approx(lr / 2)
    assert rows[3]["weight_density"] == rows[4]["weight_density"] == rows[5]["weight_density"]
    # the refit starts from the deployable network of epoch 3 (its zeros, its weights)
    ref = train(tiny(tmp_path / "three", **{**kw, "epochs": 3, "refit": 0.0}))
    kept = torch.load(tmp_path / "three" / "model_sparse.pt", weights_only=True)
    assert torch.equal(first, kept["fc1.weight"] == 0)
    assert ref.history[3]["weight_density"] == rows[3]["weight_density"]
    # the written network is the refitted one, with the same zeros
    final = torch.load(tmp_path / "r" / "model_sparse.pt", weights_only=True)
    assert torch.equal(final["fc1.weight"] == 0, first)
    assert torch.equal(final["fc1.weight"], res.model.state_dict()["fc1.weight"])
    assert (
        "refit: epochs 4-5 fine-tune the support found" in (tmp_path / "r" / "log.txt").read_text()
    )


def test_the_sparse_epochs_cosine_ends_where_the_refit_begins(tmp_path: Path) -> None:
    res = train(tiny(tmp_path, optimizer="linbreg", epochs=5, refit=0.4, schedule="cosine"))
    lr0 = get_optimizer_info("linbreg").defaults["lr"]
    lrs = [r["lr"] for r in res.history[1:4]]  # cosine over 3 epochs
    assert lrs == pytest.approx([lr0, lr0 * 0.75, lr0 * 0.25])


@pytest.mark.parametrize("cut", [2, 4])  # before the refit, inside it
def test_a_run_with_refit_resumes_bitwise_identical(tmp_path: Path, cut: int) -> None:
    kw = {"optimizer": "splitlbi", "epochs": 5, "refit": 0.4}
    ref = train(tiny(tmp_path / "ref", **kw))
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path / "cut", **kw), callbacks=[StopAfter(cut)])
    ckpt = load_checkpoint(tmp_path / "cut")
    assert ckpt["epoch"] == cut and (ckpt["refit"] is None) == (cut < 4)
    res = train(resume=tmp_path / "cut")
    assert type(res.optimizer) is torch.optim.SGD
    assert_same_state(res.model.state_dict(), ref.model.state_dict())
    assert_same_state(res.optimizer.state_dict(), ref.optimizer.state_dict())
    assert without_time(res.history) == without_time(ref.history)


def test_a_run_in_its_refit_cannot_change_its_length(tmp_path: Path) -> None:
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path, optimizer="rda", epochs=5, refit=0.4), callbacks=[StopAfter(4)])
    with pytest.raises(
        ConfigError, match="Invalid epochs value: 8; the checkpoint is in its refit"
    ):
        train({"epochs": 8}, resume=tmp_path)
    assert load_checkpoint(tmp_path)["epoch"] == 4  # untouched


def test_a_refit_mask_is_read_off_the_zeros_when_the_checkpoint_has_none(tmp_path: Path) -> None:
    """A sharded run's checkpoint stores no mask: the refit's zeros are the mask."""
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path, optimizer="rda", epochs=5, refit=0.4), callbacks=[StopAfter(4)])
    with Trainer(None, resume=tmp_path) as t:
        stored = [m.clone() for m in t._refit.masks]
        t._refit.load_state_dict({"masks": [None] * len(stored)})
        assert all(torch.equal(a, b) for a, b in zip(stored, t._refit.masks, strict=True))
        with pytest.raises(ValueError, match="1 masks for"):
            t._refit.load_state_dict({"masks": [None]})


def test_refit_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Invalid refit value: 1\.0"):
        tiny(tmp_path, refit=1.0).validate()
    with pytest.raises(ValueError, match=r"Invalid refit value: -0\.1"):
        tiny(tmp_path, refit=-0.1).validate()
    with pytest.raises(ValueError, match=r"Invalid refit value: 0\.2; .* target_density"):
        tiny(tmp_path, refit=0.2, target_density=0.1).resolve()
    with pytest.raises(ValueError, match=r"Invalid refit value: 0\.2; optimizer 'sgd' is dense"):
        tiny(tmp_path, optimizer="sgd", refit=0.2).resolve()
    # where λ or the shape move, the recipe's refit is not applied
    for name in ("linbreg", "adabreg", "splitlbi", "rda", "rvsm", "proxsgd"):
        assert tiny(tmp_path, optimizer=name, target_density=0.1).resolve().refit == 0.0
        if name != "rda":  # rda cannot grow
            assert tiny(tmp_path, optimizer=name, grow_every=1).resolve().refit == 0.0
        recipe = get_optimizer_info(name).training.get("refit", 0.0)
        assert TrainConfig(optimizer=name).resolve().refit == recipe
    resolved = TrainConfig(optimizer="sgd").resolve()
    assert resolved.refit is None and resolved.resolve() == resolved  # a resume resolves again


def test_refit_lr_sets_the_refits_learning_rate(tmp_path: Path) -> None:
    res = train(tiny(tmp_path / "a", optimizer="proxsgd", epochs=3, refit=0.4, refit_lr=0.05))
    assert [r["lr"] for r in res.history[2:]] == pytest.approx([0.02 * 0.5, 0.05])
    with pytest.raises(ValueError, match=r"Invalid refit_lr value: 0\.0"):
        tiny(tmp_path / "b", refit_lr=0.0).validate()
    with pytest.raises(ValueError, match=r"Invalid refit_lr value: 0\.1; optimizer 'adam'"):
        tiny(tmp_path / "c", optimizer="adam", refit_lr=0.1).resolve()
