"""Segment Anything (``transformers.SamModel``) as an automatic image segmenter.

:class:`SamAutomaticSegmenter` prompts SAM with a regular grid of points (``points_per_side``
per side), decodes the prompts in batches against one image embedding, keeps masks whose
predicted IoU and stability pass their thresholds, removes duplicates by box NMS, optionally
prompts again inside regions nothing covered (``second_pass``), and paints the survivors into
non-overlapping segments (smaller on top) with the predicted IoU as the score.

:class:`SamPromptDecoder` is the shared part: image embedding once per frame, then masks for
point or box prompts at a working resolution (longer side ``mask_size``). Grounded SAM uses
it for box prompts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from deva.segmenters.hf import (
    ImageTransform,
    box_nms,
    load_pretrained,
    masks_to_boxes,
    normalisation,
    paint_segments,
    pick_dtype,
    preprocessor_config,
    require_transformers,
    resolve_device,
    stability_scores,
    to_frame_size,
    upsample_logits,
)
from deva.types import Segment, Segmentation, check_image, empty_segmentation

logger = logging.getLogger(__name__)

DEFAULT_SAM = "facebook/sam-vit-base"


@dataclass
class SamEmbedding:
    """One frame's SAM image embedding and the geometry of its prompts and masks."""

    embeddings: torch.Tensor
    original_size: tuple[int, int]
    scale: float  # original pixels -> model input pixels
    mask_size: tuple[int, int]  # working mask resolution (H_m, W_m), aspect of the frame


class SamPromptDecoder:
    """A loaded SAM: embeds frames and decodes point / box prompts into mask logits.

    Args:
        model: a ``transformers.SamModel`` (moved to ``device`` / ``dtype`` here).
        mask_size: longer side of the working masks (capped at the model input size).
        mean, std: input normalisation.
    """

    def __init__(
        self,
        model: Any,
        *,
        mask_size: int = 512,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.model = model.to(self.device, self.dtype).eval()
        self.input_size = int(model.config.vision_config.image_size)
        self.mask_side = min(int(mask_size), self.input_size)
        extra = {} if mean is None else {"mean": mean, "std": std}
        self.transform = ImageTransform(longest_edge=self.input_size, pad_square=True, **extra)

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path = DEFAULT_SAM,
        *,
        local_files_only: bool | None = None,
        **kwargs: Any,
    ) -> SamPromptDecoder:
        """Load ``SamModel`` weights from a hub id or a ``save_pretrained`` folder."""
        transformers = require_transformers()
        model = load_pretrained(
            transformers.SamModel.from_pretrained,
            source,
            what="SAM model",
            local_files_only=local_files_only,
        )
        norm = normalisation(preprocessor_config(source))
        return cls(model, **norm, **kwargs)

    @torch.inference_mode()
    def embed(self, image: np.ndarray) -> SamEmbedding:
        """Run the image encoder once on an RGB uint8 (H, W, 3) frame."""
        height, width = image.shape[:2]
        pixels, (new_h, new_w) = self.transform(image)
        embeddings = self.model.get_image_embeddings(pixels.to(self.device, self.dtype))
        scale = new_h / height if height >= width else new_w / width
        side = self.mask_side
        mask_size = (max(1, round(height * side / max(height, width))),)
        mask_size += (max(1, round(width * side / max(height, width))),)
        return SamEmbedding(embeddings, (height, width), scale, mask_size)

    def _to_mask_size(self, low_res: torch.Tensor, emb: SamEmbedding) -> torch.Tensor:
        """(N, h, w) low-resolution logits of the padded square → (N, H_m, W_m) logits."""
        square = upsample_logits(low_res, (self.mask_side, self.mask_side))
        return square[:, : emb.mask_size[0], : emb.mask_size[1]]

    @torch.inference_mode()
    def decode_points(
        self, emb: SamEmbedding, points: torch.Tensor, *, multimask: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks for single-point prompts.

        Args:
            points: (B, 2) ``(x, y)`` in original pixel coordinates, one prompt each.
        Returns:
            logits (B·K, H_m, W_m) and predicted IoUs (B·K,), K = 3 with ``multimask`` else 1.
        """
        coords = (points.float() * emb.scale).to(self.device, self.dtype)
        labels = torch.ones((1, coords.shape[0], 1), dtype=torch.long, device=self.device)
        out = self.model(
            image_embeddings=emb.embeddings,
            input_points=coords[None, :, None, :],
            input_labels=labels,
            multimask_output=multimask,
        )
        low = out.pred_masks[0].float()  # (B, K, h, w)
        iou = out.iou_scores[0].float()  # (B, K)
        return self._to_mask_size(low.flatten(0, 1), emb), iou.flatten().cpu()

    @torch.inference_mode()
    def decode_boxes(
        self, emb: SamEmbedding, boxes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per box prompt: (B, 4) ``xyxy`` original pixels → logits, predicted IoUs."""
        if boxes.shape[0] == 0:
            return torch.zeros((0, *emb.mask_size)), torch.zeros(0)
        coords = (boxes.float() * emb.scale).to(self.device, self.dtype)
        out = self.model(
            image_embeddings=emb.embeddings,
            input_boxes=coords[None],
            multimask_output=False,
        )
        low = out.pred_masks[0, :, 0].float()
        return self._to_mask_size(low, emb), out.iou_scores[0, :, 0].float().cpu()


def point_grid(height: int, width: int, per_side: int) -> torch.Tensor:
    """(per_side², 2) ``(x, y)`` cell centres of a regular grid over an (H, W) image."""
    steps = (torch.arange(per_side, dtype=torch.float32) + 0.5) / per_side
    ys, xs = torch.meshgrid(steps * height, steps * width, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=1)


class SamAutomaticSegmenter:
    """Automatic ("segment everything") segmentation with SAM point-grid prompts.

    Args:
        decoder: a loaded :class:`SamPromptDecoder`.
        points_per_side: the grid has this many points per side.
        points_per_batch: prompts decoded together.
        pred_iou_thresh: minimum predicted IoU of a mask.
        stability_thresh: minimum stability score (IoU of the masks at logit ±``stability_offset``).
        nms_thresh: box IoU above which the lower-scoring of two masks is dropped.
        min_area: minimum visible area of an output segment, in original-frame pixels.
        second_pass: prompt again at the centre of every uncovered region of at least
            ``min_area`` pixels, and add the masks found there.
        max_segments: keep at most this many (highest predicted IoU first; None: all).
    """

    def __init__(
        self,
        decoder: SamPromptDecoder,
        *,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_thresh: float = 0.95,
        stability_offset: float = 1.0,
        nms_thresh: float = 0.7,
        min_area: int = 100,
        second_pass: bool = False,
        max_segments: int | None = None,
    ) -> None:
        if points_per_side < 1 or points_per_batch < 1:
            raise ValueError("points_per_side and points_per_batch must be >= 1")
        self.decoder = decoder
        self.points_per_side = int(points_per_side)
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_thresh = float(stability_thresh)
        self.stability_offset = float(stability_offset)
        self.nms_thresh = float(nms_thresh)
        self.min_area = int(min_area)
        self.second_pass = bool(second_pass)
        self.max_segments = max_segments
        self.category_names: dict[int, str] = {}

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path = DEFAULT_SAM,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        mask_size: int = 512,
        local_files_only: bool | None = None,
        **options: Any,
    ) -> SamAutomaticSegmenter:
        """Load SAM from a hub id (e.g. ``facebook/sam-vit-base``) or a local folder.

        ``options`` are the constructor's keyword arguments (``points_per_side``, ...).
        """
        decoder = SamPromptDecoder.from_pretrained(
            source,
            device=device,
            dtype=dtype,
            mask_size=mask_size,
            local_files_only=local_files_only,
        )
        return cls(decoder, **options)

    def _filter(
        self, logits: torch.Tensor, iou: torch.Tensor, min_area: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks (bool, CPU) and scores passing the IoU, stability and area thresholds."""
        keep = iou.to(logits.device) >= self.pred_iou_thresh
        logits, iou = logits[keep], iou[keep.cpu()]
        if logits.shape[0]:
            stable = stability_scores(logits, 0.0, self.stability_offset) >= self.stability_thresh
            logits, iou = logits[stable], iou[stable.cpu()]
        masks = (logits > 0).cpu()
        big = masks.flatten(1).sum(dim=1) >= max(min_area, 1)
        return masks[big], iou[big]

    def _decode_all(
        self, emb: Any, points: torch.Tensor, min_area: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        masks, scores = [], []
        for start in range(0, points.shape[0], self.points_per_batch):
            batch = points[start : start + self.points_per_batch]
            logits, iou = self.decoder.decode_points(emb, batch)
            kept, kept_scores = self._filter(logits, iou, min_area)
            masks.append(kept)
            scores.append(kept_scores)
        if not masks:
            return torch.zeros((0, *emb.mask_size), dtype=torch.bool), torch.zeros(0)
        return torch.cat(masks), torch.cat(scores)

    def _nms(self, masks: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = box_nms(masks_to_boxes(masks), scores, self.nms_thresh)
        return masks[keep], scores[keep]

    def _uncovered_points(self, covered: torch.Tensor, min_area: float, scale: float):
        """Original-pixel points at the innermost pixel of each large uncovered region."""
        free = (~covered).numpy().astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(free, connectivity=4)
        distance = cv2.distanceTransform(free, cv2.DIST_L2, 3)
        points = []
        for k in range(1, count):
            if stats[k, cv2.CC_STAT_AREA] < max(min_area, 1):
                continue
            inside = np.where(labels == k, distance, -1.0)
            y, x = np.unravel_index(int(np.argmax(inside)), inside.shape)
            points.append(((x + 0.5) / scale, (y + 0.5) / scale))
        limit = self.points_per_side**2
        return torch.tensor(points[:limit], dtype=torch.float32).reshape(-1, 2)

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        """Segment everything in an RGB uint8 (H, W, 3) frame."""
        height, width = check_image(image)
        emb = self.decoder.embed(image)
        mask_h, mask_w = emb.mask_size
        scale = mask_h / height  # original pixels -> working-mask pixels (same aspect)
        min_area = self.min_area * (mask_h * mask_w) / (height * width)
        points = point_grid(height, width, self.points_per_side)
        masks, scores = self._nms(*self._decode_all(emb, points, min_area))
        if self.second_pass:
            covered = masks.any(dim=0) if masks.shape[0] else torch.zeros(emb.mask_size, dtype=bool)
            extra_points = self._uncovered_points(covered, min_area, scale)
            if extra_points.shape[0]:
                extra, extra_scores = self._decode_all(emb, extra_points, min_area)
                # keep second-pass masks that mostly lie in the uncovered area
                if extra.shape[0]:
                    inside = (extra & ~covered).flatten(1).sum(1) / extra.flatten(1).sum(1)
                    extra, extra_scores = extra[inside >= 0.5], extra_scores[inside >= 0.5]
                logger.debug("second pass: %d regions -> %d masks", len(extra_points), len(extra))
                masks, scores = self._nms(
                    torch.cat([masks, extra]), torch.cat([scores, extra_scores])
                )
        if self.max_segments is not None:
            masks, scores = masks[: self.max_segments], scores[: self.max_segments]
        if masks.shape[0] == 0:
            return empty_segmentation(height, width)
        segments = [Segment(id=k + 1, score=float(s)) for k, s in enumerate(scores.tolist())]
        seg = paint_segments(masks, segments, min_area=round(min_area))
        return to_frame_size(seg, height, width)
