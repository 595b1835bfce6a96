"""ResNet-18, CIFAR variant.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
arXiv 1512.03385, in the CIFAR form used by the sparse-training papers
(Bungert et al., JMLR 2022, arXiv 2105.04319; Fu et al., DessiLBI, ICML 2020,
arXiv 2007.02010; the common reference implementation is
github.com/kuangliu/pytorch-cifar): a 3×3 stride-1 stem with no max pooling,
BasicBlocks ``[2, 2, 2, 2]`` with 64/128/256/512 channels, global average
pooling and one FC layer.

Every ReLU is its own non-in-place ``nn.ReLU`` module (two per block), the
residual sum is an out-of-place ``+`` and identity shortcuts are
``nn.Identity``, so ``torch.fx`` and Torch-Pruning's dependency graph see the
whole structure.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from sparseopt.models._utils import InputShaped, check_image_args, check_positive_ints

__all__ = ["BasicBlock", "ResNet"]


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with a shortcut: ``relu2(bn2(conv2(relu1(bn1(conv1(x))))) + s(x))``.

    The shortcut ``s`` is ``nn.Identity`` when shape is preserved, otherwise a
    1×1 strided conv with batch norm (He et al.'s option B).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first conv (and of the projection shortcut).

    Example:
        >>> import torch
        >>> BasicBlock(16, 32, stride=2)(torch.zeros(2, 16, 8, 8)).shape
        torch.Size([2, 32, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.relu2(out)


class ResNet(nn.Module, InputShaped):
    """CIFAR ResNet built from :class:`BasicBlock`; ``ResNet(shape, classes)`` is ResNet-18.

    ``conv1 (3×3, stride 1) → bn1 → relu → layer1..layer4 → avgpool (adaptive,
    1×1) → flatten → fc``. Stage ``i > 1`` starts with a stride-2 block. The
    adaptive pooling makes any ``H, W >= 1`` and any channel count work.

    On 3×32×32 with 10 classes ResNet-18 has **11,173,962** parameters:
    stem 1,856; layer1 147,968; layer2 525,568; layer3 2,099,712;
    layer4 8,393,728; fc 5,130.

    Args:
        input_shape: ``(C, H, W)``.
        num_classes: number of outputs.
        blocks: number of BasicBlocks per stage (``(2, 2, 2, 2)`` = ResNet-18).
        widths: channels per stage.

    Example:
        A two-stage, one-block-per-stage ResNet on odd-sized single-channel inputs:

        >>> import torch
        >>> small = ResNet((1, 7, 9), 5, blocks=(1, 1), widths=(4, 8))
        >>> small(torch.zeros(3, 1, 7, 9)).shape
        torch.Size([3, 5])
        >>> small.num_stages, type(small.layer1[0].shortcut).__name__
        (2, 'Identity')
        >>> small.layer2[0].conv1.stride  # stage 2 starts with a stride-2 block
        (2, 2)
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        blocks: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        (c, h, w), num_classes = check_image_args(input_shape, num_classes, "resnet18")
        blocks = check_positive_ints("blocks", blocks)
        widths = check_positive_ints("widths", widths, length=len(blocks))
        self.input_shape = (c, h, w)
        self.conv1 = nn.Conv2d(c, widths[0], 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=False)
        in_ch = widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths, strict=True), start=1):
            stride = 1 if i == 1 else 2
            stage = [BasicBlock(in_ch, width, stride)]
            stage += [BasicBlock(width, width, 1) for _ in range(n - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            in_ch = width
        self.num_stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(self.flatten(self.avgpool(x)))
