"""Every architecture: shapes, training step, traceability, parameter counts, options."""

from __future__ import annotations

import operator
from typing import Any

import pytest
import torch
from torch import nn

from sparseopt.models import build_model, get_model_spec
from sparseopt.models._utils import InputShaped, check_image_args

NARROW_VGG = (8, 8, "M", 16, 16, "M", 16, 16, 16, "M", 16, 16, 16, "M", 16, 16, 16, "M")

# (name, input_shape, num_classes, options): each model on its natural input and on
# at least one other size / channel count.
CASES: list[tuple[str, tuple[int, ...], int | None, dict[str, Any]]] = [
    ("mlp", (1, 28, 28), 10, {}),
    ("mlp", (64,), 3, {"hidden": (16, 8, 4)}),
    ("lenet5", (1, 28, 28), 10, {}),
    ("lenet5", (3, 32, 32), 10, {}),
    ("lenet5", (1, 8, 8), 10, {}),
    ("convnet", (1, 28, 28), 10, {}),
    ("convnet", (3, 8, 8), 10, {"channels": (4, 4), "hidden": (8,)}),
    ("tiny", (1, 28, 28), 10, {}),
    ("tiny", (3, 8, 8), 4, {}),
    ("curvecnn", (1, 64, 64), 2, {"channels": (4, 4, 4)}),
    ("curvecnn", (2, 5, 9), 3, {"channels": (4, 8), "kernel_size": 5}),
    ("resnet18", (3, 32, 32), 10, {"widths": (4, 8, 8, 8)}),
    ("resnet18", (1, 7, 9), 5, {"widths": (4, 4, 8, 8)}),
    ("vgg16", (3, 8, 8), 10, {"cfg": NARROW_VGG}),
    ("vgg16", (1, 40, 36), 7, {"batch_norm": False, "cfg": NARROW_VGG}),
    ("nooverlap", (12,), None, {"k": 4}),
    ("nooverlap", (10,), 1, {"r": 5}),
]
IDS = [f"{n}-{'x'.join(map(str, s))}-{i}" for i, (n, s, _, _) in enumerate(CASES)]

ALLOWED = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.MaxPool2d,
    nn.Flatten,
    nn.Unflatten,
    nn.Sequential,
    nn.Identity,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
)


def _build(
    name: str, shape: tuple[int, ...], classes: int | None, opts: dict[str, Any]
) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, shape, classes, **opts)


def _expected(name: str, classes: int | None) -> tuple[int, ...]:
    return (2,) if name == "nooverlap" else (2, classes)  # type: ignore[return-value]


@pytest.mark.parametrize(("name", "shape", "classes", "opts"), CASES, ids=IDS)
def test_forward_backward_and_sgd_step(
    name: str, shape: tuple[int, ...], classes: int | None, opts: dict[str, Any]
) -> None:
    model = _build(name, shape, classes, opts)
    assert model.input_shape == shape
    out = model(torch.randn(2, *shape))
    assert out.shape == _expected(name, classes)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out.square().sum().add(out.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    assert any(changed)


@pytest.mark.parametrize(("name", "shape", "classes", "opts"), CASES, ids=IDS)
def test_fx_traceable_and_standard_modules(
    name: str, shape: tuple[int, ...], classes: int | None, opts: dict[str, Any]
) -> None:
    model = _build(name, shape, classes, opts).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, *shape)
    torch.testing.assert_close(traced(x), model(x))
    # Only module calls and the residual add: no functional ops that hide layers.
    for node in traced.graph.nodes:
        if node.op == "call_function":
            assert node.target is operator.add, node.target
        assert node.op != "call_method", node.target
    for module in model.modules():
        if type(module).__module__.startswith("torch"):
            assert isinstance(module, ALLOWED), type(module)
        if isinstance(module, nn.ReLU):
            assert not module.inplace


def test_every_relu_is_its_own_module() -> None:
    small = {"convnet": {"channels": (4, 4)}, "resnet18": {"widths": (4, 4, 8, 8)}}
    small["vgg16"] = {"cfg": NARROW_VGG}
    for name in ("lenet5", "convnet", "resnet18", "vgg16"):
        spec = get_model_spec(name)
        model = build_model(name, (spec.input_shape[0], 8, 8), 10, **small.get(name, {}))
        relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        assert len({id(m) for m in relus}) == len(relus) > 0
        # each ReLU module is called exactly once in the graph
        traced = torch.fx.symbolic_trace(model.eval())
        targets = [n.target for n in traced.graph.nodes if n.op == "call_module"]
        relu_calls = [t for t in targets if isinstance(traced.get_submodule(t), nn.ReLU)]
        assert len(relu_calls) == len(set(relu_calls)) == len(relus)


def _n(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _lin(i: int, o: int) -> int:
    return i * o + o


def _conv(i: int, o: int, k: int, bias: bool = True) -> int:
    return i * o * k * k + (o if bias else 0)


def test_parameter_counts_mlp_lenet_convnet_tiny() -> None:
    mlp = build_model("mlp", (1, 28, 28), 10)
    assert _n(mlp) == 784 * 200 + 200 + 200 * 80 + 80 + 80 * 10 + 10 == 173_890
    lenet = build_model("lenet5", (1, 28, 28), 10)
    hand = _conv(1, 6, 5) + _conv(6, 16, 5) + _lin(400, 120) + _lin(120, 84) + _lin(84, 10)
    assert _n(lenet) == hand == 61_706
    assert _n(build_model("lenet5", (1, 32, 32), 10)) == 61_706  # classic 32×32 layout
    convnet = build_model("convnet", (1, 28, 28), 10)
    hand = (
        _conv(1, 64, 5)
        + _conv(64, 64, 5)
        + _lin(64 * 4 * 4, 1024)
        + _lin(1024, 128)
        + _lin(128, 10)
    )
    assert _n(convnet) == hand == 1_286_218
    tiny = build_model("tiny", (1, 28, 28), 10)
    assert _n(tiny) == _conv(1, 5, 7) + _lin(5 * 5 * 5, 10) == 1_510


def test_parameter_count_resnet18() -> None:
    def block(i: int, o: int) -> int:
        n = _conv(i, o, 3, False) + _conv(o, o, 3, False) + 4 * o
        return n + (_conv(i, o, 1, False) + 2 * o if i != o else 0)

    hand = _conv(3, 64, 3, False) + 2 * 64
    for i, o in ((64, 64), (64, 128), (128, 256), (256, 512)):
        hand += block(i, o) + block(o, o)
    hand += _lin(512, 10)
    assert hand == 11_173_962
    assert _n(build_model("resnet18", (3, 32, 32), 10)) == hand


def test_parameter_count_vgg16() -> None:
    cfg = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    hand, c = 0, 3
    for o in cfg:
        hand += _conv(c, o, 3) + 2 * o
        c = o
    hand += _lin(512, 10)
    assert hand == 14_728_266
    assert _n(build_model("vgg16", (3, 32, 32), 10)) == hand


def test_sequential_structure_for_enlarging_tools() -> None:
    for name in ("lenet5", "convnet", "tiny", "curvecnn", "vgg16"):
        spec = get_model_spec(name)
        opts = {"cfg": NARROW_VGG} if name == "vgg16" else {}
        model = build_model(name, spec.input_shape, 10, **opts)
        assert isinstance(model, nn.Sequential)
        assert list(dict(model.named_children())) == ["features", "classifier"]
        assert isinstance(model.classifier[0], nn.Flatten)
        assert isinstance(model.features[0], nn.Conv2d)
    mlp = build_model("mlp", (1, 28, 28), 10)
    assert [type(m) for m in mlp] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]


def test_input_adaptation_rules() -> None:
    # convnet: padding 0 for >= 16, padding 2 ("same") below, e.g. 8×8 digits.
    big = build_model("convnet", (1, 28, 28), 10)
    assert big.features.conv1.padding == (0, 0) and big.classifier.fc1.in_features == 1024
    small = build_model("convnet", (1, 8, 8), 10)
    assert small.features.conv1.padding == (2, 2) and small.classifier.fc1.in_features == 64 * 2 * 2
    # lenet5: 28×28 gets padding 2 (32×32 layout), 32×32 none.
    assert build_model("lenet5", (1, 28, 28), 10).features.conv1.padding == (2, 2)
    assert build_model("lenet5", (3, 32, 32), 10).features.conv1.padding == (0, 0)
    # vgg16: pools that would shrink the map below 1×1 are left out.
    vgg8 = build_model("vgg16", (3, 8, 8), 10, cfg=NARROW_VGG)
    assert sum(isinstance(m, nn.MaxPool2d) for m in vgg8.features) == 3
    assert vgg8.classifier.fc1.in_features == 16
    vgg64 = build_model("vgg16", (3, 64, 64), 10, cfg=NARROW_VGG)
    assert vgg64.classifier.fc1.in_features == 16 * 2 * 2


def test_nooverlap_matches_formula() -> None:
    torch.manual_seed(0)
    k, r = 3, 4
    model = build_model("nooverlap", (r * k,), None, k=k)
    assert (model.k, model.r) == (3, 4)
    w = model.conv.weight.detach().reshape(k)
    x = torch.randn(5, r * k, dtype=torch.float32)
    hand = torch.stack(
        [sum(torch.relu(w @ x[n, j * k : (j + 1) * k]) for j in range(r)) / r for n in range(5)]
    )
    torch.testing.assert_close(model(x), hand)
    assert list(model.parameters()) == [model.conv.weight]  # one filter, no bias


@pytest.mark.parametrize(
    ("name", "shape", "classes", "opts", "match"),
    [
        ("mlp", (1, 28, 28), 10, {"hidden": (200, 0)}, r"hidden value: \(200, 0\)"),
        ("lenet5", (784,), 10, {}, r"input_shape for lenet5: \(784,\)"),
        ("lenet5", (1, 3, 3), 10, {}, r"\(1, 3, 3\)"),
        ("lenet5", (1, 28, 28), 10, {"padding": -1}, "padding value: -1"),
        ("convnet", (1, 28, 28), 10, {"channels": (64,)}, r"channels value: \(64,\)"),
        ("tiny", (1, 5, 5), 10, {}, "kernel_size value: 7"),
        ("tiny", (1, 28, 28), 10, {"pool": 30}, "pool value: 30"),
        ("curvecnn", (1, 64, 64), 2, {"kernel_size": 4}, "kernel_size value: 4"),
        ("resnet18", (3, 32), 10, {}, r"\(3, 32\)"),
        ("vgg16", (3, 32, 32), 10, {"batch_norm": "yes"}, "batch_norm value: 'yes'"),
        ("vgg16", (3, 32, 32), 10, {"cfg": (64, "P")}, r"cfg value: \(64, 'P'\)"),
        ("nooverlap", (10,), None, {"k": 3}, "k value: 3"),
        ("nooverlap", (10,), None, {"r": 4}, "r value: 4"),
        ("nooverlap", (12,), None, {"k": 4, "r": 4}, "r value: 4"),
        ("nooverlap", (12,), None, {}, "k value: None"),
        ("nooverlap", (12,), 10, {"k": 4}, "num_classes value for nooverlap: 10"),
        ("nooverlap", (1, 12), None, {"k": 4}, r"\(1, 12\)"),
    ],
)
def test_invalid_values_raise_value_error_naming_them(
    name: str, shape: tuple[int, ...], classes: int | None, opts: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        build_model(name, shape, classes, **opts)


SMALL_OPTIONS: dict[str, dict[str, Any]] = {
    "nooverlap": {"k": 4},
    "resnet18": {"widths": (4, 4, 4, 4)},
    "vgg16": {"cfg": NARROW_VGG},
}


@pytest.mark.parametrize("name", ["mlp", "lenet5", "resnet18", "vgg16", "nooverlap", "transformer"])
def test_every_model_is_input_shaped(name: str) -> None:
    spec = get_model_spec(name)
    classes = 1 if name == "nooverlap" else 10
    model = build_model(name, spec.input_shape, classes, **SMALL_OPTIONS.get(name, {}))
    assert isinstance(model, InputShaped)
    assert model.input_shape == tuple(spec.input_shape)


def test_check_image_args_checks_the_shape_then_the_classes() -> None:
    assert check_image_args([3, 8, 8], 10, "m") == ((3, 8, 8), 10)
    with pytest.raises(ValueError, match=r"input_shape for m: \(8, 8\)"):
        check_image_args((8, 8), 0, "m")  # both invalid: the shape is named first
    with pytest.raises(ValueError, match="num_classes value: 0"):
        check_image_args((3, 8, 8), 0, "m")
