"""Sparsity-promoting optimizers (one module per method) and their shared base class."""

from sparseopt.optim._base import SparseOptimizer, resize_parameter_, resized_state

__all__ = ["SparseOptimizer", "resize_parameter_", "resized_state"]
