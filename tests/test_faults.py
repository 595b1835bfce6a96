"""Fault injection for ``sparseopt path`` / ``sparseopt prune`` and the CIFAR-10 reader.

One test per finding of issue 12 ("never lose or silently replace a user's work") that
these commands own. Every failing call must end with the documented exit status and
one line on stderr (no traceback), and leave every file that existed before it
byte-identical. One tiny training run (digits MLP with a group penalty) is shared by
the module; every test works on its own copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from sparseopt.cli import main

TRAIN = ["--epochs", "1", "--limit-batches", "2", "--no-plots", "--no-tensorboard", "--quiet"]
FAST = ["--no-latency", "--no-export"]


# ----------------------------------------------------------------------------- helpers


class _Evil:
    """A pickle payload that would create ``target`` if it were ever unpickled."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.target}",))


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    """The single stderr line of a failed command (asserts there is exactly one)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("sparseopt "), err
    return lines[0]


def refused(capsys: pytest.CaptureFixture[str], root: Path, code: int, *argv: str) -> str:
    """Run a command that must fail with ``code``; nothing under ``root`` may change."""
    before = snapshot(root)
    got, _, err = run(capsys, *argv)
    assert got == code, err
    assert snapshot(root) == before
    return one_line(err)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1-epoch digits run with a group penalty (path recorded, epoch kept)."""
    out = tmp_path_factory.mktemp("faults") / "run"
    code = main(
        ["train", *TRAIN, "--penalty", "group_l1", "--groups", "filter",
         "--keep-checkpoints", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    return out


@pytest.fixture
def run_dir(base_run: Path, tmp_path: Path) -> Iterator[Path]:
    """A private copy of the shared run."""
    d = tmp_path / "run"
    shutil.copytree(base_run, d)
    yield d


# ----------------------------------------------------------------------------- item 1


def test_01_non_finite_network_is_never_written(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    msg = refused(
        capsys, run_dir, 3, "prune", run_dir, "--finetune-epochs", "1", "--lr", "1e30", *FAST
    )
    assert "NaN/Inf" in msg and "nothing was written" in msg and "--lr 1e+30" in msg
    msg = refused(capsys, run_dir, 2, "prune", run_dir, "--lr", "nan", *FAST)
    assert "--lr" in msg and "finite" in msg
    # a sparse model that is already NaN is refused before anything is written
    state = torch.load(run_dir / "model_sparse.pt", weights_only=True)
    state["fc1.weight"][0, 0] = float("nan")
    torch.save(state, run_dir / "model_sparse.pt")
    msg = refused(capsys, run_dir, 3, "prune", run_dir, *FAST)
    assert "fc1.weight" in msg and "NaN/Inf" in msg


def test_01_output_check_fails_on_nan() -> None:
    from sparseopt.prune import shrink

    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        net[0].weight[:3] = 0
        net[2].bias.fill_(float("nan"))
    res = shrink(net, torch.randn(2, 4))
    assert not res.max_abs_diff <= 1e-5  # NaN never passes "outputs equal"


# ----------------------------------------------------------------------------- item 3


def test_03_prune_never_replaces_an_earlier_output(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "prune", run_dir, *FAST)
    assert code == 0, err
    first = snapshot(run_dir)
    code, out, err = run(capsys, "prune", run_dir, "--epoch", "1", *FAST)
    assert code == 0, err
    assert "pruned-2" in err and "--overwrite" in err  # says where it went instead
    assert (run_dir / "pruned-2" / "report.json").is_file()
    after = snapshot(run_dir)
    assert {k: after[k] for k in first} == first
    msg = refused(capsys, run_dir, 2, "prune", run_dir, "--out", run_dir / "pruned", *FAST)
    assert "--overwrite" in msg and "report.json" in msg
    code, _, err = run(capsys, "prune", run_dir, "--out", run_dir / "pruned", "--overwrite", *FAST)
    assert code == 0, err
    # `path`: the default PNG gets a fresh name, an existing --out is refused
    assert run(capsys, "path", run_dir)[0] == 0
    png = (run_dir / "path.png").read_bytes()
    code, out, err = run(capsys, "path", run_dir, "--epoch", "1")
    assert code == 0 and "path-2.png" in out
    assert (run_dir / "path.png").read_bytes() == png
    msg = refused(capsys, run_dir, 2, "path", run_dir, "--out", run_dir / "path.png")
    assert "--overwrite" in msg


# ----------------------------------------------------------------------------- item 6


def test_06_one_density_definition(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sparseopt.path import load_path

    history = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    path = load_path(run_dir)
    assert len(path) == len(history)
    for h, p, wd, pd in zip(history, path.points, path.density, path.param_density, strict=True):
        assert p["epoch"] == h["epoch"]
        assert wd == pytest.approx(h["weight_density"], abs=1e-12)  # train's weight density
        assert pd == pytest.approx(h["density"], abs=1e-12)  # train's all-parameter density
    code, out, err = run(capsys, "path", run_dir, "--target-density", "1e-6", "--json")
    assert code == 0, err
    sel = json.loads(out)["selection"]
    assert sel["density"] > 1e-6 and "above the target" in sel["note"]
    code, out, _ = run(capsys, "path", run_dir, "--target-density", "1e-6", "--overwrite")
    assert code == 0 and "weight density" in out and "above the target" in out
    assert "all parameters" in out
    # prune says so too, and says when the network it prunes is denser than the point
    code, out, err = run(capsys, "prune", run_dir, "--target-density", "1e-6", *FAST)
    assert code == 0, err
    assert "above the target" in out
    rep = json.loads((run_dir / "pruned" / "report.json").read_text())
    if rep["weight_density"] > rep["selection"]["density"] + 1e-9:
        assert "above the selected point" in err
    final = history[-1]
    code, out, err = run(capsys, "prune", run_dir, *FAST)  # model_sparse.pt: the last epoch
    rep = json.loads((run_dir / "pruned-2" / "report.json").read_text())
    assert rep["weight_density"] == pytest.approx(final["weight_density"], abs=1e-12)
    assert rep["density"] == pytest.approx(final["density"], abs=1e-12)


# ----------------------------------------------------------------------------- item 7


def test_07_exported_program_has_a_dynamic_batch(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sparseopt.config import TrainConfig, load_config_file
    from sparseopt.models import build_model

    code, _, err = run(capsys, "prune", run_dir, "--no-latency")
    assert code == 0, err
    program = torch.export.load(run_dir / "pruned" / "shrunk.pt2").module()
    cfg = TrainConfig.from_dict(load_config_file(run_dir / "config.yaml"))
    eager = build_model(cfg.model, (1, 8, 8), 10, **cfg.model_options)
    eager.load_state_dict(torch.load(run_dir / "pruned" / "masked_state_dict.pt"))
    eager.eval()
    for batch in (1, 7, 256):
        x = torch.randn(batch, 1, 8, 8)
        torch.testing.assert_close(program(x), eager(x), atol=1e-5, rtol=1e-5)


def test_07_save_artifacts_exports_any_batch_size(tmp_path: Path) -> None:
    from sparseopt.prune import save_artifacts, shrink

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 36, 3)
    )
    with torch.no_grad():
        net[0].weight[:4] = 0
    net.eval()
    small = shrink(net, torch.randn(2, 1, 8, 8)).model.eval()
    paths = save_artifacts(small, torch.randn(1, 1, 8, 8), tmp_path)
    program = torch.export.load(paths["export"]).module()
    for batch in (1, 7, 256):
        x = torch.randn(batch, 1, 8, 8)
        torch.testing.assert_close(program(x), small(x))


# ----------------------------------------------------------------------------- item 8


def test_08_latency_is_interleaved_with_warm_up_and_spread(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sparseopt.prune import measure_latencies

    calls: list[str] = []

    class Probe(nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name
            self.lin = nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(self.name)
            return self.lin(x)

    times = measure_latencies([Probe("a"), Probe("b")], (3,), 2, repeats=4, warmup=1, min_time=0.0)
    assert [len(t) for t in times] == [4, 4]
    warm, rounds = calls[:2], calls[2:]
    assert warm == ["a", "b"]
    assert rounds == ["a", "b", "b", "a", "a", "b", "b", "a"]  # order rotated every round
    code, _, err = run(
        capsys, "prune", run_dir, "--batch-sizes", "1", "--repeats", "3", "--no-export"
    )
    assert code == 0, err
    rep = json.loads((run_dir / "pruned" / "report.json").read_text())
    assert rep["latency_repeats"] == 3
    lo, hi = rep["speedup_spread"]["cpu@1"]
    assert lo <= rep["speedup"]["cpu@1"] <= hi
    q1, q3 = rep["after"]["latency_spread"]["cpu@1"]
    assert q1 <= rep["after"]["latency"]["cpu@1"] <= q3


# ----------------------------------------------------------------------------- item 9


def _cifar_dir(root: Path) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        blob = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        (d / name).write_bytes(pickle.dumps(blob, protocol=2))
    return d


@pytest.mark.parametrize("fault", ["malicious", "truncated"])
def test_09_bad_cifar_batch_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: str, run_dir: Path
) -> None:
    data = tmp_path / "data"
    d = _cifar_dir(data)
    target = tmp_path / "pwned"
    if fault == "malicious":
        blob = {b"data": np.zeros((4, 3072), np.uint8), b"labels": _Evil(target)}
        (d / "data_batch_3").write_bytes(pickle.dumps(blob, protocol=2))
    else:
        (d / "data_batch_3").write_bytes((d / "data_batch_3").read_bytes()[:200])
    out = tmp_path / "out"
    msg = refused(
        capsys, data, 2,
        "train", *TRAIN, "--dataset", "cifar10", "--data-dir", data, "--out", out,
    )  # fmt: skip
    assert "data_batch_3" in msg
    assert ("refused" in msg and "system" in msg) if fault == "malicious" else "truncated" in msg
    assert not target.exists()
    # prune reads the run's dataset the same way
    cfg = run_dir / "config.yaml"
    text = cfg.read_text().replace("dataset: digits", "dataset: cifar10")
    cfg.write_text(text.replace("data_dir: null", f"data_dir: {data}"))
    msg = refused(capsys, run_dir, 2, "prune", run_dir, *FAST)
    assert "data_batch_3" in msg
    assert not target.exists()


# ----------------------------------------------------------------------------- items 10, 14, 16


def _corrupt(path: Path, fault: str, target: Path) -> None:
    good = path.read_bytes()
    if fault == "malicious":
        torch.save({"model": _Evil(target)}, path)
    elif fault == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif fault == "garbage":
        path.write_bytes(b"not a checkpoint " * 8)
    elif fault == "empty":
        path.write_bytes(b"")
    elif fault == "not-a-dict":
        torch.save([1, 2, 3], path)
    else:  # "mismatch": fc1 reads one input feature more than the model has
        obj = torch.load(path, weights_only=True)
        state = obj["model"] if "model" in obj else obj
        state["fc1.weight"] = torch.zeros(state["fc1.weight"].shape[0], 65)
        torch.save(obj, path)


@pytest.mark.parametrize("which", ["checkpoint.pt", "model_sparse.pt"])
@pytest.mark.parametrize(
    "fault", ["malicious", "truncated", "garbage", "empty", "not-a-dict", "mismatch"]
)
def test_10_corrupt_weight_files_are_one_line(
    run_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, which: str, fault: str
) -> None:
    target = tmp_path / "pwned"
    _corrupt(run_dir / which, fault, target)
    (run_dir / "checkpoints").rename(run_dir / "kept")  # so that --epoch reads checkpoint.pt
    rule = ["--epoch", "1"] if which == "checkpoint.pt" else []
    msg = refused(capsys, run_dir, 2, "prune", run_dir, *rule, *FAST)
    assert str(run_dir / which) in msg
    assert not target.exists()
    # item 16: never suggest an unsafe load
    assert "weights_only" not in msg and "likely succeed" not in msg
    expected = {
        "malicious": "refused: it contains a pickled Python object (posix.system)",
        "truncated": "a PyTorch (zip) file that is truncated or corrupt",
        "garbage": "not a PyTorch file (neither a zip archive nor a tensor pickle)",
        "empty": "the file is empty (0 bytes)",  # item 14: something after the colon
        "not-a-dict": "not a",
        "mismatch": "size mismatch for fc1.weight",  # item 14: the details survive
    }[fault]
    assert expected in msg
    assert not msg.rstrip().endswith(":")


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("path.npz", b"PK\x03\x04 cut", "cannot read the solution path"),
        ("path.json", b'{"format": 1', "not valid JSON"),
        ("path.json", b'{"format": 1}', "no entry 'layers'"),
    ],
)
def test_10_corrupt_path_files_are_one_line(
    run_dir: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, needle: str
) -> None:
    (run_dir / name).write_bytes(content)
    assert needle in refused(capsys, run_dir, 2, "path", run_dir)
    assert needle in refused(capsys, run_dir, 2, "prune", run_dir, "--epoch", "1", *FAST)


def test_14_empty_and_mismatch_messages_name_the_problem(tmp_path: Path) -> None:
    from sparseopt.prune._files import load_tensor_file

    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"e\.pt: the file is empty"):
        load_tensor_file(tmp_path / "e.pt", "checkpoint")
    with pytest.raises(ValueError, match="is a directory"):
        load_tensor_file(tmp_path, "checkpoint")


def test_16_unsafe_pickle_refusal_says_why(tmp_path: Path) -> None:
    from sparseopt.prune._files import load_tensor_file

    torch.save({"x": _Evil(tmp_path / "pwned")}, tmp_path / "evil.pt")
    with pytest.raises(ValueError) as info:
        load_tensor_file(tmp_path / "evil.pt", "checkpoint")
    msg = str(info.value)
    assert "could run arbitrary code" in msg and "weights_only" not in msg
    assert "\n" not in msg and not (tmp_path / "pwned").exists()


# ----------------------------------------------------------------------------- items 11, 13


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--lr", "-1"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--repeats", "0"], "--repeats"),
        (["--finetune-epochs", "-1"], "--finetune-epochs"),
        (["--batch-sizes", "0"], "--batch-sizes"),
        (["--threads", "0"], "--threads"),
        (["--batch-sizes", "1", "-3"], "--batch-sizes"),
        (["--out", "{run}/config.yaml"], "is a file"),
        (["--out", "{run}/config.yaml/sub"], "cannot create"),
    ],
)
def test_11_13_invalid_prune_flags_are_usage_errors(
    run_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    argv = [a.replace("{run}", str(run_dir)) for a in argv]
    msg = refused(capsys, run_dir, 2, "prune", run_dir, *argv, *FAST)
    assert needle in msg
    assert "[0.0, inf]" not in msg


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--out", "{run}"], "is a directory"),
        (["--out", "{run}/config.yaml/x.png"], "cannot create"),
        (["--max-layers", "-1"], "--max-layers"),
        (["--target-density", "nan"], "--target-density"),
    ],
)
def test_11_invalid_path_flags_are_usage_errors(
    run_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    argv = [a.replace("{run}", str(run_dir)) for a in argv]
    msg = refused(capsys, run_dir, 2, "path", run_dir, *argv)
    assert needle in msg


# ----------------------------------------------------------------------------- atomic writes


def test_every_prune_and_path_file_is_written_atomically(
    run_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    before = snapshot(run_dir)
    code, _, err = run(capsys, "prune", run_dir, "--no-latency", "--frozen", "--batch-sizes", "2")
    assert code == 0, err
    code, _, err = run(capsys, "path", run_dir)
    assert code == 0, err
    new = set(snapshot(run_dir)) - set(before)
    assert new  # pruned/* and path.png
    for name in new:
        hits = [(s, d) for s, d in renames if d == run_dir / name]
        assert hits, f"{name} was not renamed into place"
        assert all(s.parent == d.parent for s, d in hits)
    assert not [p for p in run_dir.rglob("*.tmp*")]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    from sparseopt.prune._files import atomic_write

    target = tmp_path / "report.json"
    target.write_text("old")

    def fail(p: Path) -> None:
        p.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["report.json"]


# ============================================================================= train / compare / engine
#
# Items 2, 4, 5, 12, 14-18 of issue 12 and the write policy of the training engine:
# a command writes only into a new directory or a run it owns; derived outputs never
# replace earlier ones; a failed write or a NaN network leaves the last good files.


def _fresh(tmp_path: Path, name: str, *extra: str) -> list[str]:
    """``train`` argv of a tiny new run ``tmp_path/name``."""
    return ["train", *TRAIN, *extra, "--out", str(tmp_path / name)]


# ----------------------------------------------------------------------------- item 2


def test_02_train_refuses_a_directory_that_is_not_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "metrics.csv").write_text("my,numbers\n1,2\n")
    (mine / "summary.json").write_text('{"mine": true}\n')
    (mine / "notes.txt").write_text("unrelated\n")
    (mine / "checkpoints").mkdir()  # a folder of a run's name: kept, not emptied
    (mine / "checkpoints" / "my_model.ckpt").write_bytes(b"mine")
    msg = refused(capsys, tmp_path, 2, "train", *TRAIN, "--out", mine)
    assert "not a run directory" in msg and "--overwrite" in msg
    assert "metrics.csv" in msg and "summary.json" in msg
    # --overwrite says what it replaces and leaves the other files alone
    notes = (mine / "notes.txt").read_bytes()
    code, _, err = run(capsys, "train", *TRAIN, "--out", mine, "--overwrite")
    assert code == 0, err
    assert "--overwrite" in err and "metrics.csv" in err and "summary.json" in err
    assert (mine / "notes.txt").read_bytes() == notes
    assert json.loads((mine / "summary.json").read_text())["metrics"]["epoch"] == 1
    assert "folders checkpoints are kept" in err
    assert (mine / "checkpoints" / "my_model.ckpt").read_bytes() == b"mine"
    # now it is a run: replacing it is refused even with --overwrite (resume it instead)
    msg = refused(capsys, tmp_path, 2, "train", *TRAIN, "--out", mine, "--overwrite")
    assert f"--resume {mine}" in msg
    # a new or empty directory needs nothing
    (tmp_path / "empty").mkdir()
    assert run(capsys, "train", *TRAIN, "--out", tmp_path / "empty")[0] == 0


def test_02_overwrite_removes_earlier_tensorboard_events_and_a_stopped_run_of_ours(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``--overwrite`` and TensorBoard on, earlier event files directly in
    ``tensorboard/`` go (TensorBoard would show both runs as one), nothing else there; a
    run that finished (its checkpoint deleted) is not replaced without ``--overwrite``."""
    mine = tmp_path / "results"
    (mine / "tensorboard" / "other").mkdir(parents=True)
    (mine / "tensorboard" / "events.out.tfevents.1.old").write_bytes(b"old")
    (mine / "tensorboard" / "other" / "keep.txt").write_text("mine\n")
    (mine / "metrics.csv").write_text("my,numbers\n")
    tb = [a for a in TRAIN if a != "--no-tensorboard"]
    code, _, err = run(capsys, "train", *tb, "--out", mine, "--overwrite")
    assert code == 0, err
    assert not (mine / "tensorboard" / "events.out.tfevents.1.old").exists()
    assert (mine / "tensorboard" / "other" / "keep.txt").read_text() == "mine\n"
    assert list((mine / "tensorboard").glob("events.out.tfevents.*"))  # this run's
    # a finished run whose checkpoint was deleted: refused without --overwrite
    (mine / "checkpoint.pt").unlink()
    (mine / "tensorboard" / "other" / "keep.txt").unlink()
    (mine / "tensorboard" / "other").rmdir()
    msg = refused(capsys, tmp_path, 2, "train", *TRAIN, "--out", mine)
    assert "not a run directory" in msg and "summary.json" in msg


# ----------------------------------------------------------------------------- item 4


def _interrupt_in(monkeypatch: pytest.MonkeyPatch, run_name: str) -> None:
    """Ctrl-C at the end of the first epoch of the run whose directory is ``run_name``."""
    from sparseopt.path import PathRecorder

    original = PathRecorder.on_epoch_end

    def on_epoch_end(self: PathRecorder, trainer: Any, epoch: int, metrics: Any) -> None:
        original(self, trainer, epoch, metrics)
        if Path(trainer.config.out).name == run_name and epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(PathRecorder, "on_epoch_end", on_epoch_end)


def test_04_compare_says_which_runs_it_reuses_and_which_it_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cmp"
    argv = ["compare", *TRAIN, "--epochs", "2", "--out", out, "--optimizers", "adabreg", "sgd"]
    with monkeypatch.context() as m:
        _interrupt_in(m, "sgd")
        assert run(capsys, *argv)[0] == 130
    code, stdout, err = run(capsys, "compare", "--resume", out, "--quiet")
    assert code == 0, err
    assert "(reusing the runs of adabreg; resuming sgd)" in stdout


def test_04_compare_checks_the_pruning_baselines_runs_before_anything_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pruning baseline's run directory holding other settings is refused before the
    optimizers train (it used to be found after them)."""
    out = tmp_path / "cmp"
    argv = ["compare", *TRAIN, "--epochs", "2", "--out", out, "--prune-baseline"]
    code, _, err = run(capsys, *argv, "--optimizers", "proxsgd")
    assert code == 0, err
    saved = out / "pruning-adam-proxsgd" / "config.yaml"
    saved.write_text(saved.read_text().replace("schedule: cosine", "schedule: step"))
    shutil.rmtree(out / "proxsgd")
    msg = refused(capsys, tmp_path, 2, *argv, "--optimizers", "proxsgd")
    assert "pruning-adam-proxsgd holds a run with other settings" in msg and "schedule" in msg
    assert not (out / "proxsgd").exists()


def test_04_compare_resumes_and_never_replaces_its_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cmp"
    argv = ["compare", *TRAIN, "--epochs", "2", "--out", out, "--prune-baseline"]
    # interrupted in the last run (a pruning baseline): the finished runs are kept
    with monkeypatch.context() as m:
        _interrupt_in(m, "pruning-adam-adabreg")
        code, _, err = run(capsys, *argv, "--optimizers", "adabreg", "sgd")
    assert code == 130
    assert f"sparseopt compare --resume {out}" in one_line(err.replace("\n\n", "\n"))
    assert not (out / "comparison.md").exists()
    finished = {k: v for k, v in snapshot(out).items() if k.split("/")[0] in ("adabreg", "sgd")}
    code, stdout, err = run(capsys, "compare", "--resume", out, "--quiet")
    assert code == 0, err
    assert "reusing the runs of adabreg, sgd, " not in stdout  # the names are listed once
    assert "adabreg: finished earlier, reused" in stdout
    after = snapshot(out)
    assert {k: after[k] for k in finished} == finished  # finished runs untouched
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["optimizer"] for r in rows] == ["adabreg", "sgd", "pruning @ adabreg"]
    assert rows[0]["beats_pruning"] in ("yes", "no", "tie")
    # the same command again: everything reused, the outputs unchanged
    before = snapshot(out)
    code, stdout, err = run(capsys, *argv, "--optimizers", "adabreg", "sgd")
    assert code == 0, err
    assert snapshot(out) == before and "unchanged" in stdout
    # a table an earlier version wrote (other columns) beside the same rows: kept as it is
    (out / "comparison.md").write_text("| an earlier table |\n")
    before = snapshot(out)
    code, stdout, err = run(capsys, *argv, "--optimizers", "adabreg", "sgd")
    assert code == 0, err
    assert snapshot(out) == before and "unchanged" in stdout
    assert "| vs dense (points; " in stdout  # the table printed has today's columns
    # another optimizer set: sgd is reused, the earlier table is kept beside the new one
    code, stdout, err = run(capsys, *argv, "--optimizers", "sgd", "rvsm")
    assert code == 0, err
    assert "sgd: finished earlier, reused" in stdout
    after = snapshot(out)
    del before["compare-settings.json"]  # the record of the latest invocation (for --resume)
    assert {k: after[k] for k in before} == before
    assert "comparison-2.md" in err and "--overwrite" in err
    new = json.loads((out / "comparison-2.json").read_text())
    assert [r["optimizer"] for r in new] == ["sgd", "rvsm", "pruning @ rvsm"]
    assert (out / "pareto-2.png").is_file()
    # other settings on the same --out are refused before anything is written
    msg = refused(capsys, out, 2, *argv, "--optimizers", "sgd", "--lr", "0.5")
    assert "other settings" in msg and "lr" in msg
    # --resume takes no settings, and needs a compare directory
    msg = refused(capsys, out, 2, "compare", "--resume", out, "--epochs", "3")
    assert "--resume" in msg and "epochs" in msg
    msg = refused(capsys, tmp_path, 2, "compare", "--resume", tmp_path)
    assert "compare-settings.json" in msg


# ----------------------------------------------------------------------------- item 5


def test_05_resume_to_fewer_epochs_is_refused(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sparseopt.config import load_config_file

    msg = refused(capsys, run_dir, 2, "train", "--resume", run_dir, "--epochs", "0")
    assert "already trained 1 epoch" in msg and "--epochs 1 or more" in msg
    # the same number of epochs changes nothing in config.yaml (but where the run now is)
    config = load_config_file(run_dir / "config.yaml")
    assert run(capsys, "train", "--resume", run_dir, "--epochs", "1", "-q")[0] == 0
    assert load_config_file(run_dir / "config.yaml") == {**config, "out": str(run_dir)}


# ----------------------------------------------------------------------------- item 12


def test_12_disk_full_while_checkpointing_is_one_line_and_resumable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    argv = ["--epochs", "2"]
    assert run(capsys, *_fresh(tmp_path, "ref", *argv))[0] == 0
    real_save = torch.save
    seen: dict[str, Any] = {"calls": 0}

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(obj, dict) and "rng" in obj:  # a checkpoint
            seen["calls"] += 1
            if seen["calls"] == 2:  # epoch 1: the disk is full
                seen["before"] = snapshot(tmp_path / "cut")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(torch, "save", save)
        code, _, err = run(capsys, *_fresh(tmp_path, "cut", *argv))
    assert code == 1
    msg = one_line(err)
    assert "No space left on device" in msg and "checkpoint.pt" in msg
    assert f"sparseopt train --resume {tmp_path / 'cut'}" in msg and "epoch 0" in msg
    after = snapshot(tmp_path / "cut")
    assert after["checkpoint.pt"] == seen["before"]["checkpoint.pt"]  # intact
    assert not [p for p in (tmp_path / "cut").iterdir() if ".tmp" in p.name]
    code, _, err = run(capsys, "train", "--resume", tmp_path / "cut", "-q")
    assert code == 0, err
    a = torch.load(tmp_path / "cut" / "model_sparse.pt", weights_only=True)
    b = torch.load(tmp_path / "ref" / "model_sparse.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- items 14, 16


@pytest.mark.parametrize(
    "fault", ["malicious", "truncated", "garbage", "empty", "not-a-dict", "mismatch"]
)
def test_14_16_resume_from_a_bad_checkpoint_is_one_line(
    run_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, fault: str
) -> None:
    target = tmp_path / "pwned"
    _corrupt(run_dir / "checkpoint.pt", fault, target)
    msg = refused(capsys, run_dir, 2, "train", "--resume", run_dir, "--epochs", "2")
    assert f"cannot load checkpoint {run_dir / 'checkpoint.pt'}: " in msg
    assert not target.exists()
    assert "weights_only" not in msg and "likely succeed" not in msg  # item 16
    expected = {
        "malicious": "refused: it contains a pickled Python object (posix.system)",
        "truncated": "a PyTorch (zip) file that is truncated or corrupt",
        "garbage": "not a PyTorch file",
        "empty": "the file is empty (0 bytes)",  # item 14: something after the colon
        "not-a-dict": "not a sparseopt checkpoint (it holds a list, not a dict)",
        "mismatch": "size mismatch for fc1.weight",  # item 14: the details survive
    }[fault]
    assert expected in msg
    if fault == "mismatch":
        assert "torch.Size([200, 65])" in msg


def test_14_load_checkpoint_says_what_is_wrong(tmp_path: Path) -> None:
    from sparseopt.engine import load_checkpoint

    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"checkpoint\.pt: the file is empty"):
        load_checkpoint(tmp_path)
    torch.save({"format": 1, "epoch": 0}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="not a complete sparseopt checkpoint"):
        load_checkpoint(tmp_path)


# ----------------------------------------------------------------------------- item 15


def test_15_after_divergence_the_printed_command_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shlex

    argv = ["-o", "sgd", "--lr", "1e10", "--limit-batches", "20"]
    out = tmp_path / "boom"
    code, _, err = run(capsys, *_fresh(tmp_path, "boom", *argv))
    assert code == 3
    msg = one_line(err)
    assert "Try a 10x smaller lr" in msg and "--resume" not in msg
    cmd = shlex.split(msg.split("in a new run: ")[1])
    assert cmd[:2] == ["sparseopt", "train"] and cmd[cmd.index("--lr") + 1] == "1e+09"
    new = Path(cmd[cmd.index("--out") + 1])
    assert not new.exists() and new.parent == tmp_path
    before = snapshot(out)
    code, _, err = run(capsys, *cmd[1:])
    assert code != 2, err  # it runs (and may diverge again: then it says so, exit 3)
    assert snapshot(out) == before
    saved = json.loads(json.dumps(__import__("yaml").safe_load((new / "config.yaml").read_text())))
    assert saved["lr"] == pytest.approx(1e9) and saved["out"] == str(new)


# ----------------------------------------------------------------------------- item 17

_SIGTERM_WORKER = """
import os, signal, sys
from sparseopt.path import PathRecorder

original = PathRecorder.on_epoch_end

def on_epoch_end(self, trainer, epoch, metrics):  # torchrun forwards Ctrl-C to every rank
    original(self, trainer, epoch, metrics)
    if epoch == 1:
        os.kill(os.getpid(), signal.SIGTERM)

PathRecorder.on_epoch_end = on_epoch_end
from sparseopt.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed gloo",
)
def test_17_interruption_under_torchrun_is_reported_once(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(_SIGTERM_WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *_fresh(tmp_path, "run", "--epochs", "3")],
            env=dict(
                os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
            ),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for r in range(2)
    ]  # fmt: skip
    try:
        errs = [p.communicate(timeout=240)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [143, 143], errs
    assert errs[1].strip() == ""  # rank 1 says nothing
    line = one_line(errs[0])
    assert "interrupted by SIGTERM after epoch 1" in line and f"--resume {out}" in line


# ----------------------------------------------------------------------------- item 18


def test_18_pareto_plot_log_axis_legend_and_baselines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sparseopt import plots

    figures: list[Any] = []
    real = plots._figure

    def capture(*args: Any) -> Any:
        figures.append(real(*args))
        return figures[-1]

    monkeypatch.setattr(plots, "_figure", capture)
    rows = [
        {"optimizer": name, "density": d, "test_acc": a}
        for name, d, a in [
            ("adabreg", 0.04, 0.97), ("linbreg", 0.05, 0.96), ("rvsm", 0.03, 0.95),
            ("rda", 0.06, 0.955), ("sgd", 1.0, 0.98), ("adam", 1.0, 0.985),
            ("pruning @ adabreg", 0.04, 0.96), ("pruning @ rvsm", 0.03, 0.94),
        ]
    ]  # fmt: skip
    plots.plot_pareto(rows, tmp_path / "pareto.png")
    ax = figures[-1].axes[0]
    assert ax.get_xscale() == "log"
    lo, hi = ax.get_xlim()
    assert lo < 3 and hi >= 100  # every point visible, sparse ones spread over decades
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert set(labels) >= {r["optimizer"] for r in rows} and "Pareto front" in labels
    assert len(ax.texts) == 0  # names only in the legend: nothing to overlap
    # a legend outside the axes: it covers no point
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1
    # pruning baselines are crosses in their method's colour, the methods are not
    markers = {
        lab: h.get_paths()[0].vertices.tobytes()
        for lab, h in zip(labels, legend.legend_handles, strict=True)
        if hasattr(h, "get_paths")
    }
    assert markers["pruning @ adabreg"] == markers["pruning @ rvsm"] != markers["adabreg"]


def test_18_density_wording_and_tensorboard_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # not installed
    argv = ["train", "--epochs", "1", "--limit-batches", "2", "--no-plots"]
    code, out, err = run(capsys, *argv, "--out", tmp_path / "a")
    assert code == 0, err
    head, epoch0 = out.splitlines()[:2]
    # the header gives the sparse start of the weights; the epoch lines give the density
    # of all parameters (biases too) and of the weights (the floor adds one per unit)
    assert "sparse start: 1% of weights + at least one per unit" in head
    dens = re.search(r"density ([\d.]+)% \(weights ([\d.]+)%\)", epoch0)
    assert dens and float(dens[1]) > float(dens[2]) >= 1.0
    assert "TensorBoard" not in out + err  # not asked for: nothing to say
    code, out, err = run(capsys, *argv, "--tensorboard", "--out", tmp_path / "b")
    assert code == 0, err
    assert out.count("TensorBoard is not installed: the event files are written") == 1
    assert len(list((tmp_path / "b" / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert not (tmp_path / "a" / "tensorboard").exists()


# ----------------------------------------------------------------------------- write policy


def test_every_train_file_is_written_atomically(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--epochs", "1", "--limit-batches", "2", "-q",
                       "--no-tensorboard", "--plots", "--keep-checkpoints", "--out", out)  # fmt: skip
    assert code == 0, err
    files = set(snapshot(out)) - {"log.txt"}  # the log is appended line by line
    assert {"accuracy.png", "config.yaml", "model_sparse.pt", "summary.json"} <= files
    for name in files:
        hits = [s for s, d in renames if d == out / name]
        assert hits and all(s.parent == (out / name).parent for s in hits), name
    assert not [p for p in out.rglob("*.tmp*")]


def test_a_network_with_nan_weights_is_never_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sparseopt.path import PathRecorder

    original = PathRecorder.on_epoch_end

    def poison(self: PathRecorder, trainer: Any, epoch: int, metrics: Any) -> None:
        original(self, trainer, epoch, metrics)
        if epoch == 2:
            with torch.no_grad():
                trainer.model.fc1.weight[0, 0] = float("inf")

    monkeypatch.setattr(PathRecorder, "on_epoch_end", poison)
    out = tmp_path / "run"
    every_epoch = ("--checkpoint-seconds", "0")
    code, _, err = run(capsys, *_fresh(tmp_path, "run", "--epochs", "3", *every_epoch))
    assert code == 3
    msg = one_line(err)
    assert "NaN/Inf in fc1.weight" in msg and "checkpoint.pt was not written" in msg
    assert "(epoch 1)" in msg and "--lr" in msg
    assert not (out / "model_sparse.pt").exists()
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
