"""Shared test settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Run every test with one intra-op thread, restoring the setting afterwards.

    The tensors in the tests are small: extra threads only add overhead and
    oversubscribe a shared 2-core machine. Tests that need threads set them.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
