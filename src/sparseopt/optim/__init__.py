"""Sparsity-promoting optimizers (one module per method)."""
