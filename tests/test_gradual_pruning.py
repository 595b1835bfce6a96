"""Gradual magnitude pruning (``sparseopt.baselines.GradualMagnitude``) in the engine."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
import torch
from engine_helpers import StopAfter, assert_same_state, tiny

from sparseopt.baselines import GradualMagnitude, gradual_keep, prunable_weights
from sparseopt.engine import TrainingInterrupted, train


def test_the_schedule_is_cubic_monotone_and_ends_at_the_density() -> None:
    keeps = [gradual_keep(t, 200, 0.05, 0.1, 0.6) for t in range(201)]
    assert keeps[:21] == [1.0] * 21 and keeps[120:] == [0.05] * 81
    assert all(a >= b for a, b in pairwise(keeps))  # never grows back
    # the cubic: a quarter of the way, 1 − (3/4)³ of the weights to remove are gone
    assert gradual_keep(45, 200, 0.05, 0.1, 0.6) == pytest.approx(0.05 + 0.95 * 0.75**3)
    for bad in ({"density": 0.0}, {"density": 1.5}, {"density": 0.1, "start": 0.7, "end": 0.6}):
        with pytest.raises(ValueError, match="Invalid"):
            GradualMagnitude(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="updates"):
        GradualMagnitude(0.1, updates=0)


def _layer_density(model: torch.nn.Module) -> tuple[int, int]:
    weights = prunable_weights(model).values()
    return sum(int((w != 0).sum()) for w in weights), sum(w.numel() for w in weights)


def test_a_dense_run_ends_at_the_density_with_its_mask_fixed(tmp_path: Path) -> None:
    class Watch(GradualMagnitude):
        """Records the fraction kept after every step."""

        def on_step_end(self, trainer, step):  # type: ignore[no-untyped-def]
            super().on_step_end(trainer, step)
            nz, n = _layer_density(trainer.model)
            self.seen.append(nz / n)

    cb = Watch(0.2, start=0.2, end=0.6, updates=4)
    cb.seen = []
    res = train(tiny(tmp_path / "run", optimizer="sgd", epochs=5), callbacks=[cb])
    nz, n = _layer_density(res.model)
    assert nz == round(0.2 * n)  # exactly that many, as magnitude_masks keeps
    total = 5 * 3
    assert cb.total == total and len(cb.seen) == total
    t1 = int(0.6 * total)
    assert cb.seen[: int(0.2 * total)] == [1.0] * int(0.2 * total)  # nothing before start
    assert all(a >= b for a, b in pairwise(cb.seen))
    assert set(cb.seen[t1 - 1 :]) == {nz / n}  # the mask fixed from t1 on
    # the pruned weights stayed zero while the kept ones trained on
    assert res.history[-1]["weight_density"] == pytest.approx(nz / n)


def test_an_interrupted_run_resumes_to_the_same_network(tmp_path: Path) -> None:
    kw = {"optimizer": "sgd", "epochs": 4, "schedule": "cosine"}
    ref = train(tiny(tmp_path / "ref", **kw), callbacks=[GradualMagnitude(0.3, end=0.8)])
    with pytest.raises(TrainingInterrupted):
        train(
            tiny(tmp_path / "cut", **kw),
            callbacks=[GradualMagnitude(0.3, end=0.8), StopAfter(2)],
        )
    res = train(resume=tmp_path / "cut", callbacks=[GradualMagnitude(0.3, end=0.8), StopAfter(-1)])
    assert_same_state(res.model.state_dict(), ref.model.state_dict())


def test_compare_prunes_gradually_at_each_methods_density_and_reuses_the_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``compare --prune-baseline --prune-schedule gradual``: per method and dense
    optimizer a run of all the epochs pruned gradually to the method's weight density;
    the better on validation is the baseline; a second call reuses every run."""
    import json

    from sparseopt.cli import main

    fast = ["--limit-batches", "3", "--no-plots", "--quiet"]
    args = [
        *("compare", "--optimizers", "rvsm", "proxsgd", "--epochs", "3", "--prune-baseline"),
        *("--prune-schedule", "gradual", "--out", str(tmp_path / "c"), *fast),
    ]
    assert main(args) == 0, capsys.readouterr().out
    assert "pruning baseline: one-shot" not in capsys.readouterr().out
    rows = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert [r["optimizer"] for r in rows] == [
        "rvsm", "proxsgd", "pruning @ rvsm", "pruning @ proxsgd",
    ]  # fmt: skip
    for method, pruned in zip(rows[:2], rows[2:], strict=True):
        assert pruned["pruning_schedule"] == "gradual" and pruned["epochs"] == 3
        # the whole network pruned to the method's own density (up to one weight)
        assert pruned["weight_density"] == pytest.approx(method["weight_density"], abs=1e-3)
        assert method["beats_pruning"] in ("yes", "no", "tie")
        seen = pruned["pruned_val_acc"]
        assert set(seen) == {"sgd", "adam"} and pruned["val_acc"] == max(seen.values())
    for dense in ("sgd", "adam"):
        assert not (tmp_path / "c" / f"pruning-{dense}-dense").exists()  # nothing one-shot
        for method in ("rvsm", "proxsgd"):
            run = tmp_path / "c" / f"pruning-gradual-{dense}-{method}"
            assert (run / "summary.json").exists()
    record = json.loads((tmp_path / "c" / "compare-settings.json").read_text())
    assert record["prune_schedule"] == "gradual"
    table = (tmp_path / "c" / "comparison.md").read_text()
    assert f"| pruning @ rvsm ({rows[2]['pruned_from']}, gradual) | ok |" in table
    capsys.readouterr()
    runs = sorted((tmp_path / "c").glob("pruning-gradual-*/summary.json"))
    written = [p.stat().st_mtime_ns for p in runs]
    assert main(["compare", "--resume", str(tmp_path / "c")]) == 0
    assert "gradually" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in runs] == written  # reused, not trained again
    again = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert [r["test_acc"] for r in again] == [r["test_acc"] for r in rows]


def test_compare_with_jobs_trains_no_dense_run_to_prune(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Side by side (``--jobs 2``) the gradual baseline trains no ``pruning-<dense>-dense``
    run (the one-shot baseline's head start): one gradual run per dense optimizer."""
    from sparseopt.cli import main

    out = tmp_path / "j"
    args = [
        *("compare", "--optimizers", "rvsm", "--epochs", "2", "--prune-baseline"),
        *("--prune-schedule", "gradual", "--jobs", "2", "--out", str(out)),
        *("--limit-batches", "3", "--no-plots", "--quiet", "--threads", "1"),
    ]
    assert main(args) == 0, capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "pruning-gradual-adam-rvsm", "pruning-gradual-sgd-rvsm", "rvsm",
    ]  # fmt: skip


def test_compare_refuses_a_schedule_without_a_baseline_or_with_finetune_epochs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sparseopt.cli import main

    base = ["compare", "--optimizers", "rvsm", "--epochs", "3", "--out", str(tmp_path / "x")]
    assert main([*base, "--prune-schedule", "gradual"]) == 2
    assert "--prune-schedule needs --prune-baseline" in capsys.readouterr().err
    bad = [*base, "--prune-baseline", "--prune-schedule", "gradual", "--finetune-epochs", "1"]
    assert main(bad) == 2
    assert "--finetune-epochs is the one-shot baseline's" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_more_epochs_keep_the_mask_and_a_short_run_still_prunes(tmp_path: Path) -> None:
    """A run resumed with more epochs keeps its first schedule: its mask never grows back;
    another density is refused on resume; a one-step schedule prunes at that step; the
    updates are at most ``updates``."""
    kw = {"optimizer": "sgd", "schedule": "cosine"}
    train(tiny(tmp_path / "r", epochs=2, **kw), callbacks=[GradualMagnitude(0.3)])
    res = train(resume=tmp_path / "r", config={"epochs": 6}, callbacks=[GradualMagnitude(0.3)])
    nz, n = _layer_density(res.model)
    assert [row["weight_density"] for row in res.history[2:]] == [nz / n] * 5
    assert nz == round(0.3 * n)
    with pytest.raises(Exception, match=r"pruned towards 0\.3"):
        train(resume=tmp_path / "r", config={"epochs": 7}, callbacks=[GradualMagnitude(0.5)])
    one = GradualMagnitude(0.5)
    one.total = 1
    assert one._due(1) and gradual_keep(1, 1, 0.5, 0.1, 0.6) == 0.5
    many = GradualMagnitude(0.5, start=0.0, end=1.0, updates=50)
    many.total = 150
    assert sum(many._due(t) for t in range(1, 151)) <= 50


def test_compare_refuses_a_finished_gradual_run_of_another_density_and_fsdp(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sparseopt.cli import main

    out = tmp_path / "s"
    args = [
        *("compare", "--optimizers", "rvsm", "--epochs", "2", "--prune-baseline"),
        *("--prune-schedule", "gradual", "--dense", "sgd", "--out", str(out)),
        *("--limit-batches", "3", "--no-plots", "--quiet", "--threads", "1"),
    ]
    assert main(args) == 0
    import shutil

    shutil.rmtree(out / "rvsm")  # the method again, at another density
    assert main([*args, "--lam", "0.002"]) == 2
    assert "was pruned gradually to" in capsys.readouterr().err
    sharded = [a if a != str(out) else str(tmp_path / "f") for a in args]
    assert main([*sharded, "--fsdp"]) == 2
    assert "does not prune a sharded" in capsys.readouterr().err


def test_a_baseline_run_that_diverges_or_cannot_resume_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The one row-maker both schedules share (``compare._baseline_row``): a run whose
    loss diverges gives a ``diverged`` row (no accuracy) and a line naming its directory;
    a resumed run whose callback refuses its checkpoint is a ``ConfigError`` naming it
    (the trainer's, before anything trains); any other ``ValueError`` propagates as
    itself; the callback is made only when the run trains."""
    import argparse

    from sparseopt.cli import compare
    from sparseopt.cli._common import UsageError
    from sparseopt.engine.errors import ConfigError

    # an lr that takes SGD's loss to inf within the first batches
    config = tiny(tmp_path / "pruning-gradual-sgd-linbreg", optimizer="sgd", lr=1e12)
    args = argparse.Namespace(overwrite=False)
    made: list[int] = []

    def callback() -> GradualMagnitude:
        made.append(1)
        return GradualMagnitude(0.3)

    row = compare._baseline_row("pruning @ linbreg", config, callback, args, {})
    assert row["status"] == "diverged" and row.get("test_acc") is None and made == [1]
    assert f"the run in {config.out} diverged" in capsys.readouterr().out

    # interrupted, then resumed towards another density: the trainer refuses, naming
    # the run (ConfigError: exit 2), before anything trains
    cut = tiny(tmp_path / "pruning-gradual-sgd-rvsm", optimizer="sgd", epochs=2)
    with pytest.raises(TrainingInterrupted):
        train(cut, callbacks=[GradualMagnitude(0.3), StopAfter(2)])
    before = (Path(cut.out) / "checkpoint.pt").stat().st_mtime_ns
    with pytest.raises(ConfigError, match=f"cannot resume {cut.out}: Invalid density"):
        compare._baseline_row("pruning @ rvsm", cut, lambda: GradualMagnitude(0.5), args, {})
    assert (Path(cut.out) / "checkpoint.pt").stat().st_mtime_ns == before

    # a ValueError of a run's own (not its checkpoint's) is not a usage error
    def broken(*_a: object, **_k: object) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(compare, "_train_or_reuse", broken)
    monkeypatch.setattr(compare, "_run_state", lambda _c: ("resume", None))
    with pytest.raises(ValueError, match="a bug") as err:
        compare._baseline_row("pruning @ linbreg", config, callback, args, {})
    assert not isinstance(err.value, (ConfigError, UsageError))
    # a finished run is reused: no callback, its check may refuse it
    monkeypatch.setattr(compare, "_run_state", lambda _c: ("done", {"metrics": {}}))
    monkeypatch.setattr(compare, "_summary_row", lambda n, d, s: {"optimizer": n, "status": "ok"})
    monkeypatch.setattr(compare, "judge_pruned", lambda *_a: None)
    made.clear()
    checked: list[dict] = []
    row = compare._baseline_row("pruning @ x", config, callback, args, {}, checked.append)
    assert row == {"optimizer": "pruning @ x", "status": "ok"} and checked == [row] and not made
