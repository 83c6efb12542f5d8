"""In-clip consensus: IoU, the exact integer program, painting and metadata."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from deva.inference.consensus import (
    build_consensus,
    build_proposals,
    in_clip_consensus,
    max_weight_independent_set,
    support_matrix,
)
from deva.types import Segment, Segmentation

H, W = 40, 40


def boxes(*items: tuple, size: tuple[int, int] = (H, W)) -> Segmentation:
    """Segmentation from (y0, y1, x0, x1, extra Segment kwargs) boxes, ids 1..K in order."""
    mask = torch.zeros(size, dtype=torch.long)
    segments = []
    for k, (y0, y1, x0, x1, *rest) in enumerate(items, start=1):
        mask[y0:y1, x0:x1] = k
        segments.append(Segment(id=k, **(rest[0] if rest else {})))
    return Segmentation(mask=mask, segments=segments)


def random_segmentation(rng: np.random.Generator, n_ids: int, id_scale: int = 1) -> Segmentation:
    """Random blocky id map with ids scaled by ``id_scale`` (large ids exercise torch.unique)."""
    coarse = rng.integers(0, n_ids + 1, size=(8, 8))
    ids = np.kron(coarse, np.ones((5, 5), dtype=np.int64))
    ids = ids * id_scale
    present = sorted(set(np.unique(ids).tolist()) - {0})
    segments = [Segment(id=int(i), isthing=bool(rng.integers(2))) for i in present]
    return Segmentation(mask=torch.from_numpy(ids), segments=segments)


def naive_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 0.0


def brute_force_best(weights: np.ndarray, conflict: np.ndarray) -> tuple[float, np.ndarray]:
    """Best objective over all feasible subsets, and the lexicographically greatest optimum."""
    num = len(weights)
    best_value, best = 0.0, np.zeros(num, dtype=bool)
    for bits in itertools.product([1, 0], repeat=num):
        chosen = np.array(bits, dtype=bool)
        if conflict[np.ix_(chosen, chosen)].any():
            continue
        value = float(weights[chosen].sum())
        if value > best_value + 1e-9:
            best_value, best = value, chosen
    return best_value, best


def objective(weights: np.ndarray, chosen: np.ndarray) -> float:
    return float(weights[chosen].sum())


def random_graph(rng: np.random.Generator, num: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    if ties:
        weights = rng.choice([-0.5, 0.25, 0.5, 1.0], size=num)
    else:
        weights = rng.uniform(-0.5, 2.0, size=num)
    upper = np.triu(rng.random((num, num)) < rng.uniform(0.1, 0.6), k=1)
    return weights, upper | upper.T


def test_iou_matrix_matches_naive_per_pair() -> None:
    rng = np.random.default_rng(0)
    for id_scale in (1, 1 << 23):
        frames = [random_segmentation(rng, 6, id_scale) for _ in range(3)]
        props = build_proposals(frames)
        flat = [(f, s.id) for f, seg in enumerate(frames) for s in seg.segments]
        assert len(props) == len(flat)
        for i, j in itertools.product(range(len(flat)), repeat=2):
            mi = frames[flat[i][0]].mask == flat[i][1]
            mj = frames[flat[j][0]].mask == flat[j][1]
            assert props.iou[i, j] == pytest.approx(naive_iou(mi, mj), abs=1e-12)
            assert props.intersections[i, j] == (mi & mj).sum().item()
        assert props.frames.tolist() == [f for f, _ in flat]


def test_lone_proposal_is_rejected() -> None:
    frames = [boxes((0, 10, 0, 10)), boxes((20, 30, 20, 30))]
    result = build_consensus(frames)
    assert result.segmentation.segments == []
    assert int(result.segmentation.mask.abs().sum()) == 0
    assert not result.selected.any()
    assert result.weights.tolist() == [-0.5, -0.5]


def test_three_agreeing_proposals_yield_one_with_merged_metadata() -> None:
    frames = [
        boxes((5, 25, 5, 25, {"category_id": 7, "score": 0.9, "isthing": True})),
        boxes((6, 26, 5, 25, {"category_id": 3, "score": 0.6, "isthing": True})),
        boxes((5, 25, 6, 26, {"category_id": 7, "score": 0.3, "isthing": True})),
        boxes((30, 35, 30, 35, {"category_id": 1, "score": 1.0, "isthing": True})),
    ]
    result = build_consensus(frames)
    seg = result.segmentation
    assert len(seg.segments) == 1
    out = seg.segments[0]
    assert out.id == 1
    assert out.category_id == 7
    assert out.score == pytest.approx((0.9 + 0.6 + 0.3) / 3)
    assert out.isthing is True
    # every supporting proposal's detection is kept for the tracker's vote
    assert sorted(out.detections) == [(3, 0.6), (7, 0.3), (7, 0.9)]
    source = result.sources[1]
    expected = frames[result.proposals.frames[source]].mask == 1
    assert torch.equal(seg.mask == 1, expected)
    assert sorted(result.supporters[1]) == [0, 1, 2]
    # The middle of the three has the most support: it overlaps both others the most.
    iou = result.proposals.iou
    support = [iou[i, [j for j in range(3) if j != i]].sum() for i in range(3)]
    assert source == int(np.argmax(support))


def test_tie_prefers_the_key_frame_proposal() -> None:
    # Two identical proposals support each other equally: the key frame's one is chosen.
    frames = [
        boxes((0, 20, 0, 20, {"category_id": 2}), (25, 35, 25, 35, {"category_id": 4})),
        boxes((25, 35, 25, 35, {"category_id": 4}), (0, 20, 0, 20, {"category_id": 1})),
    ]
    result = build_consensus(frames)
    assert sorted(result.sources.values()) == [0, 1]
    assert all(result.proposals.frames[i] == 0 for i in result.sources.values())
    # Category vote tie (2 vs 1) goes to the smallest category id, as in the published code.
    by_source = {result.sources[s.id]: s for s in result.segmentation.segments}
    assert by_source[0].category_id == 1


def test_stuff_and_things_never_support_each_other() -> None:
    frames = [
        boxes((0, 20, 0, 20, {"isthing": True})),
        boxes((0, 20, 0, 20, {"isthing": False})),
        boxes((0, 20, 0, 20, {"isthing": None})),
    ]
    assert build_consensus(frames).segmentation.segments == []
    frames.append(boxes((0, 20, 0, 20, {"isthing": False})))
    seg = in_clip_consensus(frames)
    assert [s.isthing for s in seg.segments] == [False]
    support = support_matrix(np.ones((3, 3)), [True, False, None])
    assert not support.any()


def test_isthing_is_ignored_without_separate_things() -> None:
    frames = [
        boxes((0, 20, 0, 20, {"isthing": True, "category_id": 1})),
        boxes((0, 20, 0, 20, {"isthing": False, "category_id": 2})),
        boxes((0, 20, 0, 20, {"isthing": None, "category_id": 2})),
    ]
    seg = in_clip_consensus(frames, separate_things=False)
    assert len(seg.segments) == 1
    assert seg.segments[0].category_id == 2
    assert seg.segments[0].isthing is True  # the selected (key frame) proposal's status
    support = support_matrix(np.ones((3, 3)), [True, False, None], separate_things=False)
    assert support.sum() == 6


def test_painting_puts_smaller_segments_on_top() -> None:
    big, small = (0, 30, 0, 30), (10, 15, 10, 15)
    for order in ((big, big, small, small), (small, small, big, big)):
        frames = [boxes(b) for b in order]
        result = build_consensus(frames)
        seg = result.segmentation
        assert len(seg.segments) == 2
        areas = {s.id: int((seg.mask == s.id).sum()) for s in seg.segments}
        small_id = min(areas, key=areas.get)
        assert areas[small_id] == 25
        assert bool((seg.mask[10:15, 10:15] == small_id).all())
        assert areas[max(areas, key=areas.get)] == 900 - 25


def test_single_frame_is_its_own_consensus() -> None:
    frame = boxes((0, 10, 0, 10, {"category_id": 3}), (20, 30, 20, 30, {"score": 0.5}))
    frame.segments[0].id, frame.segments[1].id = 17, 4
    frame.mask[frame.mask == 1], frame.mask[frame.mask == 2] = 17, 4
    seg = in_clip_consensus([frame])
    assert [(s.id, s.category_id, s.score) for s in seg.segments] == [(1, 3, None), (2, None, 0.5)]
    assert torch.equal(seg.mask > 0, frame.mask > 0)


def test_identical_frames_reproduce_the_key_frame() -> None:
    rng = np.random.default_rng(3)
    frame = random_segmentation(rng, 30)
    seg = in_clip_consensus([frame, frame, frame])
    assert len(seg.segments) == len(frame.segments)
    # Same partition, relabelled: the id pairs form a bijection.
    pairs = set(zip(frame.mask.reshape(-1).tolist(), seg.mask.reshape(-1).tolist()))
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
    assert (0, 0) in pairs


@pytest.mark.parametrize("max_search_size", [24, 0])
def test_solver_is_optimal_against_brute_force(max_search_size: int) -> None:
    rng = np.random.default_rng(1)
    for _ in range(150):
        num = int(rng.integers(1, 11))
        weights, conflict = random_graph(rng, num, ties=bool(rng.integers(2)))
        chosen = max_weight_independent_set(weights, conflict, max_search_size=max_search_size)
        assert not conflict[np.ix_(chosen, chosen)].any()
        assert not chosen[weights <= 0].any()
        best, _ = brute_force_best(weights, conflict)
        assert objective(weights, chosen) == pytest.approx(best, abs=1e-9)


def test_branch_and_bound_breaks_ties_towards_earlier_indices() -> None:
    rng = np.random.default_rng(2)
    for _ in range(150):
        num = int(rng.integers(2, 10))
        weights, conflict = random_graph(rng, num, ties=True)
        chosen = max_weight_independent_set(weights, conflict)
        _, expected = brute_force_best(weights, conflict)
        assert chosen.tolist() == expected.tolist()


def test_consensus_selection_is_optimal_on_random_clips() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        frames = [random_segmentation(rng, 4) for _ in range(3)]
        result = build_consensus(frames)
        support = support_matrix(
            result.proposals.iou, [s.isthing for s in result.proposals.segments]
        )
        if len(result.weights) > 14:
            continue
        best, _ = brute_force_best(result.weights, support)
        assert objective(result.weights, result.selected) == pytest.approx(best, abs=1e-9)
        assert not support[np.ix_(result.selected, result.selected)].any()
        # Every selected proposal has support.
        assert all(support[i].any() for i in np.flatnonzero(result.selected))


def test_invalid_inputs_raise() -> None:
    frame = boxes((0, 10, 0, 10))
    with pytest.raises(ValueError, match="same"):
        in_clip_consensus([frame, boxes((0, 10, 0, 10), size=(H, W + 1))])
    unlisted = Segmentation(mask=frame.mask * 3, segments=[Segment(id=1)])
    with pytest.raises(ValueError, match="not in the segment list"):
        in_clip_consensus([frame, unlisted])
    with pytest.raises(ValueError, match="at least one"):
        in_clip_consensus([])


def test_selected_segment_painted_over_stays_a_segment_without_pixels() -> None:
    """A (whole box) is selected, and so are its two halves B and C (IoU 0.5 with A: no
    support, so no conflict); smaller segments are painted on top, A keeps no pixel, and it
    is still a consensus segment, so that merging makes it an object (published rule)."""
    whole = torch.zeros(8, 8, dtype=torch.long)
    whole[2:6, 0:8] = 1
    halves = torch.zeros(8, 8, dtype=torch.long)
    halves[2:6, 0:4] = 1
    halves[2:6, 4:8] = 2
    a = Segmentation(mask=whole, segments=[Segment(1, category_id=1)])
    bc = Segmentation(mask=halves, segments=[Segment(1, category_id=2), Segment(2, category_id=3)])
    seg = in_clip_consensus([a, bc, bc, a])
    assert len(seg.segments) == 3
    areas = {s.category_id: int((seg.mask == s.id).sum()) for s in seg.segments}
    assert areas == {1: 0, 2: 16, 3: 16}
