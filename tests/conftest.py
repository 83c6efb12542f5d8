"""Shared test setup: quiet albumentations, few threads, deterministic seeds."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread; OpenMP spinning on shared cores is very slow.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextmanager
def threads(count: int):
    """``torch`` CPU threads set to ``count`` inside the block (module-scoped fixtures)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def published_shapes() -> list[tuple[str, list[int], str]]:
    """The published checkpoint's [name, shape, dtype] rows."""
    import json

    return [
        tuple(row) for row in json.loads((DATA / "deva_propagation_state_dict.json").read_text())
    ]
