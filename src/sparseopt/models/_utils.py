"""Shared validation and shape helpers for the reference architectures.

Every model validates its ``input_shape``, ``num_classes`` and options here so
that an invalid value raises :class:`ValueError` naming that value, and computes
the flattened feature size of its convolutional body with one dry forward pass
on a zero tensor (under :func:`torch.no_grad`, in eval mode, so batch-norm
running statistics are untouched).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = [
    "InputShaped",
    "check_image_args",
    "check_image_shape",
    "check_num_classes",
    "check_positive_int",
    "check_positive_ints",
    "check_shape",
    "classifier_layers",
    "conv_out",
    "flat_features",
]


class InputShaped:
    """Mixin of every reference architecture: the input shape it was built for.

    Attributes:
        input_shape: the per-sample input shape the model was built for, as
            validated by :func:`check_shape` (``(C, H, W)`` for the image models).
    """

    input_shape: tuple[int, ...]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_shape(input_shape: object) -> tuple[int, ...]:
    """Return ``input_shape`` as a tuple of positive ints (accepts lists and ``torch.Size``).

    Raises:
        ValueError: if it is not a non-empty sequence of positive integers.
    """
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Iterable):
        raise ValueError(f"Invalid input_shape: {input_shape!r}; expected a tuple of ints")
    shape = tuple(input_shape)
    if len(shape) == 0 or not all(_is_int(s) and s > 0 for s in shape):
        raise ValueError(
            f"Invalid input_shape: {input_shape!r}; expected a non-empty tuple of positive ints"
        )
    return shape


def check_image_shape(input_shape: object, model: str) -> tuple[int, int, int]:
    """Return ``(C, H, W)`` for an image model, or raise :class:`ValueError`."""
    shape = check_shape(input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"Invalid input_shape for {model}: {tuple(shape)!r}; expected an image shape (C, H, W)"
        )
    c, h, w = shape
    return c, h, w


def check_image_args(
    input_shape: object, num_classes: object, model: str
) -> tuple[tuple[int, int, int], int]:
    """The two arguments every image model takes, checked: ``((C, H, W), num_classes)``.

    Raises:
        ValueError: from :func:`check_image_shape`, then :func:`check_num_classes`.
    """
    return check_image_shape(input_shape, model), check_num_classes(num_classes)


def check_num_classes(num_classes: object) -> int:
    """Return ``num_classes`` if it is a positive int, else raise :class:`ValueError`."""
    if not _is_int(num_classes) or num_classes < 1:  # type: ignore[operator]
        raise ValueError(f"Invalid num_classes value: {num_classes!r}; expected a positive int")
    return int(num_classes)  # type: ignore[arg-type]


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` if it is an int ``>= minimum``, else raise :class:`ValueError`."""
    if not _is_int(value) or value < minimum:  # type: ignore[operator]
        raise ValueError(f"Invalid {name} value: {value!r}; expected an int >= {minimum}")
    return int(value)  # type: ignore[arg-type]


def check_positive_ints(
    name: str, values: object, length: int | None = None, allow_empty: bool = False
) -> tuple[int, ...]:
    """Return ``values`` as a tuple of positive ints, else raise :class:`ValueError`.

    Args:
        name: option name, used in the error message.
        values: a sequence of ints.
        length: required length, if any.
        allow_empty: whether an empty sequence is valid.
    """
    ok = isinstance(values, Sequence) and not isinstance(values, (str, bytes))
    if ok:
        vals = tuple(values)  # type: ignore[arg-type]
        ok = all(_is_int(v) and v > 0 for v in vals)
        ok = ok and (length is None or len(vals) == length)
        ok = ok and (allow_empty or len(vals) > 0)
    if not ok:
        need = f"{length} " if length is not None else ""
        raise ValueError(
            f"Invalid {name} value: {values!r}; expected a tuple of {need}positive ints"
        )
    return vals


def classifier_layers(
    in_features: int, hidden: Sequence[int], num_classes: int
) -> OrderedDict[str, nn.Module]:
    """``Flatten → (Linear → ReLU)* → Linear`` as named layers ``flatten, fc1, relu1, ...``."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    for i, width in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(in_features, width)
        layers[f"relu{i}"] = nn.ReLU(inplace=False)
        in_features = width
    layers[f"fc{len(hidden) + 1}"] = nn.Linear(in_features, num_classes)
    return layers


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution or pooling along one dimension (floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


@torch.no_grad()
def flat_features(body: nn.Module, input_shape: tuple[int, ...], model: str) -> int:
    """Number of features per sample after ``body``, from a dry forward on zeros.

    The body runs in eval mode (restored afterwards) on a batch of one zero
    sample, so it works with batch norm and leaves its running statistics alone.

    Raises:
        ValueError: if the body cannot take ``input_shape`` (e.g. the feature map
            shrinks below 1×1).
    """
    was_training = body.training
    body.eval()
    try:
        param = next(body.parameters(), None)
        kwargs = {} if param is None else {"dtype": param.dtype, "device": param.device}
        out = body(torch.zeros(1, *input_shape, **kwargs))
    except RuntimeError as err:
        raise ValueError(
            f"Invalid input_shape for {model}: {tuple(input_shape)!r} is too small ({err})"
        ) from None
    finally:
        body.train(was_training)
    if out.numel() == 0:
        raise ValueError(f"Invalid input_shape for {model}: {tuple(input_shape)!r} is too small")
    return math.prod(out.shape[1:])
