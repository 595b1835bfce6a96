"""``sparseopt compare --jobs N``: the runs side by side, the same rows, Ctrl-C safe."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import env, sigterm
from test_faults import TRAIN, one_line, run

VOLATILE = ("wall_time", "run_dir")


def start_two_runs(out: Path, epochs: int, *more: str) -> subprocess.Popen[str]:
    """``compare --jobs 2`` of AdaBreg and RDA (and ``more`` optimizers after them) in a
    process, returned once both runs train (their signal handlers are in place once
    metrics.csv exists)."""
    args = ["--epochs", str(epochs), "--limit-batches", "3", "--no-plots", "--no-tensorboard"]
    args += ["--stall-epochs", "0", "--optimizers", "adabreg", "rda", *more, "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparseopt", "compare", *args, "--jobs", "2", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    deadline = time.monotonic() + 120
    while not all((out / n / "metrics.csv").is_file() for n in ("adabreg", "rda")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(proc.communicate())
        time.sleep(0.1)
    return proc


def rows(out: Path) -> list[dict[str, object]]:
    data = json.loads((out / "comparison.json").read_text())
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in data]


def test_side_by_side_gives_the_rows_of_one_after_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", *TRAIN, "--epochs", "2", "--prune-baseline"]
    argv += ["--optimizers", "adabreg", "rvsm", "sgd"]
    code, stdout, err = run(capsys, *argv, "--jobs", "3", "--out", tmp_path / "par")
    assert code == 0, err
    # the three optimizers and the dense runs the baselines prune, three at a time
    assert "training 5 runs, 3 at a time" in stdout
    for name in ("adabreg", "rvsm", "sgd", "pruning-sgd-dense", "pruning-adam-dense"):
        assert f"{name}: trained in " in stdout
    assert "adabreg: finished earlier, reused" in stdout
    code, _, err = run(capsys, *argv, "--out", tmp_path / "seq")
    assert code == 0, err
    par, seq = rows(tmp_path / "par"), rows(tmp_path / "seq")
    assert [r["optimizer"] for r in par] == [
        "adabreg", "rvsm", "sgd", "pruning @ adabreg", "pruning @ rvsm",
    ]  # fmt: skip
    assert par == seq


@pytest.mark.parametrize("value", ["0", "-2"])
def test_jobs_below_one_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    code, _, err = run(capsys, "compare", *TRAIN, "--jobs", value, "--out", tmp_path / "c")
    assert code == 2
    assert f"Invalid --jobs value: {value}" in one_line(err)
    assert not (tmp_path / "c").exists()


def test_sigterm_stops_the_runs_side_by_side_and_resume_finishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    # long enough that neither run can finish between the other's start and the signal
    # (40 epochs once let RDA finish first on a loaded machine)
    proc = start_two_runs(out, 150, "sgd")
    stdout, err = sigterm(proc)
    assert proc.returncode == 143, err
    assert "SIGTERM" in err and f"compare --resume {out}" in err and "Traceback" not in err
    assert "trained in" not in stdout  # stopped while the first two ran
    assert not (out / "sgd").exists() and not (out / "comparison.json").exists()
    code, stdout, err = run(capsys, "compare", "--resume", out, "--jobs", "2")
    assert code == 0, err
    # both stopped runs had written a checkpoint to resume from
    assert "(resuming adabreg, rda)" in stdout
    assert [r["optimizer"] for r in rows(out)] == ["adabreg", "rda", "sgd"]
    assert all(r["status"] == "ok" and r["epochs"] == 150 for r in rows(out))


def test_an_error_in_the_head_start_stops_the_runs_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs in sessions of their own would outlive a compare that failed (a full disk,
    say) and train on into directories a resume then uses: every exit stops them."""
    import sparseopt.config
    from sparseopt.cli import compare
    from sparseopt.config import TrainConfig

    started: list[subprocess.Popen[bytes]] = []
    real_popen, real_save = subprocess.Popen, sparseopt.config.save_config_file

    def popen(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        started.append(real_popen(*args, **kwargs))  # type: ignore[call-overload]
        return started[-1]

    def save(config: object, path: Path) -> Path:
        if started:  # the second run's config file
            raise OSError("No space left on device")
        return real_save(config, path)

    monkeypatch.setattr(compare.subprocess, "Popen", popen)
    monkeypatch.setattr(sparseopt.config, "save_config_file", save)
    config = TrainConfig(dataset="digits", model="mlp", optimizer="sgd", epochs=500)
    jobs = [(n, config.replace(out=str(tmp_path / n), quiet=True), "new") for n in "ab"]
    with pytest.raises(OSError, match="No space left"):
        compare._train_side_by_side(jobs, 2, overwrite=False)
    assert len(started) == 1
    assert started[0].poll() in (143, -signal.SIGTERM)  # stopped (with a checkpoint, or
    # by the signal's default if it came before the run's handlers were in place)


def test_a_regression_gets_no_dense_run_to_prune(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pruning baselines are for classification: side by side, a regression does not
    train the dense run they would prune (one after another it never did)."""
    from sparseopt.data import get_dataset_spec, list_datasets

    assert [d for d in list_datasets() if not get_dataset_spec(d).classification] == ["teacher"]
    out = tmp_path / "reg"
    argv = ["compare", *TRAIN, "--epochs", "2", "-d", "teacher", "-m", "nooverlap"]
    argv += ["--prune-baseline"]
    code, stdout, err = run(
        capsys, *argv, "--optimizers", "rvsm", "sgd", "--jobs", "2", "--out", out
    )
    assert code == 0, err
    assert "training 2 runs, 2 at a time" in stdout
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["rvsm", "sgd"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_runs_stop_with_a_checkpoint_when_compare_is_killed(tmp_path: Path) -> None:
    """SIGKILL gives compare no chance to stop its runs: the kernel's death signal does,
    so none trains on, orphaned, into a directory a resume then uses."""
    out = tmp_path / "cmp"
    proc = start_two_runs(out, 5000)  # runs that would go on for minutes

    def alive(pids: list[str]) -> list[str]:  # not gone, and not a zombie either
        def running(pid: str) -> bool:
            try:
                return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            except OSError:
                return False

        return [p for p in pids if running(p)]

    try:
        ps = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        runs = ps.stdout.split()
        assert len(alive(runs)) == 2  # the two runs
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 60
        while alive(runs) and time.monotonic() < deadline:  # seconds with the death signal
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert alive(runs) == []
    for name in ("adabreg", "rda"):  # each stopped as on SIGTERM, with its checkpoint
        assert (out / name / "checkpoint.pt").is_file()
