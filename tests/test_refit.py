"""The refit phase (:mod:`sparseopt.engine.refit`): the last epochs fine-tune the support
the sparse optimizer found, with the pruning baseline's SGD, and resume exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from engine_helpers import StopAfter, assert_same_state, edit_saved_config, tiny, without_time

from sparseopt.baselines import FINETUNE_LR_FACTOR, refit_optimizer_settings
from sparseopt.config import TrainConfig, load_run_config, refit_epochs
from sparseopt.engine import ConfigError, Trainer, TrainingInterrupted, load_checkpoint, train
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


def test_the_refit_optimizer_takes_its_recipes_settings_at_a_tenth_of_its_lr() -> None:
    adam = get_optimizer_info("adam").defaults
    assert refit_optimizer_settings(None, "adam") == {
        "lr": pytest.approx(adam["lr"] * FINETUNE_LR_FACTOR)
    }
    assert refit_optimizer_settings(1e-3, "adam") == {"lr": 1e-3}
    with pytest.raises(ValueError, match="Invalid refit_optimizer value: 'rmsprop'"):
        refit_optimizer_settings(None, "rmsprop")


def test_a_recipes_refit_lr_goes_with_its_refit_optimizer() -> None:
    """ProxSGD's recipe refits with SGD at its own lr; naming Adam drops that lr for Adam's
    default (a tenth of its recipe's), unless an lr is given too; dense runs have none."""
    recipe = TrainConfig(optimizer="proxsgd").resolve()  # (its ℓ0 recipe's refit lr)
    assert recipe.refit_optimizer == "sgd" and recipe.refit_lr == 0.007
    adam = TrainConfig(optimizer="proxsgd", refit_optimizer="adam").resolve()
    assert adam.refit_optimizer == "adam" and adam.refit_lr is None
    given = TrainConfig(optimizer="proxsgd", refit_optimizer="adam", refit_lr=1e-3).resolve()
    assert given.refit_lr == 1e-3
    same = TrainConfig(optimizer="proxsgd", refit_optimizer="sgd").resolve()
    assert same.refit_lr == 0.007  # the recipe's optimizer named: its lr stands
    l1 = TrainConfig(optimizer="proxsgd", penalty="l1", refit_optimizer="sgd").resolve()
    assert l1.refit_lr == 0.005
    assert TrainConfig(optimizer="sgd").resolve().refit_optimizer is None
    with pytest.raises(ValueError, match="Invalid refit_optimizer value: 'adam'"):
        TrainConfig(optimizer="adam", refit_optimizer="adam").resolve()
    with pytest.raises(ValueError, match="Invalid refit_optimizer value: 'lbfgs'"):
        TrainConfig(optimizer="rda", refit_optimizer="lbfgs").validate()


@pytest.mark.parametrize("cut", [None, 4])  # uninterrupted, stopped inside the refit
def test_an_adam_refit_keeps_the_support_and_resumes_bitwise(tmp_path: Path, cut: Any) -> None:
    watch = Watch()
    kw = {"optimizer": "rvsm", "epochs": 5, "refit": 0.4, "refit_optimizer": "adam"}
    ref = train(tiny(tmp_path / "ref", **kw), callbacks=[watch])
    names = [n for n, _ in watch.steps]
    assert names[9:] == ["Adam"] * 6 and "Adam" not in names[:9]
    assert all(torch.equal(z, watch.steps[9][1]) for _, z in watch.steps[9:])
    lr = get_optimizer_info("adam").defaults["lr"] * FINETUNE_LR_FACTOR
    assert ref.history[4]["lr"] == pytest.approx(lr)
    log = (tmp_path / "ref" / "log.txt").read_text()
    assert f"fixed at 0) with Adam lr {lr:g}, cosine" in log
    assert load_run_config(tmp_path / "ref" / "config.yaml")["refit_optimizer"] == "adam"
    if cut is None:
        return
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path / "cut", **kw), callbacks=[StopAfter(cut)])
    res = train(resume=tmp_path / "cut")
    assert type(res.optimizer) is torch.optim.Adam
    assert_same_state(res.model.state_dict(), ref.model.state_dict())
    assert_same_state(res.optimizer.state_dict(), ref.optimizer.state_dict())


def test_a_run_saved_before_the_refit_optimizer_refits_with_sgd(tmp_path: Path) -> None:
    """A config.yaml without the field: SGD where the run refitted, none for a dense run
    (which must still resolve); an RVSM run with Adam's default refit lr (saved as null)
    reads it back as Adam's, not as the SGD default of runs before round 90."""
    path = tmp_path / "config.yaml"
    path.write_text("optimizer: proxsgd\nrefit: 0.15\nrefit_lr: 0.005\n")
    assert load_run_config(path)["refit_optimizer"] == "sgd"
    for dense in ("sgd", "adam"):
        path.write_text(f"optimizer: {dense}\nrefit: null\n")
        saved = load_run_config(path)
        assert saved["refit_optimizer"] is None
        assert TrainConfig.from_dict(saved).resolve().refit_optimizer is None
    path.write_text("optimizer: rvsm\nrefit: 0.15\nrefit_lr: null\n")  # before round 90
    assert load_run_config(path)["refit_lr"] == refit_optimizer_settings()["lr"]
    run = tmp_path / "run"
    train(tiny(run, optimizer="rvsm", epochs=3, refit=0.34, refit_optimizer="adam"))
    saved = load_run_config(run / "config.yaml")
    assert saved["refit_optimizer"] == "adam" and saved["refit_lr"] is None
    resolved = TrainConfig.from_dict(saved).resolve()
    assert resolved.refit_lr is None  # Adam's default at the refit, as it ran


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
    log = (tmp_path / "r" / "log.txt").read_text()
    assert "refit: epochs 4-5 fine-tune the support found" in log
    assert ", refit of the last 2 epochs, 5 epochs ×" in log.splitlines()[0]  # the header


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
    with pytest.raises(ValueError, match=r"Invalid refit value: 0\.2; .* grow_every widens"):
        tiny(tmp_path, refit=0.2, grow_every=1).resolve()
    with pytest.raises(ValueError, match=r"Invalid refit value: 0\.2; optimizer 'sgd' is dense"):
        tiny(tmp_path, optimizer="sgd", refit=0.2).resolve()
    # where the shape moves, the recipe's refit is not applied; under a target density it is
    for name in ("linbreg", "adabreg", "splitlbi", "rda", "rvsm", "proxsgd"):
        info = get_optimizer_info(name)  # (the recipe of the default penalty)
        default = info.penalty_training.get(info.defaults.get("penalty", "l1"), {})
        recipe = default.get("refit", info.training.get("refit", 0.0))
        assert TrainConfig(optimizer=name).resolve().refit == recipe
        assert tiny(tmp_path, optimizer=name, target_density=0.1).resolve().refit == recipe
        assert tiny(tmp_path, optimizer=name, target_density=0.1, refit=0.3).resolve().refit == 0.3
        if name != "rda":  # rda cannot grow
            assert tiny(tmp_path, optimizer=name, grow_every=1).resolve().refit == 0.0
    assert {get_optimizer_info(n).training.get("refit", 0.0) for n in ("rda", "linbreg")} != {0.0}
    resolved = TrainConfig(optimizer="sgd").resolve()
    assert resolved.refit is None and resolved.resolve() == resolved  # a resume resolves again


def test_refit_lr_sets_the_refits_learning_rate(tmp_path: Path) -> None:
    res = train(tiny(tmp_path / "a", optimizer="proxsgd", epochs=3, refit=0.4, refit_lr=0.05))
    assert [r["lr"] for r in res.history[2:]] == pytest.approx([0.02 * 0.5, 0.05])
    with pytest.raises(ValueError, match=r"Invalid refit_lr value: 0\.0"):
        tiny(tmp_path / "b", refit_lr=0.0).validate()
    with pytest.raises(ValueError, match=r"Invalid refit_lr value: 0\.1; optimizer 'adam'"):
        tiny(tmp_path / "c", optimizer="adam", refit_lr=0.1).resolve()


def test_lam_warmup_spans_the_sparse_epochs_and_a_refit_resumes_with_it(tmp_path: Path) -> None:
    """The warm-up reaches λ before the refit (its steps are the sparse ones), and a run
    resumed inside the refit does not steer the refit's SGD (it has no λ)."""
    kw = {"optimizer": "proxsgd", "epochs": 5, "refit": 0.4, "lam_warmup": 1.0}
    seen: list[float] = []

    class Lam:
        def on_step_end(self, trainer: Trainer, step: int | None = None, *_: Any) -> None:
            seen.append(trainer.optimizer.param_groups[0].get("lam", -1.0))

    ref = train(tiny(tmp_path / "ref", **kw), callbacks=[Lam()])
    lam = ref.config.lam
    assert seen[8] == pytest.approx(lam) and seen[7] < lam  # full λ after the 9th step
    assert seen[9:] == [-1.0] * 6  # the refit's SGD has no λ
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path / "cut", **kw), callbacks=[StopAfter(4)])
    res = train(resume=tmp_path / "cut")
    assert_same_state(res.model.state_dict(), ref.model.state_dict())


@pytest.mark.parametrize("every", [1, 2])
def test_target_density_steers_lam_before_the_refit_and_its_lam_stands_in_it(
    tmp_path: Path, every: int
) -> None:
    """``target_density`` with a refit: the controller updates λ over the sparse epochs
    only (every step or every 2 steps), the refit fine-tunes the support it reached, and
    a run stopped inside the refit resumes to the same weights and history."""
    kw = {
        "optimizer": "proxsgd",
        "epochs": 5,
        "refit": 0.4,
        "target_density": 0.3,
        "target_density_every": every,
        "target_density_ramp": 0.0,  # at once (ProxSGD's preset ramp holds λ at the start)
    }
    watch, lams = Watch(), []

    class Lam:
        def on_step_end(self, trainer: Trainer, step: int | None = None, *_: Any) -> None:
            lams.append(trainer.optimizer.param_groups[0].get("lam", -1.0))

    ref = train(tiny(tmp_path / "ref", **kw), callbacks=[watch, Lam()])
    names = [n for n, _ in watch.steps]
    assert names[9:] == ["SGD"] * 6 and "SGD" not in names[:9]
    assert all(torch.equal(z, watch.steps[8][1]) for _, z in watch.steps[9:])
    # lams[s - 1]: λ after step s; it changes at every update (0.3 is far below the density)
    moves = [s for s in range(2, 10) if lams[s - 1] != lams[s - 2]]
    assert moves == [s for s in range(2, 10) if s % every == 0]
    assert lams[9:] == [-1.0] * 6
    controlled = [r["controlled_lam"] for r in ref.history[1:]]  # [0]: before training
    assert controlled[2] == controlled[3] == controlled[4] == pytest.approx(lams[8])
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path / "cut", **kw), callbacks=[StopAfter(4)])
    res = train(resume=tmp_path / "cut")
    assert_same_state(res.model.state_dict(), ref.model.state_dict())
    assert without_time(res.history) == without_time(ref.history)


def test_a_target_density_callback_with_a_refit_rests_in_the_refit(tmp_path: Path) -> None:
    """A TargetDensity the caller passes behaves as the built-in one: no λ to steer in the
    refit's SGD, so it waits instead of raising."""
    from sparseopt.control import TargetDensity

    cb = TargetDensity.for_optimizer("rda", 0.3)
    res = train(tiny(tmp_path / "a", optimizer="rda", epochs=5, refit=0.4), callbacks=[cb])
    assert type(res.optimizer).__name__ == "SGD"
    assert len(cb.history) == 3
    with pytest.raises(TypeError, match="has no set_lam"):  # called directly, it says so
        cb.update(res.model, res.optimizer)
    # outside a refit a controller without a λ to steer is an error, not a silent no-op
    for every in (2, None):
        dense = TargetDensity(0.3, every_steps=every)
        with pytest.raises(TypeError, match="SGD has no set_lam"):
            train(tiny(tmp_path / f"sgd{every}", optimizer="sgd"), callbacks=[dense])


def test_the_path_keeps_its_layers_through_the_refit(tmp_path: Path) -> None:
    """A refit's SGD knows no penalty: the recorder keeps the penalised layers of the first
    point (with an unpenalised layer the path's points would otherwise differ)."""
    from sparseopt.optim.registry import create_optimizer
    from sparseopt.path import PathRecorder

    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = create_optimizer(net, "rda", linear_penalty="l1", exclude=["2"])
    rec = PathRecorder()
    rec.record(net, opt, epoch=0)
    rec.record(net, torch.optim.SGD(net.parameters(), lr=0.1), epoch=1)
    assert rec.layers == ["0.weight"]
    assert [sorted(p["shapes"]) for p in rec.points] == [["0.weight"], ["0.weight"]]


def test_a_run_without_a_refit_setting_resumes_without_a_refit(tmp_path: Path) -> None:
    """A run directory from before the refit existed resumes as it was (no refit), not
    with today's recipe's."""
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path, optimizer="rda", epochs=5, refit=0.0), callbacks=[StopAfter(2)])
    cfg = tmp_path / "config.yaml"
    lines = cfg.read_text().splitlines()
    cfg.write_text("\n".join(ln for ln in lines if not ln.startswith(("refit:", "refit_lr:"))))
    res = train(resume=tmp_path)
    assert res.config.refit == 0.0 and type(res.optimizer).__name__ == "RDA"
    assert all(row["lam"] is not None for row in res.history)


def test_the_refit_error_and_hint_name_its_own_numbers(tmp_path: Path) -> None:
    from sparseopt.engine import NonFiniteLossError

    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path / "a", optimizer="rda", epochs=10), callbacks=[StopAfter(9)])
    with pytest.raises(ConfigError, match=r"the last 5 of 10 epochs fine-tune a fixed support"):
        train({"epochs": 20}, resume=tmp_path / "a")
    with pytest.raises(NonFiniteLossError, match=r"--refit-lr 1e\+08"):
        train(tiny(tmp_path / "b", optimizer="rda", epochs=5, refit=0.4, refit_lr=1e9))


def test_a_stop_at_the_switch_keeps_the_sparse_epochs_checkpoint(tmp_path: Path) -> None:
    """SIGTERM in the first refit step (the switch done, no refit step taken): the checkpoint
    holds the refit, and the kept end of the sparse epochs is not overwritten with it."""
    import os
    import signal

    kw = {"optimizer": "rda", "epochs": 5, "refit": 0.4, "keep_checkpoints": True}
    trainer = Trainer(tiny(tmp_path / "cut", **kw))
    calls = {"n": 0}

    def send_sigterm(module: torch.nn.Module, args: Any, output: Any) -> None:
        if module.training:
            calls["n"] += 1
            if calls["n"] == 10:  # epoch 4 (the refit's first), batch 1
                os.kill(os.getpid(), signal.SIGTERM)

    handle = trainer.model.register_forward_hook(send_sigterm)
    try:
        with pytest.raises(TrainingInterrupted):
            trainer.fit()
    finally:
        handle.remove()
        trainer.close()
    ckpt = load_checkpoint(tmp_path / "cut")
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["refit"] is not None) == (3, 0, True)
    kept = torch.load(tmp_path / "cut" / "checkpoints" / "epoch_0003.pt", weights_only=True)
    assert kept["refit"] is None
    ref = train(tiny(tmp_path / "ref", **kw))
    res = train(resume=tmp_path / "cut")
    assert_same_state(res.model.state_dict(), ref.model.state_dict())


def test_the_refit_says_when_the_target_density_was_not_reached(tmp_path: Path) -> None:
    """The refit fixes the support: a run whose controller is still far from its target
    when the refit begins says so in the refit's line (log.txt), one near it does not."""
    far = train(tiny(tmp_path / "far", optimizer="rda", epochs=5, refit=0.4, target_density=0.3))
    line = next(s for s in (tmp_path / "far" / "log.txt").read_text().splitlines() if "refit:" in s)
    assert "the target density 30 % was not reached" in line
    assert far.metrics["weight_density"] > 0.3 * 1.25
    assert "or a smaller --refit" in line
    log = (tmp_path / "far" / "log.txt").read_text()
    assert log.count("was not reached") == 1  # the refit's line says it; the end does not
    kw = {"optimizer": "proxsgd", "epochs": 5, "refit": 0.4}
    near = train(tiny(tmp_path / "near", **kw, target_density=0.99))
    text = (tmp_path / "near" / "log.txt").read_text()
    assert "refit:" in text and "not reached" not in text
    assert near.metrics["weight_density"] > 0.99 / 1.25


class RefitLrs:
    """Records the learning rate each step of the refit's SGD runs with, from its first:
    a pre-hook registered when the refit begins, after the refit's own (so it sees the
    warmed-up lr)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from sparseopt.engine.refit import Refit

        self.lrs: list[float] = []
        begin = Refit.begin

        def watched(refit: Refit, trainer: Any, **kw: Any) -> str:
            line = begin(refit, trainer, **kw)
            refit.optimizer.register_step_pre_hook(  # type: ignore[union-attr]
                lambda o, *_: self.lrs.append(float(o.param_groups[0]["lr"]))
            )
            return line

        monkeypatch.setattr(Refit, "begin", watched)


def test_refit_warmup_raises_the_refit_lr_step_by_step_then_leaves_the_cosine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--refit-warmup 1.5 with 3 batches an epoch: the refit's first K = round(4.5) = 4
    steps run at (k+1)/4 of their epoch's cosine lr, the first of them at a quarter, and
    the epochs' rows keep the cosine's lr; a refit warm-up of 0 (RDA's recipe has 1) is
    the refit of before."""
    kw = {"optimizer": "rda", "epochs": 4, "refit": 0.5, "refit_lr": 0.04}
    watch = RefitLrs(monkeypatch)
    res = train(tiny(tmp_path / "w", **kw, refit_warmup=1.5))
    cos = [0.04, 0.04, 0.04, 0.02, 0.02, 0.02]  # the refit's two epochs of 3 steps
    warm = [lr * min(1.0, (k + 1) / 4) for k, lr in enumerate(cos)]
    assert watch.lrs == pytest.approx(warm) and watch.lrs[0] == pytest.approx(0.01)
    assert [r["lr"] for r in res.history[3:]] == pytest.approx([0.04, 0.02])
    log = (tmp_path / "w" / "log.txt").read_text()
    assert "cosine after a linear warm-up of 4 steps\n" in log  # shorter than the refit
    train(tiny(tmp_path / "all", **kw, refit_warmup=2))  # 6 steps: the last at the lr
    assert "warm-up of 6 steps\n" in (tmp_path / "all" / "log.txt").read_text()
    train(tiny(tmp_path / "long", **kw, refit_warmup=7 / 3))  # 7 steps: longer than the refit
    long = (tmp_path / "long" / "log.txt").read_text()
    assert "warm-up of 7 steps (the whole refit: it never reaches that lr" in long
    watch.lrs.clear()
    ref = train(tiny(tmp_path / "p", **kw, refit_warmup=0))
    assert ref.config.refit_warmup == 0.0 and watch.lrs == pytest.approx(cos)
    assert not torch.equal(
        res.model.state_dict()["fc1.weight"], ref.model.state_dict()["fc1.weight"]
    )


def test_a_run_resumed_inside_its_refit_warmup_is_bitwise_the_uninterrupted_one(
    tmp_path: Path,
) -> None:
    """Cut after the refit's second step (mid-epoch, mid-warm-up) and resumed: the same
    weights, optimizer state and rows; the checkpoint holds the global step of the
    switch, which the warm-up counts from, and one written before the warm-up existed
    resumes with the warm-up over."""
    from test_engine import StopAtStep

    kw = {"optimizer": "rda", "epochs": 4, "refit": 0.5, "refit_warmup": 1.5}
    ref = train(tiny(tmp_path / "ref", **kw))
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path / "cut", **kw), callbacks=[StopAtStep(8)])
    ckpt = load_checkpoint(tmp_path / "cut")
    assert ckpt["refit"]["start_step"] == 6 and ckpt["step_in_epoch"] == 2
    with Trainer(None, resume=tmp_path / "cut") as t:
        assert t._refit.steps == 2  # two of the warm-up's four steps done
        state = t._refit.state_dict()
        del state["start_step"]
        t._refit.load_state_dict(state)
        assert t._refit.steps == t._refit.warmup_steps == 4
    res = train(resume=tmp_path / "cut")
    assert_same_state(res.model.state_dict(), ref.model.state_dict())
    assert_same_state(res.optimizer.state_dict(), ref.optimizer.state_dict())
    assert without_time(res.history) == without_time(ref.history)


def test_refit_warmup_is_checked_and_resolved(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Invalid refit_warmup value: -1"):
        tiny(tmp_path, refit_warmup=-1).validate()
    with pytest.raises(ValueError, match=r"Invalid refit_warmup value: 1; optimizer 'sgd'"):
        tiny(tmp_path, optimizer="sgd", refit_warmup=1).resolve()
    assert tiny(tmp_path, optimizer="sgd", refit_warmup=0).resolve().refit_warmup is None
    for name in ("linbreg", "adabreg", "splitlbi", "rda", "rvsm", "proxsgd"):
        recipe = get_optimizer_info(name).training.get("refit_warmup", 0.0)
        assert TrainConfig(optimizer=name).resolve().refit_warmup == recipe


class Sabotage:
    """During the refit, after every step, pins the last layer's bias to class 0: the
    refit then ends with one output for every input (a constructed refit that undoes
    what the sparse phase learned)."""

    def on_step_end(self, trainer: Trainer, step: int | None = None, *_: Any) -> None:
        if trainer.in_refit:
            last = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear)][-1]
            with torch.no_grad():
                last.bias.zero_()
                last.bias[0] = 1e4


class KeepAt:
    """The model's weights at the end of epoch ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.state: dict[str, torch.Tensor] = {}

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        if epoch == self.epoch:
            self.state = {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_the_refit_guard_keeps_the_sparse_phases_network_when_the_refit_ends_below_it(
    tmp_path: Path,
) -> None:
    """RDA (its iterate is the deployable network) for 5 epochs, the last the refit's,
    sabotaged: validation accuracy falls from a0 to about one class's share, more than two
    standard errors; the network of epoch 4 comes back, with its validation accuracy,
    and the log and summary say so. Without the guard the sabotaged network stays."""
    import json

    kw = {"optimizer": "rda", "epochs": 5, "limit_batches": None, "refit": 0.2}
    keep = KeepAt(4)
    res = train(tiny(tmp_path / "g", **kw), callbacks=[Sabotage(), keep])
    a0 = res.history[4]["val_acc"]
    assert a0 > 0.5 and res.history[-1]["val_acc"] == a0
    assert_same_state(dict(res.model.state_dict()), keep.state)
    record = json.loads((tmp_path / "g" / "summary.json").read_text())["refit"]
    assert record["reverted"] and record["guarded"] and record["val_acc_at_switch"] == a0
    assert record["val_acc_at_end"] < a0 - 0.3
    assert "refit guard: the refit ended at" in (tmp_path / "g" / "log.txt").read_text()
    off = train(tiny(tmp_path / "off", **kw, refit_guard=False), callbacks=[Sabotage()])
    assert off.config.refit_guard is False
    assert off.history[-1]["val_acc"] == pytest.approx(record["val_acc_at_end"])
    assert off.history[-1]["val_acc"] < a0 - 0.3


def test_the_refit_guard_changes_nothing_where_the_refit_does_not_end_below(
    tmp_path: Path,
) -> None:
    """A healthy refit: the guard decides "keep the refit" and the run is bitwise the one
    without a guard; with no validation split (or no refit) there is no guard."""
    import json

    kw = {"optimizer": "rda", "epochs": 5, "limit_batches": None, "refit": 0.2}
    on = train(tiny(tmp_path / "on", **kw))
    off = train(tiny(tmp_path / "off", **kw, refit_guard=False))
    assert on.config.refit_guard is True
    assert_same_state(on.model.state_dict(), off.model.state_dict())
    assert without_time(on.history) == without_time(off.history)
    record = json.loads((tmp_path / "on" / "summary.json").read_text())["refit"]
    assert record == {
        "epochs": 1,
        "guarded": True,
        "val_acc_at_switch": on.history[4]["val_acc"],
        "val_acc_at_end": on.history[5]["val_acc"],
        "reverted": False,
    }
    assert not json.loads((tmp_path / "off" / "summary.json").read_text())["refit"]["guarded"]
    train(tiny(tmp_path / "noval", **kw, val_fraction=0.0), callbacks=[Sabotage()])
    noval = json.loads((tmp_path / "noval" / "summary.json").read_text())["refit"]
    assert noval["guarded"] is False and noval["reverted"] is None  # nothing decided
    norefit = train(tiny(tmp_path / "norefit", optimizer="rda", epochs=2, refit=0.0))
    assert norefit.config.refit_guard is False  # no refit, no guard
    assert "refit" not in json.loads((tmp_path / "norefit" / "summary.json").read_text())
    assert load_checkpoint(tmp_path / "on")["refit"]["kept"] is None  # decided: dropped


def test_the_refit_guard_reverts_beyond_two_standard_errors_of_the_validation_split() -> None:
    """a0 = 83 % on n = 400 validation samples: a refit ending at 80 % is within two
    standard errors (kept), one at 76 % is not (the sparse phase's network back); the
    margin is computed on the validation split's size, not the training set's."""
    from types import SimpleNamespace

    import sparseopt as so
    from sparseopt.engine.refit import Refit

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    refit = Refit(5, 0.2, so.create_optimizer(model, "rda"))
    data = {"train": (torch.zeros(4000, 3),), "val": (torch.zeros(400, 3),)}
    stub = SimpleNamespace(model=model, task="classification", _tensors=data)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for a1, reverted in ((0.80, False), (0.76, True)):
        refit.kept = [t.clone() for t in before.values()]
        refit.kept_val_acc = 0.83
        with torch.no_grad():  # what the refit changed: a weight and a running statistic
            model[0].weight.add_(1.0)
            model[1].running_mean.add_(1.0)
        line = refit.guard(stub, {"val_acc": a1})
        assert refit.reverted is reverted and bool(line) is reverted and refit.kept is None
        same = all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
        assert same is reverted, a1


def test_the_refit_guard_restores_batchnorm_statistics(tmp_path: Path) -> None:
    """A network with BatchNorm: the running statistics come back with the weights, so
    the kept network's validation accuracy is a0 exactly."""
    kw = {"optimizer": "rda", "epochs": 5, "limit_batches": None, "model": "resnet18"}
    kw["refit"] = 0.2  # the last epoch
    keep = KeepAt(4)
    res = train(
        tiny(tmp_path, **kw, model_options={"blocks": [1, 1], "widths": [4, 8]}),
        callbacks=[Sabotage(), keep],
    )
    assert any("running_mean" in k for k in keep.state)
    assert res.history[-1]["val_acc"] == res.history[4]["val_acc"]
    assert_same_state(dict(res.model.state_dict()), keep.state)


def test_an_own_controller_and_a_run_from_before_the_guard(tmp_path: Path) -> None:
    """With one's own TargetDensity callback RDA's recipe has no λ warm-up (the
    controller steers λ); a run directory written before the guard existed resumes
    without one."""
    from sparseopt.control import TargetDensity

    res = train(tiny(tmp_path / "own", optimizer="rda", epochs=2), callbacks=[TargetDensity(0.1)])
    assert res.config.lam_warmup == 0.0
    with pytest.raises(ConfigError, match=r"lam_warmup value: 0\.5; the TargetDensity"):
        train(
            tiny(tmp_path / "own2", optimizer="rda", epochs=2, lam_warmup=0.5),
            callbacks=[TargetDensity(0.1)],
        )
    assert not (tmp_path / "own2" / "config.yaml").exists()  # refused before any file
    zero = train(
        tiny(tmp_path / "own0", optimizer="rda", epochs=2, lam_warmup=0.0),
        callbacks=[TargetDensity(0.1)],
    )
    assert zero.config.lam_warmup == 0.0  # an explicit 0 (off) is accepted
    # a fixed-λ run with a warm-up, resumed with a controller of one's own: refused too
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path / "warm", optimizer="rvsm", epochs=3, lam_warmup=0.5),
              callbacks=[StopAfter(1)])  # fmt: skip
    with pytest.raises(ConfigError, match=r"lam_warmup value: 0\.5; the TargetDensity"):
        train(resume=tmp_path / "warm", callbacks=[TargetDensity(0.1)])
    kw = {"optimizer": "rda", "epochs": 5, "limit_batches": None, "refit": 0.2}
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path / "old", **kw), callbacks=[StopAfter(2)])
    edit_saved_config(tmp_path / "old", "refit_guard: true\n", "")
    old = train(resume=tmp_path / "old", callbacks=[Sabotage()])
    assert old.config.refit_guard is False
    assert old.history[-1]["val_acc"] < old.history[4]["val_acc"] - 0.3  # not reverted


def test_a_run_resumed_inside_its_refit_keeps_its_guard(tmp_path: Path) -> None:
    """The kept network travels in the checkpoint: cut after the refit's first epoch,
    resumed (sabotaged), the guard brings epoch 4's network back; a refit checkpoint
    written before the guard existed (no kept network) resumes without one."""
    kw = {"optimizer": "rda", "epochs": 6, "refit": 0.34, "limit_batches": None}
    keep = KeepAt(4)
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path / "cut", **kw), callbacks=[Sabotage(), keep, StopAfter(5)])
    ckpt = load_checkpoint(tmp_path / "cut")
    assert ckpt["refit"]["kept"] is not None and ckpt["refit"]["reverted"] is None
    with Trainer(None, resume=tmp_path / "cut") as t:
        state = {**t._refit.state_dict(), "kept": None, "kept_val_acc": None}
        t._refit.load_state_dict(state)  # as a checkpoint of before: nothing to bring back
        assert t._refit.kept is None and t._refit.summary()["guarded"] is False
    res = train(resume=tmp_path / "cut", callbacks=[Sabotage()])
    assert res.history[-1]["val_acc"] == res.history[4]["val_acc"]
    assert_same_state(dict(res.model.state_dict()), keep.state)
