"""The propagation network, its building blocks and weight loading."""

from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import KeyProjection, PixelFeatures, PropagationModel
from deva.modeling.weights import WeightsMismatchError, load_pretrained, save_weights

__all__ = [
    "KeyProjection",
    "PixelFeatures",
    "PropagationConfig",
    "PropagationModel",
    "WeightsMismatchError",
    "load_pretrained",
    "save_weights",
]
