"""DAVIS J&F: boundary, tolerance, F, statistics and the sequence protocol against hand values
and a brute-force reference written independently of the implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deva.metrics import JAndF, jf_sequence, jf_unsupervised_sequence
from deva.metrics.jf import boundary_map, boundary_tolerance, davis_statistics, disk

# ---------------------------------------------------------------- brute-force reference


def ref_boundary(mask: np.ndarray) -> np.ndarray:
    """Pixel-by-pixel boundary as METRICS.md words it."""
    h, w = mask.shape
    out = np.zeros((h, w), dtype=bool)

    def at(r: int, c: int) -> bool:
        return bool(mask[r, c]) if r < h and c < w else False

    for r in range(h):
        for c in range(w):
            if r == h - 1 and c == w - 1:
                continue
            if r == h - 1:
                neighbours = [(r, c + 1)]
            elif c == w - 1:
                neighbours = [(r + 1, c)]
            else:
                neighbours = [(r, c + 1), (r + 1, c), (r + 1, c + 1)]
            out[r, c] = any(at(*n) != bool(mask[r, c]) for n in neighbours)
    return out


def ref_f(pred: np.ndarray, gt: np.ndarray) -> float:
    """F from point sets: a boundary pixel matches if another set has a pixel within r."""
    h, w = gt.shape
    r = math.ceil(0.008 * math.sqrt(h * h + w * w))
    bp = np.argwhere(ref_boundary(pred))
    bg = np.argwhere(ref_boundary(gt))
    if len(bp) == 0 and len(bg) == 0:
        return 1.0
    if len(bp) == 0 or len(bg) == 0:
        return 0.0
    d2 = ((bp[:, None, :] - bg[None, :, :]) ** 2).sum(-1)
    precision = float((d2.min(axis=1) <= r * r).mean())
    recall = float((d2.min(axis=0) <= r * r).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def ref_j(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else np.logical_and(pred, gt).sum() / union


# ---------------------------------------------------------------- building blocks


def test_boundary_of_square_by_hand() -> None:
    mask = np.zeros((4, 4), dtype=bool)
    mask[1:3, 1:3] = True
    expected = np.array([[1, 1, 1, 0], [1, 0, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(boundary_map(mask), expected)


def test_full_mask_has_no_boundary_and_last_row_col_rules() -> None:
    assert not boundary_map(np.ones((3, 5), dtype=bool)).any()
    # A single pixel in the bottom-right corner is never a boundary; in the last row its
    # left neighbour differs from it on the right.
    mask = np.zeros((3, 3), dtype=bool)
    mask[2, 2] = True
    expected = np.zeros((3, 3), dtype=bool)
    expected[2, 1] = True  # last row: right neighbour differs
    expected[1, 2] = True  # last column: lower neighbour differs
    expected[1, 1] = True  # lower-right neighbour differs
    np.testing.assert_array_equal(boundary_map(mask), expected)


def test_boundary_matches_reference_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (1, 5), (5, 1), (7, 9)]:
        mask = rng.random(shape) > 0.5
        np.testing.assert_array_equal(boundary_map(mask), ref_boundary(mask))


def test_disk_radius_two_by_hand() -> None:
    expected = np.array(
        [
            [0, 0, 1, 0, 0],
            [0, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
            [0, 1, 1, 1, 0],
            [0, 0, 1, 0, 0],
        ]
    )
    np.testing.assert_array_equal(disk(2), expected)
    assert disk(3).sum() == 29  # 1 + 4·3 (axes) + 4·(2 + 2) off-axis offsets


@pytest.mark.parametrize(
    ("height", "width", "radius"),
    [(480, 854, 8), (1080, 1920, 18), (100, 100, 2), (10, 10, 1), (480, 910, 9)],
)
def test_boundary_tolerance_grows_with_image_size(height: int, width: int, radius: int) -> None:
    assert boundary_tolerance(height, width) == radius


@pytest.mark.parametrize(
    ("size", "shift", "expected_one"),
    [(20, 1, True), (20, 2, False), (200, 2, True), (200, 3, True), (200, 4, False)],
)
def test_f_tolerance_depends_on_image_size(size: int, shift: int, expected_one: bool) -> None:
    # r = 1 for 20×20, r = 3 for 200×200: a square shifted by ≤ r keeps F = 1.
    gt = np.zeros((3, size, size), dtype=np.int64)
    gt[:, 5:15, 5:15] = 1
    pred = np.zeros_like(gt)
    pred[:, 5 + shift : 15 + shift, 5:15] = 1
    result = jf_sequence(pred, gt)
    f = result.f[0, 0]
    assert bool(f == 1.0) is expected_one
    assert f == pytest.approx(ref_f(pred[1] == 1, gt[1] == 1), abs=1e-12)


def test_j_and_f_match_reference_on_random_blobs() -> None:
    rng = np.random.default_rng(1)
    gt = np.zeros((4, 40, 60), dtype=np.int64)
    pred = np.zeros_like(gt)
    for t in range(4):
        for k in (1, 2):
            y, x = rng.integers(0, 30), rng.integers(0, 50)
            gt[t, y : y + 8, x : x + 9] = k
            y2, x2 = y + rng.integers(-2, 3), x + rng.integers(-2, 3)
            pred[t, max(y2, 0) : y2 + 7, max(x2, 0) : x2 + 10] = k
    result = jf_sequence(pred, gt)
    for k in (1, 2):
        for i, t in enumerate((1, 2)):
            assert result.j[k - 1, i] == pytest.approx(ref_j(pred[t] == k, gt[t] == k), abs=1e-12)
            assert result.f[k - 1, i] == pytest.approx(ref_f(pred[t] == k, gt[t] == k), abs=1e-12)


def test_statistics_by_hand() -> None:
    # N = 4: split points round_half_up(1, 1.75, 2.5, 3.25, 4) - 1 = 0, 1, 2, 2, 3.
    mean, recall, decay = davis_statistics(np.array([0.9, 0.8, 0.3, 0.1]))
    assert mean == pytest.approx(0.525)
    assert recall == pytest.approx(0.5)
    assert decay == pytest.approx((0.9 + 0.8) / 2 - (0.3 + 0.1) / 2)
    # N = 1: every bin is the single frame, decay 0; a value of exactly 0.5 is not recalled.
    assert davis_statistics(np.array([0.5])) == (0.5, 0.0, 0.0)
    # N = 6: points 1, 2.25, 3.5, 4.75, 6 → 0, 1, 3, 4, 5 (3.5 rounds half up).
    values = np.array([1.0, 0.0, 0.0, 0.0, 0.2, 0.4])
    assert davis_statistics(values)[2] == pytest.approx(0.5 - 0.3)


# ---------------------------------------------------------------- sequence protocol


def test_sequence_protocol_by_hand() -> None:
    """Objects from frame 0, first/last frames skipped, empty and reappearing objects."""
    gt = np.zeros((5, 10, 10), dtype=np.int64)
    pred = np.zeros_like(gt)
    gt[0, 0:2, 0:2] = 1
    gt[0, 5:7, 5:7] = 2
    # frame 1: object 1 matches exactly, object 2 half covered (J = 2/4).
    gt[1, 0:2, 0:2] = 1
    pred[1, 0:2, 0:2] = 1
    gt[1, 5:7, 5:7] = 2
    pred[1, 5:7, 5:6] = 2
    # frame 2: object 1 disappeared and is not predicted (J = F = 1); object 2 missed.
    gt[2, 5:7, 5:7] = 2
    # frame 3: object 1 reappears; predicted object 2 while absent in GT (J = F = 0);
    # label 3 of the ground truth is not an object (absent from frame 0) and 255 is void.
    gt[3, 0:2, 0:2] = 1
    pred[3, 0:2, 0:2] = 1
    gt[3, 8:10, 8:10] = 3
    gt[3, 4, 4] = 255
    pred[3, 5:7, 5:7] = 2
    # frame 4 (last) is never evaluated, whatever it holds.
    pred[4] = 2
    result = jf_sequence(pred, gt)
    np.testing.assert_allclose(result.j, [[1.0, 1.0, 1.0], [0.5, 0.0, 0.0]])
    assert result.f[0].tolist() == [1.0, 1.0, 1.0]
    assert result.f[1, 1] == 0.0 and result.f[1, 2] == 0.0
    assert result.f[1, 0] == pytest.approx(ref_f(pred[1] == 2, gt[1] == 2))
    # Object rows: J-Mean, J-Recall, J-Decay (N = 3: split points 0, 1, 1, 2, 2).
    assert result.stats[0, :3].tolist() == [1.0, 1.0, 0.0]
    assert result.stats[1, 0] == pytest.approx(0.5 / 3)
    assert result.stats[1, 1] == 0.0
    assert result.stats[1, 2] == pytest.approx(0.25 - 0.0)


def test_label_above_first_frame_objects_is_an_error() -> None:
    gt = np.zeros((3, 4, 4), dtype=np.int64)
    gt[:, 0, 0] = 1
    pred = gt.copy()
    pred[1, 3, 3] = 2
    with pytest.raises(ValueError, match="label 2"):
        jf_sequence(pred, gt)
    relaxed = jf_sequence(pred, gt, strict=False)
    assert relaxed.j[0, 0] == 1.0


def test_no_evaluated_frames_gives_nan() -> None:
    gt = np.ones((2, 4, 4), dtype=np.int64)
    result = jf_sequence(gt, gt)
    assert result.j.shape == (1, 0)
    assert math.isnan(result.stats[0, 0]) and math.isnan(result.stats[0, 2])


# ---------------------------------------------------------------- Metric class


def _two_sequences() -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(2)
    out = []
    for n_obj in (1, 3):
        gt = np.zeros((6, 24, 32), dtype=np.int64)
        for t in range(6):
            for k in range(1, n_obj + 1):
                y, x = rng.integers(0, 18), rng.integers(0, 26)
                gt[t, y : y + 5, x : x + 5] = k
        pred = np.where(rng.random(gt.shape) < 0.1, 0, gt)
        out.append((torch.from_numpy(pred), torch.from_numpy(gt)))
    return out


def test_metric_is_plain_mean_over_objects_and_order_independent() -> None:
    seqs = _two_sequences()
    rows = np.concatenate([jf_sequence(p, g).stats for p, g in seqs])
    metric = JAndF()
    for i, (p, g) in enumerate(seqs):
        metric.update(p, g, sequence_id=i)
    out = metric.compute()
    assert set(out) == {
        "J&F-Mean",
        "J-Mean",
        "J-Recall",
        "J-Decay",
        "F-Mean",
        "F-Recall",
        "F-Decay",
    }
    assert float(out["J-Mean"]) == pytest.approx(rows[:, 0].mean())
    assert float(out["F-Decay"]) == pytest.approx(rows[:, 5].mean())
    assert float(out["J&F-Mean"]) == pytest.approx((rows[:, 0].mean() + rows[:, 3].mean()) / 2)
    reverse = JAndF()
    for i, (p, g) in reversed(list(enumerate(seqs))):
        reverse.update(p, g, sequence_id=i)
    for key, value in reverse.compute().items():
        assert float(value) == float(out[key])
    names = metric.per_object({0: "a", 1: "b"})
    assert list(names) == ["a_1", "b_1", "b_2", "b_3"]
    metric.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(float(metric.compute()["J-Mean"]))


def test_unsupervised_protocol_matches_proposals_and_ignores_void() -> None:
    gt = np.zeros((3, 8, 8), dtype=np.int64)
    gt[:, 0:2, 0:2] = 1
    gt[:, 5:7, 5:7] = 2
    gt[:, 3, 3:5] = 255
    pred = np.zeros_like(gt)
    pred[1:, 0:2, 0:2] = 2  # proposal 2 is object 1, missed in frame 0 (scored: no skipping)
    pred[:, 5:7, 5:7] = 1  # proposal 1 is object 2 ...
    pred[:, 3, 3:5] = 1  # ... and also covers void, which is not counted
    pred[:, 0, 7] = 3  # a spurious proposal stays unmatched
    result = jf_unsupervised_sequence(pred, gt)
    # Rows follow proposal order: (proposal 1 ↔ object 2), (proposal 2 ↔ object 1).
    np.testing.assert_allclose(result.j, [[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    np.testing.assert_allclose(result.f, [[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    metric = JAndF(mode="unsupervised")
    metric.update(torch.from_numpy(pred), torch.from_numpy(gt), sequence_id=0)
    assert float(metric.compute()["J-Mean"]) == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="21 proposals"):
        jf_unsupervised_sequence(np.full((1, 2, 2), 21), gt[:1, :2, :2])
