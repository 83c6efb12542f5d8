"""The propagation network as inference runs it, and the features it computes per frame.

:class:`InferenceNetwork` pairs a :class:`~deva.modeling.propagation.PropagationModel` with
its :class:`~deva.inference.options.InferenceOptions` and builds, once, the copy that does the
work (:func:`~deva.modeling.inference_model.build_inference_model`: batch norm folded, weights
cast once, channels-last, Winograd convolutions) — or uses the model itself with
``plain=True``. A propagator owns one (several propagators of one tracker may share it); it
reflects the model's weights when it was built, so build a new one after training steps.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from deva.inference.options import InferenceOptions
from deva.inference.preprocess import Padding, pad_to_multiple
from deva.modeling.inference_model import build_inference_model
from deva.modeling.propagation import KeyProjection, PixelFeatures, PropagationModel


@dataclass
class FrameFeatures:
    """Everything the network computes from an image alone; compute once, reuse freely.

    image: (1, 3, H', W') padded normalised image; padding: what was added to reach H'×W'.
    """

    image: torch.Tensor
    padding: Padding
    pixel: PixelFeatures
    key: KeyProjection

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the image before padding."""
        h, w = self.image.shape[-2:]
        p = self.padding
        return h - p.top - p.bottom, w - p.left - p.right


class InferenceNetwork:
    """A model and the copy of it that inference runs (see the module docstring).

    ``model`` is put in eval mode and never modified; ``options`` are resolved for its device
    (defaults filled in, unusable combinations refused with one line).
    """

    def __init__(self, model: PropagationModel, options: InferenceOptions | None = None) -> None:
        self.model = model.eval()
        self.options = (options or InferenceOptions()).resolved(model.device)
        o = self.options
        self.module = (
            model
            if o.plain
            else build_inference_model(
                model,
                dtype=o.autocast,
                channels_last=bool(o.channels_last),
                winograd=bool(o.winograd),
                compile=o.compile,
            )
        )

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def chunk_size(self) -> int:
        """Objects per network pass (-1: all)."""
        return self.options.chunk_size

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of every network call (nothing in float32)."""
        return self.options.autocast_context(self.device)

    @torch.inference_mode()
    def encode(self, image: torch.Tensor) -> FrameFeatures:
        """Image features of a normalised frame (3, H, W) or (1, 3, H, W), padded to /16."""
        if image.ndim == 3:
            image = image.unsqueeze(0)
        if image.ndim != 4 or image.shape[:2] != (1, 3):
            raise ValueError(f"expected an image (3, H, W), got shape {tuple(image.shape)}")
        padded, padding = pad_to_multiple(image.to(self.device, torch.float32), 16)
        with self.autocast():
            source = (
                padded.contiguous(memory_format=torch.channels_last)
                if self.options.channels_last
                else padded
            )
            pixel = self.module.encode_image(source)
            key = self.module.project_key(pixel)
        return FrameFeatures(padded, padding, pixel, key)
