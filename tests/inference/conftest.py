"""The tiny random propagation network the inference tests run."""

from __future__ import annotations

import pytest
import torch

from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel


@pytest.fixture(scope="module")
def model() -> PropagationModel:
    torch.manual_seed(0)
    return PropagationModel(PropagationConfig.preset("tiny")).eval()
