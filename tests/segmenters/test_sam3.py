"""The SAM 3 text-prompted segmenter on a tiny random ``Sam3Model`` (no download)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deva.types import ImageSegmenter
from tests.segmenters.test_hf import assert_valid, image

pytest.importorskip("transformers")
pytest.importorskip("transformers.models.sam3")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from deva.segmenters import tiny

    return tiny.save_tiny_sam3(tmp_path_factory.mktemp("tiny_sam3") / "sam3")


def load(model: Path, prompt: str = "cat. dog.", **options):
    from deva.segmenters import Sam3Segmenter

    return Sam3Segmenter.from_pretrained(model, prompt=prompt, local_files_only=True, **options)


def test_loads_with_categories_and_preprocessing(model: Path) -> None:
    seg = load(model, prompt="Cat. dog . cat.")
    assert isinstance(seg, ImageSegmenter)
    assert seg.category_names == {0: "cat", 1: "dog"}
    # preprocessor_config.json: a fixed 112 × 112 input, mean / std 0.5
    assert seg.transform.size == (112, 112)
    assert seg.transform.mean == (0.5, 0.5, 0.5) and seg.transform.std == (0.5, 0.5, 0.5)
    pixels, size = seg.transform(image(45, 70))
    assert size == (112, 112) and tuple(pixels.shape) == (1, 3, 112, 112)
    # one padded token row per phrase, as long as the text encoder's positions
    tokens = seg._tokens
    assert tuple(tokens["input_ids"].shape) == (2, 16)
    assert tokens["attention_mask"].sum(dim=1).tolist() == [3, 3]  # start, word, end


def test_segments_of_the_phrases(model: Path) -> None:
    seg = load(model, score_threshold=0.0)
    frame = image(45, 70)
    out = seg(frame)
    assert_valid(out, 45, 70)
    assert out.segments
    scores, logits, phrase = seg.predict(frame)
    assert tuple(scores.shape) == tuple(phrase.shape) == (2, 8)  # phrases × queries
    assert phrase[:, 0].tolist() == [0, 1]
    for s in out.segments:
        assert s.category_id in (0, 1) and s.label == ["cat", "dog"][s.category_id]
        assert s.isthing is True and 0.0 <= s.score <= 1.0
        # the segment score is one of its phrase's query scores
        assert torch.isclose(scores[s.category_id], torch.tensor(s.score)).any()
    # the painted pixels are exactly the union of the thresholded query masks
    masks = torch.nn.functional.interpolate(
        logits.flatten(0, 1)[:, None], size=(45, 70), mode="bilinear", align_corners=False
    )[:, 0]
    union = (masks.sigmoid() > seg.mask_threshold).any(dim=0)
    assert torch.equal(out.mask != 0, union)
    # a stricter mask threshold covers no more pixels; a score above 1 keeps nothing
    seg.mask_threshold = 0.9
    assert int((seg(frame).mask != 0).sum()) <= int(union.sum())
    seg.score_threshold = 1.5
    empty = seg(frame)
    assert empty.segments == [] and tuple(empty.mask.shape) == (45, 70)
    assert int(empty.mask.abs().sum()) == 0


def test_phrases_batched_like_one_at_a_time(model: Path) -> None:
    both = load(model, prompt="cat. red car.")
    frame = image(30, 40, seed=1)
    scores, logits, _ = both.predict(frame)
    for k, phrase in enumerate(both.phrases):
        alone_scores, alone_logits, _ = load(model, prompt=phrase).predict(frame)
        assert torch.allclose(alone_scores[0], scores[k], atol=1e-5)
        assert torch.allclose(alone_logits[0], logits[k], atol=1e-4)


def test_bad_prompt_and_registry(model: Path) -> None:
    from deva.config import compose
    from deva.segmenters import Sam3Segmenter
    from deva.segmenters.registry import PROMPTED, SEGMENTERS, build_segmenter

    assert "sam3" in SEGMENTERS and "sam3" in PROMPTED
    with pytest.raises(ValueError, match="names no objects"):
        load(model, prompt="...")
    with pytest.raises(ValueError, match="names no objects"):
        build_segmenter("sam3", {"model": str(model)}, prompt="...")
    with pytest.raises(ValueError, match="needs a text prompt"):
        build_segmenter("sam3", {"model": str(model)})
    with pytest.raises(ValueError, match="segmenter.box_threshold: not an option of segmenter"):
        build_segmenter("sam3", {"model": str(model), "box_threshold": 0.3}, prompt="cat.")
    # the YAML options are the constructor's
    section = dict(compose("track", ["segmenter=sam3"]).segmenter)
    assert section == {
        "name": "sam3",
        "model": "facebook/sam3",
        "score_threshold": 0.5,
        "mask_threshold": 0.5,
    }
    section["model"] = str(model)
    built = build_segmenter("sam3", section, prompt="dog.", device="cpu")
    assert isinstance(built, Sam3Segmenter) and built.category_names == {0: "dog"}
    assert built.score_threshold == 0.5 and built.mask_threshold == 0.5


def test_demo_reprompt_shares_the_network(model: Path) -> None:
    from deva.segmenters import Sam3Segmenter

    first = load(model, prompt="cat.", score_threshold=0.2, mask_threshold=0.6)
    again = first.with_prompt("dog. ball.")
    assert isinstance(again, Sam3Segmenter) and again.model is first.model
    assert again.category_names == {0: "dog", 1: "ball"}
    assert (again.score_threshold, again.mask_threshold) == (0.2, 0.6)
    assert again.transform == first.transform
    assert_valid(again(image()), 45, 70)
