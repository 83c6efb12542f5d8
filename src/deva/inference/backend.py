"""The propagation protocol: what the decoupled tracker needs from a propagation model.

The tracker (:class:`~deva.inference.tracker.DecoupledTracker`) talks to temporal
propagation only through :class:`PropagationBackend`, so another model can be plugged in
without touching the tracker. :class:`~deva.inference.propagator.Propagator` (this package's
memory network) implements it; a backend must:

- keep its objects in an :class:`~deva.inference.objects.ObjectRegistry` (:attr:`objects`),
  shared with the tracker, which creates objects there before committing their first masks
  and reads their metadata back; channels of every result follow its order;
- encode a normalised, padded frame once (:meth:`encode`) into an opaque value it accepts
  back as ``features`` in :meth:`predict`, :meth:`commit` (via the pending prediction),
  :meth:`step` and :meth:`align`;
- predict a frame from memory (:meth:`predict`), then commit masks for given object ids
  (:meth:`commit`: new ids become objects, existing ones are re-initialised, the frame may
  become a memory frame); :meth:`step` is the two in one;
- delete objects (:meth:`delete_objects`: from the registry and the memory), reset to an
  empty video (:meth:`reset`) and make an empty twin with the same model and settings
  (:meth:`fork`, for offline mode's backward pass);
- align a clip frame's segmentation to another frame (:meth:`align`, paper eq. 1), without
  touching its own state;
- save and restore its state (:meth:`state_dict`, :meth:`load_state_dict`) so that a
  tracking run killed midway resumes exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from deva.inference.objects import ObjectRegistry
from deva.inference.preprocess import probabilities_to_ids
from deva.modeling.propagation import aggregate_probabilities
from deva.types import Segmentation

log = logging.getLogger(__name__)


@dataclass
class PropagationResult:
    """Per-frame output: probabilities (N + 1, H, W), channel 0 = background, channel i =
    ``object_ids[i - 1]``, at the processing resolution (before any resize to the original)."""

    prob: torch.Tensor
    object_ids: list[int]

    def index_mask(self) -> torch.Tensor:
        """(H, W) int64 map of object ids (0 = background) by arg-max."""
        return probabilities_to_ids(self.prob, self.object_ids)


def given_masks(
    mask: torch.Tensor | np.ndarray | None, objects: list[int] | None, device: torch.device
) -> tuple[list[int], torch.Tensor | None]:
    """The masks given to ``commit`` as object ids and (N, H, W) float probabilities on
    ``device``: an (H, W) id map (objects = its non-zero ids unless ``objects`` says which) or
    (N, H, W) probabilities for ``objects``. Malformed input is a one-line ``ValueError``."""
    if mask is None:
        if objects:
            raise ValueError("objects were given without a mask")
        return [], None
    mask = torch.as_tensor(mask, device=device)
    if mask.is_floating_point():
        if mask.ndim != 3 or objects is None or len(objects) != mask.shape[0]:
            raise ValueError(
                "probability masks must be (N, H, W) with N object ids in `objects`; got "
                f"shape {tuple(mask.shape)} and objects={objects}"
            )
        ids, prob = [int(o) for o in objects], mask.float()
    else:
        if mask.ndim != 2:
            raise ValueError(f"an id mask must be (H, W), got shape {tuple(mask.shape)}")
        present = [int(v) for v in torch.unique(mask).tolist() if v != 0]
        ids = present if objects is None else [int(o) for o in objects]
        prob = torch.stack([(mask == o).float() for o in ids]) if ids else None
    if prob is None:
        return [], None
    if len(set(ids)) != len(ids) or any(o <= 0 for o in ids):
        raise ValueError(f"object ids must be distinct positive integers, got {ids}")
    return ids, prob


def committed_masks(
    mask: torch.Tensor | np.ndarray | None,
    objects: list[int] | None,
    device: torch.device,
    size: tuple[int, int],
    existing: Iterable[int],
    *,
    keep_empty: bool = False,
) -> tuple[list[int], torch.Tensor | None]:
    """The masks given to ``commit`` (see :func:`given_masks`) at the frame ``size``, without
    the *new* objects (not in ``existing``) whose mask is empty unless ``keep_empty``."""
    ids, prob = given_masks(mask, objects, device)
    if prob is None:
        return [], None
    if tuple(prob.shape[-2:]) != tuple(size):
        raise ValueError(f"mask size {tuple(prob.shape[-2:])} != image size {tuple(size)}")
    known = set(existing)
    keep = [i for i, o in enumerate(ids) if keep_empty or o in known or bool(prob[i].any())]
    if len(keep) < len(ids):
        log.debug("ignoring new objects with empty masks: %s", [o for o in ids if o not in known])
    if not keep:
        return [], None
    return [ids[i] for i in keep], prob[keep]


def merge_given(
    predicted: torch.Tensor | None,
    given: torch.Tensor | None,
    given_ids: list[int],
    ids: list[int],
    size: tuple[int, int],
    *,
    like: torch.Tensor,
) -> torch.Tensor:
    """A committed frame's (N + 1, H, W) probabilities for ``ids`` (registry order, objects
    that were predicted first): given masks (N_g, H, W) of ``given_ids`` win where they are
    foreground over the ``predicted`` (N_p + 1, H, W) probabilities, and the objects are
    soft-aggregated again. ``like`` gives the dtype and device when there is no object."""
    if not ids:
        return like.new_ones(1, *size)
    if given is None:
        return predicted
    combined = given.new_zeros(len(ids), *size)
    if predicted is not None:
        combined[: predicted.shape[0] - 1] = predicted[1:].to(combined.dtype)
        combined[:, given.sum(dim=0) > 0.5] = 0
    for i, obj in enumerate(given_ids):
        combined[ids.index(obj)] = given[i]
    return torch.softmax(aggregate_probabilities(combined, dim=0), dim=0)


@runtime_checkable
class PropagationBackend(Protocol):
    """Temporal propagation as the tracker uses it (see the module docstring)."""

    objects: ObjectRegistry

    @property
    def device(self) -> torch.device:
        """Where frames and masks go."""
        ...

    @property
    def object_ids(self) -> list[int]:
        """Objects with memory, in channel order."""
        ...

    def reset(self) -> None:
        """Forget everything: objects, memory, frame counter."""
        ...

    def fork(self) -> PropagationBackend:
        """A new, empty backend with the same model and settings."""
        ...

    def encode(self, image: torch.Tensor) -> Any:
        """Features of a normalised frame (3, H, W), to pass back as ``features``."""
        ...

    def predict(
        self, image: torch.Tensor | None = None, *, features: Any = None, end: bool = False
    ) -> PropagationResult:
        """Segment the next frame from memory; nothing is written until :meth:`commit`."""
        ...

    def commit(
        self,
        mask: torch.Tensor | np.ndarray | None = None,
        objects: list[int] | None = None,
        *,
        keep_empty: bool = False,
    ) -> PropagationResult:
        """Merge given masks of ``objects`` into the pending prediction, write memory when due."""
        ...

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
        ...

    def delete_objects(self, object_ids: list[int]) -> None:
        """Stop tracking objects: they leave the registry and the memory."""
        ...

    def align(self, sources: list[tuple[Any, Segmentation]], target: Any) -> list[Segmentation]:
        """Each source frame's segmentation propagated onto the target frame (eq. 1)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Its state (objects included) as tensors and plain data, to resume exactly."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`, keeping its registry object."""
        ...
