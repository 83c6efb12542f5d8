"""SAM 2 / SAM 3 tracker / EdgeTAM as propagation backends, on tiny random models saved with
``save_pretrained``: equal to ``transformers``' own streaming inference, and the protocol
(add / delete / commit / align / resume) behaving like ours on a scripted sequence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deva.inference.backends import backend_name, make_backend, needs_model
from deva.inference.hold import HoldBackend
from deva.inference.preprocess import preprocess_frame
from deva.types import Segment, Segmentation

transformers = pytest.importorskip("transformers")

from deva.inference.sam_video import FAMILIES, SamVideoBackend, load_sam_video  # noqa: E402
from deva.segmenters import tiny  # noqa: E402

H, W = 48, 64
SAVERS = {
    "sam2": tiny.save_tiny_sam2_video,
    "sam3": tiny.save_tiny_sam3_tracker_video,
    "edgetam": tiny.save_tiny_edgetam_video,
}
SESSIONS = {
    "sam2": "Sam2VideoInferenceSession",
    "sam3": "Sam3TrackerVideoInferenceSession",
    "edgetam": "EdgeTamVideoInferenceSession",
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("video_models")
    return {name: str(save(root / name)) for name, save in SAVERS.items()}


def frames(count: int, seed: int = 0) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    return [
        preprocess_frame(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), -1)[0]
        for _ in range(count)
    ]


def box(value: int, top: int, left: int, height: int = 16, width: int = 20) -> torch.Tensor:
    mask = torch.zeros(H, W, dtype=torch.long)
    mask[top : top + height, left : left + width] = value
    return mask


@pytest.mark.parametrize("name", sorted(SAVERS))
def test_equals_transformers_streaming(folders, name: str) -> None:
    """A first-frame mask propagated by the backend gives the same probabilities as the
    model's own streaming API (mask input on frame 0, then ``model(session, frame=...)``)."""
    backend = load_sam_video(name, folders[name])
    images = frames(6)
    ours = [
        backend.step(img, box(1, 8, 10) if t == 0 else None).prob for t, img in enumerate(images)
    ]
    model = backend.model
    session = getattr(transformers, SESSIONS[name])(
        video_height=H, video_width=W, inference_device="cpu", dtype=torch.float32
    )
    with torch.inference_mode():
        t = session.add_new_frame(backend.pixels(images[0]))
        idx = session.obj_id_to_idx(1)
        square = backend._square((box(1, 8, 10) == 1).float()[None]) > 0.5
        session.add_mask_inputs(idx, t, square.float())
        session.obj_with_new_inputs = [1]
        model(inference_session=session, frame_idx=t)
        for k in range(1, len(images)):
            out = model(inference_session=session, frame=backend.pixels(images[k]))
            theirs = backend._probabilities([out.pred_masks], (H, W))
            torch.testing.assert_close(ours[k], theirs, atol=1e-6, rtol=0)
    # the tiny model's masks are not constant: the comparison has something to compare
    assert float(ours[1][1].max() - ours[1][1].min()) > 1e-4
    assert not torch.equal(ours[1], ours[2])


@pytest.mark.parametrize("name", sorted(SAVERS))
def test_protocol_script_like_hold(folders, name: str) -> None:
    """Add, re-initialise, delete (also between predict and commit), keep_empty, end frames:
    the same objects in the same channel order as the hold baseline at every step, and given
    masks win where they are foreground."""
    sam = load_sam_video(name, folders[name])
    hold = HoldBackend()
    images = frames(12, seed=1)
    script: dict[int, tuple[torch.Tensor | None, list[int] | None, bool]] = {
        0: (box(1, 4, 4) + box(2, 26, 36), None, False),
        3: (box(3, 28, 2), [3], False),  # a new object mid-video
        5: (box(1, 6, 30, 10, 10), [1], False),  # object 1 re-initialised elsewhere
        7: (torch.zeros(H, W, dtype=torch.long), [4], False),  # empty new object: ignored
        8: (torch.zeros(H, W, dtype=torch.long), [5], True),  # ... unless keep_empty
    }
    for t, image in enumerate(images):
        mask, objects, keep_empty = script.get(t, (None, None, False))
        end = t == len(images) - 1
        for backend in (sam, hold):
            for obj in objects or []:
                if obj not in backend.objects:  # the tracker registers new objects first
                    backend.objects.add(obj)
        results = []
        for backend in (sam, hold):
            backend.predict(image, end=end)
            if t == 10:
                backend.delete_objects([2])  # between predict and commit
            results.append(backend.commit(mask, objects, keep_empty=keep_empty))
        ours, theirs = results
        assert ours.object_ids == theirs.object_ids, t
        assert ours.prob.shape == (len(ours.object_ids) + 1, H, W)
        torch.testing.assert_close(ours.prob.sum(dim=0), torch.ones(H, W))
        if mask is not None and bool(mask.any()):
            given = mask > 0
            assert torch.equal(ours.index_mask()[given], mask[given]), t
        if t == 6:
            sam.delete_objects([3])
            hold.delete_objects([3])
    assert sam.object_ids == [1, 5]
    assert set(sam._memory) == {1, 5}
    assert backend_name(sam) == name and not needs_model(name)


def test_memory_is_bounded_and_end_writes_nothing(folders) -> None:
    backend = load_sam_video("sam2", folders["sam2"])
    backend.max_conditioning = 3
    images = frames(3)
    for t in range(40):
        mask, objects = (box(1, 4, 4), [1]) if t % 5 == 0 else (None, None)
        backend.step(images[t % 3], mask, objects)
    memory = backend._memory[1]
    assert sorted(memory["cond_frame_outputs"]) == [0, 30, 35]  # first + the most recent
    window = max(backend.model.num_maskmem, backend.model.config.max_object_pointers_in_encoder)
    assert min(memory["non_cond_frame_outputs"]) > 39 - window
    kept = {t: dict(v) for t, v in memory["non_cond_frame_outputs"].items()}
    backend.step(images[0], end=True)
    assert memory["non_cond_frame_outputs"].keys() == kept.keys()
    stored = next(iter(memory["non_cond_frame_outputs"].values()))
    assert set(stored) == {
        "maskmem_features",
        "maskmem_pos_enc",
        "object_pointer",
        "object_score_logits",
    }


def test_resume_fork_and_align_leave_state_alone(folders, tmp_path) -> None:
    backend = load_sam_video("sam3", folders["sam3"])
    images = frames(5)
    backend.step(images[0], box(1, 4, 4) + box(2, 26, 36))
    backend.step(images[1])
    path = tmp_path / "state.pt"
    torch.save(backend.state_dict(), path)
    twin = backend.fork()
    assert twin.model is backend.model and twin.object_ids == [] and backend.object_ids == [1, 2]
    twin.load_state_dict(torch.load(path, weights_only=True))
    target = backend.encode(images[2])
    seg = Segmentation(mask=box(7, 10, 10), segments=[Segment(id=7), Segment(id=8)])
    aligned = backend.align([(backend.encode(images[3]), seg)], target)
    assert len(aligned) == 1 and aligned[0].mask.shape == (H, W)
    assert {s.id for s in aligned[0].segments} <= {7}  # segment 8 has no pixel
    assert set(torch.unique(aligned[0].mask).tolist()) <= {0, 7}
    a = backend.step(features=target)
    b = twin.step(features=target)
    assert a.object_ids == b.object_ids == [1, 2]
    torch.testing.assert_close(a.prob, b.prob, atol=0, rtol=0)
    with pytest.raises(ValueError, match="state of propagator 'sam3', not 'sam2'"):
        load_sam_video("sam2", folders["sam2"]).load_state_dict(backend.state_dict())


def test_registry_and_loader_errors(folders, tmp_path) -> None:
    backend = make_backend("edgetam", None, source=folders["edgetam"])
    assert isinstance(backend, SamVideoBackend) and backend.name == "edgetam"
    assert set(FAMILIES) == {"sam2", "sam3", "edgetam"}
    with pytest.raises(FileNotFoundError, match="propagator=sam2 model folder not found"):
        make_backend("sam2", None, source=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="lacks config.json"):
        make_backend("sam2", None, source=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="huggingface-cli download facebook/sam2.1"):
        make_backend("sam2", None, local_files_only=True)
    with pytest.raises(ValueError, match="lacks _run_single_frame_inference"):
        SamVideoBackend(torch.nn.Linear(2, 2), name="sam2")


def test_validation_sets_build_the_backend_once(folders, monkeypatch) -> None:
    """A VOS validation set with ``propagator: sam2`` scores through the SAM backend, loading
    its model once for all videos."""
    from deva.config.builder.tasks import validation_tasks
    from deva.inference import backends
    from deva.modeling.config import PropagationConfig
    from deva.modeling.propagation import PropagationModel

    built = []
    factory = backends.BACKENDS["sam2"]
    monkeypatch.setitem(
        backends.BACKENDS, "sam2", lambda *a, **k: built.append(k) or factory(*a, **k)
    )
    spec = {"type": "synthetic", "num_videos": 2, "num_frames": 4, "height": H, "width": W}
    (task,) = validation_tasks(
        {"sam": {**spec, "propagator": "sam2", "propagator_model": folders["sam2"]}}
    )
    model = PropagationModel(PropagationConfig.preset("tiny"))
    metric = task.make_metric()
    for index in range(len(task)):
        task.process(model, index, metric)
    scores = task.summarize(metric)
    assert len(built) == 1 and built[0]["source"] == folders["sam2"]
    assert 0.0 <= scores["jf"] <= 1.0 and scores["num_objects"] >= 2


def test_tracking_validation_set_runs_the_decoupled_loop_on_sam2(folders) -> None:
    from deva.config.builder.tasks import validation_tasks
    from deva.modeling.config import PropagationConfig
    from deva.modeling.propagation import PropagationModel

    spec = {"type": "synthetic_panoptic", "num_videos": 2, "num_frames": 6, "height": H}
    spec.update(width=W, propagator="sam2", propagator_model=folders["sam2"], mode="online")
    (task,) = validation_tasks({"pan": spec})
    model = PropagationModel(PropagationConfig.preset("tiny"))
    metric = task.make_metric()
    for index in range(len(task)):
        task.process(model, index, metric)
    assert isinstance(task._backend, SamVideoBackend)
    scores = task.summarize(metric)
    assert scores and all(np.isfinite(v) for v in scores.values())
