"""Registry and factory: names, errors, options."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sparseopt.models import ModelSpec, build_model, get_model_spec, list_models

EXPECTED = [
    "convnet",
    "curvecnn",
    "lenet5",
    "mlp",
    "nooverlap",
    "resnet18",
    "tiny",
    "transformer",
    "vgg16",
]


def test_list_models_is_sorted_and_complete() -> None:
    assert list_models() == EXPECTED


def test_specs_are_frozen_and_describe_the_model() -> None:
    for name in list_models():
        spec = get_model_spec(name)
        assert isinstance(spec, ModelSpec)
        assert spec.name == name
        assert spec.description
        assert all(isinstance(s, int) for s in spec.input_shape)
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_model_spec("mlp").name = "other"  # type: ignore[misc]


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="resnet50") as info:
        build_model("resnet50", (3, 32, 32), 10)
    for name in EXPECTED:
        assert name in str(info.value)


@pytest.mark.parametrize("shape", [(), (1, 0, 28), (1, -28, 28), "1x28x28", (1.0, 28, 28)])
def test_invalid_input_shape_names_the_value(shape: object) -> None:
    with pytest.raises(ValueError, match="input_shape"):
        build_model("mlp", shape, 10)  # type: ignore[arg-type]


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, None, True])
def test_invalid_num_classes_names_the_value(num_classes: object) -> None:
    with pytest.raises(ValueError, match=f"num_classes value: {num_classes!r}"):
        build_model("lenet5", (1, 28, 28), num_classes)  # type: ignore[arg-type]


def test_unknown_option_is_a_type_error_listing_valid_options() -> None:
    with pytest.raises(TypeError, match="hiden") as info:
        build_model("mlp", (1, 28, 28), 10, hiden=(10,))
    assert "hidden" in str(info.value)


def test_shape_accepts_list_and_torch_size() -> None:
    a = build_model("mlp", [1, 8, 8], 3, hidden=(4,))
    b = build_model("mlp", torch.Size([1, 8, 8]), 3, hidden=(4,))
    assert a.input_shape == b.input_shape == (1, 8, 8)


def test_transformer_reads_rows_as_tokens_and_checks_heads() -> None:
    model = build_model("transformer", (1, 28, 28), 10, d_model=8, heads=2, ffn=16, layers=1)
    assert (model.tokens, model.features) == (28, 28)
    x = torch.randn(3, 1, 28, 28)
    assert model(x).shape == (3, 10)
    # a token is one row: without the position embedding, reversing the rows only
    # permutes the tokens, which attention and mean pooling do not see
    with torch.no_grad():
        model.pos.zero_()
    model.eval()
    torch.testing.assert_close(model(x.flip(2)), model(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="heads value: 3"):
        build_model("transformer", (1, 8, 8), 10, d_model=8, heads=3)
    with pytest.raises(ValueError, match="ffn value"):
        build_model("transformer", (1, 8, 8), 10, ffn=0)
