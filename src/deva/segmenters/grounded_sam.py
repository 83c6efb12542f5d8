"""Text-prompted segmentation: Grounding-DINO boxes for the prompt's phrases, SAM masks inside.

The prompt lists phrases separated by dots, ``"person. bicycle. dog."``. Each phrase is one
category: its ``category_id`` is its position in the prompt (0, 1, ...) and its ``label`` the
phrase, so ids are stable for a whole video. A detector query is kept when its best token
score over the prompt exceeds ``box_threshold``; its phrase is the one holding that best token,
which must also exceed ``text_threshold``. Boxes of the same phrase overlapping by more than
``nms_threshold`` IoU are de-duplicated, then SAM turns each box into a mask and the masks are
painted without overlap (smaller on top) with the box score as the segment score.
"""

from __future__ import annotations

import copy
import logging
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deva.segmenters.hf import (
    ImageTransform,
    box_nms,
    center_boxes_to_pixels,
    load_with_tokenizer,
    normalisation,
    paint_segments,
    pick_dtype,
    preprocessor_config,
    require_transformers,
    resolve_device,
    to_frame_size,
)
from deva.segmenters.sam import DEFAULT_SAM, SamPromptDecoder
from deva.types import Segment, Segmentation, check_image, empty_segmentation

logger = logging.getLogger(__name__)

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"


def parse_prompt(prompt: str | None) -> list[str]:
    """Phrases of a dot-separated prompt: ``"Person. bicycle .dog."`` → person, bicycle, dog.

    Whitespace is collapsed, case folded, empty and repeated phrases dropped; an empty prompt
    is a ValueError.
    """
    phrases: list[str] = []
    for part in str(prompt or "").split("."):
        phrase = re.sub(r"\s+", " ", part).strip().lower()
        if phrase and phrase not in phrases:
            phrases.append(phrase)
    if not phrases:
        raise ValueError(
            f"the text prompt {prompt!r} names no objects; expected phrases separated by "
            f'dots, e.g. prompt="person. bicycle. dog."'
        )
    return phrases


class TextPrompted(ABC):
    """What the text-prompted segmenters share: the prompt's phrases as categories (id = the
    phrase's position, label = the phrase) and a copy for another prompt that shares every
    loaded network (:meth:`with_prompt`). A subclass encodes the phrases in
    :meth:`_set_prompt`."""

    phrases: list[str]

    @property
    def category_names(self) -> dict[int, str]:
        """Category id → phrase."""
        return dict(enumerate(self.phrases))

    @abstractmethod
    def _set_prompt(self, prompt: str) -> None:
        """Parse ``prompt`` into :attr:`phrases` and encode them for the text encoder."""

    def with_prompt(self, prompt: str) -> Any:
        """This segmenter for another prompt: the same networks and options, new phrases."""
        other = copy.copy(self)
        other._set_prompt(prompt)
        return other


def phrase_queries(tokenizer: Any, phrases: list[str], length: int) -> dict[str, torch.Tensor]:
    """One text query per phrase (SAM 3, OWLv2): token ids and attention mask (P, ``length``),
    padded to the text encoder's length; a longer phrase is cut, with a warning."""
    tokens = tokenizer(
        phrases, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
    )
    for phrase in phrases:
        if len(tokenizer(phrase)["input_ids"]) > length:
            logger.warning("phrase %r is cut to the text encoder's %d tokens", phrase, length)
    return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


def load_prompted_model(
    model_class: str, source: str | Path, *, what: str, prompt: str, local_files_only: bool | None
) -> tuple[Any, Any, dict[str, Any]]:
    """A text-prompted model (``transformers.<model_class>``), its tokenizer and its
    preprocessor config from a hub id or a local folder; a bad ``prompt`` fails first, before
    anything loads."""
    transformers = require_transformers()
    parse_prompt(prompt)
    model, tokenizer = load_with_tokenizer(
        getattr(transformers, model_class).from_pretrained,
        source,
        what=what,
        local_files_only=local_files_only,
    )
    return model, tokenizer, preprocessor_config(source)


def phrase_segments(
    scores: torch.Tensor, phrase: torch.Tensor, phrases: list[str]
) -> list[Segment]:
    """One thing segment per detection: ids 1, 2, ..., the phrase index as category and the
    phrase as label."""
    return [
        Segment(id=k + 1, category_id=int(p), score=float(s), isthing=True, label=phrases[int(p)])
        for k, (s, p) in enumerate(zip(scores.tolist(), phrase.tolist()))
    ]


class GroundedSamSegmenter(TextPrompted):
    """Grounding-DINO + SAM text-prompted segmenter.

    Args:
        detector: a ``transformers.GroundingDinoForObjectDetection``.
        tokenizer: its text tokenizer (BERT-style, with ``[CLS]`` / ``[SEP]`` and ``.``).
        sam: a :class:`SamPromptDecoder`.
        prompt: ``"person. bicycle. dog."``.
        box_threshold, text_threshold: see the module docstring.
        nms_threshold: IoU above which same-phrase boxes are merged (1 disables).
        detector_size: (shortest, longest) edge of the detector input.
    """

    def __init__(
        self,
        detector: Any,
        tokenizer: Any,
        sam: SamPromptDecoder,
        prompt: str,
        *,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        nms_threshold: float = 0.7,
        detector_size: tuple[int, int] = (800, 1333),
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.detector = detector.to(self.device, self.dtype).eval()
        self.tokenizer = tokenizer
        self.sam = sam
        self.box_threshold = float(box_threshold)
        self.text_threshold = float(text_threshold)
        self.nms_threshold = float(nms_threshold)
        extra = {} if mean is None else {"mean": mean, "std": std}
        self.transform = ImageTransform(
            shortest_edge=int(detector_size[0]), max_edge=int(detector_size[1]), **extra
        )
        self._set_prompt(prompt)

    def _set_prompt(self, prompt: str) -> None:
        self.phrases = parse_prompt(prompt)
        self._tokens, self._spans = self._encode_prompt(self.phrases)

    def _encode_prompt(self, phrases: list[str]) -> tuple[dict[str, torch.Tensor], list[range]]:
        """Token ids ``[CLS] p1 . p2 . ... [SEP]`` and the token span of each phrase."""
        tok = self.tokenizer
        dot = tok.convert_tokens_to_ids(".")
        ids = [tok.cls_token_id]
        spans = []
        for phrase in phrases:
            pieces = tok(phrase, add_special_tokens=False)["input_ids"]
            if not pieces:
                raise ValueError(f"the tokenizer turns phrase {phrase!r} into no tokens")
            spans.append(range(len(ids), len(ids) + len(pieces)))
            ids.extend([*pieces, dot])
        ids.append(tok.sep_token_id)
        limit = int(getattr(self.detector.config, "max_text_len", 256))
        if len(ids) > limit:
            raise ValueError(f"the prompt is {len(ids)} tokens long; the detector reads {limit}")
        input_ids = torch.tensor([ids], dtype=torch.long)
        tokens = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "token_type_ids": torch.zeros_like(input_ids),
        }
        return tokens, spans

    @classmethod
    def from_pretrained(
        cls,
        detector: str | Path = DEFAULT_DETECTOR,
        sam: str | Path = DEFAULT_SAM,
        *,
        prompt: str,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        mask_size: int = 512,
        local_files_only: bool | None = None,
        **options: Any,
    ) -> GroundedSamSegmenter:
        """Load Grounding-DINO (+ tokenizer) and SAM from hub ids or local folders."""
        model, tokenizer, config = load_prompted_model(
            "GroundingDinoForObjectDetection",
            detector,
            what="Grounding-DINO",
            prompt=prompt,
            local_files_only=local_files_only,
        )
        size = config.get("size") or {}
        options.setdefault(
            "detector_size",
            (int(size.get("shortest_edge", 800)), int(size.get("longest_edge", 1333))),
        )
        decoder = SamPromptDecoder.from_pretrained(
            sam, device=device, dtype=dtype, mask_size=mask_size, local_files_only=local_files_only
        )
        return cls(
            model,
            tokenizer,
            decoder,
            prompt,
            device=device,
            dtype=dtype,
            **normalisation(config),
            **options,
        )

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Boxes (N, 4) ``xyxy`` in original pixels, scores (N,), phrase indices (N,)."""
        height, width = image.shape[:2]
        pixels, _ = self.transform(image)
        inputs = {k: v.to(self.device) for k, v in self._tokens.items()}
        out = self.detector(
            pixel_values=pixels.to(self.device, self.dtype),
            pixel_mask=torch.ones(pixels.shape[0], *pixels.shape[2:], dtype=torch.long).to(
                self.device
            ),
            **inputs,
        )
        probs = out.logits[0].float().sigmoid().cpu()  # (Q, max_text_len)
        per_phrase = torch.stack([probs[:, list(span)].amax(dim=1) for span in self._spans], 1)
        scores, phrase = per_phrase.max(dim=1)
        keep = (scores > self.box_threshold) & (scores > self.text_threshold)
        boxes = center_boxes_to_pixels(
            out.pred_boxes[0].float().cpu()[keep], (width, height), (height, width)
        )
        return phrase_nms(boxes, scores[keep], phrase[keep], self.nms_threshold)

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        """Segment the prompt's phrases in an RGB uint8 (H, W, 3) frame."""
        check_image(image)
        boxes, scores, phrase = self.detect(image)
        return segment_boxes(self.sam, image, boxes, scores, phrase, self.phrases)


def phrase_nms(
    boxes: torch.Tensor, scores: torch.Tensor, phrase: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Drop empty boxes, then de-duplicate the boxes of each phrase by NMS at ``threshold``.

    Boxes of different phrases never suppress each other (a "person" box may hold a "dog"
    box); the result is grouped by phrase, by descending score within a phrase.
    """
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores, phrase = boxes[valid], scores[valid], phrase[valid]
    kept = []
    for p in phrase.unique().tolist():
        index = torch.nonzero(phrase == p).flatten()
        kept.append(index[box_nms(boxes[index], scores[index], threshold)])
    if not kept:
        return boxes[:0], scores[:0], phrase[:0]
    order = torch.cat(kept)
    return boxes[order], scores[order], phrase[order]


def segment_boxes(
    sam: SamPromptDecoder,
    image: np.ndarray,
    boxes: torch.Tensor,
    scores: torch.Tensor,
    phrase: torch.Tensor,
    phrases: list[str],
) -> Segmentation:
    """SAM's mask inside each ``xyxy`` frame-pixel box, painted without overlap (smaller on
    top) at the frame size; a segment's category is its phrase index and its score the box's.

    The box → mask half of the box-prompted segmenters (Grounding-DINO + SAM, OWLv2 + SAM).
    """
    height, width = image.shape[:2]
    if boxes.shape[0] == 0:
        return empty_segmentation(height, width)
    emb = sam.embed(image)
    logits, _ = sam.decode_boxes(emb, boxes)
    masks = (logits > 0).cpu()
    seg = paint_segments(masks, phrase_segments(scores, phrase, phrases))
    return to_frame_size(seg, height, width)
