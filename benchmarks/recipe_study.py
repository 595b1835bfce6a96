"""The study behind the default recipes: a grid per optimizer and penalty, scored on
validation accuracy over several tasks (never on a test split).

Every candidate recipe (learning rate, λ, momentum, schedule, sparse start) runs on
the study's tasks (:data:`STUDY_TASKS`, four of :data:`robustness_tasks.TASKS`; some
stages others, :data:`STAGE_TASKS`) with the study's budget;
results are appended to a JSON-lines file, one line per (stage, task, candidate), so
an interrupted study continues where it stopped and several workers can share a grid
(``--worker i/n``). ``--report`` scores the candidates:

- *gap*: validation accuracy minus the best dense baseline's (SGD and Adam, each with
  its own lr grid) on the same task, averaged over the tasks;
- a candidate is *admissible* when it ran on every task, no run stalled or collapsed
  (validation accuracy above the stall detector's chance level) and its weight density
  averaged over the tasks is at most 15 %;
- the recipe is the admissible candidate with the best mean gap; ties within 0.1
  points go to the sparser one.

Usage::

    python benchmarks/recipe_study.py --stage l1 --worker 0/2 &   # run (two workers)
    python benchmarks/recipe_study.py --stage l1 --worker 1/2 &
    python benchmarks/recipe_study.py --report                   # Markdown tables

A stage whose candidates must not reuse an earlier measurement (the code changed under
them) runs with its own ``--results`` file; ``--dense-from FILE`` lets its report take the
dense references from the study's main file.

The grids of every round live in :mod:`recipe_rounds` (a new round adds its candidates
and stages there); they and the chosen recipes are written down in docs/recipes.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recipe_rounds import (
    BEFORE_42,
    SCALE_CHECK,
    SCALE_TASKS,
    STAGE_TASKS,
    STAGES,
    penalty_of_the_time,
    words_check,
)
from robustness_tasks import NUM_CLASSES, TASKS, base_config, controller_preset, run_one

from sparseopt.health import chance_accuracy
from sparseopt.optim.registry import get_optimizer_info

#: Tasks the recipes are chosen on; the curves and teacher tasks of the robustness
#: benchmark are held out (the defaults are checked there without having seen them).
STUDY_TASKS = ("digits-mlp", "fmnist-mlp", "fmnist-lenet5", "words-cnn")
DEFAULT_OUT = Path("runs/recipe_study/results.jsonl")
DENSITY_CAP = 0.15


def _chance(task: str) -> float:
    """The stall detector's chance level of ``task``'s validation accuracy."""
    return chance_accuracy(NUM_CLASSES[TASKS[task].dataset])


def _before_42(recs: dict[str, dict[str, Any]], task: str, cand: dict[str, Any]) -> Any:
    """The run of ``cand`` — a :data:`BEFORE_42` recipe, with a seed or budget — that a
    stage of rounds 40-42 filed as the registry's recipe (``{"optimizer": name}`` and the
    rest), when its resolved settings are those of ``cand``; else ``None``."""
    pinned = BEFORE_42.get(cand["optimizer"])
    if pinned is None or any(cand.get(k) != v for k, v in pinned.items()):
        return None
    alias = {k: v for k, v in cand.items() if k == "optimizer" or k not in pinned}
    rec = recs.get(_key(task, alias))
    if rec is None or not str(rec.get("stage", "")).startswith(("round40", "round41", "round42")):
        return None
    resolved = rec.get("resolved") or {}
    same = all((resolved.get(k) or 0) == (v or 0) for k, v in pinned.items() if k != "optimizer")
    return rec if same else None


#: Settings a candidate pins to the value the registry's recipe had when its runs were
#: filed under the registry's name (round 62: LinBreg's ``he`` before it became ``he_all``).
PINNED = ("target_allocation",)


def _as_ran(recs: dict[str, dict[str, Any]], task: str, cand: dict[str, Any]) -> Any:
    """The run of ``cand`` filed without its :data:`PINNED` settings (as the registry's
    recipe of the time) whose resolved settings were ``cand``'s; else ``None``."""
    pinned = {k: cand[k] for k in PINNED if k in cand}
    if not pinned:
        return None
    rec = recs.get(_key(task, {k: v for k, v in cand.items() if k not in pinned}))
    resolved = (rec or {}).get("resolved") or {}
    return rec if all(resolved.get(k) == v for k, v in pinned.items()) else None


def _find(recs: dict[str, dict[str, Any]], task: str, cand: dict[str, Any]) -> Any:
    """The run of ``cand`` on ``task`` in ``recs``: under its own key, or a recipe of its
    time filed under the registry's name (:func:`_before_42`, :func:`_as_ran`); else
    ``None``."""
    return recs.get(_key(task, cand)) or _before_42(recs, task, cand) or _as_ran(recs, task, cand)


def _key(task: str, cand: dict[str, Any]) -> str:
    """A result's identity: the task and the candidate (a candidate listed again in a
    later stage reuses what an earlier stage measured)."""
    return json.dumps([task, cand], sort_keys=True)


def _done(path: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                out[_key(rec["task"], rec["cand"])] = rec
    return out


@contextlib.contextmanager
def _preset(fields: dict[str, Any], overrides: dict[str, Any] | None) -> Iterator[None]:
    """A candidate's ``controller`` settings: the run's optimizer's controller preset with
    ``overrides`` while the block runs (:func:`controller_preset`).

    Raises:
        ValueError: ``overrides`` for a run that steers no density (it would build no
            controller, and its result would be filed under settings it never had).
    """
    from sparseopt.config import TrainConfig

    if not overrides:
        yield
        return
    resolved = TrainConfig.from_dict({**fields, "out": "-"}).resolve()
    if not resolved.target_density:
        raise ValueError(
            f"Invalid controller value: {overrides!r}; the run steers no density "
            "(no target_density), so no controller would take it"
        )
    with controller_preset(resolved.optimizer, overrides):
        yield


def run(stage: str, worker: tuple[int, int], path: Path) -> None:
    """Run this worker's share of ``stage`` (skipping what ``path`` already holds)."""
    # (candidate + task) mod n: each worker gets every task, the heavy one included
    mine = [
        (t, c)
        for ci, c in enumerate(STAGES[stage])
        for ti, t in enumerate(STAGE_TASKS.get(stage, STUDY_TASKS))
        if (ci + ti) % worker[1] == worker[0]
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    for i, (task_name, cand) in enumerate(mine):
        done = _done(path)
        if _find(done, task_name, cand) is not None:
            continue  # measured (a recipe of its time under the name it ran as)
        task = TASKS[task_name]
        fields = {**base_config(task, study=True), **cand, **penalty_of_the_time(stage, cand)}
        controller = fields.pop("controller", None)
        tmp = tempfile.mkdtemp(prefix="study-")
        t0 = time.perf_counter()
        try:
            with _preset(fields, controller):
                res = run_one(fields, str(Path(tmp) / "run"))
        except Exception as err:  # a failed candidate is a result too
            res = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rec = {"stage": stage, "task": task_name, "cand": cand, **res}
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        with path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        va = res.get("val_acc")
        print(
            f"[{i + 1}/{len(mine)}] {task_name} {cand} val {va} "
            f"wd {res.get('weight_density')} {rec['seconds']}s",
            flush=True,
        )


def is_recipe(cand: dict[str, Any]) -> bool:
    """Whether ``cand`` is the registry's recipe (on the keys it sets)."""
    from sparseopt.config import TrainConfig

    if cand.get("controller"):
        return False  # a controller setting the preset does not have
    fields = {k: v for k, v in cand.items() if k not in ("optimizer", "controller")}
    resolved = TrainConfig(optimizer=cand["optimizer"], penalty=cand.get("penalty")).resolve()
    return all(getattr(resolved, k) == v for k, v in fields.items())


def _penalty(cand: dict[str, Any], *recs: dict[str, Any]) -> str:
    """The penalty a candidate ran with: its own, else the one its runs resolved (the
    recipe's when they ran: RDA's is ℓ0 since round 11), else ``l1``; ``–`` for dense."""
    if cand["optimizer"] in ("sgd", "adam"):
        return "–"
    resolved = next((r["resolved"]["penalty"] for r in recs if "resolved" in r), None)
    return cand.get("penalty") or resolved or "l1"


def _wd(rec: dict[str, Any]) -> float:
    """A run's weight density (1 where it was not recorded; 0 stays 0)."""
    wd = rec.get("weight_density")
    return 1.0 if wd is None else wd


def _label(cand: dict[str, Any], *, penalty: bool = False) -> str:
    """A candidate's settings beside its optimizer's recipe, ``key=value`` each; its
    penalty too with ``penalty`` (the report heads each table with it, the scale check
    may compare two penalties: round 76)."""
    skip = {"optimizer"} if penalty else {"optimizer", "penalty"}
    return " ".join(f"{k}={v}" for k, v in sorted(cand.items()) if k not in skip) or (
        "registry defaults"
    )


def report(path: Path, dense_from: Path | None = None) -> str:
    """Markdown: dense references per task, then every candidate's scores per stage.

    ``dense_from``: another results file whose dense (SGD/Adam) runs join the references.
    """
    recs = list(_done(path).values())
    # runs at another budget than the study's (``epochs`` set) are listed apart
    other = [r for r in recs if "epochs" in r["cand"]]
    recs = [r for r in recs if "epochs" not in r["cand"]]
    extra = list(_done(dense_from).values()) if dense_from is not None else []
    extra = [r for r in extra if "epochs" not in r["cand"]]
    dense_best: dict[str, float] = {}
    for r in recs + extra:
        if r["cand"]["optimizer"] in ("sgd", "adam") and r.get("val_acc") is not None:
            dense_best[r["task"]] = max(dense_best.get(r["task"], 0.0), r["val_acc"])
    lines = ["## Best dense validation accuracy per task", "", "| task | val acc |", "|---|---:|"]
    lines += [f"| {t} | {100 * a:.2f} |" for t, a in sorted(dense_best.items())]
    by: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in recs:
        by[json.dumps(r["cand"], sort_keys=True)][r["task"]] = r
    per_opt: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
    for cand_s, tasks in by.items():
        cand = json.loads(cand_s)
        gaps, ok, dens = [], True, []
        for t in STUDY_TASKS:
            r = tasks.get(t)
            if r is None or r.get("val_acc") is None:
                ok = False
                continue
            if r["val_acc"] <= _chance(t) or r.get("status", "ok") != "ok":
                ok = False
            if t in dense_best:
                gaps.append(100 * (r["val_acc"] - dense_best[t]))
            wd = r.get("weight_density")
            dens.append(1.0 if wd is None else wd)  # a collapsed run's 0 % is 0 %
        mean_gap = sum(gaps) / len(gaps) if gaps else -math.inf
        sparse = cand["optimizer"] not in ("sgd", "adam")
        if sparse and dens and sum(dens) / len(dens) > DENSITY_CAP:
            ok = False
        cells = [
            f"{100 * tasks[t]['val_acc']:.1f} / {100 * _wd(tasks[t]):.1f}"
            if t in tasks and tasks[t].get("val_acc") is not None
            else "–"
            for t in STUDY_TASKS
        ]
        key = (cand["optimizer"], _penalty(cand, *tasks.values()))
        per_opt[key].append((mean_gap, ok, max(dens or [1]), cand, cells))
    for (opt, penalty), rows in sorted(per_opt.items()):
        rows.sort(key=lambda x: (not x[1], -x[0]))
        lines += [
            "",
            f"## {opt}, {penalty}" if opt not in ("sgd", "adam") else f"## {opt} (dense)",
            "",
            "| candidate | " + " | ".join(STUDY_TASKS) + " | mean gap | ok |",
            "|---|" + "---:|" * (len(STUDY_TASKS) + 2),
        ]
        for gap, ok, _, cand, cells in rows:
            star = " **(recipe)**" if is_recipe(cand) else ""
            lines.append(
                f"| {_label(cand)}{star} | "
                + " | ".join(cells)
                + f" | {gap:+.2f} | {'yes' if ok else 'no'} |"
            )
    if other:
        lines += [
            "",
            "## Other budgets",
            "",
            "| task | optimizer | penalty | candidate | val acc | weight density | status |",
            "|---|---|---|---|---:|---:|---|",
        ]

        for r in sorted(other, key=lambda r: (r["task"], json.dumps(r["cand"], sort_keys=True))):
            va, wd = r.get("val_acc"), r.get("weight_density")
            c = r["cand"]
            lines.append(
                f"| {r['task']} | {c['optimizer']} | {_penalty(c, r)} | {_label(c)} | "
                f"{'–' if va is None else f'{100 * va:.2f}'} | "
                f"{'–' if wd is None else f'{100 * wd:.2f}'} | {r.get('status', r.get('error'))} |"
            )
    lines.append("")
    lines.append(
        "Cells: validation accuracy % / weight density % (final epoch). Mean gap: validation "
        "accuracy minus the best dense run's, in points, averaged over the tasks. ok: no run "
        f"at chance or failed, mean weight density ≤ {100 * DENSITY_CAP:.0f} %."
    )
    return "\n".join(lines)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def scale_check(paths: list[Path], optimizer: str) -> str:
    """Markdown: round 42's candidates of ``optimizer`` (:data:`SCALE_CHECK`, the recipe of
    the time first) under the scale check, from the results files ``paths`` (later files
    win). A mean difference needs all six cells of the candidate and of the recipe.

    Per candidate: its validation accuracy and weight density on the three small study
    tasks and the two full-data tasks (seed 0), the words check's three-seed mean at 15
    epochs, the mean weight density over six cells (the words CNN at the study budget),
    the mean difference to the recipe over the six cells (the words check's difference in
    the words cell), whether it is admissible, and the mean difference over the five
    non-words tasks with seed 1 where those runs exist (``--stage round42c``).
    """
    recs: dict[str, dict[str, Any]] = {}
    for path in paths:
        recs.update(_done(path))

    def get(task: str, cand: dict[str, Any]) -> dict[str, Any] | None:
        return _find(recs, task, cand)

    small = [t for t in STUDY_TASKS if t != "words-cnn"]
    cells = [*small, *SCALE_TASKS]

    def score(cand: dict[str, Any], seed: int) -> tuple[dict[str, float], list[float], bool]:
        """Validation accuracy (points) per cell, the densities, and whether none failed."""
        c = cand if seed == 0 else {**cand, "seed": seed}
        acc: dict[str, float] = {}
        dens: list[float] = []
        ok = True
        for t in (*cells, "words-cnn"):
            r = get(t, c)
            if r is None or r.get("val_acc") is None:
                continue  # missing: the candidate is incomplete (below)
            if r["val_acc"] <= _chance(t) or r.get("status", "ok") != "ok":
                ok = False
            dens.append(_wd(r))
            if t != "words-cnn":
                acc[t] = 100 * r["val_acc"]
        if seed == 0:
            words = [get("words-cnn", w) for w in words_check(cand)]
            if all(w is not None and w.get("val_acc") is not None for w in words):
                for w in words:
                    if w["val_acc"] <= _chance("words-cnn") or w.get("status", "ok") != "ok":
                        ok = False
                acc["words"] = _mean([100 * w["val_acc"] for w in words])
        return acc, dens, ok

    recipe, *cands = SCALE_CHECK[optimizer]
    base, _, _ = score(recipe, 0)
    base1, _, _ = score(recipe, 1)
    head = [*small, "words check (15 ep., seeds 0-2)", *SCALE_TASKS]
    lines = [
        f"## {optimizer}: the scale check",
        "",
        "| candidate | " + " | ".join(head) + " | mean density | mean difference | ok "
        "| seed 1: mean difference (5 tasks) | densest cell (%; seed 0 / seed 1) |",
        "|---|" + "---:|" * (len(head) + 2) + "---|---:|---:|",
    ]
    for cand in (recipe, *cands):
        acc, dens, ok = score(cand, 0)
        row = []
        for t in (*small, "words", *SCALE_TASKS):
            r = get(t, cand) if t != "words" else None
            if t == "words":
                row.append(f"{acc['words']:.2f}" if "words" in acc else "–")
            else:
                row.append(f"{acc[t]:.2f} / {100 * _wd(r):.1f}" if r and t in acc else "–")
        complete = len(acc) == len(cells) + 1 and len(dens) == len(cells) + 1
        density = _mean(dens) if complete else math.nan
        # the density cap is the sparse methods' (a dense baseline's round: 70)
        ok = (
            ok
            and complete
            and (density <= DENSITY_CAP or not get_optimizer_info(cand["optimizer"]).sparse)
        )
        # over the six cells or not at all: the recipe's runs must be complete too
        diff = _mean([acc[k] - base[k] for k in acc]) if set(base) == set(acc) else math.nan
        acc1, dens1, ok1 = score(cand, 1)
        diff1 = [acc1[t] - base1[t] for t in cells if t in acc1 and t in base1]
        seed1 = f"{_mean(diff1):+.2f}" if len(diff1) == len(cells) else "–"
        if seed1 != "–" and not ok1:
            seed1 += " (failed)"
        label = _label(cand, penalty=True) + (" **(the recipe then)**" if cand is recipe else "")
        # the densest run of each seed (a round's bound on any one cell: rounds 72-76)
        densest = " / ".join(f"{100 * max(d):.1f}" if d else "–" for d in (dens, dens1))
        lines.append(
            f"| {label} | "
            + " | ".join(row)
            + (f" | {100 * density:.1f} %" if complete else " | –")
            + (f" | {diff:+.2f}" if complete and not math.isnan(diff) else " | –")
            + f" | {'yes' if ok else 'no'} | {seed1} | {densest} |"
        )
    lines += [
        "",
        "Cells: validation accuracy % / weight density % (seed 0). Mean density: over the "
        "six cells (the words CNN at the study budget); mean difference: to the recipe, in "
        "points, over the six (the words check's three-seed means in the words cell); ok: "
        f"no run at chance or failed, mean density ≤ {100 * DENSITY_CAP:.0f} % (sparse "
        "methods). Densest cell: the largest weight density of any one run of the "
        "candidate in the six cells (the words CNN at the study budget), seed 0, and in "
        "the fresh seed's five.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=sorted(STAGES))
    p.add_argument(
        "--worker", default="0/1", help="i/n: run every n-th job from the i-th (0 <= i < n)"
    )
    p.add_argument("--results", type=Path, default=DEFAULT_OUT)
    p.add_argument("--report", action="store_true")
    p.add_argument(
        "--dense-from",
        type=Path,
        metavar="FILE",
        help="--report: also take the dense references from this results file",
    )
    p.add_argument(
        "--scale-check",
        choices=sorted(SCALE_CHECK),
        metavar="OPTIMIZER",
        help="round 42's candidates of OPTIMIZER under the scale check, from the --from files",
    )
    p.add_argument(
        "--from",
        dest="sources",
        type=Path,
        nargs="+",
        default=[],
        metavar="FILE",
        help="--scale-check: results files (later ones win)",
    )
    args = p.parse_args(argv)
    if bool(args.scale_check) != bool(args.sources):
        p.error("--scale-check OPTIMIZER and --from FILE... go together")
    if args.scale_check:
        print(scale_check(args.sources, args.scale_check))
        return 0
    if args.report:
        print(report(args.results, args.dense_from))
        return 0
    if args.stage is None:
        p.error("--stage or --report is required")
    try:
        i, n = (int(x) for x in args.worker.split("/"))
    except ValueError:
        p.error(f"Invalid worker value: {args.worker!r}; expected i/n with integers")
    if not 0 <= i < n:  # i counts from 0: "2/2" would run nothing
        p.error(f"Invalid worker value: {args.worker!r}; expected i/n with 0 <= i < n")
    run(args.stage, (i, n), args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
