"""The hold baseline (copy each object's last mask) behind the propagation protocol, and the
``propagator=`` choice that builds it for the tracker, first-frame VOS and the tools."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deva.inference.backend import PropagationBackend
from deva.inference.backends import check_backend, make_backend, needs_model
from deva.inference.hold import HoldBackend
from deva.inference.propagator import Propagator
from deva.inference.tracker import DecoupledTracker
from deva.inference.tracker_config import TrackerConfig, TrackingMode
from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel
from deva.training.tasks.vos import ArrayVideo, VOSTask
from deva.types import Segmentation
from tests.inference.test_backend import ScriptedSegmenter, _frames

H, W = 48, 64


def _image() -> torch.Tensor:
    return torch.zeros(3, H, W)


def _ids(*boxes: tuple[int, slice, slice]) -> torch.Tensor:
    mask = torch.zeros(H, W, dtype=torch.long)
    for obj, ys, xs in boxes:
        mask[ys, xs] = obj
    return mask


def test_hold_is_a_backend_and_repeats_the_last_committed_mask() -> None:
    backend = HoldBackend()
    assert isinstance(backend, PropagationBackend)
    first = _ids((3, slice(0, 10), slice(0, 10)), (7, slice(20, 30), slice(20, 40)))
    result = backend.step(_image(), first)
    assert result.object_ids == [3, 7] and torch.equal(result.index_mask(), first)
    for _ in range(3):  # nothing given: the same mask every frame
        result = backend.step(_image())
        assert torch.equal(result.index_mask(), first)
    assert result.prob.shape == (3, H, W) and torch.allclose(result.prob.sum(0), torch.ones(H, W))


def test_given_masks_reinitialise_objects_and_add_new_ones() -> None:
    backend = HoldBackend()
    backend.step(_image(), _ids((1, slice(0, 10), slice(0, 10)), (2, slice(20, 30), slice(0, 10))))
    # object 1 moves (its old pixels go), object 5 is new, object 2 is kept
    moved = _ids((1, slice(0, 10), slice(40, 50)), (5, slice(30, 40), slice(30, 40)))
    result = backend.step(_image(), moved, [1, 5])
    ids = result.index_mask()
    assert result.object_ids == [1, 2, 5]
    assert (ids[0:10, 0:10] == 0).all() and (ids[0:10, 40:50] == 1).all()
    assert (ids[20:30, 0:10] == 2).all() and (ids[30:40, 30:40] == 5).all()
    # probabilities for given objects: foreground where they exceed 0.5
    prob = torch.zeros(1, H, W)
    prob[0, 40:48, 0:8] = 0.9
    prob[0, 0:5, 60:64] = 0.4
    ids = backend.step(_image(), prob, [9]).index_mask()
    assert (ids[40:48, 0:8] == 9).all() and (ids[0:5, 60:64] == 0).all()


def test_empty_new_objects_need_keep_empty_and_deleted_objects_vanish() -> None:
    backend = HoldBackend()
    backend.step(_image(), _ids((1, slice(0, 10), slice(0, 10))))
    empty = torch.zeros(H, W, dtype=torch.long)
    assert backend.step(_image(), empty, [4]).object_ids == [1]
    assert backend.step(_image(), empty, [4], keep_empty=True).object_ids == [1, 4]
    backend.delete_objects([1])
    result = backend.step(_image())
    assert result.object_ids == [4] and (result.index_mask() == 0).all()
    assert 1 not in backend.objects


def test_the_last_frame_is_not_held_and_state_resumes_exactly() -> None:
    backend = HoldBackend()
    first = _ids((2, slice(5, 15), slice(5, 15)))
    backend.step(_image(), first)
    backend.step(_image(), _ids((2, slice(30, 40), slice(30, 40))), end=True)
    assert torch.equal(backend.step(_image()).index_mask(), first)  # end=True wrote nothing
    state = backend.state_dict()
    twin = backend.fork()
    assert twin.object_ids == []
    twin.load_state_dict(state)
    assert twin.object_ids == [2] and torch.equal(twin.step(_image()).index_mask(), first)
    with pytest.raises(ValueError, match="frame size"):
        twin.step(torch.zeros(3, H + 1, W))


def test_protocol_misuse_is_refused_like_ours() -> None:
    backend = HoldBackend()
    backend.predict(_image())
    with pytest.raises(RuntimeError, match="twice"):
        backend.predict(_image())
    with pytest.raises(ValueError, match="objects were given without a mask"):
        backend.commit(None, [1])
    with pytest.raises(ValueError, match="distinct positive"):
        backend.step(_image(), torch.ones(2, H, W), [3, 3])


def test_alignment_is_the_identity() -> None:
    backend = HoldBackend()
    seg = ScriptedSegmenter()(np.zeros((H, W, 3), np.uint8), frame_name="0")
    features = backend.encode(_image())
    (aligned,) = backend.align([(features, seg)], features)
    assert torch.equal(aligned.mask, seg.mask) and [s.id for s in aligned.segments] == [5, 9]
    with pytest.raises(ValueError, match="source frame"):
        backend.align([(features, seg)], (H, W + 16))


def test_config_builds_the_named_backend_for_the_tracker() -> None:
    model = PropagationModel(PropagationConfig.preset("tiny"))
    assert isinstance(make_backend("deva", model), Propagator)
    assert isinstance(make_backend("hold", None), HoldBackend)
    assert needs_model("deva") and not needs_model("hold")
    with pytest.raises(ValueError, match="unknown propagator 'sam9'"):
        check_backend("sam9")
    with pytest.raises(ValueError, match="unknown propagator"):
        TrackerConfig(propagator="sam9")
    config = TrackerConfig(
        mode=TrackingMode.ONLINE, detect_every=1, max_missed=1, shorter_side=-1, propagator="hold"
    )
    tracker = DecoupledTracker(model, ScriptedSegmenter(), config)
    results = list(tracker.stream(_frames(8)))
    # held masks between detections: the staying box is object 1 throughout, the vanishing
    # one is deleted at its second missed merge
    assert all((r.mask[4:28, 4:36] == 1).all() for r in results)
    assert results[6].removed_ids == [2] and tracker.registry.ids == [1]


def test_vos_task_scores_the_copy_baseline() -> None:
    """J&F of holding the first mask: 1 on a still object, below 1 once it moves, whatever
    the model's weights."""
    frames = np.zeros((4, H, W, 3), np.uint8)
    still = np.zeros((4, H, W), np.int64)
    still[:, 10:20, 10:20] = 1
    moving = still.copy()
    moving[2:] = 0
    moving[2:, 10:20, 30:40] = 1
    model = PropagationModel(PropagationConfig.preset("tiny"))
    scores = []
    for masks in (still, moving):
        task = VOSTask("t", [ArrayVideo("v", frames, masks)], shorter_side=-1, propagator="hold")
        metric = task.make_metric()
        task.process(model, 0, metric)
        scores.append(task.summarize(metric)["jf"])
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] < 0.75
    with pytest.raises(ValueError, match="unknown propagator"):
        VOSTask("t", [], propagator="nope")


def test_segmentation_without_pixels_is_dropped_in_alignment() -> None:
    backend = HoldBackend()
    seg = ScriptedSegmenter()(np.zeros((H, W, 3), np.uint8), frame_name="9")  # object 5 only
    seg = Segmentation(
        mask=seg.mask,
        segments=[
            *seg.segments,
            *ScriptedSegmenter()(np.zeros((H, W, 3), np.uint8), frame_name="0").segments[1:],
        ],
    )
    features = backend.encode(_image())
    (aligned,) = backend.align([(features, seg)], features)
    assert [s.id for s in aligned.segments] == [5]
