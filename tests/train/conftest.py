"""Fixtures shared by the training-side tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny problems gain nothing from thread pools (torch, BLAS); on a busy 2-core machine
    OpenMP spin-waiting makes multi-threaded torch many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)
