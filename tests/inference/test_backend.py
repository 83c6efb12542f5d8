"""The tracker talks to propagation only through the PropagationBackend protocol: a test double
that repeats the last committed masks drives it through consensus, merging and deletion."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from deva.inference.backend import PropagationBackend, PropagationResult
from deva.inference.objects import ObjectRegistry
from deva.inference.propagator import Propagator
from deva.inference.tracker import DecoupledTracker
from deva.inference.tracker_config import TrackerConfig, TrackingMode
from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel
from deva.types import Segment, Segmentation

H, W = 48, 64


class CopyBackend:
    """Propagation that repeats the last masks committed for each object; alignment keeps a
    segmentation as it is. Records the calls it gets."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.forks = 0
        self.reset()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def object_ids(self) -> list[int]:
        return [o for o in self.objects.ids if o in self._masks]

    def reset(self) -> None:
        self.objects = ObjectRegistry()
        self._masks: dict[int, torch.Tensor] = {}
        self._pending: torch.Tensor | None = None

    def fork(self) -> CopyBackend:
        self.forks += 1
        return CopyBackend()

    def encode(self, image: torch.Tensor) -> Any:
        self.calls.append("encode")
        return image

    def _result(self, size: tuple[int, int]) -> PropagationResult:
        ids = self.object_ids
        objects = torch.stack([self._masks[o] for o in ids]) if ids else torch.zeros(0, *size)
        background = (1 - objects.sum(dim=0, keepdim=True)).clamp(0, 1)
        return PropagationResult(torch.cat([background, objects]), ids)

    def predict(
        self, image: torch.Tensor | None = None, *, features: Any = None, end: bool = False
    ) -> PropagationResult:
        self.calls.append("predict")
        self._pending = features
        return self._result(tuple(features.shape[-2:]))

    def commit(
        self,
        mask: torch.Tensor | np.ndarray | None = None,
        objects: list[int] | None = None,
        *,
        keep_empty: bool = False,
    ) -> PropagationResult:
        self.calls.append("commit")
        size = tuple(self._pending.shape[-2:])
        if mask is not None:
            for i, obj in enumerate(objects or []):
                if obj not in self.objects:
                    self.objects.add(obj)
                self._masks[obj] = torch.as_tensor(mask)[i].float()
        return self._result(size)

    def step(
        self,
        image: torch.Tensor | None = None,
        mask: torch.Tensor | np.ndarray | None = None,
        objects: list[int] | None = None,
        *,
        end: bool = False,
        features: Any = None,
        keep_empty: bool = False,
    ) -> PropagationResult:
        self.predict(features=features, end=end)
        return self.commit(mask, objects, keep_empty=keep_empty)

    def delete_objects(self, object_ids: list[int]) -> None:
        self.calls.append(f"delete {sorted(object_ids)}")
        self.objects.remove(object_ids)
        for obj in object_ids:
            self._masks.pop(obj, None)

    def align(self, sources: list[tuple[Any, Segmentation]], target: Any) -> list[Segmentation]:
        self.calls.append(f"align {len(sources)}")
        return [seg for _, seg in sources]

    def state_dict(self) -> dict[str, Any]:
        return {"objects": self.objects.state_dict(), "masks": dict(self._masks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.objects.load_state_dict(state["objects"])
        self._masks = dict(state["masks"])


class ScriptedSegmenter:
    """Detections per frame index: a large box that stays, and a smaller one that vanishes
    after frame 4 (new objects get their ids in order of decreasing area)."""

    def __init__(self) -> None:
        self.frames = 0

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        t = int(frame_name)
        mask = torch.zeros(H, W, dtype=torch.long)
        mask[4:28, 4:36] = 5
        segments = [Segment(id=5, category_id=1, score=0.9, isthing=True)]
        if t <= 4:
            mask[32:44, 40:60] = 9
            segments.append(Segment(id=9, category_id=2, score=0.8, isthing=True))
        return Segmentation(mask=mask, segments=segments)


def _frames(count: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(str(t), rng.integers(0, 256, (H, W, 3), dtype=np.uint8)) for t in range(count)]


def test_both_implementations_satisfy_the_protocol() -> None:
    model = PropagationModel(PropagationConfig.preset("tiny"))
    assert isinstance(CopyBackend(), PropagationBackend)
    assert isinstance(Propagator(model), PropagationBackend)


def test_a_test_double_drives_the_tracker() -> None:
    backend = CopyBackend()
    config = TrackerConfig(mode=TrackingMode.ONLINE, detect_every=1, max_missed=1, shorter_side=-1)
    tracker = DecoupledTracker(backend, ScriptedSegmenter(), config)
    assert tracker.registry is backend.objects  # one registry, the backend's
    results = list(tracker.stream(_frames(10)))
    assert [r.index for r in results] == list(range(10))
    # the staying box is object 1 all along; the vanishing one is object 2 until deleted at
    # its (L+1)-th missed merge: frames 5 and 6 miss it, frame 6 deletes it
    for r in results:
        ids = set(torch.unique(r.mask).tolist()) - {0}
        assert (r.mask[4:28, 4:36] == 1).all()
        assert ids == ({1, 2} if r.index <= 5 else {1}), r.index
    assert results[6].removed_ids == [2]
    assert "delete [2]" in backend.calls
    assert tracker.registry.ids == [1]
    assert tracker.registry[1].category_id == 1
    # online, every frame a merge frame: encode, predict, commit in this order each frame
    assert backend.calls[:3] == ["encode", "predict", "commit"]


def test_semi_online_aligns_through_the_backend_and_offline_forks_it() -> None:
    backend = CopyBackend()
    semi = TrackerConfig(mode=TrackingMode.SEMI_ONLINE, clip_size=3, shorter_side=-1)
    results = list(DecoupledTracker(backend, ScriptedSegmenter(), semi).stream(_frames(8)))
    assert len(results) == 8
    assert "align 2" in backend.calls  # the clip's two other frames onto its first
    offline = TrackerConfig(mode=TrackingMode.OFFLINE, clip_size=2, shorter_side=-1)
    tracker = DecoupledTracker(backend, ScriptedSegmenter(), offline)
    results = list(tracker.stream(_frames(8)))
    assert len(results) == 8 and backend.forks == 1  # the backward pass runs on a fork
    assert all((r.mask[4:28, 4:36] == 1).all() for r in results)
