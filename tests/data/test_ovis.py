"""tools/convert_ovis.py: OVIS's YouTube-VIS json → the VOS layout the video stage reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from deva.data.ovis import index_mask
from deva.data.video import build_video_mix
from deva.data.video_folders import records_for
from deva.io.masks import read_index_png
from tests.helpers import load_tool, uncompressed_rle

H, W = 24, 32


def rle(mask: np.ndarray, *, compressed: bool = True) -> dict:
    """COCO RLE of a bool mask, compressed (string counts) or not (a list of run lengths)."""
    if compressed:
        encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": [H, W], "counts": encoded["counts"].decode("ascii")}
    return uncompressed_rle(mask)


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def make_ovis(root: Path) -> tuple[Path, Path]:
    """Two videos: ``a`` (3 frames, a large and a small overlapping instance, the small one
    absent in frame 2), ``b`` (2 frames, no instance)."""
    images = root / "train"
    for video, count in (("a", 3), ("b", 2)):
        (images / video).mkdir(parents=True)
        for t in range(count):
            Image.fromarray(np.full((H, W, 3), 40 * t, np.uint8)).save(
                images / video / f"img_{t:07d}.jpg"
            )
    big = [box(2, 20, 2, 28)] * 3
    small = [box(5, 10, 5, 10), box(6, 11, 6, 11), None]
    data = {
        "videos": [
            {"id": 1, "file_names": [f"a/img_{t:07d}.jpg" for t in range(3)], "height": H,
             "width": W, "length": 3},
            {"id": 2, "file_names": [f"b/img_{t:07d}.jpg" for t in range(2)], "height": H,
             "width": W, "length": 2},
        ],
        "annotations": [
            # ids out of order: instance 1 is the track with the smaller annotation id
            {"id": 7, "video_id": 1, "category_id": 3, "iscrowd": 0,
             "segmentations": [rle(m, compressed=False) if m is not None else None for m in small]},
            {"id": 4, "video_id": 1, "category_id": 1, "iscrowd": 0,
             "segmentations": [rle(m) for m in big]},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "dog"}],
    }  # fmt: skip
    annotations = root / "annotations_train.json"
    annotations.write_text(json.dumps(data))
    return annotations, images


def test_index_mask_gives_contested_pixels_to_the_smaller_mask() -> None:
    labels, contested = index_mask([box(0, 10, 0, 10), box(2, 4, 2, 4)])
    assert labels[3, 3] == 2 and labels[0, 0] == 1 and labels[20, 20] == 0
    assert contested == 4


def test_convert_ovis_writes_the_vos_layout(tmp_path: Path, capsys) -> None:
    annotations, images = make_ovis(tmp_path / "OVIS")
    out = tmp_path / "OVIS-VOS-train"
    tool = load_tool("convert_ovis")
    argv = [f"annotations={annotations}", f"images={images}", f"output={out}"]
    assert tool.main(argv) == 0
    printed = capsys.readouterr().out
    assert "wrote 1 videos, 3 frames, 2 instances" in printed and "skipped 1 videos" in printed
    frames = sorted(p.name for p in (out / "JPEGImages/a").iterdir())
    assert frames == [f"img_{t:07d}.jpg" for t in range(3)]
    assert (out / "JPEGImages/a/img_0000000.jpg").stat().st_ino == (
        images / "a/img_0000000.jpg"
    ).stat().st_ino  # hard-linked, not copied
    # instance 1 = the track with the smaller annotation id (the big box), 2 = the small box,
    # which keeps the pixels both claim; frame 2 has no small box (a null segmentation)
    first = read_index_png(out / "Annotations/a/img_0000000.png")
    expected = np.where(box(2, 20, 2, 28), 1, 0)
    expected[5:10, 5:10] = 2
    np.testing.assert_array_equal(first, expected)
    second = read_index_png(out / "Annotations/a/img_0000001.png")
    assert (second == 2).sum() == 25 and second[5, 5] == 1
    last = read_index_png(out / "Annotations/a/img_0000002.png")
    np.testing.assert_array_equal(last, np.where(box(2, 20, 2, 28), 1, 0))
    assert not (out / "Annotations/b").exists()  # a video without instances is skipped
    run = json.loads((out / "run.json").read_text())
    assert run["state"] == "done" and run["summary"]["overlap_pixels"] == 50


def test_converted_folder_trains(tmp_path: Path) -> None:
    annotations, images = make_ovis(tmp_path / "OVIS")
    out = tmp_path / "vos"
    tool = load_tool("convert_ovis")
    argv = [f"annotations={annotations}", f"images={images}", f"output={out}", "link=copy"]
    assert tool.main(argv) == 0
    (record,) = records_for("ovis", out)
    assert record.frame_names == ("img_0000000", "img_0000001", "img_0000002")
    mix = build_video_mix({"ovis": out}, num_frames=3, crop_size=16, min_object_pixels=4)
    assert len(mix) == 3  # OVIS ×3 in the published mix
    assert mix[0]["num_objects"] >= 1


def test_bad_input_is_one_line_and_user_files_stay(tmp_path: Path, capsys) -> None:
    annotations, images = make_ovis(tmp_path / "OVIS")
    tool = load_tool("convert_ovis")
    assert tool.main([f"annotations={tmp_path / 'none.json'}", f"images={images}",
                      f"output={tmp_path / 'o1'}"]) == 2  # fmt: skip
    assert "annotation file not found" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text('{"videos": []')
    assert tool.main([f"annotations={broken}", f"images={images}",
                      f"output={tmp_path / 'o2'}"]) == 2  # fmt: skip
    assert "not a json file" in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    argv = [f"annotations={annotations}", f"images={images}", f"output={mine}"]
    assert tool.main([*argv, "overwrite=true"]) == 2
    assert (mine / "notes.txt").read_text() == "keep me"
    assert tool.main([*argv[:2], f"output={tmp_path / 'o3'}", "link=move"]) == 2
    assert "link must be one of" in capsys.readouterr().err


@pytest.mark.parametrize("missing", ["annotations", "images", "output"])
def test_missing_argument(tmp_path: Path, missing: str, capsys) -> None:
    argv = {"annotations": "a.json", "images": "i", "output": str(tmp_path / "o")}
    del argv[missing]
    assert load_tool("convert_ovis").main([f"{k}={v}" for k, v in argv.items()]) == 2
    assert f"missing {missing}=PATH" in capsys.readouterr().err
