"""deva-make-clips on a tiny fake labelme-examples package, and the labelme polygon reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deva.cli import make_clips
from deva.data.real_clips import CLIP_SOURCES, labelme_mask
from deva.io.masks import read_index_png
from tests.data.test_real_imagery import _jpeg, make_deb

FOLDER = CLIP_SOURCES["labelme-street"].folder


def _shape(label: str, points: list[list[float]], kind: str = "polygon") -> dict:
    return {"label": label, "points": points, "shape_type": kind}


def _labelme_deb(root: Path, *, annotate_first: bool = True, licence: bool = True) -> Path:
    """Three 40x60 frames; a 'lorry' square moves right, a 'car' rectangle appears on frame 1;
    frame 2 has no annotation file."""
    files: dict[str, bytes] = {}
    for t in range(3):
        files[f"{FOLDER}/{t:06d}.jpg"] = _jpeg(np.full((40, 60, 3), 30 * t, np.uint8))
    labels = {
        0: [_shape("lorry", [[5, 5], [20, 5], [20, 20], [5, 20]])],
        1: [
            _shape("lorry", [[10, 5], [25, 5], [25, 20], [10, 20]]),
            _shape("car", [[30, 25], [50, 35]], "rectangle"),
        ],
    }
    for t, shapes in labels.items():
        if t == 0 and not annotate_first:
            continue
        files[f"{FOLDER}/{t:06d}.json"] = json.dumps({"shapes": shapes}).encode()
    files[f"{FOLDER}/../other/000000.jpg"] = _jpeg(np.zeros((8, 8, 3), np.uint8))
    return make_deb(root / "labelme.deb", "labelme-examples", files, licence=licence)


def test_labelme_mask_draws_polygons_and_rectangles_in_order() -> None:
    ids: dict[str, int] = {}
    shapes = [
        _shape("a", [[0, 0], [9, 0], [9, 9], [0, 9]]),
        _shape("b", [[5, 5], [9, 9]], "rectangle"),
        _shape("a", [[0, 0], [1, 0]]),  # a line: not a region, skipped
    ]
    mask = labelme_mask(shapes, 12, 12, ids)
    assert ids == {"a": 1, "b": 2}
    assert mask[2, 2] == 1 and mask[7, 7] == 2 and mask[11, 11] == 0
    with pytest.raises(ValueError, match="not a region"):
        labelme_mask([_shape("c", [[1, 1]], "point")], 4, 4, ids)


def test_make_clips_writes_the_davis_layout_from_a_package(tmp_path: Path, capsys) -> None:
    deb = _labelme_deb(tmp_path)
    out = tmp_path / "clips"
    assert make_clips.main([f"output={out}", f"+debs.labelme-examples={deb}"]) == 0
    assert "labelme-street: 3 frames (held out: measure only)" in capsys.readouterr().out
    frames = sorted(p.name for p in (out / "JPEGImages" / "labelme-street").iterdir())
    assert frames == ["000000.jpg", "000001.jpg", "000002.jpg"]
    masks = sorted(p.name for p in (out / "Annotations" / "labelme-street").iterdir())
    assert masks == ["000000.png", "000001.png"]
    first = read_index_png(out / "Annotations" / "labelme-street" / "000000.png")
    second = read_index_png(out / "Annotations" / "labelme-street" / "000001.png")
    assert first.shape == (40, 60) and set(np.unique(first)) == {0, 1}
    assert first[10, 10] == 1 and second[10, 22] == 1 and second[30, 40] == 2
    record = json.loads((out / "clips.json").read_text())["labelme-street"]
    assert record["objects"] == {"1": "lorry", "2": "car"}
    assert record["frames"] == 3 and record["annotated"] == 2 and record["held_out"] is True
    assert "GPL-2" in (out / "licences" / "labelme-examples.copyright").read_text()
    assert json.loads((out / "run.json").read_text())["state"] == "done"
    # the folder is owned: a second run refuses it unless asked to overwrite
    assert make_clips.main([f"output={out}", f"+debs.labelme-examples={deb}"]) == 2
    assert (
        make_clips.main([f"output={out}", f"+debs.labelme-examples={deb}", "overwrite=true"]) == 0
    )


@pytest.mark.parametrize(
    "kwargs, args, message",
    [
        ({"annotate_first": False}, [], "first frame 000000 has no annotation"),
        ({"licence": False}, [], "no copyright file in labelme-examples"),
        ({}, ["clips=[nope]"], "unknown clips nope"),
        ({}, ["+debs.other=x.deb"], "debs names packages that are not used: other"),
    ],
)
def test_make_clips_refuses_with_one_line(
    tmp_path: Path, capsys, kwargs: dict, args: list[str], message: str
) -> None:
    deb = _labelme_deb(tmp_path, **kwargs)
    argv = [f"output={tmp_path / 'clips'}", f"+debs.labelme-examples={deb}", *args]
    assert make_clips.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
