"""tools/score.py on small DAVIS, VIPSeg and BURST trees written here: hand-computed scores,
output keys, and one-line error exits."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deva.io import burst, davis, vipseg
from deva.io.masks import write_id_png, write_index_png
from tests.helpers import REPO, load_tool

SCRIPT = REPO / "tools" / "score.py"
score = load_tool("score")


def run_inprocess(capsys, *args: str) -> tuple[int, dict | None, str]:
    code = score.main(list(args))
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


# ---------------------------------------------------------------- DAVIS


def make_davis(tmp_path: Path) -> tuple[Path, Path]:
    """Sequence a: one object, perfect prediction. Sequence b: two objects, object 2 missed."""
    root, pred = tmp_path / "DAVIS", tmp_path / "pred"
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("a\nb\n")
    for seq, n_obj in (("a", 1), ("b", 2)):
        for t in range(4):
            gt = np.zeros((12, 16), dtype=np.uint8)
            gt[2:6, 2 + t : 7 + t] = 1
            if n_obj == 2:
                gt[7:11, 8:13] = 2
            name = f"{t:05d}"
            write_index_png(root / "Annotations" / "480p" / seq / f"{name}.png", gt)
            davis.write_prediction(pred, seq, name, np.where(gt == 2, 0, gt))
    return root, pred


def test_jf_scores_by_hand(tmp_path: Path, capsys) -> None:
    root, pred = make_davis(tmp_path)
    out_file = tmp_path / "scores.json"
    code, result, _ = run_inprocess(
        capsys, "metric=jf", f"gt={root}", f"pred={pred}", f"out={out_file}"
    )
    assert code == 0
    # Objects a_1, b_1 perfect (J = F = 1), b_2 missed (J = F = 0) on both evaluated frames.
    assert result["J-Mean"] == pytest.approx(2 / 3)
    assert result["F-Mean"] == pytest.approx(2 / 3)
    assert result["J&F-Mean"] == pytest.approx(2 / 3)
    assert result["J-Recall"] == pytest.approx(2 / 3)
    assert result["J-Decay"] == 0.0 and result["F-Decay"] == 0.0
    assert result["per_object"] == {
        "a_1": {"J-Mean": 1.0, "F-Mean": 1.0},
        "b_1": {"J-Mean": 1.0, "F-Mean": 1.0},
        "b_2": {"J-Mean": 0.0, "F-Mean": 0.0},
    }
    assert result["per_sequence"]["b"]["J-Mean"] == pytest.approx(0.5)
    assert json.loads(out_file.read_text()) == result
    # Unsupervised protocol: all 4 frames scored, proposals matched; same objects missed.
    code, result, _ = run_inprocess(
        capsys, "metric=jf", f"gt={root}", f"pred={pred}", "task=unsupervised"
    )
    assert code == 0 and result["J-Mean"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", "missing prediction frame"),
        ("label", "label 3"),
        ("size", "prediction is 8x12"),
    ],
)
def test_jf_bad_predictions_exit_with_one_line(
    tmp_path: Path, capsys, damage: str, message: str
) -> None:
    root, pred = make_davis(tmp_path)
    frame = pred / "b" / "00002.png"
    if damage == "missing":
        frame.unlink()
    elif damage == "label":
        write_index_png(frame, np.full((12, 16), 3, dtype=np.uint8))
    else:
        write_index_png(frame, np.zeros((12, 8), dtype=np.uint8))
    code, _, err = run_inprocess(capsys, "metric=jf", f"gt={root}", f"pred={pred}")
    assert code == 2
    assert message in err
    assert err.strip().count("\n") == 0


def test_jf_davis_2016_layout_is_binary(tmp_path: Path, capsys) -> None:
    """DAVIS 2016: legacy image-set file, foreground stored as 255, predictions 0/255."""
    root, pred = tmp_path / "DAVIS2016", tmp_path / "pred16"
    (root / "ImageSets" / "480p").mkdir(parents=True)
    lines = [
        f"/JPEGImages/480p/cow/{t:05d}.jpg /Annotations/480p/cow/{t:05d}.png" for t in range(4)
    ]
    (root / "ImageSets" / "480p" / "val.txt").write_text("\n".join(lines) + "\n")
    for t in range(4):
        gt = np.zeros((10, 10), dtype=np.uint8)
        gt[2:6, 2:6] = 255
        write_index_png(root / "Annotations" / "480p" / "cow" / f"{t:05d}.png", gt)
        half = gt.copy()
        half[2:4] = 0
        write_index_png(pred / "cow" / f"{t:05d}.png", half)
    code, result, _ = run_inprocess(capsys, "metric=jf", f"gt={root}", f"pred={pred}", "year=2016")
    assert code == 0
    assert list(result["per_object"]) == ["cow_1"]
    assert result["J-Mean"] == pytest.approx(0.5)


def test_missing_or_unknown_arguments(capsys) -> None:
    code, _, err = run_inprocess(capsys, "metric=bleu", "gt=x", "pred=y")
    assert code == 2 and "jf|vpq|stq|owta" in err
    code, _, err = run_inprocess(capsys, "metric=jf", "pred=y")
    assert code == 2 and "missing gt=PATH" in err


# ---------------------------------------------------------------- VIPSeg


def make_vipseg(tmp_path: Path, *, switch: bool) -> tuple[Path, Path]:
    """Video v1, 3 frames: stuff id 1 (category 0) and thing id 300 (category 1).

    The prediction copies the masks with ids 5 / 9; with ``switch`` the thing becomes id 10 in
    the last frame.
    """
    gt_root, pred_dir = tmp_path / "VIPSeg", tmp_path / "vpred"
    images, gt_frames = [], []
    writer = vipseg.PredictionWriter(pred_dir)
    for t in range(3):
        ids = np.ones((4, 6), dtype=np.int64)
        ids[1:3, 2:5] = 300
        ids[3, 5] = 0  # void pixel
        name = f"{t:08d}.png"
        write_id_png(gt_root / "panomasksRGB" / "v1" / name, ids)
        images.append({"id": f"{t:08d}", "width": 6, "height": 4, "file_name": name})
        gt_frames.append(
            {
                "image_id": f"{t:08d}",
                "file_name": name,
                "segments_info": [
                    {"id": 1, "category_id": 0, "iscrowd": 0, "area": int((ids == 1).sum())},
                    {"id": 300, "category_id": 1, "iscrowd": 0, "area": int((ids == 300).sum())},
                ],
            }
        )
        thing = 10 if switch and t == 2 else 9
        pred = np.where(ids == 1, 5, np.where(ids == 300, thing, 0))
        writer.add_frame(
            "v1",
            name,
            pred,
            [
                {"id": 5, "category_id": 0, "isthing": 0},
                {"id": thing, "category_id": 1, "isthing": 1},
            ],
        )
    writer.close()
    gt_json = {
        "videos": [{"video_id": "v1", "images": images}],
        "annotations": [{"video_id": "v1", "annotations": gt_frames}],
        "categories": [
            {"id": 0, "name": "wall", "isthing": 0, "color": [1, 2, 3]},
            {"id": 1, "name": "person", "isthing": 1, "color": [4, 5, 6]},
        ],
    }
    (gt_root / "panoptic_gt_VIPSeg_val.json").write_text(json.dumps(gt_json))
    return gt_root, pred_dir


def test_vpq_and_stq_perfect_then_identity_switch(tmp_path: Path, capsys) -> None:
    gt, pred = make_vipseg(tmp_path / "perfect", switch=False)
    code, result, _ = run_inprocess(capsys, "metric=vpq", f"gt={gt}", f"pred={pred}")
    assert code == 0
    assert result["VPQ"] == dict.fromkeys(["1", "2", "4", "6", "8", "10", "inf"], 100.0)
    assert result["VPQ_bar"] == 100.0
    code, result, _ = run_inprocess(capsys, "metric=stq", f"gt={gt}", f"pred={pred}")
    assert code == 0
    assert (result["STQ"], result["AQ"], result["SQ"]) == (1.0, 1.0, 1.0)

    gt, pred = make_vipseg(tmp_path / "switch", switch=True)
    code, result, _ = run_inprocess(
        capsys, "metric=vpq", f"gt={gt}", f"pred={pred}", "windows=[1,inf]"
    )
    assert code == 0
    # k=∞: thing tube IoU 2/3 → PQ (2/3) / 1.5 = 4/9 (id 10 is a FP); stuff PQ 1.
    assert result["VPQ"]["1"] == 100.0
    assert result["VPQ"]["inf"] == pytest.approx(100 * (1 + 4 / 9) / 2)
    assert result["VPQ_things"]["inf"] == pytest.approx(100 * 4 / 9)
    assert result["VPQ_stuff"]["inf"] == 100.0
    assert result["VPQ_bar"] == pytest.approx((100 + 100 * (1 + 4 / 9) / 2) / 2)
    assert result["per_category"]["inf"]["1"]["FP"] == 1
    assert result["per_video"]["v1"]["VPQ"]["inf"] == pytest.approx(result["VPQ"]["inf"])
    code, result, _ = run_inprocess(capsys, "metric=stq", f"gt={gt}", f"pred={pred}")
    # AQ: the 6-pixel tube split 4 / 2 → (1/6)(4·4/6 + 2·2/6) = 5/9; SQ stays 1.
    assert result["AQ"] == pytest.approx(5 / 9)
    assert result["SQ"] == 1.0
    assert result["STQ"] == pytest.approx(math.sqrt(5 / 9))
    assert result["per_sequence"]["v1"]["AQ"] == pytest.approx(5 / 9)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", "missing prediction frame"),
        ("unlisted", "not in segments_info"),
        ("size", "prediction is 3x4"),
        ("category", "unknown category"),
    ],
)
def test_vipseg_bad_predictions(tmp_path: Path, capsys, damage: str, message: str) -> None:
    gt, pred = make_vipseg(tmp_path, switch=False)
    frame = pred / "pan_pred" / "v1" / "00000001.png"
    if damage == "missing":
        frame.unlink()
    elif damage == "unlisted":
        write_id_png(frame, np.full((4, 6), 77))
    elif damage == "size":
        write_id_png(frame, np.full((4, 3), 5))
    else:
        data = json.loads((pred / "pred.json").read_text())
        data["annotations"][0]["annotations"][1]["segments_info"][0]["category_id"] = 50
        (pred / "pred.json").write_text(json.dumps(data))
    for metric in ("vpq", "stq"):
        code, _, err = run_inprocess(capsys, f"metric={metric}", f"gt={gt}", f"pred={pred}")
        if damage == "category" and metric == "stq":
            message = "semantic class 50"
        assert code == 2, metric
        assert message in err and err.strip().count("\n") == 0


# ---------------------------------------------------------------- BURST


def _rle(box: tuple[int, int, int, int]) -> str:
    x, y, w, h = box
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[y : y + h, x : x + w] = 1
    return burst.encode_rle(mask)


def make_burst(tmp_path: Path) -> tuple[Path, Path]:
    """Track 1 (common) predicted perfectly, track 2 (uncommon) never predicted."""
    gt_dir = tmp_path / "burst_gt"
    paths = ["frame0001.jpg", "frame0002.jpg"]

    def gt_file(tracks: dict[str, int]) -> dict:
        segs = [
            {t: {"rle": _rle((12 * int(t) - 10, 3, 6, 5)), "is_gt": True} for t in tracks}
            for _ in paths
        ]
        return {
            "split": "val",
            "categories": {},
            "sequences": [
                {
                    "id": 7,
                    "dataset": "YFCC100M",
                    "seq_name": "seq",
                    "width": 30,
                    "height": 20,
                    "fps": 1,
                    "all_image_paths": paths,
                    "annotated_image_paths": paths,
                    "neg_category_ids": [],
                    "not_exhaustive_category_ids": [],
                    "track_category_ids": tracks,
                    "segmentations": segs,
                }
            ],
        }

    gt_dir.mkdir()
    for name, tracks in (
        ("all_classes.json", {"1": 805, "2": 1000}),
        ("common_classes.json", {"1": 805}),
        ("uncommon_classes.json", {"2": 1000}),
    ):
        (gt_dir / name).write_text(json.dumps(gt_file(tracks)))
    gt_seq = burst.load_burst(gt_dir / "all_classes.json").sequences[0]
    frames = [{5: {"rle": _rle((2, 3, 6, 5)), "score": 0.9}} for _ in paths]
    pred_seq = burst.prediction_sequence(gt_seq, frames)
    pred_path = burst.write_burst(tmp_path / "pred.json", [pred_seq], split="val")
    return gt_dir, pred_path


def test_owta_for_the_three_class_splits(tmp_path: Path, capsys) -> None:
    gt, pred = make_burst(tmp_path)
    code, result, _ = run_inprocess(capsys, "metric=owta", f"gt={gt}", f"pred={pred}")
    assert code == 0
    assert result["OWTA"]["common"] == 100.0
    assert result["OWTA"]["uncommon"] == 0.0
    # all: TP 2, FN 2 → DetRe 50, AssA 100, OWTA sqrt(0.5)·100.
    assert result["DetRe"]["all"] == pytest.approx(50.0)
    assert result["AssA"]["all"] == pytest.approx(100.0)
    assert result["OWTA"]["all"] == pytest.approx(100 * math.sqrt(0.5))
    assert result["per_sequence"]["all"]["YFCC100M/seq"]["OWTA"] == pytest.approx(
        result["OWTA"]["all"]
    )


def test_owta_errors(tmp_path: Path, capsys) -> None:
    gt, pred = make_burst(tmp_path)
    (gt / "uncommon_classes.json").unlink()
    code, _, err = run_inprocess(capsys, "metric=owta", f"gt={gt}", f"pred={pred}")
    assert code == 2 and "uncommon_classes.json" in err
    code, result, _ = run_inprocess(
        capsys, "metric=owta", f"gt={gt}", f"pred={pred}", "splits=[all,common]"
    )
    assert code == 0 and set(result["OWTA"]) == {"all", "common"}
    data = json.loads(pred.read_text())
    data["split"] = "test"
    pred.write_text(json.dumps(data))
    code, _, err = run_inprocess(capsys, "metric=owta", f"gt={gt}", f"pred={pred}", "splits=[all]")
    assert code == 2 and "split" in err


# ---------------------------------------------------------------- the real command line


def test_command_line_prints_json_and_fails_without_traceback(tmp_path: Path) -> None:
    root, pred = make_davis(tmp_path)
    ok = subprocess.run(
        [sys.executable, str(SCRIPT), "metric=jf", f"gt={root}", f"pred={pred}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["J-Mean"] == pytest.approx(2 / 3)
    (pred / "a" / "00001.png").unlink()
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "metric=jf", f"gt={root}", f"pred={pred}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0
    assert bad.stdout == ""
    assert "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "00001.png" in bad.stderr
