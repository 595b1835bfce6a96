"""ONNX export of the shrunk network: equal to eager at batch 1, 7 and 256; ``prune --onnx``."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sparseopt.cli import main
from sparseopt.prune import shrink
from sparseopt.prune.onnx import export_onnx

_WHY = 'ONNX export needs onnx, onnxscript and onnxruntime: pip install "sparseopt[onnx]"'
onnx = pytest.importorskip("onnx", reason=_WHY)
ort = pytest.importorskip("onnxruntime", reason=_WHY)
pytest.importorskip("onnxscript", reason=_WHY)


def _shrunk_convnet() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 5),
    ).eval()
    with torch.no_grad():  # dead filters, as a sparse optimizer leaves them
        net[0].weight[[1, 4, 6]] = 0
        net[4].weight[[0, 3]] = 0
        net[1].running_mean.uniform_(-0.5, 0.5)
    example = torch.randn(2, 1, 8, 8)
    result = shrink(net, example)
    assert result.model[0].out_channels == 5
    return result.model.eval(), example


def test_onnx_equals_eager_at_several_batch_sizes(tmp_path) -> None:
    model, example = _shrunk_convnet()
    path = tmp_path / "shrunk.onnx"
    diffs = export_onnx(model, example[:1], path)  # traced from a batch of 1: still dynamic
    assert set(diffs) == {1, 7, 256} and max(diffs.values()) <= 1e-5
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a symbolic batch axis
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 7, 256):
        x = torch.randn(n, 1, 8, 8)
        got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        with torch.no_grad():
            torch.testing.assert_close(got, model(x), atol=1e-5, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shrunk.onnx"]  # no temp files left


def test_a_failed_check_writes_nothing(tmp_path) -> None:
    model, example = _shrunk_convnet()
    path = tmp_path / "shrunk.onnx"
    path.write_bytes(b"earlier")
    with pytest.raises(ValueError, match="differs from the eager model at batch 1"):
        export_onnx(model, example, path, atol=-1.0)
    assert path.read_bytes() == b"earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["shrunk.onnx"]


def test_prune_onnx_command(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    code = main(
        ["train", "-q", "-o", "proxsgd", "--model-option", "hidden=[16]", "--epochs", "1",
         "--limit-batches", "3", "--no-plots", "--no-tensorboard", "--out", str(run)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    code = main(["prune", str(run), "--no-latency", "--no-export", "--onnx", "--json"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((run / "pruned" / "report.json").read_text())
    assert report["artifacts"]["onnx"].endswith("shrunk.onnx")
    assert max(report["onnx_max_abs_diff"].values()) <= 1e-5
    assert set(report["onnx_max_abs_diff"]) == {"1", "7", "256"}
    assert (run / "pruned" / "shrunk.onnx").stat().st_size > 0
