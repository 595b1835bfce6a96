"""No-overlap one-hidden-layer CNN for the teacher–student regression.

Dinh & Xin, "Convergence of a Relaxed Variable Splitting Method for Learning
Sparse Neural Networks via ℓ1, ℓ0, and transformed-ℓ1 Penalties",
arXiv 1812.05719 (after Brutzkus & Globerson, ICML 2017, arXiv 1702.07966):
an input ``x ∈ R^{r·k}`` is cut into ``r`` disjoint patches ``x_1..x_r ∈ R^k``
and the network outputs

    f(x; w) = (1/r) Σ_j ReLU(w · x_j)

with one shared filter ``w ∈ R^k`` and no bias. The teacher is the same net
with a fixed (sparse) ``w*``; RVSM recovers ``w*`` from samples.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from sparseopt.models._utils import InputShaped, check_positive_int, check_shape

__all__ = ["NoOverlapCNN"]


class NoOverlapCNN(nn.Sequential, InputShaped):
    """``f(x) = (1/r) Σ_j ReLU(w · x_j)`` over ``r`` disjoint patches of size ``k``.

    Built from standard modules, in order: ``unflatten`` (``(N, D) → (N, 1, D)``),
    ``conv`` (``Conv1d(1, 1, kernel_size=k, stride=k, bias=False)``: its weight,
    shape ``(1, 1, k)``, is the filter ``w``), ``relu``, ``pool``
    (``AdaptiveAvgPool1d(1)``: the mean over the ``r`` positions) and
    ``flatten`` (``Flatten(0)``: ``(N, 1, 1) → (N,)``). The output has shape
    ``(N,)``: one regression value per sample.

    Give ``k`` (patch size) or ``r`` (number of patches); the other one is
    inferred from ``D = input_shape[0]``. ``num_classes`` plays no role: pass
    ``None`` or ``1``.

    Args:
        input_shape: ``(D,)`` with ``D = r·k``.
        num_classes: ``None`` or ``1`` (the output is a scalar per sample).
        k: patch (filter) size; must divide ``D``.
        r: number of patches; must divide ``D`` (and equal ``D / k`` if both are given).

    Attributes:
        k: patch size.
        r: number of patches.

    Raises:
        ValueError: if ``D`` is not divisible by ``k`` (or ``r``), neither is
            given, the shape is not ``(D,)``, or ``num_classes`` is not ``None``/``1``.

    Example:
        >>> import torch
        >>> model = NoOverlapCNN((12,), None, k=4)
        >>> model.r
        3
        >>> model(torch.zeros(2, 12)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int | None = None,
        k: int | None = None,
        r: int | None = None,
    ) -> None:
        shape = check_shape(input_shape)
        if len(shape) != 1:
            raise ValueError(
                f"Invalid input_shape for nooverlap: {shape!r}; expected a vector shape (D,)"
            )
        if num_classes is not None and num_classes != 1:
            raise ValueError(
                f"Invalid num_classes value for nooverlap: {num_classes!r}; "
                "the output is a scalar, pass None or 1"
            )
        (dim,) = shape
        if k is not None:
            k = check_positive_int("k", k)
            if dim % k != 0:
                raise ValueError(f"Invalid k value: {k} does not divide the input size D={dim}")
            if r is not None and r * k != dim:
                raise ValueError(f"Invalid r value: {r}; r·k must equal D={dim} with k={k}")
            r = dim // k
        elif r is not None:
            r = check_positive_int("r", r)
            if dim % r != 0:
                raise ValueError(f"Invalid r value: {r} does not divide the input size D={dim}")
            k = dim // r
        else:
            raise ValueError(
                "Invalid k value: None; nooverlap needs the patch size k (or the number of "
                f"patches r) dividing D={dim}"
            )
        super().__init__(
            OrderedDict(
                unflatten=nn.Unflatten(1, (1, dim)),
                conv=nn.Conv1d(1, 1, kernel_size=k, stride=k, bias=False),
                relu=nn.ReLU(inplace=False),
                pool=nn.AdaptiveAvgPool1d(1),
                flatten=nn.Flatten(0),
            )
        )
        self.input_shape = shape
        self.k = k
        self.r = r
