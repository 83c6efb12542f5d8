"""The transformers-based segmenters on tiny random models (no download), and their helpers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deva.segmenters import ModelNotAvailableError, parse_prompt
from deva.segmenters.hf import (
    ImageTransform,
    box_nms,
    masks_to_boxes,
    paint_segments,
    pick_dtype,
    stability_scores,
)
from deva.types import ImageSegmenter, Segment


def image(height: int = 45, width: int = 70, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def assert_valid(seg, height: int, width: int) -> None:
    """Id map of the frame size, one segment per id present, no duplicates."""
    assert tuple(seg.mask.shape) == (height, width)
    ids = set(torch.unique(seg.mask).tolist()) - {0}
    listed = [s.id for s in seg.segments]
    assert len(listed) == len(set(listed))
    assert set(listed) == ids


# ---- helpers (no transformers needed) -------------------------------------------------------


def test_parse_prompt() -> None:
    assert parse_prompt("person. bicycle. dog.") == ["person", "bicycle", "dog"]
    assert parse_prompt("  Red  Car .dog..dog ") == ["red car", "dog"]
    assert parse_prompt("cat") == ["cat"]
    for bad in ("", " . . ", None):
        with pytest.raises(ValueError, match="names no objects"):
            parse_prompt(bad)


def test_box_nms_keeps_best_of_overlapping() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 5.0]])
    scores = torch.tensor([0.5, 0.9, 0.3, 0.8])
    # IoU(0, 1) = 81/100, IoU(1, 3) = 36/95 < 0.5, IoU(0, 3) = 0.5 (not above)
    assert box_nms(boxes, scores, 0.5).tolist() == [1, 3, 2]
    assert box_nms(boxes, scores, 0.9).tolist() == [1, 3, 0, 2]
    assert box_nms(boxes[:0], scores[:0], 0.5).numel() == 0


def test_masks_to_boxes_and_stability() -> None:
    masks = torch.zeros((2, 6, 8), dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    assert masks_to_boxes(masks).tolist() == [[2, 1, 5, 3], [0, 0, 0, 0]]
    logits = torch.full((1, 4, 4), -5.0)
    logits[0, :2] = 5.0  # 8 pixels far above 0
    logits[0, 2, :2] = 0.5  # 2 pixels between -1 and +1
    assert stability_scores(logits).tolist() == pytest.approx([8 / 10])


def test_paint_segments_smaller_on_top_and_min_area() -> None:
    masks = torch.zeros((3, 10, 10), dtype=torch.bool)
    masks[0] = True  # big, painted first
    masks[1, 2:6, 2:6] = True  # 16 pixels, on top
    masks[2, 8:10, 8:9] = True  # 2 pixels: below min_area
    segs = [Segment(id=5, score=0.1), Segment(id=7, score=0.2), Segment(id=9, score=0.3)]
    out = paint_segments(masks, segs, min_area=3)
    assert (out.mask[2:6, 2:6] == 7).all()
    # segment 9 (2 visible pixels < 3) is dropped: its pixels become background
    assert int((out.mask == 5).sum()) == 100 - 16 - 2
    assert (out.mask[8:10, 8] == 0).all()
    assert [s.id for s in out.segments] == [5, 7]
    assert 9 not in torch.unique(out.mask).tolist()


def test_image_transform_sizes() -> None:
    sam = ImageTransform(longest_edge=64, pad_square=True)
    pixels, size = sam(image(45, 70))
    assert size == (41, 64) and tuple(pixels.shape) == (1, 3, 64, 64)
    assert float(pixels[0, :, 41:].abs().sum()) == 0.0  # zero padding below
    detr = ImageTransform(shortest_edge=64, max_edge=80, divisor=32)
    pixels, size = detr(image(45, 70))
    assert size == (51, 80) and tuple(pixels.shape) == (1, 3, 64, 96)


def test_dtype_choice() -> None:
    assert pick_dtype("bf16", torch.device("cpu")) is torch.float32
    assert pick_dtype("bf16", torch.device("cuda")) is torch.bfloat16
    assert pick_dtype("fp16", torch.device("cuda")) is torch.float16
    with pytest.raises(ValueError, match="dtype"):
        pick_dtype("int8", torch.device("cuda"))


def test_importing_segmenters_loads_no_model_library() -> None:
    code = "import sys, deva.segmenters; print('transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# ---- tiny random models ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("transformers")
    from deva.segmenters import tiny

    root = tmp_path_factory.mktemp("tiny_models")
    return {
        "sam": tiny.save_tiny_sam(root / "sam"),
        "gdino": tiny.save_tiny_grounding_dino(root / "gdino"),
        "mask2former": tiny.save_tiny_mask2former(root / "m2f"),
        "oneformer": tiny.save_tiny_oneformer(root / "oneformer"),
    }


def test_sam_automatic(tiny) -> None:
    from deva.segmenters import SamAutomaticSegmenter

    seg = SamAutomaticSegmenter.from_pretrained(
        tiny["sam"],
        points_per_side=4,
        points_per_batch=5,
        pred_iou_thresh=-10.0,
        stability_thresh=0.0,
        nms_thresh=1.0,
        min_area=1,
    )
    assert isinstance(seg, ImageSegmenter)
    calls = []
    decode = seg.decoder.decode_points

    def counting(emb, points, **kwargs):
        calls.append(points.shape[0])
        return decode(emb, points, **kwargs)

    seg.decoder.decode_points = counting
    out = seg(image())
    assert calls == [5, 5, 5, 1]  # 16 grid points in batches of 5
    assert_valid(out, 45, 70)
    assert out.segments and all(isinstance(s.score, float) for s in out.segments)
    # a stricter configuration keeps a subset; impossible thresholds give an empty result
    seg.pred_iou_thresh = 10.0
    assert seg(image()).segments == []


def test_sam_second_pass_adds_masks_in_uncovered_regions(tiny) -> None:
    from deva.segmenters import SamAutomaticSegmenter

    options = dict(
        points_per_side=2, pred_iou_thresh=-10.0, stability_thresh=0.0, min_area=1, nms_thresh=1
    )
    first = SamAutomaticSegmenter.from_pretrained(tiny["sam"], **options)
    second = SamAutomaticSegmenter.from_pretrained(tiny["sam"], second_pass=True, **options)
    a, b = first(image()), second(image())
    assert_valid(b, 45, 70)
    assert len(b.segments) >= len(a.segments)
    assert int((b.mask != 0).sum()) >= int((a.mask != 0).sum())


def test_grounded_sam_labels_and_categories(tiny) -> None:
    from deva.segmenters import GroundedSamSegmenter

    seg = GroundedSamSegmenter.from_pretrained(
        tiny["gdino"],
        tiny["sam"],
        prompt="person. bicycle. dog.",
        box_threshold=0.0,
        text_threshold=0.0,
    )
    assert seg.category_names == {0: "person", 1: "bicycle", 2: "dog"}
    ids = seg._tokens["input_ids"][0].tolist()
    assert ids[0] == 101 and ids[-1] == 102 and ids.count(1012) == 3
    seen = {}
    for seed in range(2):
        out = seg(image(seed=seed))
        assert_valid(out, 45, 70)
        assert out.segments
        for s in out.segments:
            assert s.isthing is True and 0 <= s.score <= 1
            assert s.label == seg.phrases[s.category_id]
            assert seen.setdefault(s.label, s.category_id) == s.category_id
    seg.box_threshold = 1.0
    assert seg(image()).segments == []


def test_grounded_sam_needs_a_prompt(tiny) -> None:
    from deva.segmenters import GroundedSamSegmenter

    with pytest.raises(ValueError, match="names no objects"):
        GroundedSamSegmenter.from_pretrained(tiny["gdino"], tiny["sam"], prompt=" . ")


@pytest.mark.parametrize("name", ["mask2former", "oneformer"])
def test_panoptic_segmenters(tiny, name: str) -> None:
    from deva.segmenters import Mask2FormerSegmenter, OneFormerSegmenter
    from deva.segmenters.tiny import TINY_LABELS, TINY_THINGS

    cls = Mask2FormerSegmenter if name == "mask2former" else OneFormerSegmenter
    seg = cls.from_pretrained(tiny[name], threshold=0.0, overlap_threshold=0.0)
    assert seg.category_names == TINY_LABELS
    assert seg.thing_ids == set(TINY_THINGS)
    out = seg(image())
    assert_valid(out, 45, 70)
    assert out.segments
    stuff = [s.category_id for s in out.segments if not s.isthing]
    assert len(stuff) == len(set(stuff))  # one segment per stuff class
    for s in out.segments:
        assert s.label == TINY_LABELS[s.category_id]
        assert s.isthing == (s.category_id in TINY_THINGS)
        assert 0 < s.score <= 1
    seg.threshold = 1.0
    assert seg(image()).segments == []


def test_offline_error_says_what_to_fetch(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from deva.segmenters import SamAutomaticSegmenter

    with pytest.raises(ModelNotAvailableError) as info:
        SamAutomaticSegmenter.from_pretrained("facebook/sam-vit-base", local_files_only=True)
    message = str(info.value)
    assert "facebook/sam-vit-base" in message
    assert "https://huggingface.co/facebook/sam-vit-base" in message
    assert "config.json" in message and "model.safetensors" in message
    assert "segmenter.model=" in message
    assert "\n" not in message
    # a local folder without weights: the missing files are named
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotAvailableError, match=r"lacks model\.safetensors"):
        SamAutomaticSegmenter.from_pretrained(tmp_path)
    with pytest.raises(ModelNotAvailableError, match="folder not found"):
        SamAutomaticSegmenter.from_pretrained(tmp_path / "nope")
