"""sparseopt: sparsity-promoting optimizers and tools for parsimonious neural networks.

The public names (see ``DESIGN.md`` §4)::

    import sparseopt as so
    so.LinBreg, so.AdaBreg, so.SplitLBI, so.RDA, so.RVSM, so.ProxSGD
    so.penalties, so.create_optimizer, so.list_optimizers
    so.param_groups, so.sparse_init_, so.density
    so.train, so.TrainConfig      # the training engine behind `sparseopt train`
"""

from __future__ import annotations

from typing import Any

from sparseopt import groups, penalties
from sparseopt._version import __version__
from sparseopt.groups import param_groups
from sparseopt.init import sparse_init_
from sparseopt.metrics import density
from sparseopt.optim.registry import create_optimizer, get_optimizer_info, list_optimizers

_OPTIMIZER_CLASSES = {
    "LinBreg": "linbreg",
    "AdaBreg": "adabreg",
    "SplitLBI": "splitlbi",
    "RDA": "rda",
    "RVSM": "rvsm",
    "ProxSGD": "proxsgd",
}

__all__ = [
    "AdaBreg",
    "LinBreg",
    "ProxSGD",
    "RDA",
    "RVSM",
    "SplitLBI",
    "TrainConfig",
    "__version__",
    "create_optimizer",
    "density",
    "get_optimizer_info",
    "groups",
    "list_optimizers",
    "param_groups",
    "penalties",
    "sparse_init_",
    "train",
]


def __getattr__(name: str) -> Any:
    # Optimizer classes and the training engine load on first use, so `import sparseopt`
    # stays light.
    if name in _OPTIMIZER_CLASSES:
        return get_optimizer_info(_OPTIMIZER_CLASSES[name]).cls
    if name in ("train", "TrainConfig"):
        from sparseopt import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'sparseopt' has no attribute {name!r}")
