"""Panoptic segmenters from ``transformers``: Mask2Former and OneFormer (task "panoptic").

Both predict per query a class distribution (the last class is "no object") and a mask. The
panoptic result is built here: queries whose best class is a real one with probability above
``threshold`` compete per pixel by ``class probability × mask probability``; a query keeps the
pixels it wins when they are at least ``overlap_threshold`` of its own mask (probability
>= 0.5); queries of the same *stuff* class are fused into one segment. Labels are the model's
own class names (``config.id2label``); ``isthing`` comes from ``thing_ids`` (argument, the
model folder's class-info JSON, or the COCO-panoptic convention for 133-class models), and is
None when unknown.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from deva.segmenters.hf import (
    ImageTransform,
    load_pretrained,
    load_with_tokenizer,
    normalisation,
    pick_dtype,
    preprocessor_config,
    require_transformers,
    resolve_device,
    to_frame_size,
)
from deva.types import Segment, Segmentation, check_image, empty_segmentation

logger = logging.getLogger(__name__)

DEFAULT_MASK2FORMER = "facebook/mask2former-swin-base-coco-panoptic"
DEFAULT_ONEFORMER = "shi-labs/oneformer_coco_swin_large"
COCO_PANOPTIC_CLASSES = 133
COCO_PANOPTIC_THINGS = 80  # the first 80 classes of the 133 are things


def _thing_ids_from_folder(source: str | Path, config: dict[str, Any]) -> set[int] | None:
    """Thing class ids from a preprocessor config's ``metadata`` / class-info file, if any."""
    metadata = config.get("metadata")
    if isinstance(metadata, dict) and "thing_ids" in metadata:
        return {int(i) for i in metadata["thing_ids"]}
    name = config.get("class_info_file")
    folder = Path(source).expanduser()
    if name and (folder / name).is_file():
        try:
            info = json.loads((folder / name).read_text())
            return {int(k) for k, v in info.items() if v.get("isthing")}
        except (OSError, ValueError, AttributeError) as error:
            logger.warning("ignoring unreadable class info %s: %s", folder / name, error)
    return None


class PanopticSegmenter:
    """Common panoptic post-processing over a universal-segmentation model.

    Args:
        model: ``Mask2FormerForUniversalSegmentation`` or ``OneFormerForUniversalSegmentation``.
        threshold: minimum class probability of a kept query.
        overlap_threshold: minimum fraction of a query's mask it must win to be kept.
        thing_ids: class ids that are things (None: see the module docstring).
        size: (shortest, longest) edge of the model input; ``divisor``: input padding.
    """

    def __init__(
        self,
        model: Any,
        *,
        threshold: float = 0.5,
        overlap_threshold: float = 0.8,
        thing_ids: Iterable[int] | None = None,
        size: tuple[int, int] = (800, 1333),
        divisor: int = 32,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.model = model.to(self.device, self.dtype).eval()
        self.threshold = float(threshold)
        self.overlap_threshold = float(overlap_threshold)
        id2label = getattr(model.config, "id2label", None) or {}
        self.category_names = {int(k): str(v) for k, v in id2label.items()}
        if thing_ids is None and len(self.category_names) == COCO_PANOPTIC_CLASSES:
            thing_ids = range(COCO_PANOPTIC_THINGS)
        self.thing_ids = None if thing_ids is None else {int(i) for i in thing_ids}
        extra = {} if mean is None else {"mean": mean, "std": std}
        self.transform = ImageTransform(
            shortest_edge=int(size[0]), max_edge=int(size[1]), divisor=divisor, **extra
        )

    @staticmethod
    def _options(source: str | Path, options: dict[str, Any]) -> dict[str, Any]:
        """Input size, padding, normalisation and thing ids from the preprocessor config."""
        config = preprocessor_config(source)
        size = config.get("size") or {}
        if "shortest_edge" in size:
            options.setdefault(
                "size", (int(size["shortest_edge"]), int(size.get("longest_edge", 1333)))
            )
        if config.get("size_divisor"):
            options.setdefault("divisor", int(config["size_divisor"]))
        if "thing_ids" not in options:
            things = _thing_ids_from_folder(source, config)
            if things is not None:
                options["thing_ids"] = things
        for key, value in normalisation(config).items():
            options.setdefault(key, value)
        return options

    def _forward(self, pixels: torch.Tensor) -> Any:
        raise NotImplementedError

    def isthing(self, category: int) -> bool | None:
        """Whether a class is a thing (None when the model's thing classes are unknown)."""
        return None if self.thing_ids is None else category in self.thing_ids

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        """Panoptic segmentation of an RGB uint8 (H, W, 3) frame."""
        height, width = check_image(image)
        pixels, (new_h, new_w) = self.transform(image)
        out = self._forward(pixels.to(self.device, self.dtype))
        classes = out.class_queries_logits[0].float().softmax(dim=-1)  # (Q, C + 1)
        scores, labels = classes.max(dim=-1)
        null = classes.shape[-1] - 1
        keep = (labels != null) & (scores > self.threshold)
        if not bool(keep.any()):
            return empty_segmentation(height, width)
        logits = out.masks_queries_logits[0].float()[keep]  # (K, h, w)
        scores, labels = scores[keep], labels[keep]
        padded = pixels.shape[-2:]
        probs = F.interpolate(logits[:, None], size=padded, mode="bilinear", align_corners=False)
        probs = probs[:, 0, :new_h, :new_w].sigmoid()
        winner = (scores[:, None, None] * probs).argmax(dim=0)
        ids = torch.zeros((new_h, new_w), dtype=torch.long, device=probs.device)
        segments: list[Segment] = []
        stuff: dict[int, Segment] = {}
        for k in range(probs.shape[0]):
            won = winner == k
            own = probs[k] >= 0.5
            won_area, own_area = int((won & own).sum()), int(own.sum())
            if won_area == 0 or own_area == 0 or won_area / own_area < self.overlap_threshold:
                continue
            category = int(labels[k])
            isthing = self.isthing(category)
            if isthing is False and category in stuff:
                ids[won & own] = stuff[category].id
                continue
            segment = Segment(
                id=len(segments) + 1,
                category_id=category,
                score=float(scores[k]),
                isthing=isthing,
                label=self.category_names.get(category),
            )
            ids[won & own] = segment.id
            segments.append(segment)
            if isthing is False:
                stuff[category] = segment
        present = set(torch.unique(ids).tolist())
        seg = Segmentation(ids.cpu(), [s for s in segments if s.id in present])
        return to_frame_size(seg, height, width)


class Mask2FormerSegmenter(PanopticSegmenter):
    """Mask2Former panoptic segmentation (``Mask2FormerForUniversalSegmentation``)."""

    def _forward(self, pixels: torch.Tensor) -> Any:
        mask = torch.ones((1, *pixels.shape[-2:]), dtype=torch.long, device=self.device)
        return self.model(pixel_values=pixels, pixel_mask=mask)

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path = DEFAULT_MASK2FORMER,
        *,
        local_files_only: bool | None = None,
        **options: Any,
    ) -> Mask2FormerSegmenter:
        """Load from a hub id or a ``save_pretrained`` folder (+ ``preprocessor_config.json``)."""
        transformers = require_transformers()
        model = load_pretrained(
            transformers.Mask2FormerForUniversalSegmentation.from_pretrained,
            source,
            what="Mask2Former model",
            local_files_only=local_files_only,
        )
        return cls(model, **cls._options(source, options))


class OneFormerSegmenter(PanopticSegmenter):
    """OneFormer with the task token "the task is panoptic" (``OneFormerForUniversalSegmentation``).

    Args:
        tokenizer: the model's (CLIP) tokenizer for the task text.
    """

    def __init__(self, model: Any, tokenizer: Any, **options: Any) -> None:
        super().__init__(model, **options)
        length = int(getattr(model.config, "task_seq_len", 77))
        tokens = tokenizer(
            "the task is panoptic", padding="max_length", max_length=length, truncation=True
        )
        ids = torch.tensor(tokens["input_ids"]) * torch.tensor(tokens["attention_mask"])
        self._task = ids[None].long()

    def _forward(self, pixels: torch.Tensor) -> Any:
        mask = torch.ones((1, *pixels.shape[-2:]), dtype=torch.long, device=self.device)
        task = self._task.to(self.device)
        return self.model(pixel_values=pixels, task_inputs=task, pixel_mask=mask)

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path = DEFAULT_ONEFORMER,
        *,
        local_files_only: bool | None = None,
        **options: Any,
    ) -> OneFormerSegmenter:
        """Load model + tokenizer from a hub id or a ``save_pretrained`` folder."""
        transformers = require_transformers()
        model, tokenizer = load_with_tokenizer(
            transformers.OneFormerForUniversalSegmentation.from_pretrained,
            source,
            what="OneFormer",
            local_files_only=local_files_only,
        )
        return cls(model, tokenizer, **cls._options(source, options))
