"""Reference architectures of the sparse-training papers, behind one factory.

``build_model(name, input_shape, num_classes, **options)`` builds any of
:func:`list_models`:

============ =============================================== ==================
name         architecture                                     natural input
============ =============================================== ==================
``mlp``      784-200-80-10 MLP (Bungert et al., JMLR 2022)    1×28×28, 173,890 p.
``lenet5``   LeNet-5, ReLU + max-pool (S²-LBI / DessiLBI)     1×28×28, 61,706 p.
``convnet``  Fashion-MNIST CNN (Bungert et al., JMLR 2022)    1×28×28, 1,286,218 p.
``tiny``     5-filter conv + FC, "1.5K" (S²-LBI)              1×28×28, 1,510 p.
``curvecnn`` 3 conv/pool + FC (Xue & Xin, WCGO 2019)          1×64×64, 2 classes
``resnet18`` CIFAR ResNet-18                                  3×32×32, 11,173,962 p.
``vgg16``    CIFAR VGG-16-BN, Linear(512, classes)            3×32×32, 14,728,266 p.
``nooverlap`` (1/r) Σ ReLU(w·x_j) (Dinh & Xin, arXiv 1812.05719) (D,), output (N,)
``transformer`` 2-layer encoder, image rows as tokens              1×8×8, 17,962 p.
============ =============================================== ==================

(parameter counts with 10 classes). Every model adapts to the input's channel
count and size, is built from standard modules only (Conv, Linear, BatchNorm,
non-in-place ReLU modules, MaxPool, Flatten, adaptive average pooling), is
traceable with ``torch.fx.symbolic_trace`` and Torch-Pruning, and keeps the
per-sample shape it was built for as ``input_shape``
(:class:`~sparseopt.models._utils.InputShaped`). The CNNs other
than ResNet are ``nn.Sequential`` with ``features`` and ``classifier``
``nn.Sequential`` children; ``mlp`` and ``nooverlap`` are flat
``nn.Sequential``.

Example:
    >>> import torch
    >>> from sparseopt.models import build_model
    >>> model = build_model("lenet5", (1, 28, 28), 10)
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from sparseopt.models.cnn import ConvNet, CurveCNN, LeNet5, TinyNet
from sparseopt.models.mlp import MLP
from sparseopt.models.nooverlap import NoOverlapCNN
from sparseopt.models.registry import ModelSpec, build_model, get_model_spec, list_models
from sparseopt.models.resnet import BasicBlock, ResNet
from sparseopt.models.transformer import RowTransformer
from sparseopt.models.vgg import VGG

__all__ = [
    "MLP",
    "VGG",
    "BasicBlock",
    "ConvNet",
    "CurveCNN",
    "LeNet5",
    "ModelSpec",
    "NoOverlapCNN",
    "ResNet",
    "RowTransformer",
    "TinyNet",
    "build_model",
    "get_model_spec",
    "list_models",
]
