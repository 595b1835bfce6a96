"""Failure detection (stall, collapse), the pruning baseline and their place in the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

import sparseopt as so
from sparseopt.baselines import FixedMask, magnitude_masks, verdict
from sparseopt.cli import main
from sparseopt.control import TargetDensity, empty_penalised
from sparseopt.health import (
    EXIT_FAILED,
    HealthMonitor,
    classes_present,
    constant_output,
    probe_constant,
)

FAST = ["--no-plots", "--quiet", "--no-record-path", "--no-tensorboard", "--threads", "1"]


def _row(epoch: int, loss: float, acc: float) -> dict[str, float]:
    return {"epoch": epoch, "train_loss": loss, "val_acc": acc}


def test_monitor_fires_on_a_stall_and_stays_quiet_on_a_healthy_run() -> None:
    stalled = HealthMonitor(num_classes=10, patience=3, lr=0.05, lam=0.01)
    said = [
        stalled.observe(_row(e, math.log(10), 0.1), constant_output=False, empty_layers=[])
        for e in (1, 2, 3, 4)
    ]
    assert [len(s) for s in said] == [0, 0, 1, 0]  # once per streak
    assert "stalled" in said[2][0] and "--lam 0.001" in said[2][0] and "--lr 0.0167" in said[2][0]
    assert stalled.status == "stalled" and stalled.summary()["hint"]
    healthy = HealthMonitor(num_classes=10, patience=3)
    for e, loss in enumerate([2.3, 1.2, 0.6, 0.3, 0.2], start=1):
        acc = 0.1 if e == 1 else 0.9
        assert healthy.observe(_row(e, loss, acc), constant_output=False, empty_layers=[]) == []
    assert healthy.status == "ok" and healthy.summary()["reason"] == ""
    # a run that starts at chance and then learns is not stalled
    late = HealthMonitor(num_classes=10, patience=2)
    for e, (loss, acc) in enumerate([(2.3, 0.1), (2.3, 0.1), (1.0, 0.7)], start=1):
        late.observe(_row(e, loss, acc), constant_output=False, empty_layers=[])
    assert late.status == "ok"
    # regression has no chance level: never stalled
    reg = HealthMonitor(num_classes=None, patience=1)
    reg.observe({"epoch": 1, "train_loss": 100.0}, constant_output=False, empty_layers=[])
    assert reg.status == "ok"


def test_validation_at_chance_while_the_training_loss_falls_is_a_stall() -> None:
    # e.g. SplitLBI: the dense W (whose loss the run records) learns, the sparse Γ
    # (the deployable network that the validation split sees) stays at chance
    mon = HealthMonitor(num_classes=2, patience=3, lr=0.05, lam=0.1)
    said = [
        mon.observe(_row(e, loss, 0.5), constant_output=False, empty_layers=[])
        for e, loss in enumerate([0.6, 0.4, 0.3, 0.2], start=1)
    ]
    assert [len(s) for s in said] == [0, 0, 1, 0]
    assert "validation accuracy 50.0% at chance level" in said[2][0]
    assert "training loss fell to 0.3" in said[2][0] and "--lam 0.01" in said[2][0]
    assert mon.status == "stalled" and mon.summary()["reason"].startswith("stalled: validation")
    # just above the chance level (55 % for two classes) it is not
    fine = HealthMonitor(num_classes=2, patience=2)
    for e in (1, 2, 3):
        fine.observe(_row(e, 0.3, 0.56), constant_output=False, empty_layers=[])
    assert fine.status == "ok"
    # without a validation split only the training loss and accuracy are judged
    no_val = HealthMonitor(num_classes=2, patience=1)
    no_val.observe(
        {"epoch": 1, "train_loss": 0.2, "train_acc": 0.5}, constant_output=False, empty_layers=[]
    )
    assert no_val.status == "ok"


def test_chance_level_starts_at_the_majority_class_of_the_judged_split() -> None:
    from sparseopt.engine.build import build_health
    from sparseopt.health import chance_accuracy

    assert chance_accuracy(2) == pytest.approx(0.55)
    assert chance_accuracy(2, 0.56) == pytest.approx(0.604)
    assert chance_accuracy(10, 0.05) == chance_accuracy(10)  # never below 1/C
    # a run that predicts the majority class of an imbalanced validation split (56 %)
    # while its training loss falls is stalled (SplitLBI's empty support, seed 1 of
    # the curve CNN: 56.0 % on validation, 50.0 % on the balanced test split)
    mon = HealthMonitor(num_classes=2, patience=2, majority=0.56)
    for e, loss in enumerate([0.6, 0.4, 0.3], start=1):
        mon.observe(_row(e, loss, 0.56), constant_output=False, empty_layers=[])
    assert mon.status == "stalled" and "≤ 60.4%" in mon.reason
    # the engine reads the majority off the validation labels (training without them)
    net = torch.nn.Linear(3, 2)
    data = SimpleNamespace(num_classes=2, task="classification")
    info = SimpleNamespace(sparse=False)
    y_val = torch.tensor([1] * 14 + [0] * 11)
    tensors = {
        "val": (torch.randn(25, 3), y_val),
        "train": (torch.randn(8, 3), torch.zeros(8).long()),
    }
    cfg = so.TrainConfig(stall_epochs=3)
    health, probe = build_health(
        cfg, data, torch.optim.SGD(net.parameters(), lr=0.1), info, tensors
    )
    assert health.majority == pytest.approx(14 / 25) and probe.shape == (25, 3)
    tensors["val"] = (torch.zeros(0, 3), torch.zeros(0).long())
    tensors["train"] = (torch.randn(8, 3), torch.tensor([0, 0, 0, 1, 1, 0, 0, 0]))
    health, _ = build_health(cfg, data, torch.optim.SGD(net.parameters(), lr=0.1), info, tensors)
    assert health.majority == pytest.approx(6 / 8)  # the training labels


def test_majority_cannot_make_every_run_stalled() -> None:
    from sparseopt.health import chance_accuracy, majority_share

    # a split of one class (e.g. a one-sample validation split) does not judge: a
    # constant prediction would be "perfect", and every run would count as at chance
    assert majority_share(torch.tensor([3]), 10) is None
    assert majority_share(torch.tensor([1, 1, 1]), 2) is None
    assert chance_accuracy(10, 1.0) == chance_accuracy(10)
    perfect = HealthMonitor(num_classes=10, patience=2, majority=1.0)
    for e in (1, 2, 3):
        perfect.observe(_row(e, 0.01, 1.0), constant_output=False, empty_layers=[])
    assert perfect.status == "ok"
    # labels that are not class indices: no majority (1/C), and no error
    assert majority_share(torch.tensor([-100, 0, 1, 1]), 2) is None  # an ignore_index
    assert majority_share(torch.tensor([True, False, True]), 2) is None
    assert majority_share(torch.tensor([[0, 1], [1, 1]]), 2) is None
    assert majority_share(torch.tensor([0.0, 1.0]), 2) is None
    assert majority_share(torch.zeros(0, dtype=torch.long), 2) is None


def test_monitor_reports_a_collapse_with_the_empty_layers_and_restores_state() -> None:
    mon = HealthMonitor(num_classes=10, patience=2, lr=0.1, lam=0.5)
    for e in (1, 2):
        said = mon.observe(_row(e, 0.5, 0.8), constant_output=True, empty_layers=["fc2"])
    assert mon.status == "collapsed" and "fc2 entirely zero" in said[0]
    assert "--lam 0.05" in said[0]
    clone = HealthMonitor(num_classes=10, patience=2)
    clone.load_state_dict(mon.state_dict())
    assert clone.status == "collapsed" and clone.reason == mon.reason
    # a run shorter than the patience is not judged
    short = HealthMonitor(num_classes=10, patience=3)
    short.observe(_row(1, 0.5, 0.8), constant_output=True, empty_layers=[])
    assert short.status == "ok"
    off = HealthMonitor(num_classes=10, patience=0)
    off.observe(_row(1, 2.3, 0.1), constant_output=True, empty_layers=[])
    assert off.status == "ok"


def test_two_constant_class_scores_are_a_partial_collapse_one_is_not() -> None:
    """A classifier whose last layer lost the rows of two classes cannot tell them apart
    (all but one never predicted): collapsed, the classes named; one constant score is
    free under a softmax (only differences count); a regression has no classes; a
    whole constant output is the whole collapse, whatever the scores say."""
    net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(32, 5)
    assert probe_constant(net, x, 4) == (False, [])
    with torch.no_grad():
        net[2].weight[1].zero_()
    assert probe_constant(net, x, 4) == (False, [1])
    mon = HealthMonitor(num_classes=4, patience=2, lr=0.1, lam=0.01)
    for e in (1, 2):
        said = mon.observe(
            _row(e, 0.5, 0.8), constant_output=False, empty_layers=[], constant_scores=[1]
        )
    assert said == [] and mon.status == "ok"
    with torch.no_grad():
        net[2].weight[3].zero_()
    constant, scores = probe_constant(net, x, 4)
    assert (constant, scores) == (False, [1, 3])
    for e in (3, 4):
        said = mon.observe(
            _row(e, 0.5, 0.8), constant_output=False, empty_layers=[], constant_scores=scores
        )
    assert mon.status == "collapsed", mon.reason
    assert "the classes 1, 3 (2 of 4) the same score for every input for 2 epochs" in said[0]
    assert said[0].startswith("collapsed: the deployable network") and "--lam 0.001" in said[0]
    assert mon.summary()["status"] == "collapsed" and "classes 1, 3" in mon.summary()["reason"]
    state = mon.state_dict()
    assert state["last_scores"] == [1, 3]
    back = HealthMonitor(num_classes=4, patience=2)
    back.load_state_dict(state)
    assert back.status == "collapsed" and back.last_scores == [1, 3]
    # the partial collapse turns whole: the reason follows the last network
    mon.observe(_row(5, 0.5, 0.8), constant_output=True, empty_layers=["fc2"],
                constant_scores=[0, 1, 2, 3])  # fmt: skip
    assert mon.last_scores == [] and mon.status == "collapsed"
    assert mon.reason.startswith("collapsed: the deployable network gives the same output")
    assert "fc2 entirely zero" in mon.reason and "classes" not in mon.reason
    # healed: the next epoch's scores differ again
    mon.observe(_row(6, 0.5, 0.8), constant_output=False, empty_layers=[], constant_scores=[])
    assert mon.status == "ok" and mon.last_scores == [] and mon.reason == ""
    # steered per layer, the hint first asks for one density
    per = HealthMonitor(num_classes=4, patience=1, lr=0.01, target_density=0.1, per_layer=True)
    said = per.observe(_row(1, 0.5, 0.8), constant_output=False, empty_layers=[],
                       constant_scores=[1, 3])  # fmt: skip
    assert "try --target-allocation global" in said[0] and "--target-density 0.2" in said[0]
    per.observe(_row(2, 0.5, 0.8), constant_output=True, empty_layers=[])
    assert per.hint().startswith("try --target-allocation global")  # a whole one too
    per.observe(_row(3, 2.3, 0.1), constant_output=False, empty_layers=[])
    assert "--target-allocation" not in per.hint()  # a stall: not that cause
    # a class the training data never shows may lose its row: only seen classes count
    unseen = HealthMonitor(num_classes=4, patience=1, classes_seen=[0, 1, 2])
    unseen.observe(_row(1, 0.5, 0.8), constant_output=False, empty_layers=[],
                   constant_scores=[1, 3])  # fmt: skip
    assert unseen.status == "ok" and unseen.last_scores == []
    unseen.observe(_row(2, 0.5, 0.8), constant_output=False, empty_layers=[],
                   constant_scores=[1, 2, 3])  # fmt: skip
    assert unseen.status == "collapsed" and unseen.last_scores == [1, 2]
    assert classes_present(torch.tensor([2, 0, 2]), 4) == [0, 2]
    assert classes_present(torch.tensor([0, 5]), 4) is None  # not class indices of C
    reg = HealthMonitor(num_classes=None, patience=1)
    reg.observe({"epoch": 1, "train_loss": 1.0}, constant_output=False, empty_layers=[],
                constant_scores=[0, 1])  # fmt: skip
    assert reg.status == "ok"
    # an output of another shape than (N, C) has no class scores to judge: a sequence
    # model's (N, T, V), or (N·T, V) read as N rows
    seq = nn.Sequential(nn.Linear(5, 6), nn.Unflatten(1, (2, 3)))
    with torch.no_grad():
        seq[0].weight.zero_()
    assert probe_constant(seq, x, 3) == (True, []) and constant_output(seq, x)
    assert probe_constant(net, x, 5) == (False, [])  # 4 scores, not 5: not judged


def test_a_non_finite_output_is_never_constant() -> None:
    """An output with an inf or a NaN is neither a constant output nor constant scores
    (the spread of an inf is not finite, and a NaN compares false)."""
    net = nn.Linear(3, 4)
    with torch.no_grad():
        net.weight.zero_()
        net.bias[0] = float("inf")
    x = torch.randn(8, 3)
    assert probe_constant(net, x, 4) == (False, [])
    with torch.no_grad():
        net.bias[0] = float("nan")
    assert probe_constant(net, x, 4) == (False, []) and not constant_output(net, x)


def test_constant_output_sees_a_dead_layer_but_not_a_live_one() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x = torch.randn(16, 5)
    assert not constant_output(net, x)
    with torch.no_grad():
        net[0].weight.zero_()
    assert constant_output(net, x)
    assert not constant_output(net, x[:1])  # one sample is never "constant"
    assert net.training  # mode restored


def test_cli_stalled_run_exits_4_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # lr 0: the network never moves; its loss stays at ln 10 and accuracy at chance
    out = tmp_path / "stall"
    code = main(["train", "-o", "sgd", "--lr", "0", "--epochs", "3", "--out", str(out), *FAST])
    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stalled" in lines[0] and "Traceback" not in err
    assert lines[0].startswith("sparseopt: error: run stalled: ") and lines[0].count("stalled") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stalled" and "ln 10" in summary["reason"]
    # prune shrinks it as asked, and says what the run is (with --threads, as train has)
    threads = torch.get_num_threads()
    try:
        argv = ["prune", str(out), "--out", str(tmp_path / "shrunk"), "--threads", "1"]
        assert main(argv) == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert "sparseopt prune: note: the run stalled (summary.json: stalled:" in err


def test_cli_collapsed_run_exits_4_and_a_healthy_run_is_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # an ℓ0 λ far above the weights' scale thresholds every layer to zero
    out = tmp_path / "collapse"
    code = main(
        [
            "train",
            "-o",
            "rvsm",
            "--penalty",
            "l0",
            "--lam",
            "10",
            "--epochs",
            "3",
            "--out",
            str(out),
            *FAST,
        ]
    )
    err = capsys.readouterr().err
    assert code == EXIT_FAILED and "collapsed" in err and "--lam 1" in err
    assert json.loads((out / "summary.json").read_text())["status"] == "collapsed"
    ok = tmp_path / "ok"
    assert main(["train", "-o", "sgd", "--epochs", "3", "--out", str(ok), *FAST]) == 0
    assert json.loads((ok / "summary.json").read_text())["status"] == "ok"


def test_compare_shows_the_status_and_the_pruning_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            *("compare", "--optimizers", "rvsm", "proxsgd", "--epochs", "3", "--prune-baseline"),
            *("--finetune-epochs", "1", "--out", str(tmp_path), *FAST),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    rows = json.loads((tmp_path / "comparison.json").read_text())
    names = [r["optimizer"] for r in rows]
    assert names == ["rvsm", "proxsgd", "pruning @ rvsm", "pruning @ proxsgd"]
    for method in rows[:2]:
        assert method["status"] == "ok" and method["beats_pruning"] in ("yes", "no", "tie")
    for method, pruned in zip(rows[:2], rows[2:], strict=True):
        # pruned at the method's own weight density, same total epochs
        assert pruned["weight_density"] == pytest.approx(method["weight_density"], abs=1e-3)
        assert pruned["epochs"] == 3
    for dense in ("sgd", "adam"):  # every dense optimizer is pruned, by default
        assert (tmp_path / f"pruning-{dense}-dense" / "summary.json").exists()
        for method in ("rvsm", "proxsgd"):
            assert (tmp_path / f"pruning-{dense}-{method}" / "summary.json").exists()
    for pruned in rows[2:]:
        # the baseline is the pruned network with the better validation accuracy
        seen = pruned["pruned_val_acc"]
        assert set(seen) == {"sgd", "adam"} and pruned["val_acc"] == max(seen.values())
        assert seen[pruned["pruned_from"]] == pruned["val_acc"]
    table = (tmp_path / "comparison.md").read_text()
    source = rows[2]["pruned_from"]
    assert "| beats pruning? |" in table and f"| pruning @ rvsm ({source}) | ok |" in table


def test_the_pruning_baseline_is_chosen_on_validation_never_on_test() -> None:
    from sparseopt.cli.compare import choose_on_validation

    def cand(dense: str, val: float | None, test: float, status: str = "ok") -> dict:
        return {"pruned_from": dense, "val_acc": val, "test_acc": test, "status": status}

    # the better validation accuracy wins, whatever the test accuracy says
    assert (
        choose_on_validation([cand("sgd", 0.80, 0.90), cand("adam", 0.85, 0.70)])["pruned_from"]
        == "adam"
    )
    assert (
        choose_on_validation([cand("sgd", 0.86, 0.70), cand("adam", 0.85, 0.90)])["pruned_from"]
        == "sgd"
    )
    # a tie goes to the first of --dense; without a validation split, the first too
    assert (
        choose_on_validation([cand("sgd", 0.85, 0.8), cand("adam", 0.85, 0.9)])["pruned_from"]
        == "sgd"
    )
    assert (
        choose_on_validation([cand("sgd", None, 0.8), cand("adam", None, 0.9)])["pruned_from"]
        == "sgd"
    )
    # a diverged candidate (no accuracy) is never chosen over one that trained; a failed
    # (collapsed, stalled) one never over one that is ok, whatever its accuracy
    diverged = {"pruned_from": "sgd", "status": "diverged"}
    assert choose_on_validation([diverged, cand("adam", 0.5, 0.5)])["pruned_from"] == "adam"
    assert choose_on_validation([diverged])["status"] == "diverged"
    dead = cand("sgd", 0.9, 0.9, status="collapsed")
    assert choose_on_validation([dead, cand("adam", 0.5, 0.5)])["pruned_from"] == "adam"
    assert choose_on_validation([dead, diverged])["status"] == "collapsed"
    stuck = cand("adam", 0.2, 0.2, status="stalled")
    assert choose_on_validation([dead, stuck])["pruned_from"] == "sgd"  # both failed: validation


def _zero_rows(run: Path, rows: list[int]) -> None:
    """Zero rows of the last layer of a finished digits-MLP run's deployable network."""
    path = run / "model_sparse.pt"
    state = torch.load(path, weights_only=False)
    state = state.state_dict() if hasattr(state, "state_dict") else state
    state["fc3.weight"][rows] = 0.0
    torch.save(state, path)


def test_compare_judges_the_pruned_networks_and_keeps_a_failed_one_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["compare", "--optimizers", "rvsm", "--epochs", "2", "--prune-baseline"]
    assert main([*args, "--finetune-epochs", "1", "--out", str(tmp_path), *FAST]) == 0
    said = "pruning baseline: one-shot (each dense network pruned once after epoch 1, then "
    assert said + "fine-tuned for 1 of the 2 epochs); --prune-schedule gradual" in (
        capsys.readouterr().out
    )  # which baseline, and that a stronger one exists
    first = json.loads((tmp_path / "comparison.json").read_text())[-1]
    assert first["status"] == "ok"
    chosen, other = first["pruned_from"], {"sgd": "adam", "adam": "sgd"}[first["pruned_from"]]
    # the chosen pruned network loses two class rows after it finished (its summary still
    # says ok): judged again on resume, it is collapsed and the other one is the baseline
    _zero_rows(tmp_path / f"pruning-{chosen}-rvsm", [2, 5])
    capsys.readouterr()
    assert main(["compare", "--resume", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "comparison-2.json").read_text())[-1]
    assert again["status"] == "ok" and again["pruned_from"] == other
    assert again["pruned_status"] == {chosen: "collapsed", other: "ok"}  # what the choice saw
    assert "failed pruning baselines" not in capsys.readouterr().out
    # both collapsed: the baseline is one of them, shown collapsed with its reason; the
    # comparison's exit code is the runs' asked for (the baseline is a reference)
    _zero_rows(tmp_path / f"pruning-{other}-rvsm", [1, 7])
    assert main(["compare", "--resume", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    last = json.loads((tmp_path / "comparison-3.json").read_text())
    pruned = last[-1]
    assert pruned["status"] == "collapsed" and "the same score for every input" in pruned["reason"]
    assert pruned["pruned_status"] == {"sgd": "collapsed", "adam": "collapsed"}
    assert last[0]["beats_pruning"] in ("yes", "no", "tie")
    assert "note: failed pruning baselines: pruning @ rvsm" in captured.err
    assert f"| pruning @ rvsm ({pruned['pruned_from']}) | collapsed |" in captured.out
    # a pruned network that cannot be judged keeps its status, and says why
    (tmp_path / f"pruning-{other}-rvsm" / "model_sparse.pt").write_bytes(b"")
    assert main(["compare", "--resume", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"pruning-{other}-rvsm not judged: cannot load sparse model" in err
    rows = json.loads((tmp_path / "comparison-4.json").read_text())
    assert rows[-1]["pruned_status"][other] == "ok"
    for dense in ("sgd", "adam"):  # their files are not touched
        summary = json.loads((tmp_path / f"pruning-{dense}-rvsm" / "summary.json").read_text())
        assert summary["status"] == "ok"


def test_compare_prunes_only_the_dense_optimizers_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            *("compare", "--optimizers", "rvsm", "--epochs", "2", "--prune-baseline"),
            *("--dense", "SGD", "sgd", "--out", str(tmp_path), *FAST),
        ]
    )
    assert code == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "compare-settings.json").read_text())
    assert record["dense"] == ["sgd"]  # the registry's names, each once
    assert not (tmp_path / "pruning-adam-dense").exists()
    rows = json.loads((tmp_path / "comparison.json").read_text())
    assert rows[-1]["pruned_from"] == "sgd"
    assert rows[-1]["pruned_val_acc"] == {"sgd": rows[-1]["val_acc"]}  # what the choice saw
    # --resume continues the recorded baseline: another --dense is refused, not ignored
    for flag in (("--dense", "adam"), ("--finetune-epochs", "1")):
        assert main(["compare", "--resume", str(tmp_path), *flag]) == 2
        err = capsys.readouterr().err
        assert f"other settings ({flag[0]})" in err and "Traceback" not in err


def test_a_failed_baseline_row_keeps_the_tables_columns() -> None:
    from sparseopt.cli.compare import comparison_table

    method = {
        "optimizer": "rvsm", "status": "ok", "test_acc": 0.9, "val_acc": 0.9, "density": 0.1,
        "weight_density": 0.1, "nonzero": 10, "params": 100, "wall_time": 1.0,
        "beats_pruning": "–",
    }  # fmt: skip
    failed = {"optimizer": "pruning @ rvsm", "status": "diverged", "pruned_from": "adam"}
    lines = comparison_table([method, failed]).splitlines()
    assert len({line.count("|") for line in lines}) == 1, lines  # every row, every column
    assert lines[-1].startswith("| pruning @ rvsm (adam) | diverged |")


def test_the_table_gives_each_rows_points_to_the_dense_run_chosen_on_validation() -> None:
    """The dense runs rank one way on validation (SGD) and the other on test (Adam): every
    row's gap is to SGD's; a failed row keeps the columns; without a dense row, none."""
    from sparseopt.cli.compare import comparison_table, dense_baseline

    def row(name: str, test: float | None, val: float | None, **kw: Any) -> dict:
        cells = {"density": 0.1, "weight_density": 0.1, "nonzero": 10, "params": 100,
                 "test_loss": 0.3, "val_loss": 0.3}  # fmt: skip
        return {"optimizer": name, "status": "ok", "test_acc": test, "val_acc": val,
                "wall_time": 1.0, **cells, **kw}  # fmt: skip

    rows = [
        row("rvsm", 0.90, 0.88, beats_pruning="yes"),
        row("sgd", 0.92, 0.91, density=1.0, weight_density=1.0),
        row("adam", 0.95, 0.89, density=1.0, weight_density=1.0),
        {"optimizer": "pruning @ rvsm", "status": "diverged", "pruned_from": "adam"},
    ]
    assert dense_baseline(rows)["optimizer"] == "sgd"
    lines = comparison_table(rows).splitlines()
    assert lines[0].split("|")[-3].strip() == "vs dense (points; sgd)"  # the gaps' column
    assert len({line.count("|") for line in lines}) == 1, lines
    gaps = [line.split("|")[-3].strip() for line in lines[2:]]
    assert gaps == ["-2.00", "+0.00", "+3.00", "–"]
    assert "vs dense" not in comparison_table(rows[:1])  # no dense run compared
    stalled = [rows[0], {**rows[1], "status": "stalled"}]
    assert "| vs dense (points; sgd, stalled) |" in comparison_table(stalled)
    diverged = [rows[0], {"optimizer": "sgd", "status": "diverged"}]
    assert "vs dense" not in comparison_table(diverged)  # none reached a test accuracy
    assert "vs dense" not in comparison_table(rows[:3], task="regression")


def test_magnitude_masks_keep_the_largest_weights_globally() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.Linear(20, 5))
    masks = magnitude_masks(net, 0.1)
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == round(0.1 * (200 + 100))
    allw = torch.cat([net[0].weight.abs().flatten(), net[1].weight.abs().flatten()])
    thr = allw.sort(descending=True).values[kept - 1]
    for name, m in masks.items():
        w = dict(net.named_parameters())[name].abs()
        assert bool((w[m] >= thr).all()) and bool((w[~m] <= thr).all())
    with pytest.raises(ValueError, match="keep"):
        magnitude_masks(net, 1.5)


def test_fixed_mask_keeps_pruned_weights_zero_through_training() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 4))
    masks = {"0.weight": torch.rand(4, 4) > 0.5}
    cb = FixedMask(net.state_dict(), masks)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    cb.apply(net)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 4)).pow(2).sum().backward()
        opt.step()
        cb.on_step_end(SimpleNamespace(model=net), 0)
    assert bool((net[0].weight[~masks["0.weight"]] == 0).all())


def test_verdict_is_a_tie_within_two_standard_errors() -> None:
    assert verdict(0.90, 0.80, 1000) == "yes" and verdict(0.80, 0.90, 1000) == "no"
    assert verdict(0.90, 0.89, 1000) == "tie"
    with pytest.raises(ValueError):
        verdict(0.9, 0.8, 0)


def test_target_density_never_raises_lam_while_a_layer_is_empty() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    opt = so.create_optimizer(net, "proxsgd", lr=0.1, lam=0.01)
    with torch.no_grad():
        net[2].weight.zero_()  # layer 2 collapsed, layer 0 dense: overall far above target
    assert empty_penalised(opt) == 1
    ctl = TargetDensity(0.05)
    lam = ctl.update(net, opt)
    assert lam < 0.01  # "too dense" would raise λ; a collapsed layer brings it down
    with torch.no_grad():
        net[2].weight.fill_(1.0)
    assert empty_penalised(opt) == 0 and ctl.update(net, opt) > lam


def test_reason_follows_the_final_status_and_old_checkpoints_are_judged() -> None:
    mon = HealthMonitor(num_classes=10, patience=2)
    for e in (1, 2, 3):
        mon.observe(_row(e, 0.5, 0.8), constant_output=True, empty_layers=["fc2"])
    for e in (4, 5):
        mon.observe(_row(e, 2.3, 0.1), constant_output=False, empty_layers=[])
    assert mon.status == "stalled" and mon.reason.startswith("stalled")
    # a resumed checkpoint from before the checks counts its epochs as observed
    old = HealthMonitor(num_classes=10, patience=3)
    old.load_state_dict({"epochs_seen": 5})
    old.observe(_row(6, 0.5, 0.8), constant_output=True, empty_layers=[])
    assert old.status == "collapsed"


def test_state_dict_is_plain_data_and_a_missing_entry_reads_as_empty() -> None:
    mon = HealthMonitor(num_classes=10, patience=2)
    for e in (1, 2):
        mon.observe(_row(e, 2.3, 0.1), constant_output=False, empty_layers=[])
    state = mon.state_dict()
    assert state == {
        "stall_streak": 2,
        "collapse_streak": 0,
        "last_collapsed": False,
        "last_scores": [],
        "last_empty": [],
        "failing_since": 1,
        "emptied": False,
        "epochs_seen": 2,
        "reason": mon.reason,
        "reported": mon.reported,
    }
    assert state["reported"] is not mon.reported  # a copy
    mon.load_state_dict({"stall_streak": 1.0, "last_collapsed": 1})
    assert (mon.stall_streak, mon.last_collapsed, mon.epochs_seen) == (1, True, 0)
    assert type(mon.stall_streak) is int and (mon.reason, mon.reported) == ("", [])


def test_compare_refuses_a_sparse_or_unknown_dense_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad, says in (("adabreg", "sparse optimizer"), ("nope", "Invalid --dense value")):
        code = main(
            [
                *("compare", "--optimizers", "rvsm", "--epochs", "2", "--prune-baseline"),
                *("--dense", bad, "--out", str(tmp_path / bad), *FAST),
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and says in err and "Traceback" not in err
        assert not (tmp_path / bad / "rvsm").exists()  # refused before anything trained


def test_compare_checks_the_fine_tuning_epochs_before_anything_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = (
        (("--epochs", "2", "--finetune-epochs", "5"), "Invalid --finetune-epochs value: 5"),
        (("--epochs", "2", "--finetune-epochs", "0"), "Invalid --finetune-epochs value: 0"),
        (("--epochs", "1"), "Invalid --epochs value: 1; --prune-baseline needs at least 2"),
    )
    for i, (flags, says) in enumerate(cases):
        out = tmp_path / str(i)
        code = main(
            [*("compare", "--optimizers", "rvsm", "--prune-baseline", *flags),
             *("--out", str(out), *FAST)]
        )  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and says in err and "Traceback" not in err
        assert not out.exists()  # refused before anything was written


def test_fixed_mask_does_not_reload_the_dense_weights_on_resume() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 4))
    dense = {k: torch.ones_like(v) for k, v in net.state_dict().items()}
    cb = FixedMask(dense, {"0.weight": torch.ones(4, 4, dtype=torch.bool)})
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    resumed = SimpleNamespace(model=net, epoch=0, history=[{"epoch": 0}])
    cb.on_train_begin(resumed)  # mid-way through epoch 1: keeps its own weights
    assert torch.equal(net[0].weight, trained["0.weight"])
    cb.on_train_begin(SimpleNamespace(model=net, epoch=0, history=[]))
    assert torch.equal(net[0].weight, torch.ones(4, 4))


def test_an_inverse_scale_space_collapse_asks_for_more_epochs_not_a_smaller_lr() -> None:
    """Its support grows with the steps taken: a third of the lr would slow it further."""
    grows = HealthMonitor(
        num_classes=2, patience=2, lr=0.02, lam=0.03, support_grows=True, epochs=15
    )
    prox = HealthMonitor(num_classes=2, patience=2, lr=0.02, lam=0.03, epochs=15)
    for mon in (grows, prox):
        for e in (1, 2):
            mon.observe(_row(e, 0.69, 0.5), constant_output=True, empty_layers=["conv3"])
    assert "--epochs 30 (the support grows with the steps taken)" in grows.reported[0]
    assert "--lr" not in " ".join(grows.reported) and "--lam 0.003" in grows.reported[0]
    assert grows.summary()["hint"].startswith("try --lam 0.003 (10× smaller λ) or --epochs 30")
    assert "--lr 0.00667 (3× smaller lr)" in prox.summary()["hint"]
    assert "--epochs" not in prox.summary()["hint"]
    # a stalled training loss with every layer alive: the lr hint, for either
    stalled = HealthMonitor(
        num_classes=2, patience=2, lr=0.02, lam=0.03, support_grows=True, epochs=15
    )
    for e in (1, 2):
        stalled.observe(_row(e, 0.69, 0.5), constant_output=False, empty_layers=[])
    assert stalled.status == "stalled" and "--lr 0.00667" in stalled.summary()["hint"]


def test_the_engine_tells_the_monitor_which_methods_grow_their_support(tmp_path: Path) -> None:
    from engine_helpers import tiny

    from sparseopt.engine import Trainer

    grows = {}
    for name in ("linbreg", "adabreg", "splitlbi", "rda", "rvsm", "proxsgd"):
        with Trainer(tiny(tmp_path / name, optimizer=name, epochs=3)) as t:
            grows[name] = (t.health.support_grows, t.health.epochs)
    assert grows == {
        "linbreg": (True, 3),
        "adabreg": (True, 3),
        "splitlbi": (True, 3),
        "rda": (False, 3),
        "rvsm": (False, 3),
        "proxsgd": (False, 3),
    }


def test_the_final_hint_reads_the_last_empty_layers_and_survives_a_resume() -> None:
    """A stall whose deployable network lost a layer: summary() (no layers passed) still
    gives the epochs hint, from ``last_empty``, also after a checkpoint round trip."""
    kw = {"lr": 0.02, "lam": 0.03, "support_grows": True, "epochs": 15}
    mon = HealthMonitor(num_classes=2, patience=2, **kw)
    for e in (1, 2):  # validation at chance although the training loss fell
        mon.observe(_row(e, 0.3, 0.5), constant_output=False, empty_layers=["conv3"])
    assert mon.status == "stalled" and mon.last_empty == ["conv3"]
    assert "--epochs 30" in mon.summary()["hint"] and "--lr" not in mon.summary()["hint"]
    back = HealthMonitor(num_classes=2, patience=2, **kw)
    back.load_state_dict(mon.state_dict())
    assert back.summary() == mon.summary()
    # a checkpoint from before last_empty (and emptied): they read as empty (the docstring)
    old = HealthMonitor(num_classes=2, patience=2, **kw)
    gone = ("last_empty", "emptied")
    old.load_state_dict({k: v for k, v in mon.state_dict().items() if k not in gone})
    assert old.last_empty == [] and "--lr 0.00667" in old.summary()["hint"]


def test_inside_the_refit_the_hint_is_the_refit_lr_and_layers_are_named_once() -> None:
    mon = HealthMonitor(num_classes=2, patience=2, lr=0.02, lam=0.03, support_grows=True, epochs=15)
    mon.refit_lr, mon.refit_from = 0.02, 13
    for e in (12,):  # healthy until the refit
        mon.observe(_row(e, 0.3, 0.9), constant_output=False, empty_layers=[])
    for e in (13, 14):
        out = mon.observe(_row(e, 0.69, 0.5), constant_output=True, empty_layers=["fc1"])
    (line,) = [w for w in out if w.startswith("collapsed")]
    assert "--refit-lr 0.00667 (3× smaller refit lr) or --refit-warmup 1" in line
    assert "--epochs" not in line and "--lr " not in line
    mon.refit_warmup = 1.0  # a refit with a warm-up already: the lr alone
    assert "--refit-warmup" not in mon.hint()
    assert line.count("fc1") == 1  # in the message, not again after the hint
    # a collapse that began before the refit keeps the sparse phase's hint after it
    early = HealthMonitor(
        num_classes=2, patience=2, lr=0.02, lam=0.03, support_grows=True, epochs=15
    )
    for e in range(1, 15):
        if e == 13:
            early.refit_lr, early.refit_from = 0.02, 13
        early.observe(_row(e, 0.69, 0.5), constant_output=True, empty_layers=["fc1"])
    assert early.failing_since == 1 and "--epochs 30" in early.summary()["hint"]
    assert "--refit-lr" not in early.summary()["hint"]


def test_a_run_in_its_refit_tells_the_monitor(tmp_path: Path) -> None:
    from engine_helpers import tiny

    from sparseopt.engine import Trainer

    with Trainer(tiny(tmp_path / "r", optimizer="rda", epochs=5, refit=0.2, refit_lr=0.03)) as t:
        assert t.health.refit_lr is None
        t.fit()
        assert (t.health.refit_lr, t.health.refit_from) == (pytest.approx(0.03), 5)
        assert t.health.refit_warmup == 1.0  # RDA's recipe warms its refit up


def test_under_a_target_density_the_hint_asks_for_a_denser_target(tmp_path: Path) -> None:
    """The controller sets λ, so ``--lam`` cannot help: the hint is a twice denser
    target (capped at 1), beside the lr; the engine passes the run's target."""
    from engine_helpers import tiny

    from sparseopt.engine import Trainer

    def stalled(**kw: Any) -> str:
        mon = HealthMonitor(num_classes=2, patience=2, lr=0.02, lam=0.03, **kw)
        for e in (1, 2):
            mon.observe(_row(e, 0.69, 0.5), constant_output=False, empty_layers=[])
        return mon.summary()["hint"]

    hint = stalled(target_density=0.05)
    assert "--target-density 0.1 (2× denser target)" in hint and "--lam" not in hint
    assert "--lr 0.00667" in hint
    assert "--target-density 1 " in stalled(target_density=0.7)
    assert "--target-density" not in stalled(target_density=1.0) and "--lam" not in stalled(
        target_density=1.0
    )
    assert "--lam 0.003" in stalled()
    with Trainer(tiny(tmp_path / "t", optimizer="proxsgd", target_density=0.2)) as t:
        assert t.health.target_density == 0.2


def test_a_failure_that_emptied_a_layer_keeps_the_epochs_hint_to_its_end() -> None:
    """An inverse scale space run collapses (a layer empty), then the layer refills but
    the run still stalls: one failure, one hint — twice the epochs, not the lr — in the
    warning and in the summary; a healthy epoch in between starts a new failure."""
    kw = {"lr": 0.02, "lam": 0.03, "support_grows": True, "epochs": 10}
    mon = HealthMonitor(num_classes=2, patience=2, **kw)
    mon.observe(_row(1, 0.69, 0.5), constant_output=True, empty_layers=["fc1"])
    mon.observe(_row(2, 0.69, 0.5), constant_output=True, empty_layers=["fc1"])
    for e in (3, 4, 5):  # fc1 back, still at chance
        mon.observe(_row(e, 0.3, 0.5), constant_output=False, empty_layers=[])
    assert mon.status == "stalled" and mon.emptied
    assert "--epochs 20" in mon.summary()["hint"] and "--lr" not in mon.summary()["hint"]
    back = HealthMonitor(num_classes=2, patience=2, **kw)
    back.load_state_dict(mon.state_dict())
    assert back.summary() == mon.summary()
    mon.observe(_row(6, 0.2, 0.9), constant_output=False, empty_layers=[])  # healthy
    assert not mon.emptied
    for e in (7, 8):
        mon.observe(_row(e, 0.69, 0.5), constant_output=False, empty_layers=[])
    assert "--lr 0.00667" in mon.summary()["hint"]


def test_a_run_whose_last_layer_loses_two_class_rows_ends_collapsed(tmp_path: Path) -> None:
    """End to end: the trainer probes the deployable network for constant class scores.
    A callback that zeroes the rows of classes 3 and 7 in the last layer after every
    step (SGD; the MLP of the default job) makes the run end ``collapsed``, the two
    classes named in its summary and its FAILED line; the command line exits 4."""
    from engine_helpers import tiny

    from sparseopt.engine import train

    class DropTwoClasses:
        def on_step_end(self, trainer: Any, *_: Any) -> None:
            with torch.no_grad():
                trainer.model.fc3.weight[[3, 7]] = 0.0

    res = train(
        tiny(tmp_path / "r", optimizer="sgd", epochs=3, stall_epochs=2),
        callbacks=[DropTwoClasses()],
    )
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert res.status == "collapsed" and summary["status"] == "collapsed"
    assert "the classes 3, 7 (2 of 10) the same score for every input" in summary["reason"]
    assert "FAILED — collapsed" in (tmp_path / "r" / "log.txt").read_text()
    ok = train(tiny(tmp_path / "ok", optimizer="sgd", epochs=3, stall_epochs=2))
    assert ok.status == "ok"
    # steered per layer (AdaBreg's recipe), the hint asks first for one density
    per = train(
        tiny(tmp_path / "he", optimizer="adabreg", epochs=3, stall_epochs=2),
        callbacks=[DropTwoClasses()],
    )
    hint = json.loads((tmp_path / "he" / "summary.json").read_text())["hint"]
    assert per.status == "collapsed" and hint.startswith("try --target-allocation global")
    # so it does steered to the same fraction of every layer (uniform, also per layer)
    uni = train(
        tiny(
            tmp_path / "uniform",
            optimizer="proxsgd",
            lam_scale="layer",
            target_allocation="uniform",
            epochs=3,
            stall_epochs=2,
        ),
        callbacks=[DropTwoClasses()],
    )
    hint = json.loads((tmp_path / "uniform" / "summary.json").read_text())["hint"]
    assert uni.status == "collapsed" and hint.startswith("try --target-allocation global")


def test_dense_names_default_to_the_registrys_dense_optimizers() -> None:
    from sparseopt.cli.compare import _dense_names
    from sparseopt.optim.registry import get_optimizer_info, list_optimizers

    dense = [n for n in list_optimizers() if not get_optimizer_info(n).sparse]
    assert _dense_names(SimpleNamespace(dense=None)) == dense == ["sgd", "adam"]
    # a compare record written before 2026-11-28 holds one name, a str: resumed as it ran
    assert _dense_names(SimpleNamespace(dense="sgd")) == ["sgd"]
    assert _dense_names(SimpleNamespace(dense=["adam", "Adam", "sgd"])) == ["adam", "sgd"]


def test_a_diverged_pruning_baseline_is_noted_and_leaves_the_exit_code_to_the_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every pruned network's fine-tuning diverges (its weights made infinite at its
    start): the method gets no verdict, the baseline row reads diverged, a note says so,
    and compare exits 0 — the runs it was asked for trained."""
    from sparseopt import baselines

    original = baselines.FixedMask.on_train_begin

    def poisoned(self: Any, trainer: Any) -> None:
        original(self, trainer)
        with torch.no_grad():
            for p in trainer.model.parameters():
                p.fill_(float("inf"))

    monkeypatch.setattr(baselines.FixedMask, "on_train_begin", poisoned)
    args = ["compare", "--optimizers", "rvsm", "--epochs", "2", "--prune-baseline"]
    assert main([*args, "--out", str(tmp_path), *FAST]) == 0
    captured = capsys.readouterr()
    rows = json.loads((tmp_path / "comparison.json").read_text())
    assert rows[0]["status"] == "ok" and "beats_pruning" not in rows[0]
    assert rows[-1]["status"] == "diverged" and rows[-1]["baseline"]
    assert "note: failed pruning baselines: pruning @ rvsm" in captured.err
    assert "failed runs" not in captured.err
