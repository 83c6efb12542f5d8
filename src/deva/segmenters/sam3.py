"""Text-prompted instance segmentation with SAM 3 (``transformers.Sam3Model``).

The prompt lists phrases separated by dots, ``"person. red car."`` (see
:func:`~deva.segmenters.grounded_sam.parse_prompt`). Each phrase is one category: its
``category_id`` is its position in the prompt and its ``label`` the phrase, as with Grounded
SAM. The image encoder runs once per frame; its features are shared by all phrases, which are
decoded together in one batch. A query's score is ``sigmoid(pred_logits) *
sigmoid(presence_logits)`` (how well it matches the phrase times whether the phrase is present
at all); queries scoring above ``score_threshold`` keep their masks (``sigmoid`` of the mask
logits, upsampled to the frame, above ``mask_threshold``), which are painted without overlap
(smaller on top) with the query score as the segment score.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deva.segmenters.grounded_sam import (
    TextPrompted,
    load_prompted_model,
    parse_prompt,
    phrase_queries,
    phrase_segments,
)
from deva.segmenters.hf import (
    ImageTransform,
    normalisation,
    paint_segments,
    pick_dtype,
    resolve_device,
    upsample_logits,
)
from deva.types import Segmentation, check_image, empty_segmentation

logger = logging.getLogger(__name__)

DEFAULT_SAM3 = "facebook/sam3"
#: SAM 3's input normalisation when the preprocessor config names none
SAM3_MEAN = (0.5, 0.5, 0.5)
SAM3_STD = (0.5, 0.5, 0.5)


class Sam3Segmenter(TextPrompted):
    """SAM 3 text-prompted segmenter.

    Args:
        model: a ``transformers.Sam3Model`` (moved to ``device`` / ``dtype`` here).
        tokenizer: its CLIP text tokenizer.
        prompt: ``"person. red car."``.
        score_threshold: minimum query score (``sigmoid(logit) * sigmoid(presence)``).
        mask_threshold: minimum mask probability of a pixel.
        image_size: (height, width) of the model input (the frame is resized to it).
        mean, std: input normalisation.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        prompt: str,
        *,
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        image_size: tuple[int, int] | None = None,
        mean: tuple[float, float, float] = SAM3_MEAN,
        std: tuple[float, float, float] = SAM3_STD,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.model = model.to(self.device, self.dtype).eval()
        self.tokenizer = tokenizer
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        if image_size is None:
            side = int(model.config.vision_config.image_size)
            image_size = (side, side)
        self.transform = ImageTransform(
            size=(int(image_size[0]), int(image_size[1])), mean=mean, std=std
        )
        self._set_prompt(prompt)

    def _set_prompt(self, prompt: str) -> None:
        self.phrases = parse_prompt(prompt)
        length = int(self.model.config.text_config.max_position_embeddings)
        self._tokens = phrase_queries(self.tokenizer, self.phrases, length)

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path = DEFAULT_SAM3,
        *,
        prompt: str,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        local_files_only: bool | None = None,
        **options: Any,
    ) -> Sam3Segmenter:
        """Load ``Sam3Model`` and its tokenizer from a hub id or a ``save_pretrained`` folder.

        The input size and normalisation come from the folder's ``preprocessor_config.json``
        (``size``, ``image_mean``, ``image_std``), else from the model config.
        """
        model, tokenizer, config = load_prompted_model(
            "Sam3Model", source, what="SAM 3", prompt=prompt, local_files_only=local_files_only
        )
        size = config.get("size") or {}
        if "height" in size and "width" in size:
            options.setdefault("image_size", (int(size["height"]), int(size["width"])))
        norm = normalisation({"image_mean": SAM3_MEAN, "image_std": SAM3_STD, **config})
        return cls(model, tokenizer, prompt, device=device, dtype=dtype, **norm, **options)

    @torch.inference_mode()
    def predict(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query scores (P, Q) and mask logits (P, Q, h, w) of the P phrases, on the CPU in
        float32, and the phrase index (P, Q) of each query."""
        pixels, _ = self.transform(image)
        vision = self.model.get_vision_features(pixel_values=pixels.to(self.device, self.dtype))
        count = len(self.phrases)
        # one image, P phrases: share the image features across the batch of phrases
        vision.fpn_hidden_states = tuple(
            f.expand(count, *f.shape[1:]) for f in vision.fpn_hidden_states
        )
        vision.fpn_position_encoding = tuple(
            p.expand(count, *p.shape[1:]) for p in vision.fpn_position_encoding
        )
        tokens = {k: v.to(self.device) for k, v in self._tokens.items()}
        out = self.model(vision_embeds=vision, **tokens)
        scores = out.pred_logits.float().sigmoid()
        if out.presence_logits is not None:
            scores = scores * out.presence_logits.float().sigmoid()  # (P, 1) broadcast
        phrase = torch.arange(count).view(count, 1).expand(scores.shape).clone()
        return scores.cpu(), out.pred_masks.float().cpu(), phrase

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        """Segment the prompt's phrases in an RGB uint8 (H, W, 3) frame."""
        height, width = check_image(image)
        scores, logits, phrase = self.predict(image)
        keep = scores > self.score_threshold
        if not bool(keep.any()):
            return empty_segmentation(height, width)
        scores, phrase = scores[keep], phrase[keep]
        masks = upsample_logits(logits[keep], (height, width)).sigmoid() > self.mask_threshold
        nonempty = masks.flatten(1).any(dim=1)
        masks, scores, phrase = masks[nonempty], scores[nonempty], phrase[nonempty]
        return paint_segments(masks, phrase_segments(scores, phrase, self.phrases))
