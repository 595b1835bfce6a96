"""Small convolutional networks from the sparse-training papers.

* :class:`LeNet5` — LeNet-5 (LeCun et al. 1998) as used, with ReLU and max
  pooling, in the S²-LBI / DessiLBI experiments: Fu et al., "S²-LBI: Stochastic
  Split Linearized Bregman Iterations for Parsimonious Deep Learning",
  arXiv 1904.10873; Fu et al., "DessiLBI", ICML 2020, arXiv 2007.02010
  (original code: github.com/DessiLBI2020/DessiLBI).
* :class:`ConvNet` — the Fashion-MNIST CNN of Bungert, Roith, Tenbrinck,
  Burger, "A Bregman Learning Framework for Sparse Neural Networks",
  JMLR 23 (2022), arXiv 2105.04319 (code: github.com/TimRoith/BregmanLearning).
* :class:`TinyNet` — the "1.5K-parameter" net (one convolutional layer of 5
  filters and one FC layer) that S²-LBI enlarges on MNIST (arXiv 1904.10873).
* :class:`CurveCNN` — the curve-classification CNN of Xue & Xin, "Learning
  Sparse Neural Networks via ℓ0 and Tℓ1 by a Relaxed Variable Splitting Method
  with Application to Multi-scale Curve Classification", WCGO 2019,
  arXiv 1902.07419: three convolutional layers, each followed by max pooling,
  and one FC layer.

Each model is an :class:`torch.nn.Sequential` with two children,
``features`` (the convolutional body) and ``classifier`` (``Flatten`` and the
``Linear`` layers), both plain ``nn.Sequential`` of standard modules with a
separate, non-in-place ``ReLU`` module per use, so that ``torch.fx``,
Torch-Pruning's dependency graph and sequential-net enlarging tools can walk
them. The flattened feature size is computed by a dry forward on zeros, so the
models adapt to the input's channel count and spatial size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from sparseopt.models._utils import (
    InputShaped,
    check_image_args,
    check_positive_int,
    check_positive_ints,
    classifier_layers,
    conv_out,
    flat_features,
)

__all__ = ["ConvNet", "CurveCNN", "LeNet5", "TinyNet"]


def _check_padding(padding: int | None) -> int | None:
    if padding is None:
        return None
    return check_positive_int("padding", padding, minimum=0)


def _conv5_pool2_features(
    in_channels: int, channels: Sequence[int], paddings: Sequence[int]
) -> nn.Sequential:
    """``(conv c@5×5 → ReLU → max-pool 2)*`` with named children ``conv1, relu1, pool1, ...``."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (width, padding) in enumerate(zip(channels, paddings, strict=True), start=1):
        layers[f"conv{i}"] = nn.Conv2d(in_channels, width, kernel_size=5, padding=padding)
        layers[f"relu{i}"] = nn.ReLU(inplace=False)
        layers[f"pool{i}"] = nn.MaxPool2d(2, 2)
        in_channels = width
    return nn.Sequential(layers)


class _FeaturesClassifier(nn.Sequential, InputShaped):
    """An ``nn.Sequential`` of two named children, ``features`` and ``classifier``."""

    features: nn.Sequential
    classifier: nn.Sequential

    def __init__(
        self,
        features: nn.Sequential,
        input_shape: tuple[int, int, int],
        hidden: Sequence[int],
        num_classes: int,
    ) -> None:
        in_features = flat_features(features, input_shape, type(self).__name__)
        super().__init__(
            OrderedDict(
                features=features,
                classifier=nn.Sequential(classifier_layers(in_features, hidden, num_classes)),
            )
        )
        self.input_shape = input_shape


class LeNet5(_FeaturesClassifier):
    """LeNet-5 with ReLU and max pooling (the S²-LBI / DessiLBI variant).

    ``conv 6@5×5 → ReLU → max-pool 2 → conv 16@5×5 → ReLU → max-pool 2 →
    flatten → fc 120 → ReLU → fc 84 → ReLU → fc classes``.

    Padding rule (``padding=None``): the first conv has padding 2 when
    ``min(H, W) < 32`` (so a 28×28 MNIST image gets the classic 32×32 layout) and
    0 otherwise; the second conv has padding 0 when its input map is at least
    10×10 and 2 ("same") otherwise, so small inputs such as 8×8 digits work.
    An int ``padding`` is used for both convolutions.

    On 1×28×28 (and on 1×32×32) with 10 classes the flattened size is
    16·5·5 = 400 and the model has **61,706** parameters:
    156 + 2,416 (convs) + 48,120 + 10,164 + 850 (fcs).

    Args:
        input_shape: ``(C, H, W)``; ``H, W >= 4`` with the automatic padding.
        num_classes: number of outputs.
        padding: ``None`` for the rule above, or an int used by both convs.

    Example:
        An 8×8 digit keeps a 4×4 map for the second conv, which therefore pads:

        >>> import torch
        >>> digits = LeNet5((1, 8, 8), 10)
        >>> digits.features.conv1.padding, digits.features.conv2.padding
        ((2, 2), (2, 2))
        >>> digits.classifier.fc1.in_features  # 16·2·2
        64
        >>> digits(torch.zeros(2, 1, 8, 8)).argmax(dim=1).shape
        torch.Size([2])
    """

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, padding: int | None = None
    ) -> None:
        (c, h, w), num_classes = check_image_args(input_shape, num_classes, "lenet5")
        padding = _check_padding(padding)
        if padding is None:
            pad1 = 0 if min(h, w) >= 32 else 2
            pooled = conv_out(conv_out(min(h, w), 5, 1, pad1), 2, 2)
            pad2 = 0 if pooled >= 10 else 2
        else:
            pad1 = pad2 = padding
        features = _conv5_pool2_features(c, (6, 16), (pad1, pad2))
        super().__init__(features, (c, h, w), (120, 84), num_classes)


class ConvNet(_FeaturesClassifier):
    """Bungert et al.'s Fashion-MNIST CNN.

    ``conv 64@5×5 → ReLU → max-pool 2 → conv 64@5×5 → ReLU → max-pool 2 →
    flatten → fc 1024 → ReLU → fc 128 → ReLU → fc classes``.

    Padding rule (``padding=None``): both convolutions use padding 0 when
    ``min(H, W) >= 16`` (the paper's layout; the valid convolutions still leave a
    map of at least 1×1) and padding 2 ("same") otherwise, so 8×8 digits give a
    2×2 final map. An int ``padding`` overrides the rule.

    On 1×28×28 with 10 classes the flattened size is 64·4·4 = 1024 and the
    model has **1,286,218** parameters: 1,664 + 102,464 (convs) +
    1,049,600 + 131,200 + 1,290 (fcs).

    Args:
        input_shape: ``(C, H, W)``; ``H, W >= 4`` with the automatic padding.
        num_classes: number of outputs.
        channels: filters of the two convolutions.
        hidden: widths of the hidden FC layers.
        padding: ``None`` for the rule above, or an int used by both convs.

    Example:
        A narrow variant for 3×8×8 inputs ("same" padding, one hidden FC layer):

        >>> narrow = ConvNet((3, 8, 8), 5, channels=(4, 8), hidden=(16,))
        >>> narrow.features.conv2
        Conv2d(4, 8, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))
        >>> [layer.out_features for layer in narrow.classifier if isinstance(layer, nn.Linear)]
        [16, 5]
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (64, 64),
        hidden: Sequence[int] = (1024, 128),
        padding: int | None = None,
    ) -> None:
        (c, h, w), num_classes = check_image_args(input_shape, num_classes, "convnet")
        c1, c2 = check_positive_ints("channels", channels, length=2)
        hidden = check_positive_ints("hidden", hidden, allow_empty=True)
        padding = _check_padding(padding)
        if padding is None:
            padding = 0 if min(h, w) >= 16 else 2
        features = _conv5_pool2_features(c, (c1, c2), (padding, padding))
        super().__init__(features, (c, h, w), hidden, num_classes)


class TinyNet(_FeaturesClassifier):
    """The S²-LBI "1.5K-parameter" net: one conv layer of 5 filters and one FC layer.

    ``conv filters@k×k (stride 1, no padding) → ReLU → max-pool p → flatten →
    fc classes``. The paper gives only "1 convolutional layer of 5 filters and
    1 FC layer, 1.5K parameters"; our choice to reach that budget is a 7×7
    kernel and, by default, ``p = max(1, ⌊min(H', W')/5⌋)`` with ``H', W'`` the
    conv output size, which pools the map to about 5×5. On 1×28×28: 22×22 →
    max-pool 4 → 5×5, flattened size 5·5·5 = 125, and **1,510** parameters with
    10 classes: 250 (conv, 5·49 + 5) + 1,260 (fc, 125·10 + 10).

    Args:
        input_shape: ``(C, H, W)`` with ``H, W >= kernel_size``.
        num_classes: number of outputs.
        filters: number of conv filters.
        kernel_size: conv kernel size.
        pool: max-pool size and stride; ``None`` for the rule above.

    Example:
        The default pool brings MNIST's 22×22 conv map to 5×5, for the 1.5K budget:

        >>> tiny = TinyNet((1, 28, 28), 10)
        >>> tiny.features.pool1.kernel_size, tiny.classifier.fc1.in_features
        (4, 125)
        >>> sum(p.numel() for p in tiny.parameters())
        1510
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        filters: int = 5,
        kernel_size: int = 7,
        pool: int | None = None,
    ) -> None:
        (c, h, w), num_classes = check_image_args(input_shape, num_classes, "tiny")
        filters = check_positive_int("filters", filters)
        kernel_size = check_positive_int("kernel_size", kernel_size)
        if kernel_size > min(h, w):
            raise ValueError(
                f"Invalid kernel_size value: {kernel_size} is larger than the input {(c, h, w)!r}"
            )
        conv_map = conv_out(min(h, w), kernel_size)
        if pool is None:
            pool = max(1, conv_map // 5)
        pool = check_positive_int("pool", pool)
        if pool > conv_map:
            raise ValueError(
                f"Invalid pool value: {pool} is larger than the {conv_map}×{conv_map} conv map"
            )
        features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(c, filters, kernel_size=kernel_size),
                relu1=nn.ReLU(inplace=False),
                pool1=nn.MaxPool2d(pool, pool),
            )
        )
        super().__init__(features, (c, h, w), (), num_classes)


class CurveCNN(_FeaturesClassifier):
    """Xue & Xin's curve-classification CNN: three conv + max-pool stages and one FC layer.

    Each stage is ``conv c@k×k (padding k//2, "same") → ReLU → max-pool 2``; a
    pool is left out when the map is already smaller than 2 in either dimension,
    so tiny inputs work. Then ``flatten → fc classes``. The paper's widths are
    not fixed here: ``channels`` (default ``(16, 32, 64)``, our choice) sets
    them, and its length sets the number of stages.

    On 1×64×64 with 2 classes the map is 64·8·8 = 4096 features and the model
    has 31,490 parameters: 160 + 4,640 + 18,496 (convs) + 8,194 (fc).

    Args:
        input_shape: ``(C, H, W)``, e.g. ``(1, 64, 64)``.
        num_classes: number of outputs (2 for the curve data).
        channels: filters of each conv stage.
        kernel_size: odd conv kernel size.

    Example:
        On a 3×3 input only the first stage pools (to 1×1); the other two keep their map:

        >>> import torch
        >>> small = CurveCNN((1, 3, 3), 2, channels=(4, 4, 4))
        >>> small(torch.zeros(5, 1, 3, 3)).shape
        torch.Size([5, 2])
        >>> list(dict(small.features.named_children()))
        ['conv1', 'relu1', 'pool1', 'conv2', 'relu2', 'conv3', 'relu3']
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (16, 32, 64),
        kernel_size: int = 3,
    ) -> None:
        (c, h, w), num_classes = check_image_args(input_shape, num_classes, "curvecnn")
        widths = check_positive_ints("channels", channels)
        kernel_size = check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"Invalid kernel_size value: {kernel_size}; expected an odd int")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_ch, mh, mw = c, h, w
        for i, width in enumerate(widths, start=1):
            layers[f"conv{i}"] = nn.Conv2d(in_ch, width, kernel_size, padding=kernel_size // 2)
            layers[f"relu{i}"] = nn.ReLU(inplace=False)
            if min(mh, mw) >= 2:
                layers[f"pool{i}"] = nn.MaxPool2d(2, 2)
                mh, mw = mh // 2, mw // 2
            in_ch = width
        super().__init__(nn.Sequential(layers), (c, h, w), (), num_classes)
