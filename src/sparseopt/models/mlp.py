"""Fully connected network: the MNIST MLP of Bungert et al.

Bungert, Roith, Tenbrinck, Burger, "A Bregman Learning Framework for Sparse
Neural Networks", JMLR 23 (2022), arXiv 2105.04319, §4 — the 784-200-80-10
perceptron trained with LinBreg / AdaBreg on MNIST (original code:
github.com/TimRoith/BregmanLearning).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from torch import nn

from sparseopt.models._utils import (
    InputShaped,
    check_num_classes,
    check_positive_ints,
    check_shape,
    classifier_layers,
)

__all__ = ["MLP"]


class MLP(nn.Sequential, InputShaped):
    """Multilayer perceptron ``Flatten → (Linear → ReLU)* → Linear``.

    With the default ``hidden=(200, 80)`` on a 28×28 input this is the
    784-200-80-10 net of Bungert et al., with
    784·200+200 + 200·80+80 + 80·10+10 = **173,890** parameters.

    The model is a flat :class:`torch.nn.Sequential` with named children
    ``flatten, fc1, relu1, fc2, relu2, ..., fc{n}`` (integer indexing works
    too), so sequential-net tools can walk it.

    Args:
        input_shape: per-sample shape; any shape, flattened to ``D = prod(input_shape)``.
        num_classes: number of outputs.
        hidden: widths of the hidden layers (may be empty: multinomial logistic regression).

    Example:
        With no hidden layer it is multinomial logistic regression on any input shape:

        >>> import torch
        >>> logistic = MLP((3, 4, 4), 5, hidden=())
        >>> logistic(torch.zeros(2, 3, 4, 4)).shape
        torch.Size([2, 5])
        >>> logistic
        MLP(
          (flatten): Flatten(start_dim=1, end_dim=-1)
          (fc1): Linear(in_features=48, out_features=5, bias=True)
        )
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (200, 80),
    ) -> None:
        shape = check_shape(input_shape)
        num_classes = check_num_classes(num_classes)
        widths = check_positive_ints("hidden", hidden, allow_empty=True)
        super().__init__(classifier_layers(prod(shape), widths, num_classes))
        self.input_shape = shape
