"""Semi-supervised propagation of object masks through a video, one frame at a time.

>>> propagator = Propagator(model)
>>> for t, image in enumerate(frames):            # image: (3, H, W) normalised
...     result = propagator.step(image, first_mask if t == 0 else None)
...     ids = result.index_mask()                 # (H, W) object ids, 0 = background

:class:`Propagator` is this package's implementation of the tracker's propagation protocol
(:class:`~deva.inference.backend.PropagationBackend`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from deva.inference import alignment
from deva.inference.backend import PropagationResult, committed_masks, merge_given
from deva.inference.memory import InferenceMemory, MemoryConfig
from deva.inference.network import FrameFeatures, InferenceNetwork
from deva.inference.objects import ObjectRegistry
from deva.inference.options import InferenceOptions
from deva.inference.preprocess import pad_to_multiple, unpad
from deva.modeling.propagation import PropagationModel
from deva.types import Segmentation

log = logging.getLogger(__name__)


class Propagator:
    """Streams frames through the propagation model with XMem-style memory.

    A frame becomes a memory frame every ``mem_every`` frames and whenever masks are given.
    Objects given mid-video are merged with the prediction of existing objects (given masks
    win where they are foreground).

    The network runs as an :class:`~deva.inference.network.InferenceNetwork`: built here from
    ``model`` and ``options`` (precision, layout, kernels, objects per pass; see
    :class:`~deva.inference.options.InferenceOptions`), or given ready-made so that several
    propagators share one. ``model`` itself is never modified.

    The propagator owns the registry of its objects (:attr:`objects`): its memory asks it for
    the channel order, and a tracker driving the propagator keeps the objects' metadata in it.
    """

    def __init__(
        self,
        model: PropagationModel | InferenceNetwork,
        memory: MemoryConfig | None = None,
        *,
        mem_every: int = 5,
        options: InferenceOptions | None = None,
    ) -> None:
        if mem_every < 1:
            raise ValueError(f"mem_every must be >= 1, got {mem_every}")
        if isinstance(model, InferenceNetwork):
            if options is not None:
                raise ValueError("options belong to the network; pass a model or the options")
            self.network = model
        else:
            self.network = InferenceNetwork(model, options)
        self.memory_config = memory or MemoryConfig()
        self.mem_every = mem_every
        self.reset()

    def reset(self) -> None:
        """Forget everything: objects, memory, frame counter."""
        self.objects = ObjectRegistry()
        self.memory = InferenceMemory(
            self.memory_config, self.objects, query_chunk=self.network.options.query_chunk
        )
        self._frame = -1
        self._last_memory_frame = -(10**9)
        self._last_prob: torch.Tensor | None = None  # (N, H', W') for memory.object_ids
        self._pending: _Pending | None = None

    def state_dict(self) -> dict[str, Any]:
        """Everything this propagator knows about the video so far — objects, memory, the
        last probabilities and the frame counters — as tensors and plain data, so that
        :meth:`load_state_dict` on a propagator with the same network continues exactly."""
        if self._pending is not None:
            raise RuntimeError("state_dict() between predict() and commit()")
        return {
            "objects": self.objects.state_dict(),
            "memory": self.memory.state_dict(),
            "frame": self._frame,
            "last_memory_frame": self._last_memory_frame,
            "last_prob": self._last_prob,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (the registry object itself is kept)."""
        self.objects.load_state_dict(state["objects"])
        self.memory.load_state_dict(state["memory"])
        self._frame = int(state["frame"])
        self._last_memory_frame = int(state["last_memory_frame"])
        self._last_prob = state["last_prob"]
        self._pending = None

    def fork(self) -> Propagator:
        """A new, empty propagator with the same network and settings."""
        return Propagator(self.network, self.memory_config, mem_every=self.mem_every)

    @property
    def object_ids(self) -> list[int]:
        """Objects currently tracked (with memory), in channel order."""
        return self.memory.object_ids

    @property
    def model(self) -> PropagationModel:
        return self.network.model

    @property
    def device(self) -> torch.device:
        return self.network.device

    def encode(self, image: torch.Tensor) -> FrameFeatures:
        """Image features of a normalised frame (3, H, W) or (1, 3, H, W)."""
        return self.network.encode(image)

    def align(
        self, sources: list[tuple[FrameFeatures, Segmentation]], target: FrameFeatures
    ) -> list[Segmentation]:
        """Each source frame's segmentation propagated onto ``target`` (paper eq. 1), with a
        throw-away one-frame memory per source; this propagator's state is not touched. See
        :func:`deva.inference.alignment.align_segmentations`."""
        return alignment.align_segmentations(
            self.network, sources, target, top_k=self.memory_config.top_k
        )

    def delete_objects(self, object_ids: list[int]) -> None:
        """Stop tracking objects: they leave the registry and the memory."""
        gone = set(object_ids)
        if self._last_prob is not None:
            keep = [i for i, o in enumerate(self.object_ids) if o not in gone]
            self._last_prob = self._last_prob[keep]
        self.objects.remove([o for o in object_ids if o in self.objects])
        self.memory.delete_objects(object_ids)

    @torch.inference_mode()
    def step(
        self,
        image: torch.Tensor | None = None,
        mask: torch.Tensor | np.ndarray | None = None,
        objects: list[int] | None = None,
        *,
        end: bool = False,
        features: FrameFeatures | None = None,
        keep_empty: bool = False,
    ) -> PropagationResult:
        """Process the next frame: :meth:`predict` then :meth:`commit` (``keep_empty``: see
        :meth:`commit`).

        Args:
            image: normalised frame (3, H, W); may be omitted when ``features`` is given.
            mask: optional masks for this frame at (H, W): an integer id map (objects = its
                non-zero ids unless ``objects`` says which to use) or float probabilities
                (N, H, W) for ``objects`` (required then).
            end: the last frame; nothing is written to memory.
            features: precomputed :meth:`encode` output of this frame.
        """
        self.predict(image, features=features, end=end)
        return self.commit(mask, objects, keep_empty=keep_empty)

    @torch.inference_mode()
    def predict(
        self,
        image: torch.Tensor | None = None,
        *,
        features: FrameFeatures | None = None,
        end: bool = False,
    ) -> PropagationResult:
        """First half of a step: segment the next frame from memory (the sensory memory is
        updated unless ``end``). Nothing is written to memory until :meth:`commit`, so a caller
        can look at the prediction, decide on masks (e.g. merge it with detections, delete
        objects) and commit those."""
        if features is None:
            if image is None:
                raise ValueError("predict() needs an image or its precomputed features")
            features = self.encode(image)
        if self._pending is not None:
            raise RuntimeError("predict() called twice without commit()")
        self._frame += 1
        existing = self.object_ids
        with self.network.autocast():
            prob = self._predict(features, existing, update_sensory=not end)
        if prob is None:
            prob = features.image.new_ones(1, *features.image.shape[-2:])
        self._pending = _Pending(features, prob, existing, end)
        return PropagationResult(unpad(prob, features.padding).float(), existing)

    @torch.inference_mode()
    def commit(
        self,
        mask: torch.Tensor | np.ndarray | None = None,
        objects: list[int] | None = None,
        *,
        keep_empty: bool = False,
    ) -> PropagationResult:
        """Second half of a step: merge given masks (see :meth:`step`) with the pending
        prediction, write a memory frame when due, and return the frame's result.

        A *new* object whose given mask is empty is ignored, unless ``keep_empty``: then it
        becomes an object with an empty memory mask (the tracker's rule for new objects).
        """
        pending, self._pending = self._pending, None
        if pending is None:
            raise RuntimeError("commit() without a pending predict()")
        features = pending.features
        given_ids, given = self._given_masks(mask, objects, features, keep_empty=keep_empty)
        for obj in given_ids:
            if obj not in self.objects:
                self.objects.add(obj)
        existing = self.object_ids
        predicted = _drop_channels(pending.prob, pending.object_ids, existing)
        wanted = set(existing) | set(given_ids)
        ids = [o for o in self.objects.ids if o in wanted]  # the registry's channel order
        with self.network.autocast():
            prob = merge_given(
                predicted if existing else None,
                given,
                given_ids,
                ids,
                tuple(features.image.shape[-2:]),
                like=features.image,
            )
            is_memory_frame = (
                bool(given_ids) or self._frame - self._last_memory_frame >= self.mem_every
            ) and not pending.end
            if is_memory_frame and ids:
                self._write_memory(features, prob[1:].unsqueeze(0), ids)
        if not pending.end:
            tracked = self.object_ids
            self._last_prob = prob[1:][[ids.index(o) for o in tracked]].float()
        return PropagationResult(unpad(prob, features.padding).float(), ids)

    def _given_masks(
        self,
        mask: torch.Tensor | np.ndarray | None,
        objects: list[int] | None,
        features: FrameFeatures,
        *,
        keep_empty: bool = False,
    ) -> tuple[list[int], torch.Tensor | None]:
        ids, prob = committed_masks(
            mask, objects, self.device, features.size, self.object_ids, keep_empty=keep_empty
        )
        if prob is None:
            return [], None
        return ids, pad_to_multiple(prob, 16)[0]

    def _predict(
        self, features: FrameFeatures, existing: list[int], *, update_sensory: bool
    ) -> torch.Tensor | None:
        """Probabilities (N + 1, H', W') of background + tracked objects from memory, or None."""
        if not existing:
            return None
        key = features.key
        network = self.network.module
        readout = self.memory.read(key.key, key.selection, existing)
        template = readout.new_zeros(network.config.sensory_dim, *readout.shape[-2:])
        sensory = self.memory.get_sensory(existing, template)
        last = self._last_prob.unsqueeze(0).to(readout.dtype)
        sensory, logits = network.segment(
            features.pixel,
            readout,
            sensory,
            last,
            update_sensory=update_sensory,
            chunk_size=self.network.chunk_size,
        )
        if update_sensory:
            self.memory.set_sensory(existing, sensory)
        _, prob = network.aggregate(logits)
        return prob[0]

    def _write_memory(self, features: FrameFeatures, prob: torch.Tensor, ids: list[int]) -> None:
        key = features.key
        network = self.network.module
        template = prob.new_zeros(network.config.sensory_dim, *key.key.shape[-2:])
        sensory = self.memory.get_sensory(ids, template.to(key.key.dtype))
        value, sensory = network.encode_mask(
            features.image,
            features.pixel,
            sensory,
            prob.to(features.image.dtype),
            deep_update=True,
            chunk_size=self.network.chunk_size,
        )
        self.memory.add_frame(key.key, key.shrinkage, key.selection, value, ids)
        self.memory.set_sensory(ids, sensory)
        self._last_memory_frame = self._frame


@dataclass
class _Pending:
    """A prediction waiting for :meth:`Propagator.commit`."""

    features: FrameFeatures
    prob: torch.Tensor  # (N + 1, H', W') for object_ids
    object_ids: list[int]
    end: bool


def _drop_channels(prob: torch.Tensor, ids: list[int], keep: list[int]) -> torch.Tensor:
    """Keep the channels of ``keep`` (a subset of ``ids``, same order); the probability of
    dropped (deleted) objects goes to the background."""
    if ids == keep:
        return prob
    rows = [1 + ids.index(o) for o in keep]
    dropped = [1 + i for i, o in enumerate(ids) if o not in set(keep)]
    background = prob[:1] + prob[dropped].sum(dim=0, keepdim=True)
    return torch.cat([background, prob[rows]], dim=0)


def reference_alignment(
    model: PropagationModel | InferenceNetwork,
    source: FrameFeatures,
    segmentation: Segmentation,
    target: FrameFeatures,
    *,
    top_k: int | None = alignment.DEFAULT_TOP_K,
) -> torch.Tensor:
    """The (H, W) id map a throw-away propagator gives for one source frame: what
    :func:`~deva.inference.alignment.align_segmentations` computes faster (benchmarks and
    tests compare the two)."""
    ids, masks = alignment.one_hot_segments(segmentation, source.size)
    temporary = Propagator(model, MemoryConfig(top_k=top_k, long_term=False))
    temporary.step(features=source, mask=masks.to(source.image.device), objects=ids)
    return temporary.step(features=target, end=True).index_mask().cpu()
