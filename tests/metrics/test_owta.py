"""OWTA / DetRe / AssA: box IoU, identity switches, the α sweep, the not-exhaustive rule,
sequence combination, and the BURST preparation (distractors, timesteps, 300-detection cap)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deva.io.burst import BurstSequence, encode_rle
from deva.metrics import OpenWorldTrackingAccuracy, box_iou_xywh, owta_sequence_stats, owta_summary
from deva.metrics.owta import OWTAStats, owta_sequence_stats_from_similarity
from deva.metrics.scoring import owta_inputs

BOX = np.array([[0, 0, 10, 10]])


def ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def test_box_iou_by_hand() -> None:
    iou = box_iou_xywh(
        np.array([[0, 0, 2, 2], [0, 0, 0, 0]]), np.array([[1, 1, 2, 2], [0, 0, 0, 0]])
    )
    assert iou[0, 0] == pytest.approx(1 / 7)
    assert iou[1, 1] == 0.0  # empty boxes never match, even each other
    assert iou[0, 1] == 0.0


def test_perfect_tracking_is_100() -> None:
    stats = owta_sequence_stats(
        [ids(1), ids(1, 2)],
        [BOX, np.array([[0, 0, 10, 10], [20, 20, 5, 5]])],
        [ids(7), ids(7, 8)],
        [BOX, np.array([[0, 0, 10, 10], [20, 20, 5, 5]])],
    )
    assert owta_summary(stats) == {"OWTA": 100.0, "DetRe": 100.0, "AssA": 100.0}


def test_identity_switch_halves_assa() -> None:
    stats = owta_sequence_stats(
        [ids(1)] * 4, [BOX] * 4, [ids(1), ids(1), ids(2), ids(2)], [BOX] * 4
    )
    # Each predicted id covers 2 of the 4 frames of the track: TPA 2, FNA 2 → 2 / (2 + 2) = 0.5.
    out = owta_summary(stats)
    assert out["DetRe"] == pytest.approx(100.0)
    assert out["AssA"] == pytest.approx(50.0)
    assert out["OWTA"] == pytest.approx(100 * math.sqrt(0.5))


def test_alpha_sweep_with_box_iou_one_half() -> None:
    # IoU exactly 0.5 counts as TP for α = 0.05 … 0.50 (10 of the 19 thresholds).
    stats = owta_sequence_stats([ids(1)], [BOX], [ids(3)], [np.array([[0, 0, 10, 5]])])
    assert stats.tp.tolist() == [1.0] * 10 + [0.0] * 9
    assert stats.fn.tolist() == [0.0] * 10 + [1.0] * 9
    out = owta_summary(stats)
    assert out["DetRe"] == pytest.approx(100 * 10 / 19)
    assert out["AssA"] == pytest.approx(100 * 10 / 19)
    assert out["OWTA"] == pytest.approx(100 * 10 / 19)


def test_hungarian_prefers_globally_aligned_pair() -> None:
    # Frame 0 and 1: GT 1 and pred 5 overlap perfectly. Frame 2: pred 5 and pred 6 both
    # overlap GT 1 with IoU 0.6, alignment favours 5 → no identity switch.
    half = np.array([[2, 0, 10, 10], [-2, 0, 10, 10]])  # IoU with BOX: 80/120 = 2/3 each
    stats = owta_sequence_stats(
        [ids(1)] * 3, [BOX] * 3, [ids(5), ids(5), ids(6, 5)], [BOX, BOX, half]
    )
    assert stats.tp[0] == 3.0
    assert stats.fp[0] == 1.0
    # pred 5: 3 matches, 3 dets; GT 1: 3 dets → AssA 1 for matched pairs.
    assert stats.assa_tp[0] / stats.tp[0] == pytest.approx(1.0)


def test_not_exhaustive_removes_unmatched_predictions() -> None:
    far = np.array([[50, 50, 5, 5]])
    args = ([ids(1), ids(1)], [BOX, BOX], [ids(4), ids(4)], [BOX, far])
    kept = owta_summary(owta_sequence_stats(*args))
    # TP 1, FN 1; pred 4 has 2 detections → AssA = 1 / (2 + 2 - 1).
    assert kept["DetRe"] == pytest.approx(50.0)
    assert kept["AssA"] == pytest.approx(100 / 3)
    removed = owta_sequence_stats(*args, remove_unmatched=True)
    assert removed.fp.sum() == 0
    out = owta_summary(removed)
    assert out["AssA"] == pytest.approx(50.0)
    assert out["OWTA"] == pytest.approx(50.0)


def test_empty_predictions_and_sequence_combination() -> None:
    missed = owta_sequence_stats(
        [ids(1), ids(1)], [BOX, BOX], [ids(), ids()], [np.zeros((0, 4))] * 2
    )
    assert owta_summary(missed) == {"OWTA": 0.0, "DetRe": 0.0, "AssA": 0.0}
    perfect = owta_sequence_stats([ids(2), ids(2)], [BOX, BOX], [ids(9), ids(9)], [BOX, BOX])
    metric = OpenWorldTrackingAccuracy()
    metric.update_stats(missed)
    metric.update_stats(perfect)
    out = {k: float(v) for k, v in metric.compute().items()}
    # TP 2, FN 2 → DetRe 0.5; AssA TP-weighted → 1.
    assert out["DetRe"] == pytest.approx(50.0)
    assert out["AssA"] == pytest.approx(100.0)
    assert out["OWTA"] == pytest.approx(100 * math.sqrt(0.5))
    total = OWTAStats.zeros()
    total += missed
    total += perfect
    assert owta_summary(total)["OWTA"] == pytest.approx(out["OWTA"])


def test_metric_with_several_splits() -> None:
    metric = OpenWorldTrackingAccuracy(splits=("all", "common"))
    metric.update([ids(1)], [BOX], [ids(1)], [BOX], split="all")
    metric.update([ids(1)], [BOX], [ids()], [np.zeros((0, 4))], split="common")
    out = metric.compute()
    assert float(out["OWTA/all"]) == 100.0 and float(out["OWTA/common"]) == 0.0
    with pytest.raises(ValueError, match="unknown split"):
        metric.update([ids(1)], [BOX], [ids(1)], [BOX], split="uncommon")


def test_invariant_to_id_values_and_detection_order() -> None:
    rng = np.random.default_rng(0)
    frames = 6
    gt_ids = [ids(1, 2, 3)] * frames
    gt_boxes = [
        np.array([[0, 0, 10, 10], [30, 0, 10, 10], [0, 30, 12, 12]]) + t for t in range(frames)
    ]
    pred_boxes = [b + rng.integers(-3, 4, size=b.shape) for b in gt_boxes]
    pred_ids = [ids(5, 6, 7) if t < 3 else ids(5, 7, 6) for t in range(frames)]
    base = owta_sequence_stats(gt_ids, gt_boxes, pred_ids, pred_boxes)
    order = [2, 0, 1]
    shuffled = owta_sequence_stats(
        gt_ids, gt_boxes, [p[order] * 100 + 3 for p in pred_ids], [b[order] for b in pred_boxes]
    )
    np.testing.assert_allclose(base.tp, shuffled.tp)
    np.testing.assert_allclose(base.assa_tp, shuffled.assa_tp, rtol=1e-12)


# ---------------------------------------------------------------- BURST preparation


def _mask(box: tuple[int, int, int, int], h: int = 20, w: int = 30) -> np.ndarray:
    x, y, bw, bh = box
    m = np.zeros((h, w), dtype=np.uint8)
    m[y : y + bh, x : x + bw] = 1
    return m


def test_burst_preparation_rules() -> None:
    gt = BurstSequence(
        id=1,
        dataset="ds",
        seq_name="s",
        width=30,
        height=20,
        annotated_image_paths=["frame0000.jpg", "frame0005.jpg", "frame0010.jpg"],
        segmentations=[
            {
                "1": {"rle": encode_rle(_mask((0, 0, 5, 5)))},
                "2": {"rle": encode_rle(_mask((10, 10, 5, 5)))},
            },
            {"2": {"rle": encode_rle(_mask((10, 10, 5, 5)))}},  # distractor only: no timestep
            {},
        ],
        track_category_ids={"1": 805, "2": 20},
        not_exhaustive_category_ids=[1],
    )
    many = {str(i): {"rle": encode_rle(_mask((0, 0, 5, 5))), "score": i / 1000} for i in range(302)}
    many["9"] = {"rle": encode_rle(np.zeros((20, 30), np.uint8)), "score": 0.99}  # empty mask
    pred = BurstSequence(
        id=1,
        dataset="ds",
        seq_name="s",
        width=30,
        height=20,
        annotated_image_paths=["frame0000.jpg", "frame0003.jpg", "frame0005.jpg"],
        segmentations=[
            many,
            {"1": {"rle": encode_rle(_mask((0, 0, 5, 5)))}},
            {"1": {"rle": encode_rle(_mask((0, 0, 5, 5)))}},
        ],
    )
    inputs = owta_inputs(gt, pred)
    assert inputs.frames == ["frame0000.jpg"]
    assert inputs.gt_ids[0].tolist() == [1]
    assert len(inputs.pred_ids[0]) == 300
    assert 9 in inputs.pred_ids[0].tolist()  # high score, kept although empty
    assert 0 not in inputs.pred_ids[0].tolist() and 1 not in inputs.pred_ids[0].tolist()
    assert inputs.remove_unmatched
    column = inputs.pred_ids[0].tolist().index(9)
    assert inputs.similarities[0][0, column] == 0.0
    assert inputs.similarities[0].max() == 1.0
    missing = owta_inputs(gt, None)
    stats = owta_sequence_stats_from_similarity(
        missing.gt_ids, missing.pred_ids, missing.similarities
    )
    assert stats.fn.tolist() == [1.0] * 19
