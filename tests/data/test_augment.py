"""Augmentation keeps masks aligned with images and geometry consistent across a clip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deva.data.augment import ResizeCrop, StaticAugment, VideoAugment

# Label k is painted in COLOURS[k]: black background, then pure red, green, blue.
COLOURS = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)


def label_scene(height: int = 150, width: int = 200, seed: int = 0) -> np.ndarray:
    """A label map with three blobs of different shapes (labels 1..3)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), dtype=np.uint8)
    cv2.ellipse(labels, (60, 50), (40, 25), float(rng.uniform(0, 90)), 0, 360, 1, -1)
    cv2.rectangle(labels, (110, 70), (180, 130), 2, -1)
    triangle = np.array([[20, 140], [90, 140], [55, 85]], dtype=np.int32)
    cv2.fillPoly(labels, [triangle], 3)
    return labels


def colour_to_label(frame: np.ndarray) -> np.ndarray:
    """Read the label back from colours: dark → 0, else the dominant channel + 1."""
    frame = frame.astype(np.int32)
    labels = frame.argmax(axis=2) + 1
    labels[frame.max(axis=2) < 80] = 0
    return labels


def interior(mask: np.ndarray, margin: int = 2) -> np.ndarray:
    """Pixels whose whole (2·margin+1)² neighbourhood carries the same label."""
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    keep = np.zeros(mask.shape, dtype=bool)
    for label in np.unique(mask):
        keep |= cv2.erode((mask == label).astype(np.uint8), kernel).astype(bool)
    return keep


def assert_aligned(frame: np.ndarray, mask: np.ndarray) -> None:
    inside = interior(mask)
    assert inside.sum() > 0.5 * mask.size
    agreement = (colour_to_label(frame) == mask)[inside].mean()
    assert agreement > 0.99, f"only {agreement:.3f} of interior pixels agree"


@pytest.mark.parametrize("seed", range(4))
def test_video_augment_keeps_masks_aligned(seed: int) -> None:
    labels = label_scene()
    frames = [COLOURS[labels]] * 3
    out_frames, out_masks = VideoAugment(96)(frames, [labels] * 3, np.random.default_rng(seed))
    assert len(out_frames) == 3 and len(out_masks) == 3
    for frame, mask in zip(out_frames, out_masks):
        assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8
        assert mask.shape == (96, 96)
        assert set(np.unique(mask).tolist()) <= {0, 1, 2, 3}
        assert_aligned(frame, mask)


def test_video_augment_same_geometry_for_every_frame() -> None:
    labels = label_scene()
    rng = np.random.default_rng(1)
    # Different frame contents with the same masks: only geometry decides the output masks.
    frames = [COLOURS[labels] // (1 + t) for t in range(4)]
    out_frames, out_masks = VideoAugment(80)(frames, [labels] * 4, np.random.default_rng(3))
    for mask in out_masks[1:]:
        np.testing.assert_array_equal(mask, out_masks[0])
    assert_aligned(out_frames[0], out_masks[0])
    # Per-frame colour jitter: frames with identical input still differ a little.
    same = [COLOURS[labels]] * 3
    jittered, _ = VideoAugment(80)(same, [labels] * 3, rng)
    assert not np.array_equal(jittered[0], jittered[1])
    assert np.abs(jittered[0].astype(int) - jittered[1].astype(int)).mean() < 25


def test_masks_use_nearest_neighbour_labels() -> None:
    labels = label_scene()
    labels = np.where(labels == 1, 5, np.where(labels == 2, 9, labels)).astype(np.uint8)
    frames = [COLOURS[np.minimum(label_scene(), 3)]] * 2
    for seed in range(5):
        _, masks = VideoAugment(64)(frames, [labels] * 2, np.random.default_rng(seed))
        assert set(np.unique(masks[0]).tolist()) <= {0, 3, 5, 9}
        _, static_masks = StaticAugment(64)(frames[0], labels, np.random.default_rng(seed))
        assert set(np.unique(np.stack(static_masks)).tolist()) <= {0, 3, 5, 9}


@pytest.mark.parametrize("seed", range(4))
def test_static_augment_makes_different_aligned_frames(seed: int) -> None:
    labels = label_scene()
    frames, masks = StaticAugment(96, num_frames=3)(
        COLOURS[labels], labels, np.random.default_rng(seed)
    )
    assert len(frames) == 3
    for frame, mask in zip(frames, masks):
        assert frame.shape == (96, 96, 3) and mask.shape == (96, 96)
        assert_aligned(frame, mask)
    # Three independent warps: the masks differ between frames.
    assert not np.array_equal(masks[0], masks[1])
    assert not np.array_equal(masks[1], masks[2])


def test_augment_is_a_function_of_the_generator() -> None:
    labels = label_scene()
    augment = VideoAugment(64)
    a = augment([COLOURS[labels]] * 2, [labels] * 2, np.random.default_rng(7))
    b = augment([COLOURS[labels]] * 2, [labels] * 2, np.random.default_rng(7))
    c = augment([COLOURS[labels]] * 2, [labels] * 2, np.random.default_rng(8))
    np.testing.assert_array_equal(np.stack(a[0]), np.stack(b[0]))
    np.testing.assert_array_equal(np.stack(a[1]), np.stack(b[1]))
    assert not np.array_equal(np.stack(a[0]), np.stack(c[0]))


def test_resize_crop_is_deterministic_centre_crop() -> None:
    labels = label_scene(100, 200)
    frames, masks = ResizeCrop(50)([COLOURS[labels]], [labels], np.random.default_rng(0))
    assert frames[0].shape == (50, 50, 3)
    expected = cv2.resize(labels, (100, 50), interpolation=cv2.INTER_NEAREST)[:, 25:75]
    assert (masks[0] == expected).mean() > 0.98
    assert_aligned(frames[0], masks[0])


def test_mismatched_clip_is_refused() -> None:
    labels = label_scene()
    with pytest.raises(ValueError, match="one size"):
        VideoAugment(64)([COLOURS[labels]], [labels[:-1]], np.random.default_rng(0))


def test_static_frames_move_as_published() -> None:
    """Each pseudo-frame has its own affine (scale 0.5–2.0) and crop: the object masks of
    frames 0 and 1 overlap far less than under one shared crop (mean IoU over 20 draws)."""
    labels = label_scene()
    augment = StaticAugment(96)
    ious = []
    for seed in range(20):
        _, masks = augment(COLOURS[labels], labels, np.random.default_rng(seed))
        a, b = masks[0] > 0, masks[1] > 0
        ious.append((a & b).sum() / max((a | b).sum(), 1))
    assert np.mean(ious) < 0.6


def test_grey_scale_draws_are_grey() -> None:
    labels = label_scene()
    frames, _ = VideoAugment(64, gray_p=1.0)([COLOURS[labels]] * 2, [labels] * 2,
                                             np.random.default_rng(0))  # fmt: skip
    assert all(np.ptp(f.astype(int), axis=2).max() <= 12 for f in frames)  # frame jitter only
    static, _ = StaticAugment(64, gray_p=1.0)(COLOURS[labels], labels, np.random.default_rng(0))
    assert all(np.ptp(f.astype(int), axis=2).max() <= 12 for f in static)
