"""Tests of the ``sparseopt`` command line (``sparseopt.cli``)."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparseopt.cli import build_parser, main
from sparseopt.config import TrainConfig
from sparseopt.engine import TIME_KEYS, load_checkpoint
from sparseopt.optim.registry import list_optimizers

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--epochs", "1", "--limit-batches", "2", "--no-plots", "--no-tensorboard"]


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def command() -> list[str]:
    """The installed console script, or ``python -m sparseopt``."""
    script = Path(sys.executable).with_name("sparseopt")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sparseopt"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), e.get("PYTHONPATH")]))
    return e


def sigterm(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[str, str]:
    """SIGTERM to a running ``sparseopt`` command, then its stdout and stderr once it
    exits (killed if it outlives ``timeout`` or the wait fails)."""
    try:
        proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


# ------------------------------------------------------------------------------ train


def test_train_runs_end_to_end_through_main(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(capsys, "train", *FAST, "--out", str(tmp_path))
    assert code == 0, err
    assert "sparseopt train: digits" in out and "epoch 1/1" in out
    assert re.search(r"done: test acc [\d.]+%.*density [\d.]+%", out)
    assert "run directory:" in out
    for name in ("config.yaml", "checkpoint.pt", "metrics.csv", "model_sparse.pt"):
        assert (tmp_path / name).is_file()
    # the solution path is recorded by default, and `sparseopt path` reads it
    assert (tmp_path / "path.npz").is_file() and (tmp_path / "path.json").is_file()
    code, out, err = run_main(capsys, "path", str(tmp_path), "--within", "0.01")
    assert code == 0, err
    assert "path: 2 points, epochs 0..1" in out and "by within=0.01" in out
    assert (tmp_path / "path.png").is_file()


def test_no_record_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(
        capsys, "train", *FAST, "-q", "--no-record-path", "--out", str(tmp_path)
    )
    assert code == 0, err
    assert not (tmp_path / "path.json").exists()
    code, _, err = run_main(capsys, "path", str(tmp_path))
    assert code == 2 and "no solution path" in err


def test_target_density_flag_steers_the_default_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The full default job (30 epochs, ~2 s of training) with --target-density 0.15."""
    code, _, err = run_main(
        capsys, "train", "-q", "--no-plots", "--no-tensorboard", "--target-density", "0.15",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["target_density"] == 0.15
    assert summary["config"]["target_density_every"] == 2
    final = summary["metrics"]
    assert final["weight_density"] == pytest.approx(0.15, abs=0.02)  # the penalised weights
    assert final["target_density"] == 0.15 and final["controlled_lam"] != 0.5  # λ moved
    ckpt = load_checkpoint(tmp_path)
    history = ckpt["callbacks"]["1:TargetDensity"]["history"]
    # one update every 2 of the 630 steps, none during the recipe's lr warm-up (its first
    # epoch's 21 steps: AdaBreg's controller holds λ through it)
    assert [h[0] for h in history] == list(range(22, 631, 2))


def test_quiet_prints_only_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "train", *FAST, "-q", "--out", str(tmp_path))
    assert code == 0
    assert "epoch" not in out.split("done:")[0] and out.startswith("done:")
    assert err == ""  # no progress bar when stderr is not a TTY


def test_train_runs_end_to_end_in_a_subprocess(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*command(), "train", *FAST, "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "done: test acc" in proc.stdout
    assert (tmp_path / "run" / "metrics.jsonl").is_file()


def test_sigterm_checkpoints_and_resume_matches_an_uninterrupted_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--epochs", "30", "--limit-batches", "3", "--no-plots", "--no-tensorboard"]
    args += ["--stall-epochs", "0"]  # 90 steps: AdaBreg is still growing its support
    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparseopt", "train", *args, "--out", str(cut)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the header is printed once training starts
        assert line.startswith("sparseopt train:"), line + proc.stderr.read()
    except BaseException:
        proc.kill()
        raise
    _, err = sigterm(proc)
    assert proc.returncode == 143, err
    assert "SIGTERM" in err and f"--resume {cut}" in err and "Traceback" not in err
    ckpt = load_checkpoint(cut)
    assert ckpt["epoch"] < 30
    code, _, err = run_main(capsys, "train", "--resume", str(cut), "-q")
    assert code == 0, err
    code, _, err = run_main(capsys, "train", *args, "-q", "--out", str(tmp_path / "ref"))
    assert code == 0, err
    a, b = load_checkpoint(cut), load_checkpoint(tmp_path / "ref")
    for key in ("model",):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), name
    strip = [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in a["history"]]
    assert strip == [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in b["history"]]
    assert torch.equal(
        torch.load(cut / "model_sparse.pt", weights_only=True)["fc1.weight"],
        torch.load(tmp_path / "ref" / "model_sparse.pt", weights_only=True)["fc1.weight"],
    )


def test_nan_exits_3_and_keeps_a_loadable_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(
        capsys,
        "train",
        "-o",
        "sgd",
        "--lr",
        "1e10",
        *FAST,
        "--epochs",
        "3",
        "--limit-batches",
        "20",
        "--out",
        str(tmp_path),
    )
    assert code == 3
    assert "diverged" in err and "checkpoint" in err and "Traceback" not in err
    ckpt = load_checkpoint(tmp_path)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


# ------------------------------------------------------------------------------ usage errors


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--optimizer", "nope"], "linbreg"),
        (["train", "--dataset", "nope"], "digits"),
        (["train", "--model", "nope"], "lenet5"),
        (["train", "--epochs", "-1"], "epochs"),
        (["train", "--epochs", "two"], "--epochs"),
        (["train", "--no-such-flag"], "--no-such-flag"),
        (["train", "--schedule", "linear"], "cosine"),
        (["train", "--penalty", "l7"], "l7"),
        (["train", "-o", "sgd", "--lam", "0.1"], "sgd"),
        (["train", "-o", "linbreg", "--kappa", "1"], "kappa"),
        (["train", "--model-option", "depth=3"], "depth"),
        (["train", "--data-option", "nonsense"], "KEY=VALUE"),
        (["train", "--config", "/nonexistent.yaml"], "not found"),
        (["train", "--resume", "/nonexistent-run"], "cannot resume"),
        (["train", "--target-density", "-0.5"], "target_density"),
        (["train", "--target-density", "1.5"], "target_density"),
        (["train", "--target-density", "half"], "--target-density"),
        (["train", "-o", "sgd", "--target-density", "0.1"], "dense"),
        (["train", "--penalty", "none", "--target-density", "0.1"], "no weight is penalised"),
        (["train", "--target-density-every", "0"], "target_density_every"),
        (["train", "--target-density-ramp", "1.5"], "target_density_ramp"),
        (["train", "--grow-every", "0"], "grow_every"),
        (["train", "-o", "adam", "--grow-every", "2"], "dense"),
        (["train", "-o", "splitlbi", "-m", "resnet18", "--grow-every", "2"], "sequential"),
        (["train", "--grow-tau", "0"], "grow_tau"),
        (["train", "--lam-warmup", "0.5", "--target-density", "0.1"], "lam_warmup value: 0.5"),
        (["train", "--grow-tau", "1.5"], "grow_tau"),
        (["compare", "--optimizers", "sgd", "nope"], "nope"),
        (["frobnicate"], "frobnicate"),
        ([], "command"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    argv = [*argv, "--out", str(tmp_path)] if argv[:1] == ["train"] else argv
    code, _, err = run_main(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert needle in lines[0] and "error:" in lines[0] and "Traceback" not in err


def test_missing_data_says_where_and_how(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(
        capsys,
        "train",
        "-d",
        "mnist",
        "--data-dir",
        str(tmp_path / "empty"),
        "--out",
        str(tmp_path / "r"),
    )
    assert code == 2
    assert str(tmp_path / "empty") in err and "Traceback" not in err
    assert "train-images-idx3-ubyte" in err


def test_grow_every_widens_a_saturated_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(
        capsys, "train", "-o", "splitlbi", "--nu", "1", "--lr", "0.2", "--lam", "0.1", "--schedule", "none",
        "--model-option", "hidden=[16]", "--grow-every", "1", "--epochs", "4", "--limit-batches", "5", "--no-plots",
        "--no-tensorboard", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    assert "grow every 1 epochs (τ = 0.8)" in out
    assert "grow after epoch 2: fc1 16 → 24" in out and "grow: fc1 16 → 24 (epoch 2)" in out
    sparse = torch.load(tmp_path / "model_sparse.pt", weights_only=True)
    assert sparse["fc1.weight"].shape == (24, 64) and sparse["fc2.weight"].shape == (10, 24)
    # the grown run can be pruned: the model is widened to the saved widths first
    code, out, err = run_main(
        capsys, "prune", str(tmp_path), "--no-latency", "--no-export", "--json"
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "pruned" / "report.json").read_text())
    assert report["max_abs_diff"] <= 1e-5
    assert report["test_acc_shrunk"] == pytest.approx(report["test_acc_masked"])
    # a higher threshold: nothing saturates, and the summary says so
    code, out, err = run_main(
        capsys, "train", "-q", "-o", "splitlbi", "--nu", "1", "--lr", "0.2", "--lam", "0.1", "--schedule", "none",
        "--model-option", "hidden=[16]", "--grow-every", "1", "--grow-tau", "1", "--epochs", "4", "--limit-batches", "5",
        "--no-plots", "--no-tensorboard", "--out", str(tmp_path / "tau1"),
    )  # fmt: skip
    assert code == 0, err
    assert "grow: no layer was saturated" in out
    sparse = torch.load(tmp_path / "tau1" / "model_sparse.pt", weights_only=True)
    assert sparse["fc1.weight"].shape == (16, 64)


def test_run_directory_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(capsys, "train", *FAST, "--epochs", "0", "--out", str(tmp_path))[0] == 0
    code, _, err = run_main(capsys, "train", *FAST, "--out", str(tmp_path))
    assert code == 2 and "--resume" in err


# ------------------------------------------------------------------------------ config files


def _printed_config(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = run_main(capsys, "train", "--print-config", *argv)
    assert code == 0, err
    return out


def test_numbers_in_exponent_form_are_numbers_in_files_and_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """YAML 1.1 (PyYAML's) reads ``1e-3`` as a string: a config file with ``lam: 1e-3``
    and ``--optimizer-option eps=1e-8`` were refused as "expected a number"."""
    (tmp_path / "c.yaml").write_text("optimizer: adabreg\nlam: 1e-3\nlr: 5E-3\n")
    out = _printed_config(capsys, "--config", str(tmp_path / "c.yaml"))
    assert "lam: 0.001" in out and "lr: 0.005" in out
    out = _printed_config(capsys, "-o", "adabreg", "--optimizer-option", "eps=1e-8")
    assert "eps: 1.0e-08" in out
    # a name that only starts like a number stays a name
    out = _printed_config(capsys, "--model-option", "activation=1e3x")
    assert "activation: 1e3x" in out


def test_config_file_is_equivalent_to_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [
        "-o",
        "linbreg",
        "--lr",
        "0.05",
        "--lam",
        "0.02",
        "--momentum",
        "0.5",
        "--conv-penalty",
        "group_l1",
        "--conv-groups",
        "filter",
        "--epochs",
        "7",
        "--batch-size",
        "32",
        "--schedule",
        "step",
        "--lr-step-size",
        "3",
        "--model-option",
        "hidden=[32, 16]",
        "--data-option",
        "test_fraction=0.25",
        "--no-augment",
        "--seed",
        "3",
        "--out",
        "runs/x",
    ]
    from_flags = _printed_config(capsys, *flags)
    (tmp_path / "c.yaml").write_text(
        "optimizer: linbreg\nlr: 0.05\nlam: 0.02\nmomentum: 0.5\nconv-penalty: group_l1\n"
        "conv_groups: filter\nepochs: 7\nbatch_size: 32\nschedule: step\nlr_step_size: 3\n"
        "model_options: {hidden: [32, 16]}\ndataset_options: {test_fraction: 0.25}\n"
        "augment: false\nseed: 3\nout: runs/x\n"
    )
    assert _printed_config(capsys, "--config", str(tmp_path / "c.yaml")) == from_flags
    (tmp_path / "c.toml").write_text(
        'optimizer = "linbreg"\nlr = 0.05\nlam = 0.02\nmomentum = 0.5\nconv_penalty = "group_l1"\n'
        'conv_groups = "filter"\nepochs = 7\nbatch_size = 32\nschedule = "step"\nlr_step_size = 3\n'
        'augment = false\nseed = 3\nout = "runs/x"\n'
        "[model_options]\nhidden = [32, 16]\n[dataset_options]\ntest_fraction = 0.25\n"
    )
    assert _printed_config(capsys, "--config", str(tmp_path / "c.toml")) == from_flags
    # flags override the file
    overridden = _printed_config(capsys, "--config", str(tmp_path / "c.yaml"), "--epochs", "9")
    assert "epochs: 9" in overridden and "lr: 0.05" in overridden
    plateau = _printed_config(capsys, "--schedule", "plateau", "--lr-patience", "4")
    assert "schedule: plateau" in plateau and "lr_patience: 4" in plateau
    # the saved config.yaml of a run reproduces it
    code, _, _ = run_main(
        capsys, "train", "-c", str(tmp_path / "c.yaml"), *FAST, "--out", str(tmp_path / "r")
    )
    assert code == 0
    again = _printed_config(capsys, "--config", str(tmp_path / "r" / "config.yaml"))
    assert "optimizer: linbreg" in again and "lam: 0.02" in again


def test_unknown_config_key_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "c.yaml").write_text("learning_rate: 0.1\n")
    code, _, err = run_main(capsys, "train", "--config", str(tmp_path / "c.yaml"))
    assert code == 2 and "learning_rate" in err and "valid keys" in err


def _subparser(cmd: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[cmd]


def _help(cmd: str) -> str:
    return _subparser(cmd).format_help()


def test_every_config_field_is_a_flag_and_the_docs_table_is_the_parsers() -> None:
    from sparseopt.cli._docs import generated_table
    from sparseopt.cli.flags import flag_table

    fields = set(TrainConfig.field_names())
    for cmd, skipped in (("train", set()), ("compare", {"optimizer", "name"})):
        parser = _subparser(cmd)
        dests = {a.dest for a in parser._actions}
        assert fields - skipped <= dests, f"fields without a `{cmd}` flag: {fields - dests}"
        # every flag parses into its field: a file-less `train --FLAG value` sets it
        assert parser.parse_args(["--lam", "0.5", "--tl1-a", "2"]).lam == 0.5
    docs = (ROOT / "docs" / "cli.md").read_text()
    assert generated_table(docs) == flag_table(), "run: python -m sparseopt.cli._docs docs/cli.md"
    for cmd in ("train", "compare"):
        for flag in set(re.findall(r"(--[a-z][a-z0-9-]+)", _help(cmd))) - {"--help"}:
            assert flag in docs, f"{flag} of `sparseopt {cmd}` missing from docs/cli.md"
    for cmd in ("sparseopt train", "sparseopt compare", "sparseopt list"):
        assert cmd in docs


# ------------------------------------------------------------------------------ compare, list


def test_compare_writes_table_and_pareto_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(
        capsys,
        "compare",
        "--optimizers",
        "adabreg",
        "splitlbi",
        "sgd",
        "--kappa",
        "1",
        "--target-density",
        "0.3",
        "--epochs",
        "1",
        "--limit-batches",
        "2",
        "--no-plots",
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    table = (tmp_path / "comparison.md").read_text()
    assert table.startswith("| optimizer | status | test acc (%)")
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == [
        "adabreg",
        "splitlbi",
        "sgd",
    ]
    assert table.strip() in out
    assert "note: sgd takes no kappa, target_density" in err
    assert (tmp_path / "pareto.png").stat().st_size > 0
    rows = json.loads((tmp_path / "comparison.json").read_text())
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert rows[2]["density"] == pytest.approx(1.0)  # dense baseline
    for name in ("adabreg", "splitlbi", "sgd"):
        assert (tmp_path / name / "checkpoint.pt").is_file()


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "list")
    assert code == 0
    for name in list_optimizers():
        assert name in out
    assert "digits" in out and "resnet18" in out


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "--version")
    assert code == 0 and out.startswith("sparseopt ")
    code, out, _ = run_main(capsys, "train", "--help")
    assert code == 0 and "--init-density" in out


def test_grow_every_is_refused_with_rda(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_main(
        capsys, "train", "-o", "rda", "--grow-every", "2", "--out", str(tmp_path / "r")
    )
    assert code == 2 and "grow_every" in err and "rda" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_the_command_does_not_import_torch_dynamo(tmp_path: Path) -> None:
    """torch's optimizers import torch._dynamo (~1.2 s) at first use; the CLI skips it."""
    code = (
        "import sys; from sparseopt.cli import main; "
        f"rc = main(['train', '--epochs', '1', '--limit-batches', '2', '-q', '--no-plots', "
        f"'--no-tensorboard', '--out', {str(tmp_path / 'r')!r}]); "
        "print(rc, 'torch._dynamo' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    assert out.strip().splitlines()[-1] == "0 False"


# ------------------------------------------------------------------------------ plot


def test_plot_draws_a_runs_pngs_afterwards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``train`` draws no plots by default (matplotlib costs more than the default job's
    training); ``sparseopt plot RUN_DIR`` draws the ones ``--plots`` draws, from the files."""
    run = tmp_path / "run"
    code, _, err = run_main(capsys, "train", "--epochs", "2", "--limit-batches", "2", "-q",
                            "--out", str(run))  # fmt: skip
    assert code == 0, err
    pngs = ("accuracy.png", "density.png", "layer_density.png")
    assert not any((run / name).exists() for name in pngs)
    code, out, err = run_main(capsys, "plot", str(run))
    assert code == 0, err
    assert out.split() == [str(run / name) for name in pngs]
    for name in pngs:
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # elsewhere, and the same figures as --plots draws
    code, _, err = run_main(capsys, "plot", str(run), "--out", str(tmp_path / "figs"))
    assert code == 0 and (tmp_path / "figs" / "density.png").is_file()
    drawn = tmp_path / "drawn"
    code, _, err = run_main(capsys, "train", "--epochs", "2", "--limit-batches", "2", "-q",
                            "--plots", "--out", str(drawn))  # fmt: skip
    assert code == 0 and all((drawn / name).is_file() for name in pngs)
    # a directory holding plots it did not write: refused, nothing replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "density.png").write_bytes(b"the user's")
    code, _, err = run_main(capsys, "plot", str(run), "--out", str(mine))
    assert code == 2 and "already holds density.png; pass --overwrite" in err
    assert (mine / "density.png").read_bytes() == b"the user's"
    assert not (mine / "accuracy.png").exists()
    code, _, err = run_main(capsys, "plot", str(run), "--out", str(mine), "--overwrite")
    assert code == 0 and (mine / "density.png").read_bytes()[:4] == b"\x89PNG"
    # drawn again into the run directory: its own plots are replaced
    assert run_main(capsys, "plot", str(run))[0] == 0
    # not a run directory: one line, exit 2
    code, _, err = run_main(capsys, "plot", str(tmp_path / "figs"))
    assert code == 2 and "is not a run directory of sparseopt train: no metrics.jsonl" in err
    assert len(err.strip().splitlines()) == 1


def test_compare_counts_no_target_and_target_zero_as_the_same_setting() -> None:
    """A comparison made before SplitLBI's recipe had a target density (its runs saved
    ``target_density: null`` with the recipe's λ) resumes with ``--target-density 0``,
    which every other optimizer's run then matches too."""
    from sparseopt.cli.compare import _comparable
    from sparseopt.config import TrainConfig

    old_splitlbi = TrainConfig(optimizer="splitlbi", lam=0.03, target_density=None)
    assert _comparable(old_splitlbi) == _comparable(
        TrainConfig(optimizer="splitlbi", target_density=0)
    )
    # a recipe without a target (RDA's: None) and one that sets 0 (RVSM's Tℓ1, round 90p)
    assert TrainConfig(optimizer="rda").resolve().target_density is None
    assert _comparable(TrainConfig(optimizer="rda")) == _comparable(
        TrainConfig(optimizer="rda", target_density=0.0)
    )
    assert _comparable(TrainConfig(optimizer="rvsm", penalty="tl1")) == _comparable(
        TrainConfig(optimizer="rvsm", penalty="tl1", target_density=0.0)
    )
    assert _comparable(TrainConfig(optimizer="splitlbi")) != _comparable(old_splitlbi)


def test_missing_data_files_are_one_line_naming_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "run"
    code, _, err = run_main(
        capsys, "train", "-d", "mnist", "--data-dir", str(empty), "--out", str(out)
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert (
        f"in: {empty}; {empty / 'mnist'};" in lines[0] and "MNIST IDX files not found" in lines[0]
    )
    assert not out.exists()


def test_compare_gives_the_flags_that_reuse_a_run_from_before_the_guard_and_rdas_warmup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An RDA run made before round 49 and the refit guard (no λ warm-up, no guard) is
    refused with the flags that give every optimizer its settings of then; with them the
    run is reused, and SGD's (dense: neither setting applies) with it."""
    out = tmp_path / "cmp"
    args = ["compare", "--optimizers", "rda", "--dense", "sgd", "--epochs", "5"]
    args += ["--limit-batches", "2", "-q", "--out", str(out)]
    assert main([*args, "--lam-warmup", "0", "--no-refit-guard"]) == 0  # as before
    capsys.readouterr()
    code, _, err = run_main(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "its command with --lam-warmup 0 --no-refit-guard added" in lines[0], lines[0]
    before = (out / "rda" / "summary.json").read_text()
    assert main([*args, "--lam-warmup", "0", "--no-refit-guard"]) == 0
    assert "finished earlier, reused" in capsys.readouterr().out
    assert (out / "rda" / "summary.json").read_text() == before


def test_compare_gives_the_flags_that_reuse_a_group_penalty_run_from_before_round_56(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A LinBreg group ℓ1 run saved before round 56 (its output layer's rows grouped, an
    elementwise start, neither written out) is refused with the flags that give it its
    settings of then; with them it is reused, and the dense baseline's run too."""
    out = tmp_path / "cmp"
    args = ["compare", "--optimizers", "linbreg", "--dense", "sgd", "--epochs", "1"]
    args += ["--limit-batches", "2", "-q", "--out", str(out), "--penalty", "group_l1"]
    args += ["--init-density", "0.05"]
    assert main([*args, "--head-groups", "filter", "--init-groups", "elementwise"]) == 0
    capsys.readouterr()
    cfg = out / "linbreg" / "config.yaml"
    text = cfg.read_text()
    text, n = re.subn(r"^head_groups: .*\n", "", text, flags=re.M)
    text, m = re.subn(r"^init_groups: .*$", "init_groups: null", text, flags=re.M)
    assert n == m == 1
    cfg.write_text(text)
    code, _, err = run_main(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "--head-groups filter" in lines[0] and "--init-groups elementwise" in lines[0], lines[0]
    before = (out / "linbreg" / "summary.json").read_text()
    assert main([*args, "--head-groups", "filter", "--init-groups", "elementwise"]) == 0
    assert "finished earlier, reused" in capsys.readouterr().out
    assert (out / "linbreg" / "summary.json").read_text() == before


def test_compare_gives_the_flags_that_reuse_an_adabreg_run_from_before_round_72(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An AdaBreg run saved before round 72 (lr 0.01, no warm-up, no hold, the hold not
    written out) is refused, the message naming each setting of then against today's
    recipe, the hold included; with the settings of then it is reused, and SGD's (no
    target: the hold does not apply) with it."""
    out = tmp_path / "cmp"
    args = ["compare", "--optimizers", "adabreg", "sgd", "--epochs", "1"]
    args += ["--limit-batches", "2", "-q", "--out", str(out)]
    then = ["--lr", "0.01", "--warmup", "0", "--no-target-density-hold"]
    assert main([*args, *then]) == 0
    capsys.readouterr()
    for name in ("adabreg", "sgd"):  # saved before the field
        cfg = out / name / "config.yaml"
        text, n = re.subn(r"^target_density_hold: .*\n", "", cfg.read_text(), flags=re.M)
        assert n == 1
        cfg.write_text(text)
    code, _, err = run_main(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    for change in ("lr 0.01 there, 0.02 now", "warmup 0.0 there, 1.0 now"):
        assert change in lines[0], lines[0]
    assert "target_density_hold False there, True now" in lines[0], lines[0]
    before = (out / "adabreg" / "summary.json").read_text()
    assert main([*args, *then]) == 0
    stdout = capsys.readouterr().out
    assert "adabreg: finished earlier, reused" in stdout and "sgd: finished earlier" in stdout
    assert (out / "adabreg" / "summary.json").read_text() == before


def test_compare_names_a_recipe_that_changed_since_a_run_it_would_reuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A comparison directory from before a recipe changed (LinBreg's steered target of
    round 42: its run saved one λ, one group per layer kind) is refused with what changed
    and the one way out — another --out, since no set of compare flags gives every
    optimizer its recipe of then; a difference the user's flags make keeps the old
    message."""
    out = tmp_path / "cmp"
    args = ["compare", "--optimizers", "linbreg", "--epochs", "1", "--limit-batches", "2", "-q"]
    assert main([*args, "--out", str(out)]) == 0
    capsys.readouterr()
    cfg = out / "linbreg" / "config.yaml"
    text = cfg.read_text()
    for key, old in (
        ("target_density", "null"),
        ("target_density_ramp", "null"),
        ("lam_scale", "none"),
        ("target_allocation", "global"),
    ):
        text, n = re.subn(rf"^{key}: .*$", f"{key}: {old}", text, flags=re.M)
        assert n == 1, key
    cfg.write_text(text)
    code, _, err = run_main(capsys, *args, "--out", str(out))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "linbreg's recipe as it was when that comparison ran" in lines[0]
    assert "target_density None there, 0.13 now" in lines[0]
    assert "choose another --out" in lines[0]
    code, _, err = run_main(capsys, *args, "--lr", "0.1", "--out", str(out))
    assert code == 2 and "holds a run with other settings" in err and "lr" in err
