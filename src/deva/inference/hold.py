"""The "copy the mask" baseline as a propagation backend: every object keeps its last mask.

:class:`HoldBackend` implements :class:`~deva.inference.backend.PropagationBackend` without a
network: a frame's prediction is the id map committed on the previous frame, so first-frame
VOS becomes "copy the first mask to every frame" and the decoupled tracker runs on
detections alone (its consensus, merging and deletion unchanged). It is the floor every
propagation model has to beat (``propagator=hold`` in ``tools/evaluate.py`` and
``tools/track.py``), and the smallest second implementation of the protocol.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from deva.inference.backend import PropagationResult, given_masks
from deva.inference.objects import ObjectRegistry
from deva.types import Segmentation


class HoldBackend:
    """Propagation that holds each object's last committed mask (see the module docstring).

    Frames are only looked at for their size; ``encode`` returns it as the features."""

    name = "hold"

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self._device = torch.device(device)
        self.reset()

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def object_ids(self) -> list[int]:
        """Objects with a held mask, in the registry's order."""
        return [o for o in self.objects.ids if o in self._held_ids]

    def reset(self) -> None:
        """Forget objects, masks and the frame counter."""
        self.objects = ObjectRegistry()
        self._held: torch.Tensor | None = None  # (H, W) id map of the last committed frame
        self._held_ids: set[int] = set()
        self._pending: tuple[tuple[int, int], bool] | None = None

    def fork(self) -> HoldBackend:
        """A new, empty backend on the same device."""
        return HoldBackend(self._device)

    def encode(self, image: torch.Tensor) -> tuple[int, int]:
        """The frame's size (H, W): all this backend needs of a frame."""
        return int(image.shape[-2]), int(image.shape[-1])

    def predict(
        self, image: torch.Tensor | None = None, *, features: Any = None, end: bool = False
    ) -> PropagationResult:
        """The held id map as one-hot probabilities (background first)."""
        if features is None:
            if image is None:
                raise ValueError("predict() needs an image or its precomputed features")
            features = self.encode(image)
        if self._pending is not None:
            raise RuntimeError("predict() called twice without commit()")
        size = (int(features[0]), int(features[1]))
        if self._held is not None and tuple(self._held.shape) != size:
            raise ValueError(f"frame size {size} != the video's {tuple(self._held.shape)}")
        self._pending = (size, end)
        held = self._held if self._held is not None else self._empty(size)
        return PropagationResult(_one_hot(held, self.object_ids), self.object_ids)

    def commit(
        self,
        mask: torch.Tensor | np.ndarray | None = None,
        objects: list[int] | None = None,
        *,
        keep_empty: bool = False,
    ) -> PropagationResult:
        """Given masks (an (H, W) id map, or (N, H, W) probabilities for ``objects``) replace
        the held mask where they are foreground; new objects with empty masks are ignored
        unless ``keep_empty``."""
        if self._pending is None:
            raise RuntimeError("commit() without a pending predict()")
        (size, end), self._pending = self._pending, None
        held = self._held if self._held is not None else self._empty(size)
        ids, given = self._given(mask, objects, size, keep_empty=keep_empty)
        for obj in ids:
            if obj not in self.objects:
                self.objects.add(obj)
        merged = held.clone()
        if given is not None:
            merged[torch.isin(merged, torch.tensor(ids, device=self._device))] = 0  # re-initialised
            merged[given > 0] = given[given > 0]
        tracked = self._held_ids | set(ids)
        out_ids = [o for o in self.objects.ids if o in tracked]
        if not end:
            self._held, self._held_ids = merged, tracked
        return PropagationResult(_one_hot(merged, out_ids), out_ids)

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
        """:meth:`predict` then :meth:`commit`."""
        self.predict(image, features=features, end=end)
        return self.commit(mask, objects, keep_empty=keep_empty)

    def delete_objects(self, object_ids: list[int]) -> None:
        """Forget objects: out of the registry, their held pixels become background."""
        gone = set(object_ids)
        if self._held is not None and gone:
            self._held[torch.isin(self._held, torch.tensor(sorted(gone)))] = 0
        self._held_ids -= gone
        self.objects.remove([o for o in object_ids if o in self.objects])

    def align(self, sources: list[tuple[Any, Segmentation]], target: Any) -> list[Segmentation]:
        """Each source segmentation unchanged (holding is the identity), minus segments
        without pixels."""
        aligned = []
        for features, segmentation in sources:
            if tuple(features) != tuple(target):
                raise ValueError(f"source frame is {tuple(features)} but the target is {target}")
            present = set(torch.unique(segmentation.mask).tolist())
            kept = [s for s in segmentation.segments if s.id in present]
            aligned.append(Segmentation(mask=segmentation.mask.clone().cpu(), segments=kept))
        return aligned

    def state_dict(self) -> dict[str, Any]:
        """Objects and the held mask, to resume exactly."""
        if self._pending is not None:
            raise RuntimeError("state_dict() between predict() and commit()")
        return {
            "objects": self.objects.state_dict(),
            "held": None if self._held is None else self._held.cpu(),
            "held_ids": sorted(self._held_ids),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`, keeping the registry object."""
        self.objects.load_state_dict(state["objects"])
        held = state["held"]
        self._held = None if held is None else held.to(self._device)
        self._held_ids = set(int(o) for o in state["held_ids"])
        self._pending = None

    # ---- helpers -------------------------------------------------------------------------
    def _empty(self, size: tuple[int, int]) -> torch.Tensor:
        return torch.zeros(size, dtype=torch.long, device=self._device)

    def _given(
        self,
        mask: torch.Tensor | np.ndarray | None,
        objects: list[int] | None,
        size: tuple[int, int],
        *,
        keep_empty: bool,
    ) -> tuple[list[int], torch.Tensor | None]:
        """The given masks as object ids and an (H, W) id map (0 where none is given)."""
        ids, prob = given_masks(mask, objects, self._device)
        if prob is None:
            return [], None
        if tuple(prob.shape[-2:]) != size:
            raise ValueError(f"mask size {tuple(prob.shape[-2:])} != image size {size}")
        best, index = prob.max(dim=0)
        table = torch.tensor([0, *ids], device=self._device)
        ids_map = torch.where(best > 0.5, table[index + 1], 0)
        present = set(torch.unique(ids_map).tolist())
        ids = [o for o in ids if keep_empty or o in self._held_ids or o in present]
        return ids, ids_map


def _one_hot(ids_map: torch.Tensor, object_ids: list[int]) -> torch.Tensor:
    """(N + 1, H, W) float probabilities of an id map: background, then ``object_ids``."""
    planes = [ids_map == o for o in object_ids]
    background = (
        ~torch.stack(planes).any(dim=0) if planes else torch.ones_like(ids_map, dtype=torch.bool)
    )
    return torch.stack([background, *planes]).float()
