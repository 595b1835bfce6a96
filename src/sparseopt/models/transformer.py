"""A small transformer encoder classifier that reads an image row by row.

Each of the ``H`` rows of a ``(C, H, W)`` image is one token of ``C·W`` features
(digits 8×8: 8 tokens of 8; Fashion-MNIST: 28 tokens of 28), linearly embedded, plus a
learned position embedding; ``layers`` ``nn.TransformerEncoderLayer`` (post-norm,
ReLU, no dropout) follow, then mean pooling over the tokens and a linear head. Its
attention heads and MLP neurons are the coupled groups of :mod:`sparseopt.coupled`
(``sparseopt train --coupled head,neuron``; docs/transformers.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import torch
from torch import Tensor, nn

from sparseopt.models._utils import (
    InputShaped,
    check_num_classes,
    check_positive_ints,
    check_shape,
)

__all__ = ["RowTransformer"]


class RowTransformer(nn.Module, InputShaped):
    """Transformer encoder over the rows of an image (or the entries of a vector).

    Args:
        input_shape: ``(C, H, W)`` (``H`` tokens of ``C·W`` features), ``(H, W)``, or
            ``(D,)`` (``D`` tokens of one feature).
        num_classes: number of outputs.
        d_model: token width.
        heads: attention heads per layer (divides ``d_model``).
        layers: number of encoder layers.
        ffn: hidden width of each layer's MLP (its neurons).

    The layers are an ``nn.ModuleList`` named ``layers`` (not ``nn.TransformerEncoder``,
    whose fused inference path reads ``in_proj_weight`` of an attention module that
    :func:`sparseopt.prune.heads.shrink_coupled` replaces).

    Example:
        A 1×28×28 image is 28 tokens of 28 features; a vector ``(D,)`` is ``D``
        tokens of one feature:

        >>> fashion = RowTransformer((1, 28, 28), 10)
        >>> fashion.tokens, fashion.features, len(fashion.layers)
        (28, 28, 2)
        >>> RowTransformer((12,), 3, d_model=8, heads=2, layers=1).tokens
        12
        >>> RowTransformer((1, 8, 8), 10)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        d_model: int = 32,
        heads: int = 4,
        layers: int = 2,
        ffn: int = 64,
    ) -> None:
        super().__init__()
        shape = check_shape(input_shape)
        num_classes = check_num_classes(num_classes)
        sizes = {"d_model": d_model, "heads": heads, "layers": layers, "ffn": ffn}
        for name, value in sizes.items():
            check_positive_ints(name, (value,))
        depth = layers
        if d_model % heads:
            raise ValueError(f"Invalid heads value: {heads!r}; it must divide d_model ({d_model})")
        tokens = shape[-2] if len(shape) >= 2 else shape[0]
        features = prod(shape) // tokens
        self.input_shape = shape
        self.tokens, self.features = tokens, features
        self.embed = nn.Linear(features, d_model)
        self.pos = nn.Parameter(torch.zeros(tokens, d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model, heads, dim_feedforward=ffn, dropout=0.0, batch_first=True
            )
            for _ in range(depth)
        )
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` of inputs ``(N, *input_shape)``."""
        n = x.shape[0]
        if x.ndim == 4:  # (N, C, H, W) -> (N, H, C·W)
            x = x.permute(0, 2, 1, 3)
        h = self.embed(x.reshape(n, self.tokens, self.features)) + self.pos
        for layer in self.layers:
            h = layer(h)
        return self.head(h.mean(dim=1))
