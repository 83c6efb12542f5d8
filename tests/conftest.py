"""Shared test setup: quiet albumentations, few threads, deterministic seeds."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest
import torch

from tests.helpers import FIXTURES, threads

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread; OpenMP spinning on shared cores is very slow.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    with threads(1):
        yield


@pytest.fixture(scope="session")
def published_shapes() -> list[tuple[str, list[int], str]]:
    """The published checkpoint's [name, shape, dtype] rows."""
    import json

    return [
        tuple(row)
        for row in json.loads((FIXTURES / "deva_propagation_state_dict.json").read_text())
    ]
