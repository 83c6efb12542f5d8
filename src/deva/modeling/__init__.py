"""The propagation network, its building blocks and weight loading."""

from deva.modeling.checkpoint import WeightsMismatchError
from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import KeyProjection, PixelFeatures, PropagationModel
from deva.modeling.weights import save_weights

__all__ = [
    "KeyProjection",
    "PixelFeatures",
    "PropagationConfig",
    "PropagationModel",
    "WeightsMismatchError",
    "save_weights",
]
