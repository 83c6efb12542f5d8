"""Text-prompted segmentation: OWLv2 boxes for the prompt's phrases, SAM masks inside.

A permissively licensed (Apache-2.0) alternative to Grounding-DINO + SAM. The prompt lists
phrases separated by dots, ``"person. red car."`` (see
:func:`~deva.segmenters.grounded_sam.parse_prompt`); each phrase is one category: its
``category_id`` is its position in the prompt and its ``label`` the phrase. OWLv2
(``transformers.Owlv2ForObjectDetection``) reads every phrase as its own text query and
predicts one box per image patch with a logit per query; a box takes its best phrase by
``sigmoid(logit)`` and is kept when that score exceeds ``box_threshold``. Boxes of the same
phrase overlapping by more than ``nms_threshold`` IoU are de-duplicated, then SAM turns each box
into a mask and the masks are painted without overlap (smaller on top) with the box score as
the segment score, exactly as Grounded SAM does.

OWLv2 sees the frame padded bottom / right to a square (0.5 grey, as the original
implementation pads) and resized to ``image_size``; its boxes are normalised ``(cx, cy, w, h)``
of that padded square, which :func:`owlv2_boxes_to_pixels` maps back to the frame.
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
    phrase_nms,
    phrase_queries,
    segment_boxes,
)
from deva.segmenters.hf import (
    ImageTransform,
    center_boxes_to_pixels,
    normalisation,
    pick_dtype,
    resolve_device,
)
from deva.segmenters.sam import DEFAULT_SAM, SamPromptDecoder
from deva.types import Segmentation, check_image

logger = logging.getLogger(__name__)

DEFAULT_OWLV2 = "google/owlv2-base-patch16-ensemble"
#: OWLv2's (CLIP's) input normalisation when the preprocessor config names none
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: colour of the square padding, a [0, 1] pixel value (the original OWLv2 pads with grey)
OWLV2_PAD_VALUE = 0.5


def owlv2_boxes_to_pixels(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """OWLv2's (N, 4) normalised ``(cx, cy, w, h)`` of the padded square → (N, 4) ``xyxy``
    pixels of the (H, W) frame, clamped to it.

    The frame was padded bottom / right to a ``max(H, W)`` square before resizing, so both axes
    scale by that side (not by W and H), and nothing shifts.
    """
    side = float(max(height, width))
    return center_boxes_to_pixels(boxes, (side, side), (height, width))


class Owlv2SamSegmenter(TextPrompted):
    """OWLv2 + SAM text-prompted segmenter.

    Args:
        detector: a ``transformers.Owlv2ForObjectDetection`` (moved to ``device`` / ``dtype``).
        tokenizer: its CLIP text tokenizer.
        sam: a :class:`SamPromptDecoder`.
        prompt: ``"person. red car."``.
        box_threshold: minimum ``sigmoid(logit)`` of a box's best phrase.
        nms_threshold: IoU above which same-phrase boxes are merged (1 disables).
        image_size: side of the square detector input (None: the model config's; another
            size interpolates the position embeddings, e.g. a faster 768 for a 960 model).
        mean, std: input normalisation.
    """

    def __init__(
        self,
        detector: Any,
        tokenizer: Any,
        sam: SamPromptDecoder,
        prompt: str,
        *,
        box_threshold: float = 0.2,
        nms_threshold: float = 0.7,
        image_size: int | None = None,
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.detector = detector.to(self.device, self.dtype).eval()
        self.tokenizer = tokenizer
        self.sam = sam
        self.box_threshold = float(box_threshold)
        self.nms_threshold = float(nms_threshold)
        if image_size is None:
            image_size = int(detector.config.vision_config.image_size)
        self.transform = ImageTransform(
            longest_edge=int(image_size),
            pad_square=True,
            pad_value=OWLV2_PAD_VALUE,
            mean=tuple(mean),
            std=tuple(std),
        )
        self._set_prompt(prompt)

    def _set_prompt(self, prompt: str) -> None:
        self.phrases = parse_prompt(prompt)
        length = int(self.detector.config.text_config.max_position_embeddings)
        self._tokens = phrase_queries(self.tokenizer, self.phrases, length)

    @classmethod
    def from_pretrained(
        cls,
        detector: str | Path = DEFAULT_OWLV2,
        sam: str | Path = DEFAULT_SAM,
        *,
        prompt: str,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        mask_size: int = 512,
        local_files_only: bool | None = None,
        **options: Any,
    ) -> Owlv2SamSegmenter:
        """Load OWLv2 (+ tokenizer) and SAM from hub ids or local folders.

        The detector's input size and normalisation come from its ``preprocessor_config.json``
        (``size``, ``image_mean``, ``image_std``), else from the model config and CLIP's.
        """
        model, tokenizer, config = load_prompted_model(
            "Owlv2ForObjectDetection",
            detector,
            what="OWLv2",
            prompt=prompt,
            local_files_only=local_files_only,
        )
        size = config.get("size") or {}
        if "height" in size or "width" in size:
            options.setdefault("image_size", int(size.get("height") or size["width"]))
        decoder = SamPromptDecoder.from_pretrained(
            sam, device=device, dtype=dtype, mask_size=mask_size, local_files_only=local_files_only
        )
        norm = normalisation({"image_mean": CLIP_MEAN, "image_std": CLIP_STD, **config})
        return cls(model, tokenizer, decoder, prompt, device=device, dtype=dtype, **norm, **options)

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Boxes (N, 4) ``xyxy`` in original pixels, scores (N,), phrase indices (N,)."""
        height, width = image.shape[:2]
        pixels, _ = self.transform(image)
        tokens = {k: v.to(self.device) for k, v in self._tokens.items()}
        native = int(self.detector.config.vision_config.image_size)
        out = self.detector(
            pixel_values=pixels.to(self.device, self.dtype),
            interpolate_pos_encoding=pixels.shape[-1] != native,  # another input size
            **tokens,
        )
        probs = out.logits[0].float().sigmoid().cpu()  # (patches, phrases)
        scores, phrase = probs.max(dim=1)
        keep = scores > self.box_threshold
        boxes = owlv2_boxes_to_pixels(out.pred_boxes[0].float().cpu()[keep], height, width)
        return phrase_nms(boxes, scores[keep], phrase[keep], self.nms_threshold)

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        """Segment the prompt's phrases in an RGB uint8 (H, W, 3) frame."""
        check_image(image)
        boxes, scores, phrase = self.detect(image)
        return segment_boxes(self.sam, image, boxes, scores, phrase, self.phrases)
