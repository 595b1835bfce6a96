"""``sparseopt train --coupled`` / ``prune`` / the path on a transformer's heads and neurons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sparseopt.cli import main
from sparseopt.config import TrainConfig

QUICK = ["--epochs", "2", "--limit-batches", "10", "--no-tensorboard", "--no-plots", "-q"]
SMALL = ["--model-option", "d_model=16", "--model-option", "ffn=16"]
# ProxSGD at lr 0.05 (not the recipe's: the prox threshold is lr·λ), λ 0.2 for the
# neurons (most die in 2 epochs) and 0.4 for the heads (all die), no refit (the recipe's
# would fix the support for the last epoch)
TRAIN = [
    *("train", "-d", "digits", "-m", "transformer", *SMALL, "-o", "proxsgd", "--lr", "0.05"),
    *("--refit", "0"),
]
COUPLED = ["--coupled", "head,neuron", "--lam", "0.2", "--coupled-lam", "head=0.4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("coupled") / "run"
    assert main([*TRAIN, *COUPLED, *QUICK, "--keep-checkpoints", "--out", str(out)]) == 0
    return out


def _alive(point: dict) -> dict[str, int]:
    return {name: c["alive"] for name, c in point["coupled"].items()}


def test_train_packs_heads_and_neurons_with_their_own_lam(run: Path) -> None:
    from sparseopt.coupled import is_packed, packed_groups
    from sparseopt.engine.build import build_model, build_optimizer, load_data

    cfg = TrainConfig.from_dict(_config(run))
    model = build_model(cfg, load_data(cfg), sparse_init=False)
    assert is_packed(model)
    assert sorted(cg.kind for cg in packed_groups(model)) == ["head", "head", "neuron", "neuron"]
    model.load_state_dict(torch.load(run / "model_sparse.pt"))  # the packed layout
    opt, _ = build_optimizer(cfg, model)
    lams = {g["name"]: (g["penalty"], g["lam"]) for g in opt.param_groups}
    assert lams["coupled_head"] == ("group_l1", 0.4)
    assert lams["coupled"] == ("group_l1", 0.2)
    assert lams["unpenalised"][0] == "none"
    header = (run / "log.txt").read_text().splitlines()[0]
    assert "coupled head,neuron groups, dense start" in header
    assert "coupled_head group_l1/filter λ=0.4" in header


def _config(run: Path) -> dict:
    from sparseopt.config import load_config_file

    return load_config_file(run / "config.yaml")


def test_path_records_heads_and_neurons_alive(run: Path) -> None:
    from sparseopt.path import load_path

    path = load_path(run)
    assert path.epochs.tolist() == [0, 1, 2]
    first, last = _alive(path.points[0]), _alive(path.points[-1])
    assert first == {
        "layers.0.neurons": 16,
        "layers.0.self_attn.heads": 4,
        "layers.1.neurons": 16,
        "layers.1.self_attn.heads": 4,
    }
    assert last["layers.0.self_attn.heads"] == last["layers.1.self_attn.heads"] == 0
    assert 0 < last["layers.0.neurons"] < 16 and 0 < last["layers.1.neurons"] < 16
    # the packed parameters are the path's layers: their alive rows are the groups
    assert all(n.startswith("sparseopt_coupled.packed.") for n in path.layers)
    assert sorted(path.points[-1]["filters_alive"].values()) == sorted(last.values())


def test_path_command_reports_heads_and_neurons_alive(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["path", str(run), "--epoch", "1", "--json", "--out", str(run / "p.png")]) == 0
    alive = json.loads(capsys.readouterr().out)["coupled_alive"]
    assert alive["layers.0.self_attn.heads"] == [4, 0, 0]
    assert alive["layers.1.neurons"][:2] == [16, 16] and alive["layers.1.neurons"][2] < 16
    assert main(["path", str(run), "--overwrite", "--out", str(run / "p.png")]) == 0
    assert "layers.0.self_attn.heads: 4 alive at epoch 0, 0 at 2" in capsys.readouterr().out


def test_prune_removes_dead_heads_and_neurons_exactly(run: Path) -> None:
    from sparseopt.coupled import detect_coupled_groups
    from sparseopt.engine.build import load_data
    from sparseopt.models import build_model
    from sparseopt.prune.heads import shrink_coupled

    assert main(["prune", str(run), "--no-latency", "--no-export", "--json"]) == 0
    out = run / "pruned"
    report = json.loads((out / "report.json").read_text())
    alive = _alive(json.loads((run / "path.json").read_text())["points"][-1])
    assert report["max_abs_diff"] <= 1e-5
    assert report["test_acc_shrunk"] == pytest.approx(report["test_acc_masked"])
    for name, (before, after) in report["widths"].items():
        assert before == (16 if name.endswith("neurons") else 4)
        assert after == max(alive[name], 1)  # a set keeps one (zero) group
    assert report["after"]["params"] < report["before"]["params"]
    assert report["after"]["macs"] < report["before"]["macs"]
    plan = json.loads((out / "shrink_plan.json").read_text())["coupled"]
    assert plan["layers.0.self_attn.heads"] == {"kind": "head", "groups": 4, "kept": [0]}
    # masked_state_dict.pt holds ordinary parameters: the plain architecture loads it,
    # and computes what the shrunk network computes
    cfg = TrainConfig.from_dict(_config(run))
    data = load_data(cfg)
    plain = build_model("transformer", data.input_shape, 10, d_model=16, ffn=16).eval()
    plain.load_state_dict(torch.load(out / "masked_state_dict.pt"))
    assert not any(k.startswith("sparseopt_coupled") for k in plain.state_dict())
    shrunk = torch.load(out / "shrunk_state_dict.pt")
    assert shrunk["layers.0.linear1.weight"].shape[0] == alive["layers.0.neurons"]
    res = shrink_coupled(plain, detect_coupled_groups(plain), data.test.tensors[0][:16])
    assert res.max_abs_diff <= 1e-5
    assert {k: v.shape for k, v in res.model.state_dict().items()} == {
        k: v.shape for k, v in shrunk.items()
    }


def test_prune_a_selected_point_and_fine_tune(run: Path) -> None:
    out = run.parent / "selected"
    args = ["prune", str(run), "--epoch", "1", "--no-latency", "--no-export", "--json"]
    assert main([*args, "--finetune-epochs", "1", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["selection"]["epoch"] == 1
    assert report["max_abs_diff"] <= 1e-5
    # at epoch 1 every neuron was alive and every head dead; fine-tuning keeps them dead
    widths = report["widths"]
    assert widths["layers.0.neurons"] == [16, 16]
    assert widths["layers.0.self_attn.heads"] == widths["layers.1.self_attn.heads"] == [4, 1]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--coupled", "heads"], "coupled value"),
        (["--coupled", "head", "--penalty", "l1"], "penalty value"),
        (["--coupled", "head", "--coupled-lam", "neuron=0.1"], "coupled_lam key"),
        (["--coupled", "neuron", "--linear-penalty", "l1"], "linear_penalty value"),
        (["--coupled", "head", "-o", "sgd"], "coupled"),
        (["--coupled", "head", "-m", "mlp"], "no attention heads"),
    ],
)
def test_invalid_coupled_settings_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    args = ["train", "-d", "digits", "-m", "transformer", *extra, *QUICK]
    assert main([*args, "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
