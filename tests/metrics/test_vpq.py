"""VPQ^k: hand-computed windows, identity switches, void / crowd rules, json areas, errors,
and a mask-based reference on random videos."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deva.metrics import VideoPanopticQuality, vpq_summary, vpq_video_stats
from deva.metrics.vpq import VPQStats


def segs(*entries: tuple) -> list[dict]:
    """(id, category, iscrowd, area) → ground-truth segments_info."""
    return [{"id": i, "category_id": c, "iscrowd": crowd, "area": a} for i, c, crowd, a in entries]


def psegs(*entries: tuple) -> list[dict]:
    return [{"id": i, "category_id": c} for i, c in entries]


CATS = {0: False, 1: True, 2: True}


def test_single_frame_tp_with_void_subtracted_from_union() -> None:
    gt = np.array([[[10, 10, 10, 10], [20, 20, 0, 0]]])
    pred = np.array([[[5, 5, 5, 0], [7, 7, 7, 7]]])
    stats = vpq_video_stats(
        gt,
        pred,
        [segs((10, 1, 0, 4), (20, 0, 0, 2))],
        [psegs((5, 1), (7, 0))],
        num_categories=3,
        window_sizes=(1,),
    )
    # thing: 3 / (3 + 4 - 3) = 0.75; stuff: 2 / (4 + 2 - 2 - 2 on void) = 1.
    assert stats.tp[0].tolist() == [1, 1, 0]
    assert stats.iou[0].tolist() == pytest.approx([1.0, 0.75, 0.0])
    out = vpq_summary(stats, CATS)
    assert out["VPQ"]["1"] == pytest.approx(87.5)
    assert out["VPQ_things"]["1"] == pytest.approx(75.0)
    assert out["VPQ_stuff"]["1"] == pytest.approx(100.0)


def test_identity_switch_across_window_sizes() -> None:
    gt = np.ones((3, 1, 2), dtype=np.int64)
    pred = np.array([[[5, 5]], [[5, 5]], [[6, 6]]])
    gt_s = [segs((1, 1, 0, 2))] * 3
    pred_s = [psegs((5, 1)), psegs((5, 1)), psegs((6, 1))]
    stats = vpq_video_stats(gt, pred, gt_s, pred_s, num_categories=3, window_sizes=(1, 2, 10, None))
    # k=1: 3 TPs. k=2: window [0,1] TP; window [1,2] IoU 2/4 = 0.5 (not > 0.5) → 1 FN, 2 FP.
    # k=10 (> T) and k=∞: one window, 5 ↔ 1 IoU 4/6 → TP, 6 → FP.
    assert stats.tp[:, 1].tolist() == [3, 1, 1, 1]
    assert stats.fp[:, 1].tolist() == [0, 2, 1, 1]
    assert stats.fn[:, 1].tolist() == [0, 1, 0, 0]
    out = vpq_summary(stats, CATS)
    assert out["VPQ"]["1"] == pytest.approx(100.0)
    assert out["VPQ"]["2"] == pytest.approx(100 * 1 / 2.5)
    assert out["VPQ"]["10"] == pytest.approx(100 * (2 / 3) / 1.5)
    assert out["VPQ"]["inf"] == pytest.approx(100 * (2 / 3) / 1.5)
    finite = (100 + 40 + 100 * 4 / 9) / 3
    assert out["VPQ_bar"] == pytest.approx((finite + 100 * 4 / 9) / 2)
    assert math.isnan(out["VPQ_stuff"]["1"])  # no stuff category has any TP / FP / FN


def test_object_disappearing_and_reappearing_is_one_tube() -> None:
    gt = np.array([[[1, 0]], [[0, 0]], [[1, 0]]])
    pred = np.array([[[4, 0]], [[0, 0]], [[4, 0]]])
    gt_s = [segs((1, 2, 0, 1)), [], segs((1, 2, 0, 1))]
    pred_s = [psegs((4, 2)), [], psegs((4, 2))]
    stats = vpq_video_stats(gt, pred, gt_s, pred_s, num_categories=3, window_sizes=(1, 2, None))
    # k=1: the empty middle frame contributes nothing; k=2 and ∞: one perfect tube per window.
    assert stats.tp[:, 2].tolist() == [2, 2, 1]
    assert stats.fp.sum() == 0 and stats.fn.sum() == 0
    assert vpq_summary(stats, CATS)["VPQ"]["inf"] == pytest.approx(100.0)


def test_void_and_crowd_rules_for_false_positives() -> None:
    # Pred 5 lies on void only → ignored; 6 matches GT 1.
    stats = vpq_video_stats(
        np.array([[[0, 0, 0, 1]]]),
        np.array([[[5, 5, 5, 6]]]),
        [segs((1, 1, 0, 1))],
        [psegs((5, 1), (6, 1))],
        num_categories=3,
        window_sizes=(1,),
    )
    assert (stats.tp[0, 1], stats.fp[0, 1], stats.fn[0, 1]) == (1, 0, 0)
    # GT 2 is a crowd of class 1: never FN; pred 7 (class 1) on it is ignored, pred 8
    # (class 2) on it is a FP because the crowd belongs to another class.
    stats = vpq_video_stats(
        np.array([[[2, 2, 2, 3, 3, 3]]]),
        np.array([[[7, 7, 8, 9, 9, 9]]]),
        [segs((2, 1, 1, 3), (3, 2, 0, 3))],
        [psegs((7, 1), (8, 2), (9, 2))],
        num_categories=3,
        window_sizes=(1,),
    )
    assert stats.tp[0].tolist() == [0, 0, 1]
    assert stats.fp[0].tolist() == [0, 0, 1]
    assert stats.fn[0].tolist() == [0, 0, 0]
    assert vpq_summary(stats, CATS)["VPQ"]["1"] == pytest.approx(100 / 1.5)


def test_ground_truth_area_comes_from_the_json() -> None:
    gt, pred = np.ones((1, 1, 2), dtype=np.int64), np.full((1, 1, 2), 3)
    stats = vpq_video_stats(
        gt, pred, [segs((1, 1, 0, 4))], [psegs((3, 1))], num_categories=3, window_sizes=(1,)
    )
    assert (stats.tp[0, 1], stats.fn[0, 1], stats.fp[0, 1]) == (0, 1, 1)  # IoU 2/4, not > 0.5
    with pytest.raises(ValueError, match="IoU"):
        vpq_video_stats(gt, pred, [segs((1, 1, 0, 1))], [psegs((3, 1))], num_categories=3)


@pytest.mark.parametrize(
    ("pred_infos", "message"),
    [
        ([], "not in segments_info"),
        ([{"id": 3, "category_id": 1}, {"id": 4, "category_id": 1}], "not in the PNG"),
        ([{"id": 3, "category_id": 9}], "unknown category"),
    ],
)
def test_prediction_sanity_checks(pred_infos: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        vpq_video_stats(
            np.ones((1, 1, 2)),
            np.full((1, 1, 2), 3),
            [segs((1, 1, 0, 2))],
            [pred_infos],
            num_categories=3,
        )


# ---------------------------------------------------------------- reference and Metric


def reference_vpq_counts(gt, pred, gt_cat, pred_cat, k, n_cat):
    """Straightforward tube matching with boolean masks (no crowd, areas = pixel counts)."""
    tp, fp, fn, iou_sum = (np.zeros(n_cat) for _ in range(4))
    n = gt.shape[0]
    for start in range(max(n - k + 1, 1)):
        g, p = gt[start : start + k], pred[start : start + k]
        gt_ids = [i for i in np.unique(g) if i != 0]
        pred_ids = [i for i in np.unique(p) if i != 0]
        matched_g, matched_p = set(), set()
        for a in gt_ids:
            for b in pred_ids:
                if gt_cat[a] != pred_cat[b]:
                    continue
                inter = np.sum((g == a) & (p == b))
                union = np.sum((g == a) | (p == b)) - np.sum((g == 0) & (p == b))
                if inter and inter / union > 0.5:
                    tp[gt_cat[a]] += 1
                    iou_sum[gt_cat[a]] += inter / union
                    matched_g.add(a)
                    matched_p.add(b)
        for a in set(gt_ids) - matched_g:
            fn[gt_cat[a]] += 1
        for b in set(pred_ids) - matched_p:
            if np.sum((g == 0) & (p == b)) / np.sum(p == b) <= 0.5:
                fp[pred_cat[b]] += 1
    return tp, fp, fn, iou_sum


def random_video(rng, frames=5, h=6, w=7):
    gt = rng.integers(0, 4, size=(frames, h, w))
    pred = np.where(rng.random((frames, h, w)) < 0.25, rng.integers(0, 5, (frames, h, w)), gt + 10)
    pred[pred == 10] = 0
    gt_cat = {1: 0, 2: 1, 3: 2}
    pred_cat = {10 + i: c for i, c in gt_cat.items()} | {1: 1, 2: 2, 3: 0, 4: 1}
    gt_s = [
        [
            {
                "id": int(i),
                "category_id": gt_cat[int(i)],
                "iscrowd": 0,
                "area": int((gt[t] == i).sum()),
            }
            for i in np.unique(gt[t])
            if i
        ]
        for t in range(frames)
    ]
    pred_s = [
        [{"id": int(i), "category_id": pred_cat[int(i)]} for i in np.unique(pred[t]) if i]
        for t in range(frames)
    ]
    return gt, pred, gt_s, pred_s, gt_cat, pred_cat


def test_matches_mask_reference_on_random_videos() -> None:
    rng = np.random.default_rng(0)
    for _ in range(3):
        gt, pred, gt_s, pred_s, gt_cat, pred_cat = random_video(rng)
        stats = vpq_video_stats(
            gt, pred, gt_s, pred_s, num_categories=3, window_sizes=(1, 2, 4, None)
        )
        for row, k in enumerate((1, 2, 4, 5)):
            tp, fp, fn, iou = reference_vpq_counts(gt, pred, gt_cat, pred_cat, k, 3)
            np.testing.assert_array_equal(stats.tp[row], tp)
            np.testing.assert_array_equal(stats.fp[row], fp)
            np.testing.assert_array_equal(stats.fn[row], fn)
            np.testing.assert_allclose(stats.iou[row], iou, rtol=1e-12)


def test_metric_accumulates_like_summed_stats() -> None:
    rng = np.random.default_rng(3)
    videos = [random_video(rng) for _ in range(3)]
    metric = VideoPanopticQuality(
        [{"id": 0, "isthing": 0}, {"id": 1, "isthing": 1}, {"id": 2, "isthing": 1}]
    )
    total = VPQStats.zeros(metric.window_sizes, 3)
    for gt, pred, gt_s, pred_s, _, _ in videos:
        metric.update(torch.from_numpy(pred), torch.from_numpy(gt), pred_s, gt_s)
        total += vpq_video_stats(gt, pred, gt_s, pred_s, num_categories=3)
    out = metric.compute()
    expected = vpq_summary(total, CATS)
    for k in ("1", "2", "4", "6", "8", "10", "inf"):
        assert float(out[f"VPQ_{k}"]) == pytest.approx(expected["VPQ"][k], rel=1e-12)
        assert float(out[f"VPQ_things_{k}"]) == pytest.approx(expected["VPQ_things"][k], rel=1e-12)
    assert float(out["VPQ_bar"]) == pytest.approx(expected["VPQ_bar"], rel=1e-12)
    assert metric.summary()["per_category"]["inf"]["1"]["TP"] == int(total.tp[-1, 1])
