"""STQ / AQ / SQ: a hand-computed two-frame case (crowd, void, identity switch, unlabeled
column), VIPSeg label building, accumulation, and a pixel-loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deva.metrics import SegmentationAndTrackingQuality
from deva.metrics.stq import instance_numbering, vipseg_stq_labels


def L(sem: int, inst: int) -> int:
    """Label ``sem << 16 | inst`` (upper case: reads like the paper's notation)."""
    return (sem << 16) + inst


VOID = L(255, 255)


def hand_case() -> tuple[np.ndarray, np.ndarray]:
    gt = np.array([[[L(1, 1), L(1, 1), L(1, 0), VOID]], [[L(1, 1), L(0, 2), L(0, 2), L(2, 4)]]])
    pred = np.array([[[L(1, 7), L(1, 7), L(1, 8), L(0, 3)]], [[L(1, 8), L(0, 3), VOID, L(2, 9)]]])
    return gt, pred


def test_hand_computed_two_frames() -> None:
    gt, pred = hand_case()
    metric = SegmentationAndTrackingQuality(num_classes=3, thing_ids=[1, 2])
    metric.update(torch.from_numpy(pred), torch.from_numpy(gt), sequence_id=0)
    out = metric.compute()
    # AQ: tube (1,1) has 3 px (the crowd pixel and the prediction on it are dropped), split
    # 2 / 1 between predictions (1,7) and (1,8): (1/3)(2·2/3 + 1·1/3) = 5/9; tube (2,4) = 1.
    assert float(out["AQ"]) == pytest.approx((5 / 9 + 1) / 2)
    # SQ: class 0 IoU 1/2, classes 1 and 2 IoU 1, "unlabeled" column predicted on a class-0
    # pixel adds IoU 0; the void ground-truth row is dropped.
    assert float(out["SQ"]) == pytest.approx((0.5 + 1 + 1 + 0) / 4)
    assert float(out["STQ"]) == pytest.approx(math.sqrt(7 / 9 * 0.625))


def test_accumulated_frames_equal_all_at_once_and_sequences_are_tube_weighted() -> None:
    gt, pred = hand_case()
    whole = SegmentationAndTrackingQuality(num_classes=3, thing_ids=[1, 2])
    whole.update(pred, gt, sequence_id=0)
    parts = SegmentationAndTrackingQuality(num_classes=3, thing_ids=[1, 2])
    parts.update(pred[1], gt[1], sequence_id=0)
    parts.update(pred[0], gt[0], sequence_id=0)
    for key, value in whole.compute().items():
        assert float(parts.compute()[key]) == pytest.approx(float(value), rel=1e-12)
    # A second sequence with one perfectly tracked tube: AQ is weighted by tube count.
    second = np.array([[[L(2, 1), L(2, 1)]]])
    parts.update(second, second, sequence_id=1)
    assert float(parts.compute()["AQ"]) == pytest.approx((5 / 9 + 1 + 1) / 3)
    per_seq = parts.per_sequence()
    assert per_seq[0]["AQ"] == pytest.approx((5 / 9 + 1) / 2)
    assert per_seq[1] == {"STQ": 1.0, "AQ": 1.0, "SQ": 1.0}


def test_same_instance_in_two_sequences_is_two_tubes() -> None:
    a = np.array([[[L(1, 1), L(1, 1)]]])
    b = np.array([[[L(1, 2), L(1, 2)]]])
    metric = SegmentationAndTrackingQuality(num_classes=2, thing_ids=[1])
    metric.update(b, a, sequence_id=0)
    metric.update(a, a, sequence_id=1)
    assert float(metric.compute()["AQ"]) == pytest.approx(1.0)
    merged = SegmentationAndTrackingQuality(num_classes=2, thing_ids=[1])
    merged.update(b, a, sequence_id=0)
    merged.update(a, a, sequence_id=0)  # one sequence: the tube is split over two predictions
    assert float(merged.compute()["AQ"]) == pytest.approx((2 * 2 / 4 + 2 * 2 / 4) / 4)


def test_unknown_semantic_class_is_an_error() -> None:
    metric = SegmentationAndTrackingQuality(num_classes=3, thing_ids=[1])
    with pytest.raises(ValueError, match="semantic class 7"):
        metric.update(np.array([[L(7, 1)]]), np.array([[L(1, 1)]]))


def test_vipseg_labels_and_first_listed_thing_is_crowd() -> None:
    frames = [
        [{"id": 10, "category_id": 1}, {"id": 20, "category_id": 0}],
        [{"id": 30, "category_id": 1}, {"id": 10, "category_id": 1}],
    ]
    numbering = instance_numbering(frames)
    assert numbering == {10: 0, 20: 1, 30: 2}
    ids = np.array([[10, 20], [0, 99]])
    labels = vipseg_stq_labels(ids, frames[0], numbering)
    np.testing.assert_array_equal(labels, [[L(1, 0), L(0, 1)], [VOID, VOID]])
    # Thing 10 is listed first in the video → instance 0 → "crowd": no tube for AQ at all,
    # while thing 30 (instance 2) is one tube.
    metric = SegmentationAndTrackingQuality(num_classes=2, thing_ids=[1])
    gt_ids = np.array([[30, 10]])
    metric.update(
        vipseg_stq_labels(gt_ids, frames[1], numbering),
        vipseg_stq_labels(gt_ids, frames[1], numbering),
    )
    assert float(metric.compute()["AQ"]) == pytest.approx(1.0)
    only_first = SegmentationAndTrackingQuality(num_classes=2, thing_ids=[1])
    only = vipseg_stq_labels(np.array([[10, 10]]), frames[0], numbering)
    only_first.update(only, only)
    assert float(only_first.compute()["AQ"]) == 0.0


def reference_stq(gts, preds, num_classes, things):
    """Pixel loops over dicts, straight from the definition."""
    size = num_classes + 1
    conf = np.zeros((size, size), dtype=np.int64)
    tubes, pred_sizes, inter = {}, {}, {}
    for gt, pred in zip(gts, preds):
        for g, p in zip(gt.reshape(-1).tolist(), pred.reshape(-1).tolist()):
            sg, sp = g >> 16, p >> 16
            conf[min(sg, num_classes), min(sp, num_classes)] += 1
            crowd = sg in things and g & 0xFFFF == 0
            if sg in things and not crowd:
                tubes[g] = tubes.get(g, 0) + 1
            if sp in things and not crowd:
                pred_sizes[p] = pred_sizes.get(p, 0) + 1
                if sg in things:
                    inter[(g, p)] = inter.get((g, p), 0) + 1
    aq = 0.0
    for g, gs in tubes.items():
        aq += sum(n * n / (pred_sizes[p] + gs - n) for (gg, p), n in inter.items() if gg == g) / gs
    aq /= max(len(tubes), 1)
    conf[num_classes, :] = 0
    ious = [
        conf[c, c] / (conf[c, :].sum() + conf[:, c].sum() - conf[c, c])
        for c in range(size)
        if conf[c, :].sum() + conf[:, c].sum() > 0
    ]
    sq = sum(ious) / len(ious)
    return aq, sq


def test_matches_pixel_loop_reference_on_random_frames() -> None:
    rng = np.random.default_rng(0)
    sem_gt = rng.integers(0, 4, size=(3, 6, 5))
    sem_gt[sem_gt == 3] = 255
    gt = (sem_gt << 16) + rng.integers(0, 3, size=sem_gt.shape)
    sem_pred = np.where(rng.random(sem_gt.shape) < 0.3, rng.integers(0, 3, sem_gt.shape), sem_gt)
    pred = (sem_pred << 16) + rng.integers(1, 4, size=sem_gt.shape)
    metric = SegmentationAndTrackingQuality(num_classes=3, thing_ids=[1, 2])
    for t in range(3):
        metric.update(pred[t], gt[t], sequence_id=5)
    aq, sq = reference_stq(gt, pred, 3, {1, 2})
    out = metric.compute()
    assert float(out["AQ"]) == pytest.approx(aq, rel=1e-12)
    assert float(out["SQ"]) == pytest.approx(sq, rel=1e-12)
    assert float(out["STQ"]) == pytest.approx(math.sqrt(aq * sq), rel=1e-12)
