"""benchmarks/recipe_study.py: its command line, the scale check, the controller candidates."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


def _study(load_benchmark: Callable) -> tuple[ModuleType, ModuleType]:
    """``benchmarks/recipe_study.py`` and the rounds module it imported (its candidates)."""
    bench = load_benchmark("recipe_study")
    return bench, sys.modules["recipe_rounds"]


@pytest.mark.parametrize("worker", ["2/2", "-1/2", "0/0", "x/2", "1"])
def test_a_worker_outside_0_to_n_is_refused_naming_the_value(
    load_benchmark: Callable, tmp_path: Path, capsys: pytest.CaptureFixture[str], worker: str
) -> None:
    bench = load_benchmark("recipe_study")
    results = tmp_path / "r.jsonl"
    with pytest.raises(SystemExit) as exc:
        bench.main(["--stage", "round38", f"--worker={worker}", "--results", str(results)])  # type: ignore[attr-defined]
    assert exc.value.code == 2
    assert f"Invalid worker value: {worker!r}" in capsys.readouterr().err
    assert not results.exists()  # nothing ran


def test_the_scale_check_scores_six_cells_against_the_recipe(
    load_benchmark: Callable, tmp_path: Path
) -> None:
    """Mean difference over six cells (the words check's three-seed mean in the words
    cell), the density cap over the six, a run at chance inadmissible, seed 1 apart."""
    import json

    bench, rounds = _study(load_benchmark)
    recipe, good, bad = rounds.ROUND42["proxsgd"]  # type: ignore[attr-defined]
    small = ("digits-mlp", "fmnist-mlp", "fmnist-lenet5")
    lines = []

    def add(task: str, cand: dict, acc: float, wd: float = 0.1) -> None:
        lines.append({"task": task, "cand": cand, "val_acc": acc, "weight_density": wd})

    for task in (*small, "words-cnn", *rounds.SCALE_TASKS):  # type: ignore[attr-defined]
        add(task, recipe, 0.80)
        add(task, good, 0.81 if task != "words-cnn" else 0.70, wd=0.12)
        add(task, bad, 0.85 if task != "fmnist-mlp" else 0.05)  # one run at chance
    for w in rounds.words_check(recipe):  # type: ignore[attr-defined]
        add("words-cnn", w, 0.90)
    for w, acc in zip(rounds.words_check(good), (0.88, 0.86, 0.88), strict=True):  # type: ignore[attr-defined]
        add("words-cnn", w, acc, wd=0.12)
    for w in rounds.words_check(bad):  # type: ignore[attr-defined]
        add("words-cnn", w, 0.90)
    for task in (*small, *rounds.SCALE_TASKS):  # type: ignore[attr-defined]
        add(task, {**recipe, "seed": 1}, 0.80)
        add(task, {**good, "seed": 1}, 0.79, wd=0.3)
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))

    rows = {
        line.split(" | ")[0]: line.split(" | ")
        for line in bench.scale_check([path], "proxsgd").splitlines()  # type: ignore[attr-defined]
        if line.startswith("| ") and "---" not in line
    }
    good_row = next(v for k, v in rows.items() if "refit_lr=0.01" in k)
    # five cells +1, the words check 87.33 - 90 = -2.67: (5 - 2.67) / 6
    assert good_row[-5:] == ["12.0 %", "+0.39", "yes", "-1.00", "12.0 / 30.0 |"]
    bad_row = next(v for k, v in rows.items() if "refit_lr=0.005" in k)
    # the MLP at chance: not admissible, however good the other cells
    assert bad_row[-5:] == ["10.0 %", "-9.17", "no", "–", "10.0 / – |"]  # (4 · 5 - 75 + 0) / 6
    recipe_row = next(v for k, v in rows.items() if "(the recipe then)" in k)
    assert recipe_row[-5:] == ["10.0 %", "+0.00", "yes", "+0.00", "10.0 / 10.0 |"]

    # without one of the recipe's six cells no candidate gets a mean difference
    lines[:] = [r for r in lines if not (r["cand"] == recipe and r["task"] == "fmnist-mlp-full")]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    text = bench.scale_check([path], "proxsgd")  # type: ignore[attr-defined]
    good_row = next(ln.split(" | ") for ln in text.splitlines() if "refit_lr=0.01 " in ln)
    assert good_row[-5:] == ["12.0 %", "–", "yes", "-1.00", "12.0 / 30.0 |"]  # seed 1's all there


def test_the_scale_check_names_a_candidates_penalty(load_benchmark: Callable) -> None:
    """Round 76 compared LinBreg's recipe (ℓ1) with ℓ0: the scale check's rows name the
    penalty; the report's, headed by it, do not."""
    bench, rounds = _study(load_benchmark)
    recipe, l0 = rounds.ROUND76  # type: ignore[attr-defined]
    assert bench._label(l0, penalty=True) == "penalty=l0"  # type: ignore[attr-defined]
    assert bench._label(l0) == bench._label(recipe) == "registry defaults"  # type: ignore[attr-defined]


def test_the_scale_check_reads_the_recipe_filed_under_its_name_when_it_resolved_the_same(
    load_benchmark: Callable, tmp_path: Path
) -> None:
    """Rounds 40-42 filed the then-recipe as ``{"optimizer": name}``; the pinned
    :data:`BEFORE_42` recipe reads those runs when their resolved settings are its own,
    and not a run of today's recipe filed the same way."""
    bench, rounds = _study(load_benchmark)
    pinned = rounds.BEFORE_42["proxsgd"]  # type: ignore[attr-defined]
    then = {"refit": 0.0, "target_density_ramp": 0.8, "lam": 0.005}
    now = {"refit": 0.15, "target_density_ramp": 0.94, "lam": 0.005}
    recs = {}
    for stage, resolved, task in (("round40f", then, "fmnist-mlp-full"), ("round43", then, "x")):
        rec = {"stage": stage, "task": task, "cand": {"optimizer": "proxsgd"}}
        recs[bench._key(task, rec["cand"])] = {**rec, "resolved": resolved}  # type: ignore[attr-defined]
    assert bench._before_42(recs, "fmnist-mlp-full", pinned)["stage"] == "round40f"  # type: ignore[attr-defined]
    assert bench._before_42(recs, "x", pinned) is None  # a later stage: today's recipe  # type: ignore[attr-defined]
    recs[bench._key("fmnist-mlp-full", {"optimizer": "proxsgd"})]["resolved"] = now  # type: ignore[attr-defined]
    assert bench._before_42(recs, "fmnist-mlp-full", pinned) is None  # type: ignore[attr-defined]
    seeded = {**pinned, "seed": 1}
    recs[bench._key("y", {"optimizer": "proxsgd", "seed": 1})] = {  # type: ignore[attr-defined]
        "stage": "round42c",
        "resolved": then,
    }
    assert bench._before_42(recs, "y", seeded) is not None  # type: ignore[attr-defined]


def test_a_pinned_candidate_reads_the_run_filed_under_the_recipes_name(
    load_benchmark: Callable,
) -> None:
    """Round 62 filed LinBreg's recipe of the time as ``{"optimizer": "linbreg"}`` (it
    resolved to ``he``); the pinned candidate (``target_allocation`` ``he``) reads that
    run, and not one that resolved to today's ``he_all``."""
    bench, rounds = _study(load_benchmark)
    pinned = rounds.ROUND62[0]  # type: ignore[attr-defined]
    assert pinned == {"optimizer": "linbreg", "target_allocation": "he"}
    filed = {"optimizer": "linbreg", "seed": 1}
    rec = {"stage": "round62c", "cand": filed, "resolved": {"target_allocation": "he"}}
    recs = {bench._key("x", filed): rec}  # type: ignore[attr-defined]
    assert bench._as_ran(recs, "x", {**pinned, "seed": 1}) is rec  # type: ignore[attr-defined]
    assert bench._as_ran(recs, "x", pinned) is None  # type: ignore[attr-defined]  # no seed 0 run
    assert bench._as_ran(recs, "x", filed) is None  # type: ignore[attr-defined]  # nothing pinned
    rec["resolved"] = {"target_allocation": "he_all"}
    assert bench._as_ran(recs, "x", {**pinned, "seed": 1}) is None  # type: ignore[attr-defined]


def test_a_controller_candidate_overrides_the_preset_only_while_it_runs(
    load_benchmark: Callable, tmp_path: Path
) -> None:
    """``controller`` (round 46): the optimizer's preset with the overrides inside the
    block, restored after it, also after an error; refused for a run that steers no
    density; the report reads such a candidate (it is never the registry's recipe)."""
    import json

    from sparseopt import control

    bench, rounds = _study(load_benchmark)
    before = dict(control.PRESETS["proxsgd"])
    fields = {"optimizer": "proxsgd", "dataset": "digits", "model": "mlp"}
    with bench._preset(fields, {"lr_coupled": True}):  # type: ignore[attr-defined]
        assert control.PRESETS["proxsgd"] == {**before, "lr_coupled": True}
        assert control.TargetDensity.for_optimizer("proxsgd", 0.1).lr_coupled
    assert control.PRESETS["proxsgd"] == before
    with pytest.raises(RuntimeError), bench._preset(fields, {"lr_coupled": True}):  # type: ignore[attr-defined]
        raise RuntimeError
    assert control.PRESETS["proxsgd"] == before
    with (
        pytest.raises(ValueError, match="Invalid controller value"),
        bench._preset({**fields, "lam": 1e-3}, {"lr_coupled": True}),  # type: ignore[attr-defined]
    ):
        pass  # a λ of its own: no target, no controller
    cand = rounds.ROUND46[1]  # type: ignore[attr-defined]
    assert not bench.is_recipe(cand)  # type: ignore[attr-defined]
    path = tmp_path / "r.jsonl"
    rec = {"stage": "round46", "task": "digits-mlp", "cand": cand, "val_acc": 0.9}
    path.write_text(json.dumps({**rec, "weight_density": 0.12}) + "\n")
    assert "lr_coupled" in bench.report(path)  # type: ignore[attr-defined]


def test_proxsgd_candidates_before_round_99_keep_the_l1_they_ran(load_benchmark: Callable) -> None:
    """Round 99 made ℓ0 ProxSGD's default: a ProxSGD candidate without a penalty of an
    earlier stage ran ℓ1 and runs it again (its key unchanged); round 99's and later
    take today's default; a penalty given, or another optimizer, is left alone."""
    rounds = load_benchmark("recipe_rounds")
    from sparseopt.config import TrainConfig

    old = {"optimizer": "proxsgd", "refit": 0.3}
    for stage in ("l1", "dense", "round6w", "round42c2", "probe84", "round88", "round94f"):
        assert rounds.penalty_of_the_time(stage, old) == {"penalty": "l1"}, stage
    assert rounds.penalty_of_the_time("round99c", old) == {}
    assert rounds.penalty_of_the_time("round88", {**old, "penalty": "tl1"}) == {}
    assert rounds.penalty_of_the_time("round88", {"optimizer": "rvsm"}) == {}
    fields = {**old, **rounds.penalty_of_the_time("round88", old)}
    assert TrainConfig(**fields).resolve().penalty == "l1"
    assert TrainConfig(**old).resolve().penalty == "l0"
    # every stage listed resolves without error under this rule
    for stage, cands in rounds.STAGES.items():
        for cand in cands:
            rounds.penalty_of_the_time(stage, cand)
