"""Tiny RANDOM image models so that the web demo runs without downloading anything.

:func:`prepare_tiny_segmenters` writes them (see :mod:`deva.segmenters.tiny`) and returns the
options of every offered segmenter; the page then says loudly that its masks are random.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deva.segmenters import tiny


def prepare_tiny_segmenters(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Write (or reuse) tiny RANDOM image models in ``folder``; options for every segmenter.

    Thresholds are relaxed so that the random models still output segments. Needs
    ``transformers``; takes a few seconds the first time.
    """

    root = Path(folder)
    makers = {
        "sam": tiny.save_tiny_sam,
        "gdino": tiny.save_tiny_grounding_dino,
        "mask2former": tiny.save_tiny_mask2former,
        "oneformer": tiny.save_tiny_oneformer,
        "sam3": tiny.save_tiny_sam3,
        "owlv2": tiny.save_tiny_owlv2,
    }
    paths: dict[str, str] = {}
    for key, make in makers.items():
        path = root / key
        if not (path / "config.json").is_file():
            make(path)
        paths[key] = str(path)
    return {
        "sam": {
            "name": "sam",
            "model": paths["sam"],
            "points_per_side": 4,
            "pred_iou_thresh": -10.0,
            "stability_thresh": 0.0,
            "min_area": 16,
        },
        "grounded_sam": {
            "name": "grounded_sam",
            "model": paths["gdino"],
            "sam_model": paths["sam"],
            "box_threshold": 0.0,
            "text_threshold": 0.0,
        },
        "sam3": {
            "name": "sam3",
            "model": paths["sam3"],
            "score_threshold": 0.0,
        },
        "owlv2_sam": {
            "name": "owlv2_sam",
            "model": paths["owlv2"],
            "sam_model": paths["sam"],
            "box_threshold": 0.0,
        },
        "mask2former": {
            "name": "mask2former",
            "model": paths["mask2former"],
            "threshold": 0.0,
            "overlap_threshold": 0.0,
        },
        "oneformer": {
            "name": "oneformer",
            "model": paths["oneformer"],
            "threshold": 0.0,
            "overlap_threshold": 0.0,
        },
    }
