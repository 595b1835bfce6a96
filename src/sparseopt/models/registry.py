"""Model registry and factory (timm style): :func:`build_model`, :func:`list_models`.

One frozen :class:`ModelSpec` per architecture holds its name, builder,
one-line description and natural input. The training engine, the CLI and the
shrink/enlarge tools only call :func:`build_model`; nothing switches on names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from sparseopt.models._utils import check_shape
from sparseopt.models.cnn import ConvNet, CurveCNN, LeNet5, TinyNet
from sparseopt.models.mlp import MLP
from sparseopt.models.nooverlap import NoOverlapCNN
from sparseopt.models.resnet import ResNet
from sparseopt.models.transformer import RowTransformer
from sparseopt.models.vgg import VGG

__all__ = ["ModelSpec", "build_model", "get_model_spec", "list_models"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture.

    Attributes:
        name: registry name passed to :func:`build_model`.
        builder: ``builder(input_shape, num_classes, **options) -> nn.Module``.
        description: one line: what it is and where it comes from.
        input_shape: the natural per-sample input shape (as in the paper).
        num_classes: the natural number of outputs (``None``: a scalar regression output).
    """

    name: str
    builder: Callable[..., nn.Module]
    description: str
    input_shape: tuple[int, ...]
    num_classes: int | None

    def options(self) -> list[str]:
        """Names of the keyword options the builder accepts."""
        params = list(inspect.signature(self.builder).parameters.values())[2:]
        return [p.name for p in params]


_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec("mlp", MLP, "784-200-80-10 MLP (Bungert et al., JMLR 2022, MNIST)", (1, 28, 28), 10),
    ModelSpec(
        "lenet5", LeNet5, "LeNet-5 with ReLU and max pooling (S²-LBI / DessiLBI)", (1, 28, 28), 10
    ),
    ModelSpec(
        "convnet",
        ConvNet,
        "2-conv 3-FC Fashion-MNIST CNN (Bungert et al., JMLR 2022)",
        (1, 28, 28),
        10,
    ),
    ModelSpec("tiny", TinyNet, "1.5K-parameter net: 5-filter conv + FC (S²-LBI)", (1, 28, 28), 10),
    ModelSpec(
        "curvecnn",
        CurveCNN,
        "3 conv + max-pool stages and one FC layer (Xue & Xin, curve classification)",
        (1, 64, 64),
        2,
    ),
    ModelSpec("resnet18", ResNet, "CIFAR ResNet-18 (BasicBlocks [2, 2, 2, 2])", (3, 32, 32), 10),
    ModelSpec("vgg16", VGG, "CIFAR VGG-16 with batch norm, Linear(512, classes)", (3, 32, 32), 10),
    ModelSpec(
        "nooverlap",
        NoOverlapCNN,
        "no-overlap one-filter CNN, (1/r)·Σ ReLU(w·x_j) (Dinh & Xin, teacher–student)",
        (64,),
        None,
    ),
    ModelSpec(
        "transformer",
        RowTransformer,
        "transformer encoder over image rows (tokens), 2 layers × 4 heads (coupled groups)",
        (1, 8, 8),
        10,
    ),
)

_REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}


def list_models() -> list[str]:
    """Names of the registered architectures, sorted.

    Example:
        >>> list_models()
        ['convnet', 'curvecnn', 'lenet5', 'mlp', 'nooverlap', 'resnet18', 'tiny', 'transformer', 'vgg16']
    """
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered under ``name``.

    Raises:
        ValueError: for an unknown name; the message lists the valid names.

    Example:
        >>> get_model_spec("resnet18").input_shape
        (3, 32, 32)
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown model name: {name!r}; valid names are {list_models()}") from None


def build_model(
    name: str, input_shape: Sequence[int], num_classes: int | None, **options: Any
) -> nn.Module:
    """Build the architecture ``name`` for per-sample inputs of ``input_shape``.

    Args:
        name: one of :func:`list_models`.
        input_shape: per-sample shape, ``(C, H, W)`` for images, ``(D,)`` for vectors.
        num_classes: number of outputs; ``None`` (or 1) for ``nooverlap``, whose
            output is one scalar per sample.
        **options: architecture options (e.g. ``hidden=(200, 80)`` for ``mlp``,
            ``k=4`` for ``nooverlap``); see each model's class docstring.

    Returns:
        A freshly initialised ``nn.Module`` (float32, CPU, training mode) with an
        ``input_shape`` attribute.

    Raises:
        ValueError: for an unknown name, an input shape the model cannot take,
            or an invalid option value; the message names the value.
        TypeError: for an option the model does not have.

    Example:
        >>> import torch
        >>> model = build_model("mlp", (1, 28, 28), 10, hidden=(32,))
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    spec = get_model_spec(name)
    shape = check_shape(input_shape)
    valid = spec.options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(
            f"Unknown option(s) {unknown} for model {name!r}; valid options are {valid}"
        )
    return spec.builder(shape, num_classes, **options)
