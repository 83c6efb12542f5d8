"""Shared test setup: quiet albumentations, few threads, deterministic seeds."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def published_shapes() -> list[tuple[str, list[int], str]]:
    """The published checkpoint's [name, shape, dtype] rows."""
    import json

    return [
        tuple(row) for row in json.loads((DATA / "deva_propagation_state_dict.json").read_text())
    ]
