"""The OWLv2 + SAM text-prompted segmenter on tiny random models (no download)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from deva.types import ImageSegmenter
from tests.segmenters.test_hf import assert_valid, image

pytest.importorskip("transformers")
pytest.importorskip("transformers.models.owlv2")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    from deva.segmenters import tiny

    root = tmp_path_factory.mktemp("tiny_owlv2")
    return {"owlv2": tiny.save_tiny_owlv2(root / "owlv2"), "sam": tiny.save_tiny_sam(root / "sam")}


def load(tiny: dict[str, Path], prompt: str = "cat. dog.", **options):
    from deva.segmenters import Owlv2SamSegmenter

    return Owlv2SamSegmenter.from_pretrained(
        tiny["owlv2"], tiny["sam"], prompt=prompt, local_files_only=True, **options
    )


def test_boxes_of_the_padded_square_to_frame_pixels() -> None:
    from deva.segmenters.owlv2_sam import owlv2_boxes_to_pixels

    # a wide 40 × 100 frame is padded at the bottom to a 100 × 100 square: both axes scale by 100
    boxes = torch.tensor(
        [
            [0.5, 0.2, 0.4, 0.2],  # inside the frame
            [0.9, 0.35, 0.4, 0.2],  # runs past the right edge and into the bottom padding
            [0.5, 0.8, 0.2, 0.2],  # wholly in the padding
        ]
    )
    pixels = owlv2_boxes_to_pixels(boxes, 40, 100)
    expected = [[30.0, 10.0, 70.0, 30.0], [70.0, 25.0, 100.0, 40.0], [40.0, 40.0, 60.0, 40.0]]
    assert torch.allclose(pixels, torch.tensor(expected), atol=1e-4)
    # a tall 100 × 50 frame is padded on the right
    tall = owlv2_boxes_to_pixels(
        torch.tensor([[0.25, 0.5, 0.5, 0.2], [0.6, 0.5, 0.2, 0.2]]), 100, 50
    )
    assert torch.allclose(
        tall, torch.tensor([[0.0, 40.0, 50.0, 60.0], [50.0, 40.0, 50.0, 60.0]]), atol=1e-4
    )
    assert owlv2_boxes_to_pixels(torch.zeros((0, 4)), 10, 20).shape == (0, 4)


def test_loads_with_categories_queries_and_preprocessing(tiny) -> None:
    from deva.segmenters.owlv2_sam import CLIP_MEAN, CLIP_STD, OWLV2_PAD_VALUE

    seg = load(tiny, prompt="Cat. red car . cat.")
    assert isinstance(seg, ImageSegmenter)
    assert seg.category_names == {0: "cat", 1: "red car"}
    # one padded text query per phrase, as long as the text encoder's positions
    ids = seg._tokens["input_ids"]
    assert tuple(ids.shape) == (2, 16)
    assert seg._tokens["attention_mask"].sum(dim=1).tolist() == [3, 4]  # start, words, end
    assert bool((ids[:, 0] > 0).all())  # OWLv2 ignores a query whose first id is 0 (padding)
    # preprocessor_config.json: a 64-pixel square input, CLIP mean / std
    assert seg.transform.longest_edge == 64 and seg.transform.pad_square
    assert seg.transform.mean == pytest.approx(CLIP_MEAN)
    assert seg.transform.std == pytest.approx(CLIP_STD)
    pixels, size = seg.transform(image(45, 70))
    assert size == (41, 64) and tuple(pixels.shape) == (1, 3, 64, 64)
    # the bottom padding is 0.5 grey, normalised
    grey = (OWLV2_PAD_VALUE - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(pixels[0, :, 41:], grey.view(3, 1, 1).expand(3, 23, 64), atol=1e-6)


def test_segments_of_the_phrases(tiny) -> None:
    seg = load(tiny, prompt="person. red car.", box_threshold=0.0)
    frame = image(45, 70)
    boxes, scores, phrase = seg.detect(frame)
    assert boxes.shape[0] > 0 and boxes.shape[0] <= 16  # at most one box per 16-pixel patch
    assert bool((boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= 70).all())
    assert bool((boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= 45).all())
    assert set(phrase.tolist()) <= {0, 1}
    out = seg(frame)
    assert_valid(out, 45, 70)
    assert out.segments
    for s in out.segments:
        assert s.category_id in (0, 1) and s.label == ["person", "red car"][s.category_id]
        assert s.isthing is True and 0.0 <= s.score <= 1.0
        # the segment score is its box's
        assert torch.isclose(scores[phrase == s.category_id], torch.tensor(s.score)).any()
    # another input size than the model's interpolates its position embeddings
    larger = load(tiny, prompt="person. red car.", box_threshold=0.0, image_size=96)
    assert larger.transform(frame)[0].shape[-1] == 96
    assert larger.detect(frame)[0].shape[0] <= 36  # 6 × 6 patches
    assert_valid(larger(frame), 45, 70)
    # a threshold above every sigmoid score keeps nothing
    seg.box_threshold = 1.5
    empty = seg(frame)
    assert empty.segments == [] and tuple(empty.mask.shape) == (45, 70)
    assert int(empty.mask.abs().sum()) == 0


def test_same_phrase_boxes_are_deduplicated(tiny) -> None:
    from deva.segmenters.hf import box_iou

    seg = load(tiny, box_threshold=0.0, nms_threshold=0.3)
    boxes, _, phrase = seg.detect(image(60, 40, seed=2))
    for p in phrase.unique().tolist():
        same = boxes[phrase == p]
        iou = box_iou(same, same) - torch.eye(len(same))
        assert bool((iou <= 0.3 + 1e-6).all())


def test_bad_prompt_and_registry(tiny) -> None:
    from deva.config import compose
    from deva.segmenters import Owlv2SamSegmenter
    from deva.segmenters.owlv2_sam import DEFAULT_OWLV2
    from deva.segmenters.registry import PROMPTED, SEGMENTERS, build_segmenter
    from deva.segmenters.sam import DEFAULT_SAM

    assert "owlv2_sam" in SEGMENTERS and "owlv2_sam" in PROMPTED
    with pytest.raises(ValueError, match="names no objects"):
        load(tiny, prompt=" . ")
    paths = {"model": str(tiny["owlv2"]), "sam_model": str(tiny["sam"])}
    with pytest.raises(ValueError, match="names no objects"):
        build_segmenter("owlv2_sam", paths, prompt="...")
    with pytest.raises(ValueError, match="needs a text prompt"):
        build_segmenter("owlv2_sam", paths)
    with pytest.raises(ValueError, match="segmenter.text_threshold: not an option of segmenter"):
        build_segmenter("owlv2_sam", {**paths, "text_threshold": 0.3}, prompt="cat.")
    # the YAML options are the constructor's, with its defaults
    section = dict(compose("track", ["segmenter=owlv2_sam"]).segmenter)
    init = inspect.signature(Owlv2SamSegmenter).parameters
    load_sig = inspect.signature(Owlv2SamSegmenter.from_pretrained).parameters
    assert section == {
        "name": "owlv2_sam",
        "model": DEFAULT_OWLV2,
        "sam_model": DEFAULT_SAM,
        "box_threshold": init["box_threshold"].default,
        "nms_threshold": init["nms_threshold"].default,
        "mask_size": load_sig["mask_size"].default,
    }
    assert load_sig["detector"].default == DEFAULT_OWLV2 == "google/owlv2-base-patch16-ensemble"
    assert load_sig["sam"].default == DEFAULT_SAM
    section.update(paths)
    built = build_segmenter("owlv2_sam", section, prompt="dog.", device="cpu")
    assert isinstance(built, Owlv2SamSegmenter) and built.category_names == {0: "dog"}
    assert built.box_threshold == section["box_threshold"]
    assert built.nms_threshold == section["nms_threshold"]


def test_demo_reprompt_shares_the_networks(tiny) -> None:
    from deva.app.settings import SEGMENTER_LABELS
    from deva.segmenters import Owlv2SamSegmenter

    assert SEGMENTER_LABELS["owlv2_sam"] == "Text prompt: OWLv2 + SAM"
    first = load(tiny, prompt="cat.", box_threshold=0.0, nms_threshold=0.5)
    again = first.with_prompt("dog. ball.")
    assert isinstance(again, Owlv2SamSegmenter)
    assert again.detector is first.detector and again.sam is first.sam
    assert again.tokenizer is first.tokenizer
    assert again.category_names == {0: "dog", 1: "ball"}
    assert (again.box_threshold, again.nms_threshold) == (0.0, 0.5)
    assert again.transform == first.transform
    assert_valid(again(image()), 45, 70)
