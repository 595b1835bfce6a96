"""Solution path: recording, file round trip, selection rules, plot, engine + CLI tools."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import sparseopt as so
from sparseopt.cli.tools import COMMANDS, register_path_command, register_prune_command
from sparseopt.path import PathRecorder, SolutionPath, load_path


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))


def _splitlbi_path(steps: int = 6) -> tuple[PathRecorder, nn.Module, torch.optim.Optimizer]:
    net = _net()
    opt = so.create_optimizer(net, "splitlbi", lr=0.5, nu=1.0, lam=0.02, conv_penalty="group_l1")
    rec = PathRecorder()
    rec.record(net, opt, epoch=0, step=0, metrics={"val_acc": 0.1})
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(32) % 3
    for epoch in range(1, steps + 1):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        rec.record(net, opt, epoch=epoch, step=epoch, metrics={"val_acc": 0.1 * epoch, "note": "x"})
    return rec, net, opt


def test_record_matches_optimizer_support_and_round_trips(tmp_path: Path) -> None:
    rec, net, opt = _splitlbi_path()
    rec.save(tmp_path)
    path = load_path(tmp_path)
    assert len(path) == 7 and path.layers == ["0.weight", "3.weight"]
    assert path.epochs.tolist() == list(range(7))
    mem = rec.path()
    for i in range(len(path)):
        for name in path.layers:
            assert np.array_equal(path.support(i, name), mem.support(i, name))
            assert np.array_equal(path.group_norms(i, name), mem.group_norms(i, name))
    # the last point is the optimizer's current support: supp Γ (per filter for group_l1)
    for name, p in net.named_parameters():
        if name in path.layers:
            assert np.array_equal(path.support(6, name), opt.support(p).numpy())
            assert np.allclose(
                path.group_norms(6, name),
                opt.deployable(p).flatten(1).norm(dim=1).numpy(),
                atol=1e-6,
            )
    masks = path.masks(6)
    assert masks["0.weight"].dtype == torch.bool and masks["0.weight"].shape == (4, 1, 3, 3)
    # the inverse scale space path starts empty and grows
    assert path.density[0] == 0.0 and path.density[-1] > 0.0
    assert path.points[3]["metrics"] == {"val_acc": pytest.approx(0.3), "note": "x"}
    assert (tmp_path / "path.npz").stat().st_size < 4096  # bit-packed


def test_saving_every_epoch_appends_chunks_and_full_save_consolidates(tmp_path: Path) -> None:
    rec, _, _ = _splitlbi_path()
    full = rec.path()
    # replay the points as a training run would save them: one save per point
    replay = PathRecorder(tmp_path)
    replay.layers = list(rec.layers)
    for i in range(len(rec.points)):
        replay.points = rec.points[: i + 1]
        replay._bits = {k: v[: i + 1] for k, v in rec._bits.items()}
        replay._norms = {k: v[: i + 1] for k, v in rec._norms.items()}
        replay.save()
    chunks = sorted(p.name for p in (tmp_path / "path_chunks").iterdir())
    assert chunks == [f"{i:06d}-{i + 1:06d}.npz" for i in range(1, 7)]  # the first save is full
    meta = json.loads((tmp_path / "path.json").read_text())
    assert [c[1:] for c in meta["chunks"]] == [[i, i + 1] for i in range(1, 7)]

    def same_as_recorded() -> None:
        loaded = load_path(tmp_path)
        assert len(loaded) == len(full)
        for i in range(len(full)):
            for name in full.layers:
                assert np.array_equal(loaded.support(i, name), full.support(i, name))
                assert np.array_equal(loaded.group_norms(i, name), full.group_norms(i, name))

    same_as_recorded()
    replay.save(full=True)
    assert not (tmp_path / "path_chunks").exists()
    assert json.loads((tmp_path / "path.json").read_text())["chunks"] == []
    same_as_recorded()


def _synthetic(densities: list[float], accs: list[float | None]) -> SolutionPath:
    points = [
        {
            "epoch": i,
            "step": 10 * i,
            "metrics": {} if a is None else {"val_acc": a, "test_acc": 0.0},
            "shapes": {"w": [4]},
            "nonzero": {"w": round(4 * d)},
            "filters_alive": {"w": 0},
            "density": d,
        }
        for i, (d, a) in enumerate(zip(densities, accs, strict=True))
    ]
    bits = {"w": [np.packbits(np.zeros(4, bool)) for _ in points]}
    norms = {"w": [np.zeros(4, np.float32) for _ in points]}
    return SolutionPath(["w"], points, bits, norms)


def test_selection_rules_pick_the_right_epoch() -> None:
    path = _synthetic([0.0, 0.1, 0.2, 0.3, 0.5, 0.8], [0.10, 0.80, 0.90, 0.94, 0.95, 0.95])
    assert path.select(epoch=3).epoch == 3
    sel = path.select(within=0.015)  # best 0.95; >= 0.935 -> epochs 3, 4, 5; sparsest is 3
    assert (sel.epoch, sel.metric, sel.value) == (3, "val_acc", pytest.approx(0.94))
    assert path.select(within=0.0).epoch == 4  # tie at 0.95: the sparser one
    assert path.select(within=1.0).epoch == 0
    assert path.select(target_density=0.25).epoch == 2  # best among density <= 0.25
    assert path.select(target_density=1.0).epoch == 5  # 4 and 5 tie on 0.95: the denser one
    assert path.select(target_density=0.05).epoch == 0
    assert path.select(within=0.05, metric="test_acc").epoch == 0  # every test_acc is 0
    assert "epoch 3" in str(path.select(epoch=3))


def test_target_density_ties_prefer_denser_and_fallback_sparsest() -> None:
    path = _synthetic([0.3, 0.2, 0.4], [0.9, 0.9, 0.9])
    assert path.select(target_density=0.35).epoch == 0
    assert path.select(target_density=0.1).epoch == 1  # nothing that sparse: the sparsest


def test_selection_errors() -> None:
    path = _synthetic([0.1, 0.2], [None, None])
    with pytest.raises(ValueError, match="exactly one"):
        path.select()
    with pytest.raises(ValueError, match="exactly one"):
        path.select(epoch=1, within=0.1)
    with pytest.raises(ValueError, match="epoch"):
        path.select(epoch=7)
    with pytest.raises(ValueError, match="no validation metric"):
        path.select(within=0.1)
    with pytest.raises(ValueError, match="target_density"):
        path.select(target_density=0.0)
    assert path.select(target_density=0.15).epoch == 0  # no metric: still by density


def test_plot_writes_png(tmp_path: Path) -> None:
    rec, _, _ = _splitlbi_path(3)
    path = rec.path()
    out = path.plot(tmp_path / "p.png", selection=path.select(epoch=2))
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_resume_truncates_to_checkpoint(tmp_path: Path) -> None:
    rec, _, _ = _splitlbi_path(4)
    rec.save(tmp_path)
    state = {"num_points": 3}
    fresh = PathRecorder()
    fresh.load_state_dict(state)
    fresh.on_train_begin(SimpleNamespace(run_dir=tmp_path, model=None))
    assert len(fresh.points) == 3 and fresh.layers == rec.layers
    assert np.array_equal(fresh.path().support(2, "0.weight"), rec.path().support(2, "0.weight"))
    assert rec.state_dict() == {"num_points": 5}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparseopt")
    sub = parser.add_subparsers(dest="command")
    register_path_command(sub)
    register_prune_command(sub)
    return parser


@pytest.mark.slow
def test_engine_recorder_and_cli_tools(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sparseopt.config import TrainConfig
    from sparseopt.engine import ConfigError, train

    run = tmp_path / "run"
    cfg = TrainConfig(  # ProxSGD with a large λ: some hidden units die within 18 steps
        epochs=3,
        limit_batches=6,
        quiet=True,
        out=str(run),
        model_options={"hidden": [32]},
        optimizer="proxsgd",
        penalty="l1",  # (the recipe's is ℓ0 since round 99)
        lr=0.05,  # the threshold is lr·λ: fixed here, not the recipe's
        lam=0.2,
        refit=0.0,  # the recipe's refit would fix the support for the last epoch
    )
    train(cfg, callbacks=[PathRecorder()], echo=False)
    path = load_path(run)
    assert path.epochs.tolist() == [0, 1, 2, 3]
    assert all("val_acc" in p["metrics"] for p in path.points)  # epoch 0 filled in too
    hist = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [p["metrics"]["val_acc"] for p in path.points] == [h["val_acc"] for h in hist]

    parser = _parser()
    args = parser.parse_args(["path", str(run), "--within", "0.5", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["selection"]["rule"] == "within=0.5"
    assert (run / "path.png").exists()
    with pytest.raises(ConfigError, match="epoch"):
        args = parser.parse_args(["path", str(run), "--epoch", "9"])
        args.func(args)

    args = parser.parse_args(
        ["prune", str(run), "--epoch", "3", "--finetune-epochs", "1",
         "--batch-sizes", "1", "8", "--repeats", "1", "--json"]
    )  # fmt: skip
    assert args.func(args) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["max_abs_diff"] <= 1e-5
    assert rep["test_acc_shrunk"] == rep["test_acc_masked"]
    assert rep["after"]["params"] < rep["before"]["params"]
    assert rep["mac_ratio"] > 1
    assert {"cpu@1", "cpu@8"} <= set(rep["after"]["latency"])
    pruned = run / "pruned"
    assert {"report.json", "shrink_plan.json", "shrunk_state_dict.pt"} <= {
        p.name for p in pruned.iterdir()
    }
    assert set(COMMANDS) == {"path", "prune"}

    args = parser.parse_args(
        ["prune", str(run), "--epoch", "3", "--batch-sizes", "4", "--repeats", "1",
         "--no-export", "--frozen", "--out", str(run / "frozen"), "--json"]
    )  # fmt: skip
    assert args.func(args) == 0
    rep = json.loads(capsys.readouterr().out)
    assert {"cpu@4", "cpu-frozen@4"} <= set(rep["after"]["latency"])
    assert set(rep["artifacts"]) == {"state_dict", "frozen"}
    frozen = torch.jit.optimize_for_inference(torch.jit.load(rep["artifacts"]["frozen"]))
    assert frozen(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.slow
def test_engine_resume_keeps_the_path_and_runs_target_density(tmp_path: Path) -> None:
    from sparseopt.config import TrainConfig
    from sparseopt.control import TargetDensity
    from sparseopt.engine import train

    run = tmp_path / "run"
    cfg = TrainConfig(
        epochs=2, limit_batches=3, quiet=True, out=str(run), model_options={"hidden": [16]}
    )

    def callbacks() -> list:
        # LinBreg's gains, one density (its preset's per-layer shares need a group per layer)
        ctl = TargetDensity.for_optimizer("linbreg", 0.05, every_steps=2, allocation="global")
        return [PathRecorder(), ctl]

    first = train(cfg, callbacks=callbacks(), echo=False)
    assert load_path(run).epochs.tolist() == [0, 1, 2]
    assert first.history[-1]["target_density"] == 0.05
    assert first.history[-1]["lam"] != first.history[0]["lam"]  # λ was controlled
    train({"epochs": 4}, resume=str(run), callbacks=callbacks(), echo=False)
    path = load_path(run)
    assert path.epochs.tolist() == [0, 1, 2, 3, 4]
    assert all("val_acc" in p["metrics"] for p in path.points)


def test_prune_rebuilds_a_teacher_nooverlap_run(tmp_path: Path) -> None:
    """The model options the teacher data describes (patch size k) reach prune's model."""
    from sparseopt.cli import main

    run = tmp_path / "run"
    train_args = ["train", "-d", "teacher", "-m", "nooverlap", "--data-option", "n_train=256"]
    quick = ["--epochs", "1", "--limit-batches", "2", "--no-tensorboard", "--no-plots", "-q"]
    assert main([*train_args, *quick, "--out", str(run)]) == 0
    assert main(["prune", str(run), "--no-latency", "--no-export", "--json"]) == 0
    report = json.loads((run / "pruned" / "report.json").read_text())
    assert report["max_abs_diff"] <= 1e-5
    assert report["test_mse_shrunk"] == pytest.approx(report["test_mse_masked"])
