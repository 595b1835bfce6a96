"""VGG-16 with batch norm, CIFAR variant.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015, arXiv 1409.1556, in the CIFAR form used by the
sparse-training papers (Fu et al., DessiLBI, ICML 2020, arXiv 2007.02010;
He et al., Comput. Optim. Appl. 77 (2020), arXiv 1807.04222) and by the
common reference implementation github.com/kuangliu/pytorch-cifar: 3×3 convs
(with bias) each followed by BatchNorm and ReLU, five 2×2 max pools, and a
single ``Linear(512, classes)`` classifier — no 4096-wide FC layers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from sparseopt.models._utils import InputShaped, check_image_args, classifier_layers

__all__ = ["VGG", "VGG16_CFG"]

#: VGG-16 layer configuration: an int is a 3×3 conv with that many filters, ``"M"`` a max pool.
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


class VGG(nn.Sequential, InputShaped):
    """VGG-16-BN for CIFAR: ``features`` (13 conv-BN-ReLU, 5 max pools) and ``classifier``.

    ``classifier`` is ``Flatten → Linear(F, classes)`` with ``F`` the flattened
    feature size, which is 512 on 32×32 inputs (the common CIFAR variant).
    Adapting to the input size: a pool is left out when the map is already
    smaller than 2×2 in either dimension (so 8×8 inputs keep three pools and end
    at 1×1); on inputs larger than 32×32 the final map is larger than 1×1 and
    ``F = 512·H'·W'``.

    On 3×32×32 with 10 classes the model has **14,728,266** parameters.

    Args:
        input_shape: ``(C, H, W)``.
        num_classes: number of outputs.
        batch_norm: put a BatchNorm2d after each conv (default, "VGG-16-BN").
        cfg: layer configuration (default :data:`VGG16_CFG`): an int is a 3×3 conv
            with that many filters, ``"M"`` a 2×2 max pool; other configurations
            give VGG-11/13/19 or narrow VGGs.

    Example:
        A narrow four-stage VGG without batch norm on 8×8 inputs: the fourth pool
        would shrink the 1×1 map, so it is left out:

        >>> narrow = VGG((3, 8, 8), 10, batch_norm=False, cfg=(8, "M", 8, "M", 16, "M", 16, "M"))
        >>> [name for name, _ in narrow.features.named_children() if name.startswith("pool")]
        ['pool1', 'pool2', 'pool3']
        >>> narrow.classifier.fc1
        Linear(in_features=16, out_features=10, bias=True)
    """

    features: nn.Sequential
    classifier: nn.Sequential

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        batch_norm: bool = True,
        cfg: Sequence[int | str] = VGG16_CFG,
    ) -> None:
        (c, h, w), num_classes = check_image_args(input_shape, num_classes, "vgg16")
        if not isinstance(batch_norm, bool):
            raise ValueError(f"Invalid batch_norm value: {batch_norm!r}; expected a bool")
        valid = isinstance(cfg, Sequence) and not isinstance(cfg, str) and len(cfg) > 0
        valid = valid and all(
            v == "M" or (isinstance(v, int) and not isinstance(v, bool) and v > 0) for v in cfg
        )
        if not valid or not any(isinstance(v, int) for v in cfg):
            raise ValueError(
                f"Invalid cfg value: {cfg!r}; expected a sequence of positive ints and 'M'"
            )
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_ch, mh, mw = c, h, w
        n_conv = n_pool = 0
        for item in cfg:
            if item == "M":
                n_pool += 1
                if min(mh, mw) >= 2:
                    layers[f"pool{n_pool}"] = nn.MaxPool2d(2, 2)
                    mh, mw = mh // 2, mw // 2
                continue
            assert isinstance(item, int)
            n_conv += 1
            layers[f"conv{n_conv}"] = nn.Conv2d(in_ch, item, kernel_size=3, padding=1)
            if batch_norm:
                layers[f"bn{n_conv}"] = nn.BatchNorm2d(item)
            layers[f"relu{n_conv}"] = nn.ReLU(inplace=False)
            in_ch = item
        classifier = nn.Sequential(classifier_layers(in_ch * mh * mw, (), num_classes))
        super().__init__(OrderedDict(features=nn.Sequential(layers), classifier=classifier))
        self.input_shape = (c, h, w)
