"""``sparseopt compare``: several optimizers on the same task and seed.

Each optimizer trains in ``OUT/<name>`` with the same settings (less the keywords it
does not take, with a note); the runs' final numbers make ``comparison.md``/``.json``
and ``pareto.png``. A finished run is reused and an interrupted one resumed when the
same command runs again (or ``compare --resume OUT``, from ``compare-settings.json``).
``--prune-baseline`` adds magnitude pruning of the dense runs (SGD's and Adam's) at each
sparse method's weight density, the better on the validation split of those the failure
detection finds ok its baseline (:func:`_pruning_baselines`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sparseopt.cli._common import EXIT_OK, UsageError, note, one_line, read_summary
from sparseopt.cli.flags import add_train_flags, config_from, flag_specs
from sparseopt.cli.flags import settings as given_settings
from sparseopt.config import (
    GROW_REFUSED,
    HYPERPARAMETER_FIELDS,
    PENALTY_FIELDS,
    RESUME_OVERRIDABLE,
    SPARSE_ONLY_FIELDS,
    TrainConfig,
    load_run_config,
)

__all__ = [
    "COMPARE_RECORD",
    "add_compare_arguments",
    "comparison_table",
    "gets_pruning_baseline",
    "run_compare",
]


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", metavar="FILE", help="YAML/TOML/JSON config file (flags override it)"
    )
    parser.add_argument(
        "--optimizers",
        nargs="+",
        metavar="NAME",
        help="optimizers to compare (default: all of `sparseopt list optimizers`)",
    )
    parser.add_argument(
        "--prune-baseline",
        action="store_true",
        help="add magnitude pruning of dense runs at each sparse method's own weight "
        "density, fine-tuned with the mask fixed, in the same total epochs; the table "
        "says whether each method beats it (yes / no / tie within two standard errors)",
    )
    parser.add_argument(
        "--finetune-epochs",
        type=int,
        metavar="F",
        help="with --prune-baseline: fine-tuning epochs of the pruned networks; the dense "
        "run gets the other epochs (default: a fifth of --epochs, at least 1)",
    )
    parser.add_argument(
        "--prune-schedule",
        choices=PRUNE_SCHEDULES,
        default=None,
        help="with --prune-baseline: one-shot (default: each dense network trained for "
        "the epochs minus F is pruned once and fine-tuned F epochs) or gradual (each dense "
        "optimizer trains all the epochs while gradual magnitude pruning takes its network "
        "to the method's density, Zhu & Gupta 2017: a stronger baseline, one run per method "
        "and dense optimizer)",
    )
    parser.add_argument(
        "--dense",
        nargs="+",
        metavar="NAME",
        default=None,
        help="with --prune-baseline: the dense optimizers whose runs are pruned (default: "
        "every dense optimizer of `sparseopt list optimizers`); each method's baseline is "
        "the pruned network with the best validation accuracy (the test split never "
        "chooses) among those the failure detection finds ok (among all where none is)",
    )
    parser.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=1,
        metavar="N",
        help="train up to N of the runs side by side, each a `sparseopt train` process with "
        "the threads it would take alone (default 1: one after another; results are the "
        "same either way)",
    )
    parser.add_argument(
        "--resume",
        metavar="OUT",
        help="continue the comparison recorded in OUT (compare-settings.json): finished "
        "runs are reused, interrupted ones resumed from their checkpoints (re-running the "
        "same command with --out OUT does the same)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace comparison.md/.json and pareto.png of an earlier comparison in --out "
        "(default: an earlier one is kept and this one gets comparison-2.md...), and allow "
        "an --out that is not a compare directory",
    )
    add_train_flags(parser, skip=("optimizer", "name"))


#: The pruning baseline's schedules (``--prune-schedule``): pruned once after dense
#: training and fine-tuned (the default, issue 11's baseline), or pruned while it trains.
PRUNE_SCHEDULES = ("one-shot", "gradual")


def _per_optimizer(base: dict[str, Any], name: str) -> tuple[dict[str, Any], list[str]]:
    """``base`` settings for optimizer ``name``, without keywords it does not take."""
    from sparseopt.optim.registry import get_optimizer_info

    info = get_optimizer_info(name)
    accepted = info.accepted_keywords()
    settings = dict(base, optimizer=info.name)
    dropped = []
    for key in HYPERPARAMETER_FIELDS:
        if key in settings and settings[key] is not None and key not in accepted:
            dropped.append(key)
            del settings[key]
    options = dict(settings.get("optimizer_options") or {})
    for key in list(options):
        if key not in accepted:
            dropped.append(key)
            del options[key]
    if "optimizer_options" in settings:
        settings["optimizer_options"] = options
    if info.name in GROW_REFUSED and settings.get("grow_every") is not None:
        dropped.append("grow_every")
        del settings["grow_every"]
    if not info.sparse:
        for key in (*PENALTY_FIELDS, *SPARSE_ONLY_FIELDS):
            if key in settings and settings[key] is not None:
                dropped.append(key)
                del settings[key]
    return settings, dropped


def _fmt_row(
    row: dict[str, Any], task: str, pruning: bool = False, dense: float | None = None
) -> list[str]:
    status = row.get("status", "failed")
    extra = [row.get("beats_pruning", "–")] if pruning else []
    if dense is not None:  # points of test accuracy to the tuned dense baseline
        acc = row.get("test_acc")
        extra.append("–" if acc is None else f"{100 * (acc - dense):+.2f}")
    name = row["optimizer"]
    if row.get("pruned_from"):  # a pruning baseline: which dense network it pruned
        how = ", gradual" if row.get("pruning_schedule") == "gradual" else ""
        name += f" ({row['pruned_from']}{how})"
    if row.get("density") is None:
        return [name, status, "", "", "", "", "", *extra, f"{row.get('wall_time', 0):.1f}"]
    if task == "classification":
        perf = [
            f"{100 * row['test_acc']:.2f}",
            "-" if row.get("val_acc") is None else f"{100 * row['val_acc']:.2f}",
        ]
    else:
        perf = [
            f"{row['test_loss']:.4g}",
            "-" if row.get("val_loss") is None else f"{row['val_loss']:.4g}",
        ]
    return [
        name,
        status,
        *perf,
        f"{100 * row['density']:.2f}",
        f"{100 * row['weight_density']:.2f}",
        f"{row['nonzero']:,} / {row['params']:,}",
        *extra,
        f"{row['wall_time']:.1f}",
    ]


def dense_baseline(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The tuned dense baseline among compared rows: of the dense runs (``sgd``,
    ``adam``) that reached a test accuracy, the one :func:`choose_on_validation` keeps
    (``None`` without one)."""
    from sparseopt.optim.registry import get_optimizer_info, list_optimizers

    names = {n for n in list_optimizers() if not get_optimizer_info(n).sparse}
    dense = [r for r in rows if r["optimizer"] in names and r.get("test_acc") is not None]
    return choose_on_validation(dense) if dense else None


def comparison_table(rows: Sequence[dict[str, Any]], task: str = "classification") -> str:
    """A Markdown table of compared runs (one row per optimizer, then pruning baselines).

    ``status`` is ``ok``, ``stalled`` or ``collapsed`` (:mod:`sparseopt.health`: the
    numbers of such a run are shown but it failed), ``diverged`` or ``error``. With a
    dense run among the rows of a classification, a ``vs dense (points; <name>)`` column gives
    each row's test accuracy minus the tuned dense baseline's (:func:`dense_baseline`,
    chosen on validation).
    """
    pruning = any("beats_pruning" in r for r in rows)
    chosen = dense_baseline(rows) if task == "classification" else None
    dense = None if chosen is None else float(chosen["test_acc"])
    head = ["optimizer", "status"]
    if task == "classification":
        head += ["test acc (%)", "val acc (%)"]
    else:
        head += ["test loss", "val loss"]
    head += ["density (%)", "weight density (%)", "nonzero / params"]
    head += ["beats pruning?"] if pruning else []
    if chosen is not None:  # named, with how it ended where no dense run was ok
        failed = "" if chosen.get("status", "ok") == "ok" else f", {chosen['status']}"
        head += [f"vs dense (points; {chosen['optimizer']}{failed})"]
    head += ["wall time (s)"]
    from sparseopt.logging_utils import markdown_table

    body = [_fmt_row(row, task, pruning, dense) for row in rows]
    return markdown_table(head, body, left=2)


def _row(
    name: str,
    run_dir: Any,
    m: dict[str, Any],
    *,
    status: str,
    reason: str,
    wall_time: float,
    lr: Any,
    test_size: Any,
) -> dict[str, Any]:
    """One comparison row: a run's final metrics and how it ended."""
    return {
        "optimizer": name,
        "run_dir": str(run_dir),
        "status": status,
        "reason": reason,
        "test_acc": m.get("test_acc"),
        "val_acc": m.get("val_acc"),
        "test_loss": m.get("test_loss"),
        "val_loss": m.get("val_loss"),
        "density": m["density"],
        "weight_density": m["weight_density"],
        "nonzero": m["nonzero"],
        "params": m["params"],
        "epochs": m["epoch"],
        "wall_time": wall_time,
        "lr": lr,
        "lam": m.get("lam"),
        "test_size": test_size,
    }


def _result_row(name: str, result: Any) -> dict[str, Any]:
    """One comparison row from a :class:`~sparseopt.engine.TrainResult`."""
    return _row(
        name,
        result.run_dir,
        result.metrics,
        status=result.status,
        reason=result.health.get("reason", ""),
        wall_time=result.wall_time,
        lr=result.config.lr,
        test_size=result.sizes.get("test"),
    )


#: The invocation record of a compare directory (what ``compare --resume OUT`` re-runs).
COMPARE_RECORD = "compare-settings.json"
#: Settings that may differ between a compare run and its re-run: what a resumed run may
#: change (presentation, epochs), and where the runs go.
_RERUN_FREE = RESUME_OVERRIDABLE | {"out", "name"}


def _summary_row(name: str, run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """One comparison row from a finished run's ``summary.json`` (as :func:`_result_row`)."""
    return _row(
        name,
        run_dir,
        summary["metrics"],
        status=summary.get("status", "ok"),
        reason=summary.get("reason", ""),
        wall_time=summary.get("wall_time", 0.0),
        lr=(summary.get("config") or {}).get("lr"),
        test_size=(summary.get("sizes") or {}).get("test"),
    )


#: Settings a recipe change moved whose values of before, given as flags to every
#: optimizer of a comparison, give each its run of then: they are the values every other
#: optimizer's recipe has (or that do not apply to it), so the flags change nothing there.
_UNDOABLE: dict[str, Any] = {
    "lam_scale": "none",
    "target_allocation": "global",
    "lam_warmup": 0.0,
    "refit_guard": False,
    "head_groups": "filter",
    "init_groups": "elementwise",
}


def _flag(key: str, value: Any) -> str:
    """The command-line flag that sets field ``key`` to ``value``: the field's own flag
    (:func:`~sparseopt.cli.flags.flag_specs`), ``--no-…`` for a false bool."""
    name = next(spec.flags[0] for spec in flag_specs() if spec.dest == key)
    if isinstance(value, bool):
        return name if value else name.replace("--", "--no-", 1)
    if isinstance(value, float):  # the shortest exact form: 0.0 -> 0
        return f"{name} {int(value) if value.is_integer() else repr(value)}"
    return f"{name} {value}"


def _comparable(config: TrainConfig) -> dict[str, Any]:
    try:
        data = config.resolve().to_dict()
    except ValueError as err:
        raise UsageError(str(err)) from None
    if not data.get("target_density"):  # None and 0 are both "off", and a ramp without a
        data["target_density"] = None  # target steers nothing (--target-density 0 writes
        data["target_density_ramp"] = None  # the recipe's, a recipe's target of 0 none)
        data["target_density_hold"] = None  # (nor a hold, saved False by older runs)
        data["target_density_lr_coupled"] = None  # (nor a coupling)
    return {k: v for k, v in data.items() if k not in _RERUN_FREE}


def _run_state(config: TrainConfig) -> tuple[str, dict[str, Any] | None]:
    """``new``, ``resume`` or ``done`` (with its summary) for the run ``config.out``.

    A run directory that exists must hold a run of the same settings (only
    :data:`_RERUN_FREE` ones may differ); otherwise this is a usage error and nothing
    is touched.
    """
    run_dir = Path(str(config.out))
    if not (run_dir / "checkpoint.pt").is_file() or not (run_dir / "config.yaml").is_file():
        return "new", None
    try:
        saved = TrainConfig.from_dict(load_run_config(run_dir / "config.yaml"))
        old = _comparable(saved)
    except (ValueError, TypeError, FileNotFoundError, UsageError) as err:
        raise UsageError(f"cannot reuse {run_dir}: {err}") from None
    now = _comparable(config)
    diff = [k for k in now if old.get(k) != now[k]]
    if diff:
        shown = ", ".join(f"{k} {old.get(k)!r} there, {now[k]!r} now" for k in diff[:3])
        # a comparison made before a change that flags undo for every optimizer alike:
        # AdaBreg's per-layer steering (2026-11-27), RDA's λ warm-up (round 49), the refit
        # guard (the values of _UNDOABLE: those runs' settings, today's for the others)
        undoable = all(k in _UNDOABLE and old.get(k) == _UNDOABLE[k] for k in diff)
        flags = [_flag(k, old[k]) for k in diff] if undoable else []
        hint = (
            f" (its command with {' '.join(flags)} added: the recipe changed since; "
            "--resume takes no flags)"
            if undoable
            else ""
        )
        if not hint and all(getattr(config, k, None) is None for k in diff):
            # nothing of the difference was given: the optimizer's recipe moved since
            # (ProxSGD's refit and LinBreg's target, round 42) and no set of compare flags
            # gives every optimizer its recipe of then
            raise UsageError(
                f"{run_dir} holds a run of {config.optimizer}'s recipe as it was when that "
                f"comparison ran ({shown}); the recipe has changed since (docs/recipes.md): "
                "choose another --out to compare with today's recipes (the runs there stay "
                "as they are)"
            )
        raise UsageError(
            f"{run_dir} holds a run with other settings ({shown}); re-run with the settings "
            f"of that comparison{hint}, or choose another --out"
        )
    summary = read_summary(run_dir)
    try:
        if summary is not None and int(summary["metrics"]["epoch"]) == int(config.epochs):
            return "done", summary
    except (ValueError, KeyError, TypeError):
        pass
    return "resume", None


def _train_or_reuse(
    config: TrainConfig, state: str, *, overwrite: bool = False, callbacks: Sequence[Any] = ()
) -> Any:
    """Train ``config`` afresh or resume it from its checkpoint (``state`` of :func:`_run_state`)."""
    from sparseopt.engine import train

    if state == "resume":
        return train({"epochs": config.epochs}, resume=config.out, callbacks=callbacks, echo=False)
    return train(config, callbacks=callbacks, echo=False, overwrite=overwrite)


def _resumable(err: Any, where: str, out: Path) -> Exception:
    """The error of a comparison interrupted ``where`` (by ``err``'s signal): what is kept
    and the command that resumes it."""
    from sparseopt.engine import TrainingInterrupted

    return TrainingInterrupted(
        f"interrupted by {signal.Signals(err.signum).name} {where}; the checkpoints and the "
        f"finished runs are kept. Resume the comparison with: sparseopt compare --resume {out}",
        signum=err.signum,
        run_dir=out,
    )


def _death_signal() -> Callable[[], None] | None:
    """Linux: a ``preexec_fn`` that asks for SIGTERM when the parent dies
    (``prctl(PR_SET_PDEATHSIG)``; a run then checkpoints and stops rather than train on,
    orphaned, into a directory a resume will use). libc is looked up here, in the parent,
    so that the child between fork and exec only makes the one call."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def ask() -> None:  # pragma: no cover - runs in the child, before exec
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return ask


def _stop_all(running: dict[str, Any], grace: float = 120.0) -> None:
    """SIGTERM to every run still going (each writes its checkpoint and exits), then wait;
    one that outlives ``grace`` seconds is killed."""
    for proc, _, _ in running.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc, log, _ in running.values():
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except BaseException:  # too long, a second Ctrl-C, anything: now, the others too
            deadline = 0.0
            proc.kill()
            proc.wait()
        finally:
            log.close()
    running.clear()


def _train_side_by_side(
    jobs: Sequence[tuple[str, TrainConfig, str]], n: int, *, overwrite: bool
) -> None:
    """Train ``jobs`` (name, config, :func:`_run_state`) up to ``n`` at a time, each in a
    ``sparseopt train`` process of its own (``--resume`` for an interrupted run).

    Only a head start: the comparison then goes through its runs one by one as without
    it, reusing what finished here and resuming or re-training what did not (a run that
    failed here fails again there, with its row), so its rows are the same either way.
    Each process takes the threads it would take alone (``--threads``, else one for a
    small CPU model). The runs are in sessions of their own, so that a Ctrl-C reaches
    this process only: the first SIGINT or SIGTERM stops them all with one SIGTERM each
    (each writes its checkpoint) and raises :class:`~sparseopt.engine.TrainingInterrupted`;
    a second one acts at once. Whatever ends this function — an error too — stops the
    runs still going, and on Linux a run also stops when this process dies.
    """
    import tempfile

    from sparseopt.config import save_config_file
    from sparseopt.engine import TrainingInterrupted
    from sparseopt.engine.signals import StopSignals
    from sparseopt.health import EXIT_FAILED

    pending = list(jobs)
    running: dict[str, tuple[subprocess.Popen[bytes], Any, float]] = {}
    death_signal = _death_signal()
    signals = StopSignals()
    print(f"training {len(jobs)} runs, {n} at a time", flush=True)
    with tempfile.TemporaryDirectory(prefix="sparseopt-compare-") as tmp:
        signals.install()
        try:
            while (pending or running) and signals.signum is None:
                while pending and len(running) < n:
                    name, config, state = pending.pop(0)
                    # -P: the installed sparseopt, not a folder of that name in the cwd
                    cmd = [sys.executable, "-P", "-m", "sparseopt", "train", "--quiet"]
                    if state == "resume":
                        cmd += ["--resume", str(config.out), "--epochs", str(config.epochs)]
                    else:
                        path = save_config_file(config, Path(tmp) / f"{name}.json")
                        cmd += ["--config", str(path)] + ["--overwrite"] * overwrite
                    log = open(Path(tmp) / f"{name}.log", "w+b")
                    proc = subprocess.Popen(
                        cmd,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        start_new_session=True,
                        preexec_fn=death_signal,
                    )
                    running[name] = (proc, log, time.perf_counter())
                time.sleep(0.1)
                for name, (proc, log, t0) in list(running.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    del running[name]
                    log.seek(0)
                    last = [ln for ln in log.read().decode(errors="replace").splitlines() if ln]
                    log.close()
                    took = f"{time.perf_counter() - t0:.1f}s"
                    if code in (EXIT_OK, EXIT_FAILED):  # finished (a failed run has its summary)
                        print(f"{name}: trained in {took}", flush=True)
                    else:
                        why = last[-1] if last else f"exit {code}"
                        print(
                            f"{name}: stopped after {took} ({why}); it runs again below", flush=True
                        )
            if signals.signum is not None:
                raise TrainingInterrupted("", signum=signals.signum, run_dir=None)
        finally:  # the runs still going stop, whatever ended this, before tmp goes
            _stop_all(running)
            signals.restore()


def _pruning_configs(
    base: dict[str, Any], out: Path, dense: str, args: argparse.Namespace
) -> tuple[TrainConfig, Callable[[str], TrainConfig]]:
    """The pruning baseline's run config of dense optimizer ``dense`` (in
    ``OUT/pruning-<dense>-dense``), and the fine-tuning run config of its pruned network
    for a sparse optimizer (by name; in ``OUT/pruning-<dense>-<name>``): ``F`` epochs with
    the dense optimizer at a tenth of its resolved learning rate, cosine, from the dense
    network (its mask is a callback, not a setting), without the dense run's lr warm-up.
    One source for the runs and for the check before anything trains."""
    from sparseopt.baselines import FINETUNE_LR_FACTOR

    epochs, ft = _finetune_epochs(base, args)
    dense_settings, _ = _per_optimizer(base, dense)
    dense_settings.update(epochs=epochs - ft, out=str(out / f"pruning-{dense}-dense"))
    dense_config = config_from(dense_settings)
    try:
        lr = float(dense_config.resolve().lr or 0.0) * FINETUNE_LR_FACTOR
    except ValueError as err:
        raise UsageError(f"{dense}: {err}") from None

    def finetune(name: str) -> TrainConfig:
        settings = dict(dense_settings)
        settings.update(
            epochs=ft,
            lr=lr,
            schedule="cosine",
            init_density=1.0,
            warmup=0.0,  # the fine-tuning is the sparse methods' refit (--refit-warmup 0)
            out=str(out / f"pruning-{dense}-{name}"),
            stall_epochs=0,
        )
        return config_from(settings)

    return dense_config, finetune


def _gradual(args: argparse.Namespace) -> bool:
    """Whether the pruning baseline prunes while it trains (``--prune-schedule gradual``)."""
    return getattr(args, "prune_schedule", None) == "gradual"


def _gradual_config(base: dict[str, Any], out: Path, dense: str, name: str) -> TrainConfig:
    """The run of the gradual pruning baseline of dense optimizer ``dense`` for sparse
    optimizer ``name`` (in ``OUT/pruning-gradual-<dense>-<name>``): the dense recipe for
    all the epochs; the pruning is a callback (:class:`~sparseopt.baselines.GradualMagnitude`
    at the method's density), not a setting."""
    settings, _ = _per_optimizer(base, dense)
    settings.update(out=str(out / f"pruning-gradual-{dense}-{name}"))
    return config_from(settings)


def gets_pruning_baseline(row: dict[str, Any]) -> bool:
    """Does a comparison row get a pruning baseline and a verdict? A sparse method's run
    that trained (status ``ok``; a failed run's dead network is not what pruning must
    beat), with a test accuracy and a weight density in (0, 0.999)."""
    wd = row.get("weight_density")
    return (
        row.get("status") == "ok"
        and wd is not None
        and 0.0 < wd < 0.999
        and row["optimizer"] not in ("sgd", "adam")
        and row.get("test_acc") is not None
    )


def judge_pruned(row: dict[str, Any], run_dir: Path, cache: dict[Any, Any]) -> None:
    """Give a pruned network's row the failure detection's verdict on its final network
    (:func:`~sparseopt.engine.judge.judge_finished`: ``stalled`` or ``collapsed`` with its
    reason). The fine-tunings train with the detection off (``stall_epochs`` 0, so that
    a comparison made before this judgement resumes as it ran), and a pruned network can
    fail: Adam's of the full Fashion-MNIST MLP at RVSM's 1.1 % of the weights gave 3-6
    classes one score for every input (docs/robustness.md). Judged on every read, a
    finished fine-tuning of an earlier comparison included; its files are not touched.
    A network that cannot be judged (its files unreadable, its dataset not found from
    here) keeps its status, with ``not judged: <why>`` as its reason and a note on
    stderr."""
    if row.get("status") != "ok":
        return
    from sparseopt.engine.judge import judge_finished

    try:
        status, reason = judge_finished(run_dir, cache)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        why = one_line(str(err), 300) or type(err).__name__
        row["reason"] = f"not judged: {why}"
        print(f"sparseopt compare: note: {run_dir} not judged: {why}", file=sys.stderr)
        return
    if status != "ok":
        row.update(status=status, reason=reason)


def choose_on_validation(candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """The run a user would keep among comparable ones (rows of a comparison, in a fixed
    order: one method's pruned networks in ``--dense`` order, or the dense runs
    themselves): the best validation accuracy, the first on a tie; without a validation
    split the first. The test split never chooses. A run that failed (stalled or
    collapsed, :func:`judge_pruned`) is chosen only when none is ``ok``, as a user would
    not keep it; a diverged one (no accuracy) only when all diverged."""
    trained = (
        [c for c in candidates if c.get("status") == "ok"]
        or [c for c in candidates if c.get("test_acc") is not None]
        or candidates
    )
    if any(c.get("val_acc") is None for c in trained):
        return trained[0]
    return max(trained, key=lambda c: c["val_acc"])  # max keeps the first of equals


def _pruning_baselines(
    base: dict[str, Any], rows: list[dict[str, Any]], out: Path, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Dense runs, then magnitude pruning to each sparse row's weight density + fine-tuning.

    Each dense optimizer of ``--dense`` (:func:`_dense_names`: SGD and Adam by default)
    trains ``epochs - F`` epochs with its recipe; each of its pruned networks is fine-tuned
    ``F`` epochs with the mask fixed at a tenth of its learning rate (cosine), so it has
    the same total epochs as the sparse runs, and judged by the failure detection
    (:func:`judge_pruned`). A method's baseline is the pruned network with the best
    validation accuracy among those that are ok (:func:`choose_on_validation`): as a user would
    prune the dense network that prunes best, chosen on the validation split, never the
    test split.
    Pruning only SGD's network flattered the sparse methods where Adam trains the better
    network (the held-out curve CNN, docs/robustness.md). Sets ``beats_pruning`` on every
    sparse row that has an accuracy. Like the optimizers' runs, the runs under
    ``OUT/pruning-*`` are reused when finished and resumed when interrupted.
    """
    from sparseopt.baselines import FixedMask, magnitude_masks, verdict
    from sparseopt.engine import NonFiniteLossError, Trainer

    epochs, _ = _finetune_epochs(base, args)
    judged = [row for row in rows if gets_pruning_baseline(row)]
    candidates: dict[str, list[dict[str, Any]]] = {row["optimizer"]: [] for row in judged}
    diverged: list[str] = []  # dense runs that diverged: nothing of theirs is pruned
    data_cache: dict[Any, Any] = {}  # the datasets the judgement of the pruned networks loads
    for dense in _dense_names(args):
        if _gradual(args):
            for row in judged:
                candidates[row["optimizer"]].append(
                    _gradual_row(base, out, dense, row, args, data_cache)
                )
            continue
        dense_config, finetune = _pruning_configs(base, out, dense, args)
        state_name, _ = _run_state(dense_config)
        try:
            if state_name == "done":  # the finished dense network, from its checkpoint
                with Trainer(None, resume=dense_config.out, install_signal_handlers=False) as t:
                    dense_model = t.model
            else:
                dense_model = _train_or_reuse(
                    dense_config, state_name, overwrite=args.overwrite
                ).model
        except NonFiniteLossError:
            print(f"pruning baseline: the dense {dense} run diverged; it is not pruned", flush=True)
            diverged.append(dense)
            continue
        state = {k: v.detach().clone() for k, v in dense_model.state_dict().items()}
        for row in judged:
            pruned = _baseline_row(
                f"pruning @ {row['optimizer']}",
                finetune(row["optimizer"]),
                # (bound now: the mask of this dense network at this row's density)
                lambda m=dense_model, s=state, d=row["weight_density"]: FixedMask(
                    s, magnitude_masks(m, d)
                ),
                args,
                data_cache,
            )
            pruned.update(epochs=epochs, baseline=True, pruned_from=dense)
            candidates[row["optimizer"]].append(pruned)
    added = []
    for row in judged:
        found = candidates[row["optimizer"]]
        if not found:  # every dense run diverged
            continue
        pruned = choose_on_validation(found)
        # what the choice saw: each candidate's validation accuracy (None: diverged)
        seen = {c["pruned_from"]: c.get("val_acc") for c in found}
        pruned["pruned_val_acc"] = {**seen, **dict.fromkeys(diverged)}
        pruned["pruned_status"] = {
            **{c["pruned_from"]: c.get("status") for c in found},
            **dict.fromkeys(diverged, "diverged"),  # the dense run (nothing was pruned)
        }
        added.append(pruned)
        if pruned.get("test_acc") is None:  # diverged: nothing to compare with
            continue
        n = row.get("test_size") or pruned.get("test_size") or 0
        row["beats_pruning"] = verdict(row["test_acc"], pruned["test_acc"], n) if n else "–"
        print(
            f"{pruned['optimizer']} (pruned {pruned['pruned_from']}"
            + (", gradually" if pruned.get("pruning_schedule") == "gradual" else "")
            + "): test acc "
            f"{100 * pruned['test_acc']:.2f}% at weight density "
            f"{100 * pruned['weight_density']:.2f}% → beats pruning? {row['beats_pruning']}"
            + ("" if pruned["status"] == "ok" else f" (the pruned network {pruned['reason']})"),
            flush=True,
        )
    return added


def _gradual_row(
    base: dict[str, Any],
    out: Path,
    dense: str,
    row: dict[str, Any],
    args: argparse.Namespace,
    data_cache: dict[Any, Any],
) -> dict[str, Any]:
    """The gradual pruning baseline of one sparse row from dense optimizer ``dense``:
    trained (or reused, resumed) and judged as the one-shot ones (:func:`_baseline_row`).
    Its density is a callback's, not a setting: a finished run of another density is
    refused, not reused."""
    from sparseopt.baselines import GradualMagnitude

    config = _gradual_config(base, out, dense, row["optimizer"])

    def same_density(pruned: dict[str, Any]) -> None:
        if abs((pruned.get("weight_density") or 0.0) - row["weight_density"]) > 1e-6:
            raise UsageError(
                f"{config.out} was pruned gradually to {pruned.get('weight_density')!r} of "
                f"the weights, {row['optimizer']} is at {row['weight_density']!r} now; "
                "remove it to prune again, or choose another --out"
            )

    pruned = _baseline_row(
        f"pruning @ {row['optimizer']}",
        config,
        lambda: GradualMagnitude(row["weight_density"]),
        args,
        data_cache,
        check_done=same_density,
    )
    pruned.update(
        epochs=config.epochs, baseline=True, pruned_from=dense, pruning_schedule="gradual"
    )
    return pruned


def _baseline_row(
    name: str,
    config: TrainConfig,
    callback: Callable[[], Any],
    args: argparse.Namespace,
    data_cache: dict[Any, Any],
    check_done: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The row of one pruning baseline's run (one-shot or gradual): reused when finished
    (``check_done`` may refuse it), else trained or resumed with the pruning
    ``callback()`` (made only when it trains), ``diverged`` when its loss did, and judged
    by the failure detection (:func:`judge_pruned`). A resumed run whose callback refuses
    its checkpoint (a gradual run resumed towards another density) raises the trainer's
    ``ConfigError`` (exit 2)."""
    from sparseopt.engine import NonFiniteLossError

    run_state, summary = _run_state(config)
    if run_state == "done":
        assert summary is not None
        pruned = _summary_row(name, Path(str(config.out)), summary)
        if check_done is not None:
            check_done(pruned)
    else:
        try:
            res = _train_or_reuse(
                config, run_state, overwrite=args.overwrite, callbacks=[callback()]
            )
        except NonFiniteLossError:
            print(f"pruning baseline: the run in {config.out} diverged", flush=True)
            pruned = {"optimizer": name, "status": "diverged", "run_dir": config.out}
        else:
            pruned = _result_row(name, res)
    judge_pruned(pruned, Path(str(config.out)), data_cache)
    return pruned


#: Compare flags kept in :data:`COMPARE_RECORD` (besides the train settings).
_COMPARE_FLAGS = ("prune_baseline", "finetune_epochs", "dense", "prune_schedule")


def _compare_invocation(args: argparse.Namespace) -> tuple[dict[str, Any], list[str], Path]:
    """(train settings, optimizer names, OUT) of this call; with ``--resume OUT`` the
    ones recorded in ``OUT/compare-settings.json``."""
    from sparseopt.optim.registry import get_optimizer_info, list_optimizers

    if args.resume:
        out = Path(args.resume)
        given = sorted(
            k for k in given_settings(args, skip=("optimizer", "name")) if k not in ("quiet",)
        )
        flags = ["--dense"] * (args.dense is not None)
        flags += ["--finetune-epochs"] * (args.finetune_epochs is not None)
        flags += ["--prune-schedule"] * (args.prune_schedule is not None)
        if args.optimizers or args.config or given or args.prune_baseline or flags:
            extra = ", ".join(["--optimizers"] * bool(args.optimizers) + given + flags)
            raise UsageError(
                f"--resume {out} continues the recorded comparison; other settings "
                f"({extra or '--config/--prune-baseline'}) cannot be given with it"
            )
        try:
            record = json.loads((out / COMPARE_RECORD).read_text(encoding="utf-8"))
            base, names = dict(record["settings"]), list(record["optimizers"])
        except FileNotFoundError:
            raise UsageError(
                f"cannot resume {out}: no {COMPARE_RECORD} there (is it an --out of "
                "sparseopt compare? earlier versions did not record it: re-run the same "
                "compare command with --out instead)"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UsageError(f"cannot resume {out}: unreadable {COMPARE_RECORD}: {err}") from None
        for key in _COMPARE_FLAGS:
            if key in record:
                setattr(args, key, record[key])
        if hasattr(args, "quiet"):
            base["quiet"] = args.quiet
        return base, names, out
    base = given_settings(args, skip=("optimizer", "name"))
    names = args.optimizers or list_optimizers()
    try:
        names = [get_optimizer_info(n).name for n in names]
    except ValueError as err:
        raise UsageError(str(err)) from None
    if len(set(names)) != len(names):
        raise UsageError(f"optimizers listed twice: {names}")
    out = Path(base.pop("out", None) or Path("runs") / f"compare-{datetime.now():%Y%m%d-%H%M%S}")
    return base, names, out


def _claim_compare_dir(out: Path, overwrite: bool) -> None:
    """A compare writes into a new (or empty) directory or one of its own (with a record)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"cannot use --out {out}: it is a file, not a directory")
    if not out.is_dir() or (out / COMPARE_RECORD).is_file():
        return
    present = sorted(p.name for p in out.iterdir())
    if present and not overwrite:
        shown = ", ".join(present[:5]) + (", …" if len(present) > 5 else "")
        raise UsageError(
            f"--out {out} exists and is not a compare directory (it holds {shown}); choose "
            "a new --out, or pass --overwrite to compare into it (other files are left alone)"
        )


def _derived_names(out: Path, overwrite: bool) -> tuple[list[Path], bool]:
    """Paths of comparison.md/.json and pareto.png: the plain names when free (or with
    ``--overwrite``), else the first free ``-k`` set; and whether an earlier set is kept."""
    plain = [out / "comparison.md", out / "comparison.json", out / "pareto.png"]
    if overwrite or not any(p.exists() for p in plain):
        return plain, False
    k = 2
    while True:
        paths = [p.with_name(f"{p.stem}-{k}{p.suffix}") for p in plain]
        if not any(p.exists() for p in paths):
            return paths, True
        k += 1


def _finetune_epochs(base: dict[str, Any], args: argparse.Namespace) -> tuple[int, int]:
    """``(epochs, F)`` of the pruning baseline: the run's epochs and the fine-tuning's
    (``--finetune-epochs``, default a fifth, at least 1), checked before any run starts.

    Raises:
        UsageError: fewer than 2 epochs, or F not in [1, epochs - 1].
    """
    epochs = int(base.get("epochs") or TrainConfig().epochs)
    if epochs < 2:
        raise UsageError(
            f"Invalid --epochs value: {epochs}; --prune-baseline needs at least 2 (the dense "
            "run and the fine-tuning take one epoch each at least)"
        )
    ft = args.finetune_epochs if args.finetune_epochs is not None else max(1, epochs // 5)
    if not 0 < ft < epochs:
        raise UsageError(
            f"Invalid --finetune-epochs value: {ft}; expected 1 to {epochs - 1} (--epochs {epochs})"
        )
    return epochs, ft


def _dense_names(args: argparse.Namespace) -> list[str]:
    """The dense optimizers the pruning baseline prunes, in order, each checked (before any
    run starts) and named as the registry names it: ``--dense``, else every dense optimizer
    of the registry. A record of before 2026-11-28 holds one name (a str)."""
    from sparseopt.optim.registry import get_optimizer_info, list_optimizers

    dense = [n for n in list_optimizers() if not get_optimizer_info(n).sparse]
    given = args.dense
    if given is None:
        return dense
    names: list[str] = []
    for name in [given] if isinstance(given, str) else given:
        try:
            info = get_optimizer_info(name)
        except ValueError as err:
            raise UsageError(f"Invalid --dense value: {err}") from None
        if info.sparse:
            raise UsageError(
                f"Invalid --dense value: {name!r} is a sparse optimizer; the pruning baseline "
                f"prunes a dense network: use one of {', '.join(dense)}"
            )
        if info.name not in names:
            names.append(info.name)
    return names


def run_compare(args: argparse.Namespace) -> int:
    from sparseopt.engine import NonFiniteLossError, TrainingInterrupted
    from sparseopt.logging_utils import atomic_write_text
    from sparseopt.optim.registry import get_optimizer_info

    base, names, out = _compare_invocation(args)
    if args.jobs < 1:
        raise UsageError(f"Invalid --jobs value: {args.jobs}; expected 1 or more")
    if args.jobs > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError(
            f"Invalid --jobs value: {args.jobs}; a distributed compare (WORLD_SIZE "
            f"{os.environ['WORLD_SIZE']}) trains its runs one after another"
        )
    if args.prune_schedule is not None and not args.prune_baseline:
        raise UsageError("--prune-schedule needs --prune-baseline")
    if _gradual(args) and base.get("fsdp"):
        raise UsageError(
            "--prune-schedule gradual does not prune a sharded (--fsdp) network: its global "
            "threshold needs every weight on every rank"
        )
    if _gradual(args) and args.finetune_epochs is not None:
        raise UsageError(
            "--finetune-epochs is the one-shot baseline's; the gradual one trains all the "
            "epochs (drop one of --finetune-epochs and --prune-schedule gradual)"
        )
    if args.prune_baseline:  # usage errors before anything trains
        args.dense = _dense_names(args)  # recorded as the names it ran
        _finetune_epochs(base, args)
    planned = []
    for name in names:
        settings, dropped = _per_optimizer(base, name)
        settings["out"] = str(out / name)
        config = config_from(settings)
        try:  # every optimizer's settings resolved and checked before anything trains
            _comparable(config)
        except UsageError as err:
            raise UsageError(f"{name}: {err}") from None
        planned.append((name, config, dropped))
    _claim_compare_dir(out, args.overwrite)
    # a run directory that exists must hold the same settings: checked before any write
    configs = [(name, config, dropped, _run_state(config)) for name, config, dropped in planned]
    dense_configs = []
    if args.prune_baseline:  # and so must the baseline's runs
        for dense in args.dense:
            if _gradual(args):  # one run per method: no dense run to train first
                for name, _, _, _ in configs:
                    if get_optimizer_info(name).sparse:
                        _run_state(_gradual_config(base, out, dense, name))
                continue
            dense_config, finetune = _pruning_configs(base, out, dense, args)
            fresh = _run_state(dense_config)[0] == "new"
            dense_configs.append(dense_config)
            for name, _, _, _ in configs:
                if not get_optimizer_info(name).sparse:  # the dense ones get no baseline
                    continue
                tuned = finetune(name)
                if _run_state(tuned)[0] != "new" and fresh:
                    # its settings match, but the network it fine-tuned is gone: a dense
                    # run trained now would be pruned, and this one reused in its place
                    raise UsageError(
                        f"{tuned.out} fine-tuned a pruned network of a pruning-{dense}-dense "
                        f"run that is no longer there; remove it (and the other "
                        f"pruning-{dense}-* runs) to fine-tune the dense run trained now, or "
                        "choose another --out"
                    )
    rows: list[dict[str, Any]] = []
    task = "classification"
    reused = [name for name, _, _, (state, _) in configs if state == "done"]
    resumed = [name for name, _, _, (state, _) in configs if state == "resume"]
    notes = [f"reusing the runs of {', '.join(reused)}"] if reused else []
    notes += [f"resuming {', '.join(resumed)}"] if resumed else []
    print(
        f"sparseopt compare: {len(names)} optimizers on {configs[0][1].dataset} → {out}"
        + (f" ({'; '.join(notes)})" if notes else ""),
        flush=True,
    )
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "format": 1,
        "optimizers": names,
        "settings": base,
        **{k: getattr(args, k) for k in _COMPARE_FLAGS},
    }
    atomic_write_text(out / COMPARE_RECORD, json.dumps(record, indent=2, default=str) + "\n")
    if args.jobs > 1:
        from sparseopt.data import get_dataset_spec

        head_start = [(name, config, state) for name, config, _, (state, _) in configs]
        if args.prune_baseline and get_dataset_spec(configs[0][1].dataset).classification:
            for dense_config in dense_configs:  # what the baselines prune
                dense_name = Path(str(dense_config.out)).name
                head_start.append((dense_name, dense_config, _run_state(dense_config)[0]))
        head_start = [job for job in head_start if job[2] != "done"]
        try:
            if head_start:
                _train_side_by_side(head_start, args.jobs, overwrite=args.overwrite)
        except TrainingInterrupted as err:
            raise _resumable(err, "while the runs trained side by side", out) from None
        configs = [(n, c, d, _run_state(c)) for n, c, d, _ in configs]
    for i, (name, config, dropped, (state, summary)) in enumerate(configs, start=1):
        if dropped:  # on stderr, also with --quiet: a setting the user gave is not used
            note(f"{name} takes no {', '.join(dropped)}; ignored for it")
        t0 = time.perf_counter()
        row: dict[str, Any] = {"optimizer": name, "run_dir": config.out}
        if state == "done":
            assert summary is not None
            row = _summary_row(name, Path(str(config.out)), summary)
            task = "classification" if row.get("test_acc") is not None else "regression"
            rows.append(row)
            print(f"[{i}/{len(configs)}] {name}: finished earlier, reused", flush=True)
            continue
        try:
            result = _train_or_reuse(config, state, overwrite=args.overwrite)
        except NonFiniteLossError as err:
            row.update(status="diverged", wall_time=time.perf_counter() - t0, error=str(err))
            print(f"[{i}/{len(configs)}] {name}: diverged (NaN/Inf loss)", flush=True)
            rows.append(row)
            continue
        except TrainingInterrupted as err:
            raise _resumable(err, f"in the {name} run", out) from None
        m = result.metrics
        task = "classification" if m.get("test_acc") is not None else "regression"
        row = _result_row(name, result)
        rows.append(row)
        perf = (
            f"test acc {100 * m['test_acc']:.2f}%"
            if task == "classification"
            else f"test loss {m['test_loss']:.4g}"
        )
        failed = "" if result.status == "ok" else f" — {result.status.upper()}: {row['reason']}"
        print(
            f"[{i}/{len(configs)}] {name}: {perf}, density {100 * m['density']:.2f}%, "
            f"{result.wall_time:.1f}s{failed}",
            flush=True,
        )
    if args.prune_baseline and task == "classification":
        try:
            rows += _pruning_baselines(base, rows, out, args)
        except TrainingInterrupted as err:
            raise _resumable(err, "in a pruning baseline", out) from None
    table = comparison_table(rows, task)
    text_json = json.dumps(rows, indent=2) + "\n"
    md, js = out / "comparison.md", out / "comparison.json"
    # the same rows: the files stay (a table an earlier version wrote keeps its columns;
    # the one printed below has today's)
    unchanged = (
        not args.overwrite
        and js.is_file()
        and md.is_file()
        and js.read_text(encoding="utf-8") == text_json
    )
    if unchanged:
        written = "unchanged (the same rows as before)"
    else:
        paths, kept = _derived_names(out, args.overwrite)
        md, js, png = paths
        atomic_write_text(md, table + "\n")
        atomic_write_text(js, text_json)
        written = f"{md}, {js}"
        ok = [r for r in rows if r.get("status") == "ok"]
        if ok:
            try:
                from sparseopt.plots import plot_pareto

                y = "test_acc" if task == "classification" else "test_loss"
                plot_pareto(
                    ok,
                    png,
                    y=y,
                    title=f"{configs[0][1].dataset}: {y.replace('_', ' ')} vs density",
                )
                written += f", {png}"
            except ImportError:  # pragma: no cover - matplotlib missing
                print("note: pareto.png skipped (matplotlib is not installed)")
        if kept:
            print(
                f"sparseopt compare: note: the earlier comparison in {out} is kept; this one "
                f"is {md.name}, {js.name}, {png.name} (--overwrite replaces comparison.md)",
                file=sys.stderr,
                flush=True,
            )
    print()
    print(table)
    print(f"\nwritten: {written}")
    if any(r.get("baseline") for r in rows) and not _gradual(args):  # something was pruned
        epochs, ft = _finetune_epochs(base, args)
        print(
            f"pruning baseline: one-shot (each dense network pruned once after epoch "
            f"{epochs - ft}, then fine-tuned for {ft} of the {epochs} epochs); --prune-schedule "
            "gradual prunes while it trains, a stronger baseline (docs/robustness.md)"
        )
    failed = [
        r["optimizer"]
        for r in rows
        if r.get("status") in ("stalled", "collapsed", "diverged") and not r.get("baseline")
    ]
    broken = [r["optimizer"] for r in rows if r.get("baseline") and r.get("status") != "ok"]
    if broken:  # a reference that failed: said, but the runs asked for decide the exit code
        print(
            f"sparseopt compare: note: failed pruning baselines: {', '.join(broken)}",
            file=sys.stderr,
        )
    if failed:
        from sparseopt.health import EXIT_FAILED

        print(f"sparseopt: error: failed runs: {', '.join(failed)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
