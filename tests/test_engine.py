"""Tests of the training engine (``sparseopt.engine``) and its config (``sparseopt.config``).

Budgets are tiny (one or a few epochs of a few batches) so the file runs in seconds.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from engine_helpers import StopAfter, assert_same_state, edit_saved_config, tiny, without_time

from sparseopt.config import TrainConfig, load_config_file, save_config_file
from sparseopt.engine import (
    Callback,
    ConfigError,
    NonFiniteLossError,
    Trainer,
    TrainingInterrupted,
    load_checkpoint,
    train,
)
from sparseopt.optim.registry import get_optimizer_info, list_optimizers
from sparseopt.path import load_path
from sparseopt.prune import match_widths

RUN_FILES = (
    "config.yaml",
    "checkpoint.pt",
    "metrics.csv",
    "metrics.jsonl",
    "log.txt",
    "model_sparse.pt",
    "summary.json",
    "accuracy.png",
    "density.png",
    "layer_density.png",
    "path.npz",
    "path.json",
)


# ------------------------------------------------------------------------------- config


def test_config_roundtrip_dict_yaml_json(tmp_path: Path) -> None:
    cfg = TrainConfig(
        optimizer="splitlbi",
        lam=0.1,
        betas=[0.8, 0.9],
        model_options={"hidden": [8]},
        target_density=0.2,
        target_density_every=5,
        record_path=False,
        grow_every=3,
        grow_tau=0.5,
    )
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    for name in ("c.yaml", "c.json"):
        save_config_file(cfg, tmp_path / name)
        assert TrainConfig.from_dict(load_config_file(tmp_path / name)) == cfg
    (tmp_path / "c.toml").write_text('optimizer = "splitlbi"\nlam = 0.1\nbatch-size = 32\n')
    got = TrainConfig.from_dict(load_config_file(tmp_path / "c.toml"))
    assert (got.optimizer, got.lam, got.batch_size) == ("splitlbi", 0.1, 32)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("epochs", -1, "epochs"),
        ("batch_size", 0, "batch_size"),
        ("schedule", "linear", "schedule"),
        ("val_fraction", 1.0, "val_fraction"),
        ("device", "tpu", "device"),
        ("init_density", 0.0, "init_density"),
        ("target_density", -0.1, "target_density"),
        ("target_density", 1.5, "target_density"),
        ("target_density_every", 0, "target_density_every"),
        ("target_density_ramp", -0.5, "target_density_ramp"),
        ("record_path", "yes", "record_path"),
        ("grow_every", 0, "grow_every"),
        ("grow_tau", 0.0, "grow_tau"),
        ("grow_tau", 1.01, "grow_tau"),
        ("bogus", 1, "valid keys"),
    ],
)
def test_config_rejects_invalid_values(key: str, value: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict({key: value})


def test_an_unbounded_interval_is_written_open() -> None:
    """inf is never accepted, so the message does not offer it: [0.0, inf)."""
    for value in (float("inf"), -1.0):
        with pytest.raises(ValueError, match=r"expected a number in \[0\.0, inf\)$"):
            TrainConfig(lr=value).validate()


def test_resolve_fills_presets_and_registry_defaults() -> None:
    r = TrainConfig().resolve()
    assert r.optimizer == "adabreg" and r.penalty == "l1"
    info = get_optimizer_info("adabreg")
    assert r.init_density == info.training["init_density"] == 0.01
    # the peak lr its warm-up reaches (a training setting), else the keyword default
    assert r.lr == info.training.get("lr", info.defaults["lr"]) and r.lam == info.lam["l1"]
    assert r.schedule == info.training["schedule"]
    dense = TrainConfig(optimizer="SGD").resolve()
    assert dense.optimizer == "sgd" and dense.penalty is None and dense.lam is None
    assert dense.init_density == 1.0
    user = TrainConfig(optimizer="linbreg", lr=0.5, init_density=0.2).resolve()
    assert (user.lr, user.init_density) == (0.5, 0.2)
    with pytest.raises(ValueError, match="linbreg"):
        TrainConfig(optimizer="nope").resolve()


@pytest.mark.parametrize("key", ["target_density", "grow_every"])
def test_structure_settings_need_a_sparse_optimizer(tmp_path: Path, key: str) -> None:
    value = {"target_density": 0.1, "grow_every": 2}[key]
    assert TrainConfig(optimizer="splitlbi", **{key: value}).resolve().optimizer == "splitlbi"
    with pytest.raises(ValueError, match=rf"{key}.*'adam' is dense.*splitlbi"):
        TrainConfig(optimizer="adam", **{key: value}).resolve()
    with pytest.raises(ConfigError, match=f"Invalid {key}"):
        Trainer(tiny(tmp_path, optimizer="sgd", **{key: value}))


# ------------------------------------------------------------------------------- runs


def test_tiny_default_job_writes_the_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(tiny(out, epochs=1, plots=True))
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    assert [row["epoch"] for row in result.history] == [0, 1]
    assert 0 < result.density <= 1 and 0 <= result.test_acc <= 1
    ckpt = load_checkpoint(out)  # weights_only=True
    assert ckpt["epoch"] == 1 and ckpt["step_in_epoch"] == 0
    sparse = torch.load(out / "model_sparse.pt", weights_only=True)
    assert set(sparse) == set(result.model.state_dict())
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["epoch", "step", "train_loss", "train_acc"]
    assert "layer_density/fc1" in header
    saved = TrainConfig.from_dict(load_config_file(out / "config.yaml"))
    assert saved == result.config and saved.lr is not None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["density"] == pytest.approx(result.density)
    # the solution path is recorded by default, one point per epoch
    assert load_path(out).epochs.tolist() == [0, 1]
    # the default job's recipe (AdaBreg) steers λ to a density (docs/recipes.md, round 26)
    assert list(ckpt["callbacks"]) == ["0:PathRecorder", "1:TargetDensity"]
    # without record_path: the run finishes, with no path files and no recorder state
    train(tiny(tmp_path / "nopath", epochs=1, record_path=False))
    assert (tmp_path / "nopath" / "summary.json").is_file()
    assert not (tmp_path / "nopath" / "path.json").exists()
    assert not (tmp_path / "nopath" / "path.npz").exists()
    assert list(load_checkpoint(tmp_path / "nopath")["callbacks"]) == ["0:TargetDensity"]


def test_run_directory_is_not_overwritten(tmp_path: Path) -> None:
    train(tiny(tmp_path, epochs=0))
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(tiny(tmp_path, epochs=0))


@pytest.mark.parametrize(
    ("optimizer", "extra"),
    [
        ("adabreg", {}),
        ("splitlbi", {}),
        ("adabreg", {"target_density": 0.05}),
        ("linbreg", {"schedule": "plateau", "lr_patience": 0, "lr_gamma": 0.5, "lr": 1e-6}),
        ("rvsm", {"lam_warmup": 1.0}),  # cut in the middle of the λ warm-up
    ],
)
def test_resume_after_epoch_interrupt_is_bitwise_identical(
    tmp_path: Path, optimizer: str, extra: dict[str, Any]
) -> None:
    kw = {"optimizer": optimizer, "epochs": 3, "schedule": "cosine", **extra}
    ref = train(tiny(tmp_path / "ref", **kw))
    stopper = StopAfter(1)
    with pytest.raises(TrainingInterrupted) as info:
        train(tiny(tmp_path / "cut", **kw), callbacks=[stopper])
    assert info.value.exit_code == 130 and "--resume" in str(info.value)
    assert load_checkpoint(tmp_path / "cut")["epoch"] == 1
    resumed_cb = StopAfter(-1)
    res = train(resume=tmp_path / "cut", callbacks=[resumed_cb])
    assert resumed_cb.seen == [1, 2, 3]  # callback state restored from the checkpoint
    assert_same_state(res.model.state_dict(), ref.model.state_dict())
    assert_same_state(res.optimizer.state_dict(), ref.optimizer.state_dict())
    assert without_time(res.history) == without_time(ref.history)
    assert (tmp_path / "cut" / "metrics.jsonl").read_text().count("\n") == 4
    assert_same_path(tmp_path / "cut", tmp_path / "ref")


def test_lam_warmup_raises_lambda_linearly_then_holds_it(tmp_path: Path) -> None:
    """``lam_warmup`` 0.5 of 2 epochs × 3 steps: λ·k/3 after the steps k = 1, 2, then λ,
    in every penalised group; off with ``target_density``, 0 in the recipes."""
    seen: list[tuple[float, float]] = []

    class Watch:
        def on_step_end(self, trainer: Trainer, step: int | None = None, *_: Any) -> None:
            groups = trainer.optimizer.param_groups
            seen.append((groups[0]["lam"], groups[-2]["lam"]))  # fc1 and fc3 weights

    res = train(  # no refit: its SGD has no λ (RVSM's recipe refits since round 90)
        tiny(tmp_path / "a", optimizer="rvsm", lam_warmup=0.5, lam=0.01, refit=0.0),
        callbacks=[Watch()],
    )
    assert res.config.lam_warmup == 0.5
    # the first step ran with λ = 0 (after it: 1/3); every value is k/3 of the group's λ
    assert [a for a, _ in seen] == pytest.approx([0.01 / 3, 0.02 / 3, 0.01, 0.01, 0.01, 0.01])
    assert all(a == pytest.approx(b) for a, b in seen)
    seen.clear()
    train(
        tiny(tmp_path / "b", optimizer="rvsm", target_density=0.2, refit=0.0), callbacks=[Watch()]
    )
    assert seen[0][0] > 0  # the controller steers λ from the recipe's value, no warm-up
    # both given: refused (the controller would steer λ and leave the warm-up unused)
    with pytest.raises(ValueError, match=r"lam_warmup value: 0\.5; target_density 0\.2"):
        tiny(tmp_path / "b2", optimizer="rvsm", lam_warmup=0.5, target_density=0.2).validate()
    tiny(tmp_path / "b3", lam_warmup=0.0, target_density=0.2).validate()  # 0: off, accepted
    assert tiny(tmp_path / "c", optimizer="adabreg").resolve().lam_warmup == 0.0
    with pytest.raises(ValueError, match=r"lam_warmup value: 1\.5"):
        tiny(tmp_path / "d", lam_warmup=1.5).validate()


def test_a_saved_lam_warmup_beside_a_target_resumes_as_it_ran(tmp_path: Path) -> None:
    """A run directory saved while both were accepted (the warm-up unused) resumes, the
    warm-up read as 0 — what it did; the resumed run ends as the uninterrupted one."""
    kw = {"optimizer": "rvsm", "target_density": 0.2, "epochs": 3}
    ref = train(tiny(tmp_path / "ref", **kw))
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path / "cut", **kw), callbacks=[StopAfter(1)])
    edit_saved_config(tmp_path / "cut", "lam_warmup: 0.0\n", "lam_warmup: 0.5\n")
    res = train(resume=tmp_path / "cut")
    assert res.config.lam_warmup == 0.0
    assert without_time(res.history) == without_time(ref.history)


def test_a_group_penalty_run_keeps_its_classes_and_an_older_one_resumes_as_it_ran(
    tmp_path: Path,
) -> None:
    """A group penalty groups the output layer by its inputs (the config records
    ``head_groups: channel``); a run directory saved before the field existed grouped the
    output layer's rows with the other layers' (one param group): it resumes so, and ends
    as the uninterrupted run with ``head_groups="filter"``."""
    kw = {"optimizer": "proxsgd", "penalty": "group_l1", "epochs": 3}
    res = train(tiny(tmp_path / "new", **kw))
    assert res.config.head_groups == "channel"
    assert train(tiny(tmp_path / "l1", optimizer="proxsgd", epochs=1)).config.head_groups is None
    ref = train(tiny(tmp_path / "ref", head_groups="filter", **kw))
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path / "cut", head_groups="filter", **kw), callbacks=[StopAfter(1)])
    edit_saved_config(tmp_path / "cut", "head_groups: filter\n", "")
    resumed = train(resume=tmp_path / "cut")
    assert resumed.config.head_groups == "filter"
    assert without_time(resumed.history) == without_time(ref.history)
    with pytest.raises(ValueError, match="Invalid head_groups value: 'classes'"):
        tiny(tmp_path / "bad", head_groups="classes", **kw).validate()


def test_rdas_default_run_warms_lambda_up(tmp_path: Path) -> None:
    """RDA's recipe (round 49) without any flag: λ rises over the first half of the
    sparse steps (5 epochs × 3 steps, the last two epochs the refit's since round 87: λ
    reaches the recipe's at the 5th of the 9 sparse steps), then holds the recipe's ℓ0 λ
    until the refit, which has none; the config written says so."""
    from sparseopt.optim.registry import get_optimizer_info

    seen: list[float] = []

    class Watch:
        def on_step_end(self, trainer: Trainer, step: int | None = None, *_: Any) -> None:
            seen.append(trainer.optimizer.param_groups[0].get("lam", -1.0))

    res = train(tiny(tmp_path, optimizer="rda", epochs=5), callbacks=[Watch()])
    lam = get_optimizer_info("rda").lam["l0"]
    assert res.config.lam_warmup == 0.5 and res.config.refit == 0.5
    assert seen == pytest.approx([lam * k / 5 for k in range(1, 6)] + [lam] * 4 + [-1.0] * 6)


def test_plateau_schedule_decays_when_the_validation_loss_stalls(tmp_path: Path) -> None:
    # lr 1e-6: the validation loss cannot improve by the scheduler's relative 1e-4, so
    # with patience 1 the rate halves after every second epoch without improvement.
    cfg = tiny(
        tmp_path, optimizer="sgd", lr=1e-6, epochs=5, schedule="plateau", lr_patience=1,
        lr_gamma=0.5,
    )  # fmt: skip
    res = train(cfg)
    lrs = [row["lr"] for row in res.history[1:]]  # the rate each epoch ran with
    assert lrs == pytest.approx([1e-6, 1e-6, 1e-6, 5e-7, 5e-7])
    assert all(row["val_loss"] is not None for row in res.history)


def test_plateau_schedule_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lr_patience value: -1"):
        tiny(tmp_path, schedule="plateau", lr_patience=-1).validate()


def assert_same_path(a: Path, b: Path) -> None:
    """The recorded solution paths of two runs agree (up to timings)."""
    pa, pb = load_path(a), load_path(b)
    assert pa.layers == pb.layers and pa.epochs.tolist() == pb.epochs.tolist()
    for x, y in zip(pa.points, pb.points, strict=True):
        assert {**x, "metrics": None} == {**y, "metrics": None}
        assert without_time([x["metrics"]]) == without_time([y["metrics"]])
    for i in range(len(pa)):
        for layer in pa.layers:
            assert np.array_equal(pa.support(i, layer), pb.support(i, layer))
            assert np.array_equal(pa.group_norms(i, layer), pb.group_norms(i, layer))


def test_resume_after_mid_epoch_signal_is_bitwise_identical(tmp_path: Path) -> None:
    """SIGTERM during a step: the step finishes, a mid-epoch checkpoint is written."""
    kw = {"optimizer": "linbreg", "epochs": 2, "limit_batches": 5}
    ref = train(tiny(tmp_path / "ref", **kw))
    trainer = Trainer(tiny(tmp_path / "cut", **kw))
    before = signal.getsignal(signal.SIGTERM)
    calls = {"n": 0}

    def send_sigterm(module: torch.nn.Module, args: Any, output: Any) -> None:
        if module.training:
            calls["n"] += 1
            if calls["n"] == 7:  # epoch 2, batch 2
                os.kill(os.getpid(), signal.SIGTERM)

    handle = trainer.model.register_forward_hook(send_sigterm)
    try:
        with pytest.raises(TrainingInterrupted) as info:
            trainer.fit()
    finally:
        handle.remove()
        trainer.close()
    assert info.value.signum == signal.SIGTERM and info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back
    ckpt = load_checkpoint(tmp_path / "cut")
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (1, 1)
    res = train(resume=tmp_path / "cut")
    assert_same_state(res.model.state_dict(), ref.model.state_dict())
    assert_same_state(res.optimizer.state_dict(), ref.optimizer.state_dict())
    assert without_time(res.history) == without_time(ref.history)
    assert_same_path(tmp_path / "cut", tmp_path / "ref")


class StopAtStep:
    """Raises ``KeyboardInterrupt`` after global step ``step`` (stop before the next one)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer, step: int | None = None, *_: Any) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    "kw",
    [
        {"optimizer": "proxsgd", "target_density": 0.3, "target_density_every": 1},
        {
            "optimizer": "linbreg",
            "target_density": 0.3,
            "target_density_every": 1,
            "target_density_ramp": 0.9,
        },
        {"optimizer": "rvsm", "lam_warmup": 0.9},
    ],
    ids=["target-density", "target-density-ramp", "lam-warmup"],
)
def test_a_mid_epoch_resume_writes_the_epochs_lr_and_lam(
    tmp_path: Path, kw: dict[str, Any]
) -> None:
    """λ moves within an epoch (controller, warm-up); the row of an epoch resumed mid-way
    still carries the λ its first step ran with (kept in the checkpoint), so the metrics
    are the uninterrupted run's."""
    kw = {**kw, "epochs": 3, "limit_batches": 3}
    ref = train(tiny(tmp_path / "ref", **kw))
    assert len({r["lam"] for r in ref.history[1:]}) == 3  # λ differs between the epochs
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path / "cut", **kw), callbacks=[StopAtStep(5)])
    ckpt = load_checkpoint(tmp_path / "cut")
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (1, 2)
    assert ckpt["epoch_lr_lam"] == [ref.history[2]["lr"], ref.history[2]["lam"]]
    assert ckpt["epoch_layer_lam"] == ref.history[2]["layer_lam"]
    res = train(resume=tmp_path / "cut")
    assert_same_state(res.model.state_dict(), ref.model.state_dict())
    assert without_time(res.history) == without_time(ref.history)
    # a checkpoint from before the key existed resumes as before (λ read at the resume)
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path / "old", **kw), callbacks=[StopAtStep(5)])
    old = torch.load(tmp_path / "old" / "checkpoint.pt", weights_only=False)
    del old["epoch_lr_lam"], old["epoch_layer_lam"]
    torch.save(old, tmp_path / "old" / "checkpoint.pt")
    res = train(resume=tmp_path / "old")
    assert_same_state(res.model.state_dict(), ref.model.state_dict())
    rows = without_time(res.history)
    assert rows[2]["lam"] != ref.history[2]["lam"]  # the λ at the resume
    assert rows[2]["layer_lam"] != ref.history[2]["layer_lam"]
    # one from before the layers' key only: the row keeps the epoch's λ and goes without
    # the layers' (unknown), not with λs read at the resume
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path / "mid", **kw), callbacks=[StopAtStep(5)])
    mid = torch.load(tmp_path / "mid" / "checkpoint.pt", weights_only=False)
    del mid["epoch_layer_lam"]
    torch.save(mid, tmp_path / "mid" / "checkpoint.pt")
    rows = without_time(train(resume=tmp_path / "mid").history)
    assert rows[2]["lam"] == ref.history[2]["lam"] and "layer_lam" not in rows[2]
    assert rows[3] == without_time(ref.history)[3]  # the next epoch reads them again
    assert [r for i, r in enumerate(rows) if i != 2] == [
        r for i, r in enumerate(without_time(ref.history)) if i != 2
    ]


def test_the_rows_carry_each_penalised_layers_lam(tmp_path: Path) -> None:
    """``lam`` is one number (the first layer's under AdaBreg's per-layer controller);
    ``layer_lam`` has every penalised layer's, as the optimizer holds it, in the rows,
    the CSV and the JSONL; a dense run has none."""
    res = train(tiny(tmp_path / "ada", optimizer="adabreg", epochs=3))
    first, last = res.history[0], res.history[-1]
    assert first["layer_lam"].keys() == first["layer_density"].keys() == {"fc1", "fc2", "fc3"}
    assert set(first["layer_lam"].values()) == {first["lam"]}  # the recipe's start, 0.45
    assert len(set(last["layer_lam"].values())) == 3  # steered layer by layer
    assert last["layer_lam"]["fc1"] == last["lam"]
    held = {n.removesuffix(".weight"): g["lam"] for g in res.optimizer.param_groups
            for n, p in res.model.named_parameters() if p is g["params"][0] and p.ndim == 2}  # fmt: skip
    assert held.keys() == last["layer_lam"].keys()
    assert held != last["layer_lam"]  # the row's λ is the epoch's first step's, not its last
    header = (tmp_path / "ada" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert [c for c in header if c.startswith("layer_lam/")] == [
        "layer_lam/fc1", "layer_lam/fc2", "layer_lam/fc3"
    ]  # fmt: skip
    dense = train(tiny(tmp_path / "sgd", optimizer="sgd"))
    assert all("layer_lam" not in row for row in dense.history)
    # λ per layer by fan-in: each layer's column is λ·c_l, `lam` the factor-free λ
    fan = train(tiny(tmp_path / "fan", optimizer="linbreg", lam=0.01, lam_scale="fan_in"))
    row = fan.history[-1]
    factors = {
        n.removesuffix(".weight"): g["lam_factor"]
        for g in fan.optimizer.param_groups
        if g.get("lam_factor") is not None
        for n, p in fan.model.named_parameters()
        if p is g["params"][0]
    }
    assert row["lam"] == 0.01 and len(set(factors.values())) == 3
    assert row["layer_lam"] == pytest.approx({n: 0.01 * c for n, c in factors.items()})


def test_an_extended_cosine_run_follows_the_cosine_of_its_new_length(tmp_path: Path) -> None:
    """``--resume --epochs 6`` of a finished 3-epoch cosine run: the lr of epochs 4-6 is
    the 6-epoch cosine's (it climbed back to the base lr at the last epoch before)."""
    kw = {"optimizer": "sgd", "schedule": "cosine", "lr": 0.1}
    fresh = train(tiny(tmp_path / "fresh", **kw, epochs=6))
    train(tiny(tmp_path / "ext", **kw, epochs=3))
    ext = train(tiny(tmp_path / "ext", **kw, epochs=6), resume=tmp_path / "ext")
    lrs = [r["lr"] for r in ext.history[4:]]
    assert lrs == pytest.approx([r["lr"] for r in fresh.history[4:]], abs=1e-12)
    assert lrs == pytest.approx([0.05, 0.025, 0.1 * (1 + math.cos(5 * math.pi / 6)) / 2])
    assert ext.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # ends at 0


def test_grown_run_resumes_bitwise_identical(tmp_path: Path) -> None:
    """grow_every widens fc1 after epoch 2; a resume after epoch 3 rebuilds the widths."""
    kw = {
        "optimizer": "splitlbi",
        "nu": 1.0,
        "lr": 0.2,
        "lam": 0.1,
        "schedule": "none",
        "model_options": {"hidden": [16]},
        "grow_every": 1,
        "epochs": 4,
        "limit_batches": 5,
    }
    ref = train(tiny(tmp_path / "ref", **kw))
    assert ref.model.fc1.out_features == 24 and ref.model.fc2.in_features == 24
    assert [row.get("grown") for row in ref.history] == [None, None, {"fc1": [16, 24]}, None, None]
    summary = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert summary["grown"] == [[2, {"fc1": [16, 24]}]]
    with pytest.raises(TrainingInterrupted):
        train(tiny(tmp_path / "cut", **kw), callbacks=[StopAfter(3)])
    ckpt = load_checkpoint(tmp_path / "cut")
    assert list(ckpt["callbacks"]) == ["0:PathRecorder", "1:GrowCallback", "2:StopAfter"]
    res = train(resume=tmp_path / "cut")
    assert_same_state(res.model.state_dict(), ref.model.state_dict())
    assert_same_state(res.optimizer.state_dict(), ref.optimizer.state_dict())
    assert without_time(res.history) == without_time(ref.history)
    assert_same_path(tmp_path / "cut", tmp_path / "ref")
    assert load_path(tmp_path / "ref").points[-1]["shapes"]["fc1.weight"] == [24, 64]
    # model_sparse.pt loads into a freshly built model once its widths are matched
    from sparseopt.models import build_model

    fresh = build_model("mlp", (1, 8, 8), 10, hidden=[16])
    state = torch.load(tmp_path / "ref" / "model_sparse.pt", weights_only=True)
    match_widths(fresh, state)
    fresh.load_state_dict(state)
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad(), ref.optimizer.deployed():
        torch.testing.assert_close(fresh(x), ref.model(x))


def test_structure_callbacks_come_first_and_conflicts_are_errors(tmp_path: Path) -> None:
    from sparseopt.control import TargetDensity
    from sparseopt.path import PathRecorder

    mine = StopAfter(-1)
    trainer = Trainer(tiny(tmp_path / "a", target_density=0.2, grow_every=2), callbacks=[mine])
    try:
        kinds = [type(cb).__name__ for cb in trainer.callbacks]
        assert kinds == ["PathRecorder", "TargetDensity", "GrowCallback", "StopAfter"]
        td = trainer.callbacks[1]
        assert (td.target, td.every_steps, td.kp) == (0.2, 2, 4.0)  # adabreg presets
    finally:
        trainer.close()
    own = PathRecorder()
    trainer = Trainer(tiny(tmp_path / "b"), callbacks=[own])  # replaces the built-in one
    try:
        assert [cb for cb in trainer.callbacks if isinstance(cb, PathRecorder)] == [own]
    finally:
        trainer.close()
    with pytest.raises(ConfigError, match="TargetDensity"):
        Trainer(tiny(tmp_path / "c", target_density=0.2), callbacks=[TargetDensity(0.2)])
    # a caller's controller replaces the recipe's target (AdaBreg's 13 %), stored as off
    theirs = TargetDensity(0.3)
    trainer = Trainer(tiny(tmp_path / "e"), callbacks=[theirs])
    try:
        assert [cb for cb in trainer.callbacks if isinstance(cb, TargetDensity)] == [theirs]
        assert trainer.config.target_density == 0.0
    finally:
        trainer.close()
    with pytest.raises(ConfigError, match="no weight is penalised"):
        Trainer(tiny(tmp_path / "d", target_density=0.2, penalty="none"))
    with pytest.raises(ConfigError, match="sequential"):
        Trainer(
            tiny(
                tmp_path / "e",
                optimizer="splitlbi",
                model="resnet18",
                model_options={"widths": [4, 4, 4, 4]},
                grow_every=1,
            )
        )


def test_target_density_steers_lambda_every_n_steps(tmp_path: Path) -> None:
    res = train(tiny(tmp_path, target_density=0.05, target_density_every=3, epochs=2))
    ckpt = load_checkpoint(tmp_path)
    state = ckpt["callbacks"]["1:TargetDensity"]
    assert [h[0] for h in state["history"]] == [3, 6]  # 3 batches per epoch, every 3 steps
    assert res.history[-1]["target_density"] == 0.05
    assert res.history[-1]["controlled_lam"] == state["history"][-1][2]
    lam = next(g["lam"] for g in res.optimizer.param_groups if g["penalty"] != "none")
    assert lam == state["history"][-1][2] != res.history[0]["lam"]


def test_resume_may_extend_epochs_but_not_change_the_run(tmp_path: Path) -> None:
    train(tiny(tmp_path, epochs=1))
    with pytest.raises(ConfigError, match="lr"):
        Trainer({"lr": 0.5}, resume=tmp_path)
    res = train({"epochs": 2}, resume=tmp_path)
    assert [row["epoch"] for row in res.history] == [0, 1, 2]
    with pytest.raises(ConfigError, match=r"no checkpoint\.pt"):
        Trainer(resume=tmp_path / "missing")


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Trainer.loss_fn

    def loss_fn(self: Trainer, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> Any:
        loss = original(self, out, y, reduction)
        return loss * float("nan") if self.model.training and self.epoch >= 1 else loss

    monkeypatch.setattr(Trainer, "loss_fn", loss_fn)
    with pytest.raises(NonFiniteLossError, match="diverged") as info:
        train(tiny(tmp_path, epochs=3, checkpoint_seconds=0))  # a checkpoint every epoch
    assert info.value.epoch == 2 and info.value.checkpoint == tmp_path / "checkpoint.pt"
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_checkpoints_follow_the_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``checkpoint_seconds``: a checkpoint at the start, then after an epoch once that much
    time has passed, and after the last epoch; 0 or kept checkpoints: every epoch."""
    from sparseopt.engine.checkpoint import CheckpointClock

    clock = iter(range(0, 10_000, 4))  # every reading of the clock is 4 s later
    monkeypatch.setattr(CheckpointClock, "now", staticmethod(lambda: float(next(clock))))
    written: list[int] = []
    real = Trainer.save_checkpoint

    def spy(self: Trainer) -> Any:
        written.append(self.epoch)
        return real(self)

    monkeypatch.setattr(Trainer, "save_checkpoint", spy)
    # the clock reads 0 at the start, 4 at epoch 0 (written), then 8, 12, 16, ... at the
    # epoch ends: 16 - 4 >= 10 writes epoch 3; 20, 24 are too soon; epoch 6 is the last
    train(tiny(tmp_path / "a", epochs=6, checkpoint_seconds=10))
    assert written == [0, 3, 6]
    written.clear()
    train(tiny(tmp_path / "b", epochs=3, checkpoint_seconds=0))
    assert written == [0, 1, 2, 3]
    written.clear()
    train(tiny(tmp_path / "c", epochs=3, checkpoint_seconds=1e9, keep_checkpoints=True))
    assert written == [0, 1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "c" / "checkpoints").iterdir())[-1] == "epoch_0003.pt"
    written.clear()
    train(tiny(tmp_path / "d", epochs=3))  # the default, 30 s: the start and the end
    assert written == [0, 3]


def test_callbacks_see_every_epoch_and_may_change_lambda(tmp_path: Path) -> None:
    class Halve(Callback):
        def __init__(self) -> None:
            self.events: list[Any] = []

        def on_train_begin(self, trainer: Trainer) -> None:
            self.events.append("begin")

        def on_step_end(self, trainer: Trainer, step: int) -> None:
            self.events.append(f"step{step}")

        def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
            self.events.append(epoch)
            trainer.optimizer.set_lam(metrics["lam"] / 2)
            metrics["custom"] = epoch

        def on_train_end(self, trainer: Trainer, result: Any) -> None:
            self.events.append("end")

    cb = Halve()
    res = train(tiny(tmp_path, epochs=2, lam=0.4), callbacks=[cb])
    steps = [f"step{i}" for i in range(1, 7)]
    assert cb.events == ["begin", *steps[:3], 1, *steps[3:], 2, "end"]
    assert [row["lam"] for row in res.history] == [0.4, 0.4, 0.2]
    assert res.history[-1]["custom"] == 2


def test_batches_are_seeded_and_cover_the_data(tmp_path: Path) -> None:
    trainer = Trainer(tiny(tmp_path, limit_batches=None, batch_size=100))
    try:
        n = len(trainer.data.train)
        b1 = trainer.epoch_batches(1)
        assert torch.equal(torch.cat(b1).sort().values, torch.arange(n))
        assert all(len(b) == 100 for b in b1[:-1])
        assert all(torch.equal(x, y) for x, y in zip(b1, trainer.epoch_batches(1), strict=True))
        assert not torch.equal(b1[0], trainer.epoch_batches(2)[0])
    finally:
        trainer.close()


# ---------------------------------------------------------------- every dataset and model


def _write_mnist(root: Path, n: int = 12) -> None:
    from sparseopt.data.mnist import IDX_FILES, write_idx

    rng = np.random.default_rng(0)
    for role, name in IDX_FILES.items():
        if role.endswith("images"):
            write_idx(root / name, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        else:
            write_idx(root / name, (np.arange(n) % 10).astype(np.uint8))


def _write_cifar(root: Path, n: int = 4) -> None:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in np.arange(n) % 10],
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))


# (dataset, dataset options, model, model options, optimizer, extra): every dataset, every
# model and every registered optimizer appear at least once.
MATRIX = [
    ("digits", {}, "mlp", {"hidden": [16]}, "linbreg", {"init_density": 0.5}),
    ("digits", {}, "tiny", {}, "rda", {}),
    ("mnist", {}, "lenet5", {}, "adabreg", {"conv_penalty": "group_l1", "conv_groups": "filter"}),
    (
        "fashion-mnist",
        {},
        "convnet",
        {"channels": [2, 4], "hidden": [8, 8]},
        "rvsm",
        {"penalty": "tl1", "a": 1.0},
    ),
    ("cifar10", {}, "resnet18", {"widths": [4, 4, 4, 4]}, "splitlbi", {"augment": True}),
    (
        "cifar10",
        {},
        "vgg16",
        {"cfg": [8, "M", 8, "M"]},
        "sgd",
        {"schedule": "step", "lr_step_size": 1},
    ),
    ("curves", {"n_train": 12, "n_test": 4, "cache": False}, "curvecnn", {}, "proxsgd", {}),
    ("teacher", {"n_train": 20, "n_test": 8}, "nooverlap", {}, "adam", {}),
    ("words", {"n_train": 8, "n_test": 4, "cache": False}, "tiny", {}, "linbreg", {}),
    ("digits", {}, "transformer", {"d_model": 8, "heads": 2, "ffn": 8}, "adabreg", {}),
]


def test_matrix_covers_every_name() -> None:
    from sparseopt.data import list_datasets
    from sparseopt.models import list_models

    assert {m[0] for m in MATRIX} == set(list_datasets())
    assert {m[2] for m in MATRIX} == set(list_models())
    assert {m[4] for m in MATRIX} == set(list_optimizers())


@pytest.mark.parametrize(
    ("dataset", "dopts", "model", "mopts", "optimizer", "extra"),
    MATRIX,
    ids=[f"{m[0]}-{m[2]}-{m[4]}" for m in MATRIX],
)
def test_every_dataset_model_and_optimizer_trains_one_step(
    tmp_path: Path,
    dataset: str,
    dopts: dict[str, Any],
    model: str,
    mopts: dict[str, Any],
    optimizer: str,
    extra: dict[str, Any],
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if dataset in ("mnist", "fashion-mnist"):
        _write_mnist(data_dir)
    elif dataset == "cifar10":
        _write_cifar(data_dir)
    cfg = tiny(
        tmp_path / "run",
        dataset=dataset,
        data_dir=str(data_dir),
        dataset_options=dopts,
        model=model,
        model_options=mopts,
        optimizer=optimizer,
        epochs=1,
        limit_batches=1,
        batch_size=4,
        eval_batch_size=16,
        val_fraction=0.25,
        **extra,
    )
    res = train(cfg)
    last = res.history[-1]
    assert last["epoch"] == 1 and last["step"] == 1
    assert math.isfinite(last["train_loss"]) and 0 < last["density"] <= 1
    key = "test_loss" if dataset == "teacher" else "test_acc"
    assert last[key] is not None and math.isfinite(last[key])


def test_augment_needs_images(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="augment"):
        Trainer(tiny(tmp_path, dataset="teacher", model="nooverlap", augment=True))


def test_model_output_must_fit_the_task(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="regression"):
        Trainer(tiny(tmp_path, dataset="teacher", model="mlp", dataset_options={"n_train": 8}))


needs_ftz = pytest.mark.skipif(
    not torch.set_flush_denormal(False), reason="this CPU cannot flush subnormals"
)


@needs_ftz
def test_flush_probe_reads_the_setting() -> None:
    from sparseopt.engine.build import flushes_denormals

    try:
        torch.set_flush_denormal(True)
        assert flushes_denormals()
        torch.set_flush_denormal(False)
        assert not flushes_denormals()
    finally:
        torch.set_flush_denormal(False)


class _SeesFlushing(Callback):
    """Records, at every step, whether subnormal numbers are flushed to zero."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def on_step_end(self, trainer: Any, step: int) -> None:
        from sparseopt.engine.build import flushes_denormals

        self.seen.append(flushes_denormals())


@needs_ftz
@pytest.mark.parametrize("caller", [False, True])
def test_training_on_cpu_flushes_subnormals_and_restores_the_callers_setting(
    tmp_path: Path, caller: bool
) -> None:
    """Subnormal weights and state (RVSM's decaying dense copy) cost an Intel Xeon 14x per
    step (benchmarks/denormals.py): training flushes them, then leaves the setting as the
    caller had it — off turned back off, on left on."""
    from sparseopt.engine.build import flushes_denormals, set_flush_denormal_all

    probe = _SeesFlushing()
    try:
        torch.set_flush_denormal(caller)
        train(tiny(tmp_path, optimizer="rvsm", epochs=1), callbacks=[probe])
        assert probe.seen and all(probe.seen)
        assert flushes_denormals() is caller
    finally:  # off in the threads that copied it too
        set_flush_denormal_all(False)


def _flushed_share(x: torch.Tensor) -> float:
    """The share of ``x * 0.5`` (subnormal results) that came back zero, over a tensor
    large enough that every thread of the intra-op team takes a part."""
    return float(((x * 0.5) == 0).float().mean())


class _SeesTeamFlushing(Callback):
    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.seen = x, []

    def on_step_end(self, trainer: Any, step: int) -> None:
        self.seen.append(_flushed_share(self.x))


@needs_ftz
@pytest.mark.parametrize(("caller", "run"), [(2, 2), (2, 1), (1, 2)])
def test_training_flushes_in_every_thread_of_a_team_that_ran_before(
    tmp_path: Path, caller: int, run: int
) -> None:
    """MXCSR is per thread and libgomp's workers keep theirs: with the flag set in the
    training thread alone, a two-thread multiply after a two-thread team had run flushed
    half its elements (measured). The trainer sets it in each thread of the team at the
    run's thread count and turns it off there again — also when the caller's count
    differs (2 then 1: the worker must not stay on; 1 then 2: the docked worker must be
    reached)."""
    from sparseopt.engine.build import _gomp_parallel, set_flush_denormal_all

    if _gomp_parallel() is None:
        pytest.skip("torch's CPU kernels do not run on an OpenMP runtime with GOMP_parallel")
    import sklearn.cluster  # noqa: F401  (a second libgomp in the process, as in the suite)

    threads = torch.get_num_threads()
    x = torch.full((1 << 21,), torch.finfo(torch.float32).tiny)
    try:
        torch.set_num_threads(2)
        set_flush_denormal_all(False)  # whatever an earlier test left in the team
        assert _flushed_share(x) == 0.0  # the team of two runs, flushing off everywhere
        torch.set_num_threads(caller)
        probe = _SeesTeamFlushing(x)
        train(tiny(tmp_path, epochs=1, threads=run), callbacks=[probe])
        assert probe.seen and all(share == 1.0 for share in probe.seen)
        torch.set_num_threads(2)
        assert _flushed_share(x) == 0.0  # off again in every thread of the team
    finally:
        set_flush_denormal_all(False, 2)
        torch.set_num_threads(threads)


def test_train_leaves_global_rng_and_threads_as_it_found_them(tmp_path: Path) -> None:
    torch.manual_seed(123)
    before, threads = torch.get_rng_state(), torch.get_num_threads()
    np_before = np.random.get_state()[1].copy()  # noqa: NPY002
    train(tiny(tmp_path, epochs=1))
    assert torch.equal(torch.get_rng_state(), before)
    assert np.array_equal(np.random.get_state()[1], np_before)  # noqa: NPY002
    assert torch.get_num_threads() == threads


def test_resume_with_a_config_object_can_set_a_field_back_to_its_default(tmp_path: Path) -> None:
    train(tiny(tmp_path, epochs=1, stall_epochs=0, eval_batch_size=7))
    default = TrainConfig()
    # stall_epochs and eval_batch_size at their defaults: the object's values, not the run's
    with Trainer(tiny(tmp_path, epochs=2), resume=tmp_path) as trainer:
        assert trainer.config.stall_epochs == default.stall_epochs == 3
        assert trainer.config.eval_batch_size == default.eval_batch_size
        assert trainer.config.epochs == 2
    with pytest.raises(ConfigError, match="lr"):  # a field that may not change still may not
        Trainer(tiny(tmp_path, epochs=2, lr=0.5), resume=tmp_path)


def test_plateau_schedule_falls_back_to_the_training_loss(tmp_path: Path) -> None:
    with Trainer(tiny(tmp_path, schedule="plateau", lr_patience=0, lr_gamma=0.5)) as trainer:
        lr0 = trainer.optimizer.param_groups[0]["lr"]
        no_eval = {"val_loss": None, "test_loss": None}
        for loss in (1.0, 2.0, 3.0):  # no improvement after the first: the lr halves
            trainer._step_scheduler({"train_loss": loss}, no_eval)
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(lr0 / 4)
        trainer._step_scheduler({"train_loss": 9.0}, {"val_loss": None, "test_loss": 0.0})
        assert trainer.scheduler.best == 0.0  # the test loss comes before the training loss


def test_metrics_files_are_appended_not_rewritten(tmp_path: Path) -> None:
    seen: dict[int, dict[str, tuple[bytes, int]]] = {}

    class Snapshot(Callback):  # runs before the epoch's row is written
        def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
            seen[epoch] = {
                name: ((tmp_path / name).read_bytes(), (tmp_path / name).stat().st_ino)
                for name in ("metrics.csv", "metrics.jsonl")
            }

    train(tiny(tmp_path, epochs=3), callbacks=[Snapshot()])
    for name in ("metrics.csv", "metrics.jsonl"):
        final = (tmp_path / name).read_bytes()
        before, inode = seen[3][name]  # rows of epochs 0-2
        assert len(final) > len(before) and final.startswith(before)
        assert (tmp_path / name).stat().st_ino == inode == seen[2][name][1]  # same file
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [0, 1, 2, 3]


def test_test_split_is_evaluated_at_the_end_and_when_asked(tmp_path: Path) -> None:
    res = train(tiny(tmp_path / "end", epochs=3))
    assert [r["test_acc"] is not None for r in res.history] == [False, False, False, True]
    assert all(r["val_acc"] is not None for r in res.history)  # validation drives selection
    summary = json.loads((tmp_path / "end" / "summary.json").read_text())
    assert summary["metrics"]["test_acc"] == res.test_acc is not None
    res = train(tiny(tmp_path / "every2", epochs=3, test_every=2))
    assert [r["test_acc"] is not None for r in res.history] == [True, False, True, True]
    # without a validation split the test split is what there is: every epoch
    res = train(tiny(tmp_path / "noval", epochs=2, val_fraction=0.0))
    assert all(r["test_acc"] is not None and r["val_acc"] is None for r in res.history)


def test_dense_baselines_use_torchs_fused_implementation(tmp_path: Path) -> None:
    from sparseopt.engine.build import eval_batch_size

    for name in ("sgd", "adam"):
        with Trainer(tiny(tmp_path / name, optimizer=name)) as trainer:
            assert trainer.optimizer.param_groups[0]["fused"] is True
    given = tiny(tmp_path / "given", optimizer="adam", optimizer_options={"foreach": True})
    with Trainer(given) as trainer:  # the user's choice stands
        group = trainer.optimizer.param_groups[0]
        assert group["foreach"] is True and not group["fused"]
    assert eval_batch_size(TrainConfig(), torch.device("cpu")) == 256
    assert eval_batch_size(TrainConfig(eval_batch_size=7), torch.device("cpu")) == 7


def test_the_target_density_ramp_reaches_the_controller(tmp_path: Path) -> None:
    """``target_density_ramp`` is the controller's ramp (its direction is tested in
    test_control.py): the λ the controller chooses differ once a ramp is set."""
    kw = {"optimizer": "linbreg", "target_density": 0.3, "target_density_every": 1}
    at_once = train(tiny(tmp_path / "a", **kw, target_density_ramp=0.0))
    ramped = train(tiny(tmp_path / "b", **kw, target_density_ramp=1.0))
    assert at_once.history[1]["lam"] == ramped.history[1]["lam"] == 0.05  # the recipe's
    assert ramped.history[-1]["lam"] != at_once.history[-1]["lam"]
