"""The linear lr warm-up (:mod:`sparseopt.engine.warmup`): the factor of every step, the
schedule left alone, the run's ``warmup`` setting, its resume and its refusal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from engine_helpers import assert_same_state, edit_saved_config, tiny, without_time

from sparseopt.config import TrainConfig
from sparseopt.engine import Trainer, TrainingInterrupted, load_checkpoint, train
from sparseopt.engine.warmup import LinearWarmup, warmup_steps


@pytest.mark.parametrize(
    ("epochs", "batches", "expected"),
    [(1.0, 57, 57), (0.5, 57, 28), (0.01, 57, 1), (2.5, 4, 10), (0.0, 57, 0), (None, 57, 0)],
)
def test_warmup_steps_round_and_keep_at_least_one(
    epochs: float | None, batches: int, expected: int
) -> None:
    assert warmup_steps(epochs, batches) == expected


@pytest.mark.parametrize("tensor_lr", [False, True])
def test_each_step_runs_at_its_share_of_the_scheduled_lr_which_is_put_back(
    tensor_lr: bool,
) -> None:
    """Plain SGD without momentum: the update of step k is exactly lr·(k+1)/K·grad for
    k < K, then lr·grad; between steps the group holds the scheduled lr (also a tensor
    lr, the same object), which the schedule may change mid-warm-up."""
    p = torch.nn.Parameter(torch.zeros(()))
    lr: Any = torch.tensor(0.8) if tensor_lr else 0.8
    opt = torch.optim.SGD([p], lr=lr)
    k = [0]
    warm = LinearWarmup(4, lambda: k[0])
    warm.attach(opt)
    moves, factors = [], []
    for step in range(6):
        if step == 2:  # the schedule sets another lr: the warm-up scales that one
            opt.param_groups[0]["lr"] = torch.tensor(0.4) if tensor_lr else 0.4
        before, scheduled = p.detach().clone(), opt.param_groups[0]["lr"]
        factors.append(warm.factor())
        p.grad = torch.ones(())
        opt.step()
        k[0] += 1
        moves.append(float(before - p.detach()))
        assert opt.param_groups[0]["lr"] is scheduled
    assert factors == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert moves == pytest.approx([0.2, 0.4, 0.3, 0.4, 0.4, 0.4])


def test_no_warmup_registers_no_hook() -> None:
    p = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.SGD([p], lr=1.0)
    LinearWarmup(0, lambda: 0).attach(opt)
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    with pytest.raises(ValueError, match=r"Invalid steps value: -1"):
        LinearWarmup(-1, lambda: 0)


class StepLrs:
    """The lr of the first param group as each step runs (a pre-hook registered after the
    trainer's, so it sees the warmed-up value)."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_begin(self, trainer: Trainer) -> None:
        trainer.optimizer.register_step_pre_hook(
            lambda opt, *_: self.lrs.append(float(opt.param_groups[0]["lr"]))
        )


@pytest.mark.parametrize("optimizer", ["linbreg", "sgd"])
def test_a_run_warms_up_over_its_first_steps_then_follows_the_schedule(
    tmp_path: Path, optimizer: str
) -> None:
    """3 epochs of 3 steps, warm-up 5/3 epochs (5 steps), cosine over the 3 epochs."""
    import math

    seen = StepLrs()
    cfg = tiny(tmp_path, optimizer=optimizer, epochs=3, warmup=5 / 3, schedule="cosine", lr=0.1)
    res = train(cfg, callbacks=[seen])
    cosine = [0.1 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    expected = [cosine[s // 3] * min(1.0, (s + 1) / 5) for s in range(9)]
    assert seen.lrs == pytest.approx(expected)
    assert [row["lr"] for row in res.history[1:]] == pytest.approx(cosine)  # the schedule's
    assert "lr warm-up over the first 5 steps" in (tmp_path / "log.txt").read_text()


def test_a_warmup_longer_than_the_run_is_said(tmp_path: Path) -> None:
    """2 epochs of 3 steps: a warm-up of 6 steps ends at the lr, one of 7 never gets there;
    with a refit of the last epoch the sparse phase has 3 steps."""
    train(tiny(tmp_path / "six", optimizer="sgd", warmup=2))
    assert "warm-up over the first 6 steps," in (tmp_path / "six" / "log.txt").read_text()
    train(tiny(tmp_path / "seven", optimizer="sgd", warmup=7 / 3))
    assert (
        "first 7 steps (more than the 6 steps of the run: it never reaches that lr; a "
        "smaller --warmup)" in (tmp_path / "seven" / "log.txt").read_text()
    )
    train(tiny(tmp_path / "refit", optimizer="rvsm", warmup=4 / 3, refit=0.5))
    assert (
        "first 4 steps (more than the 3 steps before the refit:"
        in (tmp_path / "refit" / "log.txt").read_text()
    )


def test_the_returned_optimizer_steps_at_its_lr_and_does_not_hold_the_trainer(
    tmp_path: Path,
) -> None:
    """A run that ends inside its warm-up: afterwards the optimizer is the caller's (no
    hook scales its steps, none refers to the trainer)."""
    import gc
    import weakref

    res = train(tiny(tmp_path, optimizer="sgd", warmup=3, schedule="none", lr=0.1))
    opt = res.optimizer
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    seen = StepLrs()
    opt.register_step_pre_hook(lambda o, *_: seen.lrs.append(float(o.param_groups[0]["lr"])))
    p = opt.param_groups[0]["params"][0]
    p.grad = torch.ones_like(p)
    opt.step()
    assert seen.lrs == [0.1]
    from sparseopt.engine import Trainer as T

    for name, kw in (("adabreg", {}), ("proxsgd", {"refit": 0.5, "refit_warmup": 0.5})):
        # the refit's SGD: its mask hook reads the refit, which read the trainer
        with T(tiny(tmp_path / name, optimizer=name, warmup=3, epochs=4, **kw)) as t:
            t.fit()
            ref = weakref.ref(t)
            optimizer = t.optimizer
        del t
        gc.collect()
        assert ref() is None and optimizer is not None, name


def test_a_step_that_raised_mid_warmup_leaves_the_schedules_lr(tmp_path: Path) -> None:
    from sparseopt.engine import Trainer as T

    class Boom:
        def on_train_begin(self, trainer: Trainer) -> None:
            def pre(opt: Any, *_: Any) -> None:
                if trainer.global_step == 1:
                    raise RuntimeError("out of memory (a test)")

            trainer.optimizer.register_step_pre_hook(pre)  # after the warm-up's

    t = T(tiny(tmp_path, optimizer="sgd", warmup=3, schedule="none", lr=0.1), callbacks=[Boom()])
    with pytest.raises(RuntimeError, match="a test"):
        t.fit()
    assert t.optimizer.param_groups[0]["lr"] != 0.1  # scaled, the post-hook never ran
    t.close()
    assert t.optimizer.param_groups[0]["lr"] == 0.1


def test_a_controller_coupled_to_the_lr_sees_the_warmed_up_lr(tmp_path: Path) -> None:
    """ProxSGD steered with lr_coupled: each update divides λ by the rise of the lr the
    next step runs at, warm-up included (the group holds the schedule's)."""
    from sparseopt.control import TargetDensity

    ctl = TargetDensity(0.3, every_steps=1, lr_coupled=True)
    seen: list[float] = []
    orig = ctl._lr_fall

    def spy(i: int, group: Any, lr_factor: float = 1.0) -> float:
        seen.append(float(group["lr"]) * lr_factor)
        return orig(i, group, lr_factor)

    ctl._lr_fall = spy  # type: ignore[method-assign]
    kw = {"optimizer": "proxsgd", "warmup": 2, "schedule": "none", "lr": 0.1, "refit": 0.0}
    train(tiny(tmp_path, **kw), callbacks=[ctl])
    per_update = seen[:: len(seen) // 6]  # every group sees the same lr at an update
    assert per_update == pytest.approx([0.1 * (k + 2) / 6 for k in range(5)] + [0.1])


def test_a_controller_holding_through_the_warmup_first_updates_where_it_ends(
    tmp_path: Path,
) -> None:
    """hold_warmup: no λ update while the next step runs at a fraction of the lr (3 steps
    here), per step and per epoch; without it the loop moves λ from its first update."""
    from sparseopt.control import TargetDensity

    kw = {"optimizer": "adabreg", "warmup": 1, "epochs": 3, "limit_batches": 3}
    held = TargetDensity(0.3, every_steps=1, hold_warmup=True)
    t = Trainer(tiny(tmp_path / "held", **kw), callbacks=[held])
    lam0 = [float(g["lam"]) for g in t.optimizer.param_groups]
    assert t.warmup_steps == 3
    t.fit()
    assert [h[0] for h in held.history] == list(range(3, 10))  # steps 3..9, none before
    t.close()
    free = TargetDensity(0.3, every_steps=1)
    train(tiny(tmp_path / "free", **kw), callbacks=[free])
    assert [h[0] for h in free.history] == list(range(1, 10))
    assert free.history[0][2] != pytest.approx(lam0[0])  # λ moved at once without the hold

    import sparseopt

    class Fake:  # a trainer mid-warm-up, per epoch (every_steps None)
        warmup_steps, global_step, in_refit = 5, 4, False
        optimizer = sparseopt.create_optimizer(torch.nn.Linear(4, 3), "adabreg", lam=0.7)

    per_epoch = TargetDensity(0.3, hold_warmup=True)
    metrics: dict[str, Any] = {}
    per_epoch.on_epoch_end(Fake(), 1, metrics)
    assert per_epoch.history == []
    # the epoch's row has the controller's columns all the same: the λ it starts from
    assert metrics["target_density"] == 0.3 and metrics["controlled_lam"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="hold_warmup"):
        TargetDensity(0.3, hold_warmup=1)  # type: ignore[arg-type]


def test_the_refit_warms_up_from_its_own_first_step(tmp_path: Path) -> None:
    """The run's warm-up (2 steps) and the refit's (3 steps, counted from the switch)."""
    seen = StepLrs()
    kw = {"optimizer": "rda", "epochs": 4, "refit": 0.5, "warmup": 2 / 3, "refit_warmup": 1.0}
    res = train(tiny(tmp_path, **kw, lr=1.0, refit_lr=0.03), callbacks=[seen])
    assert seen.lrs[:6] == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0, 1.0])  # schedule none
    # the hook was on the sparse optimizer: the refit's SGD is another one
    assert len(seen.lrs) == 6 and type(res.optimizer).__name__ == "SGD"


def test_a_run_cut_mid_warmup_resumes_to_the_same_state(tmp_path: Path) -> None:
    from test_engine import StopAtStep

    kw = {"optimizer": "adabreg", "epochs": 3, "warmup": 2.0, "schedule": "cosine"}
    ref = train(tiny(tmp_path / "ref", **kw))
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path / "cut", **kw), callbacks=[StopAtStep(4)])
    assert load_checkpoint(tmp_path / "cut")["global_step"] == 4
    res = train(resume=tmp_path / "cut")
    assert_same_state(res.model.state_dict(), ref.model.state_dict())
    assert_same_state(res.optimizer.state_dict(), ref.optimizer.state_dict())
    assert without_time(res.history) == without_time(ref.history)


def test_warmup_is_checked_resolved_and_absent_from_older_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Invalid warmup value: -1"):
        tiny(tmp_path, warmup=-1).validate()
    # no dense recipe has one (round 70's Adam warm-up was withdrawn), nor LinBreg's;
    # dense runs take it too
    assert tiny(tmp_path, optimizer="adam").resolve().warmup == 0.0
    assert tiny(tmp_path, optimizer="linbreg").resolve().warmup == 0.0
    assert tiny(tmp_path, optimizer="adam", warmup=1).resolve().warmup == 1.0
    train(tiny(tmp_path / "old", optimizer="sgd", epochs=1))
    edit_saved_config(tmp_path / "old", "\nwarmup: 0.0\n", "\n")
    from sparseopt.config import load_run_config

    assert load_run_config(tmp_path / "old" / "config.yaml")["warmup"] == 0.0
    res = train(resume=tmp_path / "old", config={"epochs": 2})
    assert res.history[-1]["epoch"] == 2 and isinstance(res.config, TrainConfig)


def test_compare_refuses_fine_tunings_of_a_dense_run_that_is_gone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dense run of the pruning baseline removed (Adam's, to train it with today's
    recipe): its fine-tunings' settings still match, but they pruned the old network, so
    compare says so before it trains anything, in one line."""
    import shutil

    from sparseopt.cli import main

    out = tmp_path / "cmp"
    args = ["compare", "--optimizers", "linbreg", "--prune-baseline", "--dense", "adam"]
    args += ["--epochs", "2", "--limit-batches", "2", "-q", "--out", str(out)]
    assert main(args) == 0
    shutil.rmtree(out / "pruning-adam-dense")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pruning-adam-linbreg fine-tuned a pruned network" in err[0]
    assert not (out / "pruning-adam-dense").exists()  # nothing trained
    shutil.rmtree(out / "pruning-adam-linbreg")
    assert main(args) == 0 and (out / "pruning-adam-linbreg" / "summary.json").is_file()


def test_the_pruning_baselines_fine_tuning_has_no_warmup(tmp_path: Path) -> None:
    """`compare --warmup 2 --prune-baseline`: the dense run warms up, its pruned network's
    fine-tuning does not (it is the sparse methods' refit, which has its own)."""
    import argparse

    from sparseopt.cli.compare import _pruning_configs

    args = argparse.Namespace(finetune_epochs=None)
    base = {"dataset": "digits", "model": "mlp", "epochs": 10, "warmup": 2.0}
    dense, finetune = _pruning_configs(base, tmp_path, "sgd", args)
    tuned = finetune("linbreg")
    assert (dense.epochs, dense.warmup) == (8, 2.0)
    assert (tuned.epochs, tuned.warmup, tuned.schedule) == (2, 0.0, "cosine")


def test_the_hold_is_written_into_the_run_and_older_runs_read_without_it(
    tmp_path: Path,
) -> None:
    """``target_density_hold``: the controller preset's (AdaBreg's hold) resolved into the
    run where a target steers, none where none does; a run saved before the field held
    nothing; the flag turns it off, and the controller then moves λ from its first update."""
    from sparseopt.config.files import load_run_config

    assert TrainConfig(optimizer="adabreg").resolve().target_density_hold is True
    assert TrainConfig(optimizer="linbreg").resolve().target_density_hold is False
    assert TrainConfig(optimizer="sgd").resolve().target_density_hold is None
    assert TrainConfig(optimizer="adabreg", lam=0.3).resolve().target_density_hold is None
    kw = {"optimizer": "adabreg", "warmup": 1, "epochs": 2, "limit_batches": 4}
    off = Trainer(tiny(tmp_path / "off", target_density_hold=False, **kw))
    off.fit()
    ctl = next(cb for cb in off.callbacks if type(cb).__name__ == "TargetDensity")
    assert not ctl.hold_warmup and ctl.history[0][0] == 2  # from its first update
    off.close()
    edit_saved_config(tmp_path / "off", "target_density_hold: false\n", "")
    assert load_run_config(tmp_path / "off" / "config.yaml")["target_density_hold"] is False


def test_a_run_held_through_a_warmup_as_long_as_itself_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The controller never updates: the header says the target is never steered to, the
    end of the run warns from the network's density (no update to read it from), and a
    refit's epochs log no λ of the refit's SGD (null, not NaN)."""
    import json

    kw = {"optimizer": "adabreg", "epochs": 1, "limit_batches": 3, "stall_epochs": 0}
    train(tiny(tmp_path / "whole", warmup=1, quiet=False, **kw))
    out = capsys.readouterr().out
    assert "λ held through it: the target density is never steered to" in out
    assert "warning: the target density 13 % was not reached" in out
    kw = {**kw, "epochs": 2, "refit": 0.5, "warmup": 2}
    train(tiny(tmp_path / "refit", **kw))
    rows = [
        json.loads(r) for r in (tmp_path / "refit" / "metrics.jsonl").read_text().split("\n") if r
    ]
    assert [r.get("controlled_lam") for r in rows[1:]] == [pytest.approx(0.45), None]
