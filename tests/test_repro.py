"""The reproduction scripts in benchmarks/repro/ run on a tiny budget and write sane results.

Every experiment runs in ``--smoke`` mode (seconds) on generated data: tiny IDX files
stand in for Fashion-MNIST, tiny CIFAR batches for CIFAR-10, so the test needs neither
the Debian package nor downloads.
"""

from __future__ import annotations

import importlib.util
import json
import math
import pickle
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

from sparseopt.data import mnist as mnist_mod
from sparseopt.data.mnist import IDX_FILES, write_idx

REPRO = Path(__file__).resolve().parents[1] / "benchmarks" / "repro"


def load(name: str) -> ModuleType:
    """Import ``benchmarks/repro/<name>.py`` as a module."""
    if str(REPRO) not in sys.path:
        sys.path.insert(0, str(REPRO))
    spec = importlib.util.spec_from_file_location(f"repro_{name}", REPRO / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No Debian Fashion-MNIST, no user cache: only the files the test writes.
    monkeypatch.setattr(mnist_mod, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-dir")
    monkeypatch.setenv("SPARSEOPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SPARSEOPT_DATA", raising=False)


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny Fashion-MNIST-format IDX files (40 train / 12 test images, 28×28)."""
    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    for role, name in IDX_FILES.items():
        n = 40 if role.startswith("train") else 12
        if role.endswith("images"):
            write_idx(root / name, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        else:
            write_idx(root / name, (np.arange(n) % 10).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny CIFAR-10 python batches (8 images each)."""
    root = tmp_path_factory.mktemp("cifar")
    d = root / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in np.arange(8) % 10],
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


def check_results(out: Path, result: dict[str, Any], n_rows: int) -> list[dict[str, Any]]:
    """The result files exist, agree, and hold sane numbers."""
    data = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    assert data["rows"] == json.loads(json.dumps(result["rows"], default=str))
    assert data["mode"] == "smoke"
    assert data["command"].startswith("python ") and "--smoke" in data["command"]
    assert data["machine"]["torch"] and data["date"]
    assert data["command"] in md
    rows = data["rows"]
    assert len(rows) == n_rows
    for row in rows:
        assert row["method"] in md
        assert isinstance(row["epochs_run"], int) and row["epochs_run"] >= 1
        for key in (
            "test_acc",
            "train_acc",
            "val_acc",
            "density",
            "weight_density",
            "removed",
            "fc_sparsity",
            "support_recovery",
        ):
            value = row.get(key)
            if value is not None:
                assert math.isfinite(value) and 0.0 <= value <= 1.0, (row["method"], key, value)
    for fig in data["figures"]:
        assert (out / fig).stat().st_size > 1000
    return rows


def test_exp1_verdict_needs_two_standard_errors() -> None:
    verdict = load("exp1_fmnist_l1").verdict
    # s = sqrt((0.8(0.2) + 0.7(0.3)) / 1000) = 0.0192: 2s = 3.85 points.
    assert verdict(0.80, 0.70, 1000) == "yes"
    assert verdict(0.70, 0.80, 1000) == "no"
    assert verdict(0.80, 0.77, 1000) == "tie"
    assert verdict(0.80, 0.77, 10_000) == "yes"  # the same gap on 10x the images
    assert verdict(0.80, 0.77, 1000, z=1.0) == "yes"
    with pytest.raises(ValueError, match="Invalid n value"):
        verdict(0.8, 0.7, 0)


def test_exp1_methods_runs_a_subset_with_its_baselines(tmp_path: Path, idx_dir: Path) -> None:
    exp1 = load("exp1_fmnist_l1")
    args = ["--smoke", "--data-dir", str(idx_dir), "--out", str(tmp_path / "sub")]
    res = exp1.main([*args, "--methods", "adabreg", "RVSM-ℓ0"])
    names = [r["method"] for r in res["rows"]]
    assert names[:3] == ["Adam (dense)", "AdaBreg", "RVSM-ℓ0"]
    assert sum("(=" in n for n in names) == 2  # each compared with pruning at its density
    assert any(n.startswith("Pruning to 5 %") for n in names)
    with pytest.raises(SystemExit, match="unknown method 'adagrad'"):
        exp1.main([*args[:-1], str(tmp_path / "bad"), "--methods", "adagrad"])


def test_the_reproductions_run_without_an_lr_warmup_unless_a_row_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The papers' runs have no warm-up, whatever the recipes have (AdaBreg's and
    SplitLBI's since rounds 71-72): every engine run of the scripts goes through
    ``train_run``, which pins it; a row's own value stands."""
    import argparse

    common = load("_common")
    seen: list[Any] = []
    monkeypatch.setattr(common, "train", lambda cfg, callbacks=(): seen.append(cfg) or _Res())
    args = argparse.Namespace(seed=0, device="cpu", threads=1)
    for opt in ("adabreg", "splitlbi", "adam"):
        common.train_run(tmp_path, opt, {"optimizer": opt}, args)
    common.train_run(tmp_path, "asked", {"optimizer": "adabreg", "warmup": 2.0}, args)
    assert [c.resolve().warmup for c in seen] == [0.0, 0.0, 0.0, 2.0]


class _Res:  # what train_run prints from a result
    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {"test_acc": 0.5}
        self.density = 0.1


def test_exp1_fmnist_l1(tmp_path: Path, idx_dir: Path) -> None:
    out = tmp_path / "exp1"
    res = load("exp1_fmnist_l1").main(["--smoke", "--data-dir", str(idx_dir), "--out", str(out)])
    main_rows = [r for r in res["rows"] if "(=" not in r["method"]]
    assert len(main_rows) == 10  # 9 methods + pruning to 5 %
    rows = check_results(out, res, len(res["rows"]))
    by = {r["method"]: r for r in rows}
    assert by["Adam (dense)"]["density"] == 1.0
    pruned = next(r for r in rows if r["method"].startswith("Pruning"))
    assert pruned["weight_density"] == pytest.approx(0.05, abs=1e-3)
    # Every sparse method is compared with magnitude pruning at its own weight density.
    matched = {r["method"]: r for r in rows if "(=" in r["method"]}
    compared = [r for r in main_rows if "pruned_acc" in r]
    assert compared and len(compared) == len(matched)
    for r in compared:
        twin = next(m for name, m in matched.items() if f"(= {r['method']})" in name)
        assert twin["weight_density"] == pytest.approx(r["weight_density"], abs=2e-3)
        assert r["pruned_acc"] == twin["test_acc"]
        assert r["test_size"] > 0
        assert r["beats_pruning"] == load("exp1_fmnist_l1").verdict(
            r["test_acc"], twin["test_acc"], r["test_size"]
        )
    assert "vs_pruning.png" in res["figures"]
    (out / "vs_pruning.png").unlink()
    assert load("exp1_fmnist_l1").main(["--replot", str(out)])["rows"] == res["rows"]
    assert (out / "vs_pruning.png").stat().st_size > 1000
    # Bregman methods start from a 1 %-dense network: still sparse after two steps.
    assert by["LinBreg"]["weight_density"] < 0.05
    assert res["published"]  # the paper's numbers travel with ours


def test_exp2_fmnist_group(tmp_path: Path, idx_dir: Path) -> None:
    out = tmp_path / "exp2"
    res = load("exp2_fmnist_group").main(["--smoke", "--data-dir", str(idx_dir), "--out", str(out)])
    rows = check_results(out, res, 4)
    pruned = rows[-1]
    assert pruned["linear_density"] == pytest.approx(0.07, abs=1e-3)
    assert pruned["conv_density"] == pytest.approx(0.065, abs=1e-3)


def test_exp3_lenet5_splitlbi(tmp_path: Path, idx_dir: Path) -> None:
    out = tmp_path / "exp3"
    res = load("exp3_lenet5_splitlbi").main(
        ["--smoke", "--data-dir", str(idx_dir), "--out", str(out)]
    )
    rows = check_results(out, res, 5)
    assert "lenet5_path.png" in res["figures"]
    simplified, shrunk = rows[2], rows[4]
    assert simplified["removed"] >= 0.825  # the selected point has <= 17.5 % support
    assert shrunk["params"] <= simplified["params"]


def test_exp4_tiny(tmp_path: Path) -> None:
    out = tmp_path / "exp4"
    res = load("exp4_tiny").main(["--smoke", "--dataset", "digits", "--out", str(out)])
    rows = check_results(out, res, 4)
    assert all(r["params"] == rows[0]["params"] for r in rows)


def test_exp5_curves(tmp_path: Path) -> None:
    out = tmp_path / "exp5"
    res = load("exp5_curves").main(["--smoke", "--out", str(out)])
    rows = check_results(out, res, 3)
    assert rows[0]["fc_sparsity"] == 0.0  # dense SGD


def test_exp5_words_runs_the_other_optimizers_with_their_recipes(tmp_path: Path) -> None:
    """The paper's rows share SGD's cosine schedule; every other optimizer takes its own
    registry recipe, schedule and refit included (RDA's is constant, with a refit), as a
    run without an lr warm-up (the reproductions have none: AdaBreg's and SplitLBI's lr
    measured without one)."""
    from sparseopt.config import TrainConfig

    out = tmp_path / "exp5w"
    res = load("exp5_curves").main(["--smoke", "--dataset", "words", "--out", str(out)])
    check_results(out, res, 8)
    runs = out / "runs"
    for name in ("linbreg", "adabreg", "splitlbi", "rda", "proxsgd"):
        saved = yaml.safe_load((runs / name / "config.yaml").read_text())
        recipe = TrainConfig(optimizer=name, warmup=0.0).resolve()
        assert (saved["schedule"], saved["refit"], saved["lr"]) == (
            recipe.schedule,
            recipe.refit,
            recipe.lr,
        )
    assert yaml.safe_load((runs / "rda" / "config.yaml").read_text())["schedule"] == "none"
    assert yaml.safe_load((runs / "rvsm_l0" / "config.yaml").read_text())["schedule"] == "cosine"


def test_exp6_teacher(tmp_path: Path) -> None:
    out = tmp_path / "exp6"
    res = load("exp6_teacher").main(["--smoke", "--out", str(out)])
    rows = check_results(out, res, 3)
    assert "teacher_recovery.png" in res["figures"]
    for row, trace in zip(rows, res["traces"].values(), strict=True):
        assert len(trace["step"]) == row["steps"] + 1  # the start and every step
        assert row["distance"] >= 0


def test_exp7_iss_mlp(tmp_path: Path, idx_dir: Path) -> None:
    out = tmp_path / "exp7"
    res = load("exp7_iss_mlp").main(["--smoke", "--data-dir", str(idx_dir), "--out", str(out)])
    check_results(out, res, 6)
    assert "iss_mlp.png" in res["figures"]
    curves = res["curves"]["LinBreg λ=1e-1"]
    assert curves["epoch"] == [0, 1, 2]
    assert curves["weight_density"][0] == pytest.approx(0.01, abs=0.005)  # 1 % start


def test_exp8_cifar_resnet(tmp_path: Path, cifar_dir: Path) -> None:
    out = tmp_path / "exp8"
    res = load("exp8_cifar_resnet").main(
        ["--smoke", "--data-dir", str(cifar_dir), "--out", str(out)]
    )
    check_results(out, res, 4)


def test_exp8_without_data_says_not_run(tmp_path: Path) -> None:
    out = tmp_path / "exp8-none"
    res = load("exp8_cifar_resnet").main(
        ["--smoke", "--data-dir", str(tmp_path / "none"), "--out", str(out)]
    )
    assert res["rows"] == []
    assert any(n.startswith("not run") for n in res["notes"])
    assert "not run" in (out / "results.md").read_text()


def test_existing_output_is_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "exp6"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(SystemExit, match="exists"):
        load("exp6_teacher").main(["--smoke", "--out", str(out)])
    assert (out / "keep.txt").exists()


def test_a_diverged_run_becomes_a_marked_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sparseopt.engine import NonFiniteLossError

    common = load("_common")

    def diverge(*args: Any, **kwargs: Any) -> None:
        raise NonFiniteLossError(
            "training diverged: the loss is nan", epoch=1, step=3, checkpoint=None
        )

    monkeypatch.setattr(common, "train", diverge)
    args = common.parser("t").parse_args(["--smoke", "--out", str(tmp_path)])
    with pytest.raises(common.Diverged) as info:
        common.train_run(tmp_path, "x", {"optimizer": "sgd"}, args)
    row = info.value.row("SGD")
    assert row["note"].startswith("diverged") and row["epochs_run"] == 0
    assert "diverged" in common.table([row], [("method", "m"), ("note", "note")])


def test_backoff_halves_the_learning_rate_after_a_divergence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from sparseopt.engine import NonFiniteLossError

    common = load("_common")
    lrs: list[float] = []

    def fake_train(cfg: Any, callbacks: Any = ()) -> Any:
        lrs.append(cfg.lr)
        if cfg.lr > 0.03:
            raise NonFiniteLossError("training diverged", epoch=1, step=1, checkpoint=None)
        return SimpleNamespace(metrics={"test_acc": 0.5}, density=0.1)

    monkeypatch.setattr(common, "train", fake_train)
    args = common.parser("t").parse_args(["--smoke", "--out", str(tmp_path)])
    _, note = common.train_with_backoff(tmp_path, "x", {"optimizer": "sgd", "lr": 0.1}, args)
    assert lrs == [0.1, 0.05, 0.025]
    assert note == "lr 0.025 (diverged at lr 0.1, 0.05)"
    with pytest.raises(common.Diverged):
        common.train_with_backoff(tmp_path, "y", {"optimizer": "sgd", "lr": 0.1}, args, tries=2)
