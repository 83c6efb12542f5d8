"""Precomputed-detection segmenters: generic, VIPSeg-style and BURST-style inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from deva.io.detections import write_frame_segmentation
from deva.io.masks import write_id_png
from deva.segmenters import BurstSegmenter, PrecomputedSegmenter, VipsegSegmenter
from deva.types import ImageSegmenter, Segment, Segmentation
from tests.helpers import uncompressed_rle

H, W = 12, 16


def frame(height: int = H, width: int = W) -> np.ndarray:
    return np.zeros((height, width, 3), dtype=np.uint8)


def generic_detections(directory: Path) -> Segmentation:
    mask = torch.zeros((H, W), dtype=torch.long)
    mask[0:6, 0:8] = 3
    mask[6:12, 8:16] = 300
    seg = Segmentation(
        mask=mask,
        segments=[
            Segment(id=3, category_id=0, score=0.5, isthing=True),
            Segment(id=300, category_id=2, score=None, isthing=False),
        ],
    )
    write_frame_segmentation(directory, "00005", seg)
    return seg


def test_generic_format_by_frame_name(tmp_path: Path) -> None:
    expected = generic_detections(tmp_path)
    segmenter = PrecomputedSegmenter(tmp_path)
    assert isinstance(segmenter, ImageSegmenter)
    for name in ("00005", "00005.jpg"):
        seg = segmenter(frame(), frame_name=name)
        assert torch.equal(seg.mask, expected.mask)
        assert seg.segments == expected.segments


def test_missing_frame_errors_or_is_empty(tmp_path: Path) -> None:
    generic_detections(tmp_path)
    with pytest.raises(FileNotFoundError, match="00006"):
        PrecomputedSegmenter(tmp_path)(frame(), frame_name="00006")
    with pytest.raises(ValueError, match="frame_name"):
        PrecomputedSegmenter(tmp_path)(frame())
    seg = PrecomputedSegmenter(tmp_path, missing="empty")(frame(5, 7), frame_name="00006")
    assert seg.segments == [] and tuple(seg.mask.shape) == (5, 7)
    assert int(seg.mask.abs().sum()) == 0
    with pytest.raises(FileNotFoundError):
        PrecomputedSegmenter(tmp_path / "absent")
    with pytest.raises(ValueError, match="missing"):
        PrecomputedSegmenter(tmp_path, missing="skip")  # type: ignore[arg-type]


def test_resize_to_the_frame_or_refuse(tmp_path: Path) -> None:
    expected = generic_detections(tmp_path)
    seg = PrecomputedSegmenter(tmp_path)(frame(2 * H, 2 * W), frame_name="00005")
    assert torch.equal(seg.mask, expected.mask.repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert [s.id for s in seg.segments] == [3, 300]
    with pytest.raises(ValueError, match="frame is"):
        PrecomputedSegmenter(tmp_path, resize=False)(frame(H, W + 1), frame_name="00005")
    with pytest.raises(ValueError, match="uint8"):
        PrecomputedSegmenter(tmp_path)(frame().astype(np.float32), frame_name="00005")


def test_vipseg_style_panoptic_png_and_json(tmp_path: Path) -> None:
    ids = np.zeros((H, W), dtype=np.int64)
    ids[:, :5] = 70000
    ids[:, 5:9] = 125
    write_id_png(tmp_path / "pan" / "12_abc" / "00000010.png", ids)
    data = {
        "annotations": [
            {
                "video_id": "12_abc",
                "annotations": [
                    {
                        "file_name": "00000010.png",
                        "image_id": "00000010",
                        "segments_info": [
                            {"id": 70000, "category_id": 0, "score": 0.75},
                            {"id": 125, "category_id": 60, "isthing": False},
                            {"id": 9, "category_id": 61, "isthing": True},
                        ],
                    }
                ],
            }
        ],
        "categories": [{"id": 0, "isthing": 1}, {"id": 60, "isthing": 1}],
    }
    (tmp_path / "pred.json").write_text(json.dumps(data))
    segmenter = VipsegSegmenter(tmp_path / "pred.json", tmp_path / "pan")
    seg = segmenter(frame(), frame_name="00000010.jpg")
    assert torch.equal(seg.mask, torch.from_numpy(ids))
    assert seg.segments == [
        Segment(id=70000, category_id=0, score=0.75, isthing=True),
        Segment(id=125, category_id=60, score=None, isthing=False),  # own isthing wins
    ]
    named = VipsegSegmenter(tmp_path / "pred.json", tmp_path / "pan", video_id="12_abc")
    assert named(frame(), frame_name="00000010").segments == seg.segments
    with pytest.raises(FileNotFoundError):
        segmenter(frame(), frame_name="00000011")
    with pytest.raises(KeyError):
        VipsegSegmenter(tmp_path / "pred.json", tmp_path / "pan", video_id="nope")


def test_vipseg_unlisted_ids_are_an_error(tmp_path: Path) -> None:
    ids = np.full((H, W), 5, dtype=np.int64)
    write_id_png(tmp_path / "a.png", ids)
    data = {"annotations": [{"file_name": "a.png", "segments_info": []}]}
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="not listed"):
        VipsegSegmenter(tmp_path / "p.json", tmp_path)(frame(), frame_name="a")


def rle(mask: np.ndarray, *, compressed: bool = True) -> object:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    if compressed:
        return encoded["counts"].decode("ascii")
    return uncompressed_rle(mask)


def test_burst_style_rle_json(tmp_path: Path) -> None:
    big = np.zeros((H, W), dtype=bool)
    big[0:8, 0:10] = True
    small = np.zeros((H, W), dtype=bool)
    small[5:10, 5:12] = True  # overlaps big
    sequence = {
        "id": 4,
        "dataset": "YFCC100M",
        "seq_name": "v_abc",
        "height": H,
        "width": W,
        "annotated_image_paths": ["frame0001.jpg", "frame0031.jpg"],
        "segmentations": [
            {"2": {"rle": rle(big), "score": 0.9}, "7": {"rle": rle(small, compressed=False)}},
            {},
        ],
        "track_category_ids": {"2": 1, "7": 5},
    }
    (tmp_path / "det.json").write_text(json.dumps({"sequences": [sequence]}))
    segmenter = BurstSegmenter(tmp_path / "det.json")
    seg = segmenter(frame(), frame_name="frame0001")
    assert torch.equal(seg.mask == 7, torch.from_numpy(small))
    assert torch.equal(seg.mask == 2, torch.from_numpy(big & ~small))
    assert seg.segments == [
        Segment(id=2, category_id=1, score=0.9, isthing=True),
        Segment(id=7, category_id=5, score=None, isthing=True),
    ]
    empty = segmenter(frame(), frame_name="frame0031.jpg")
    assert empty.segments == [] and int(empty.mask.sum()) == 0
    with pytest.raises(FileNotFoundError):
        segmenter(frame(), frame_name="frame0002")
    named = BurstSegmenter(tmp_path / "det.json", sequence="YFCC100M/v_abc", isthing=None)
    assert named(frame(), frame_name="frame0001").segments[0].isthing is None
    with pytest.raises(KeyError):
        BurstSegmenter(tmp_path / "det.json", sequence="other")
