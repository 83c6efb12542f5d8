"""Semi-supervised propagation of object masks through a video, one frame at a time.

>>> propagator = Propagator(model)
>>> for t, image in enumerate(frames):            # image: (3, H, W) normalised
...     result = propagator.step(image, first_mask if t == 0 else None)
...     ids = result.index_mask()                 # (H, W) object ids, 0 = background
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np
import torch

from deva.inference.memory import InferenceMemory, MemoryConfig
from deva.inference.preprocess import Padding, argmax_channels, pad_to_multiple, unpad
from deva.modeling.inference_model import check_autocast, inference_model, inference_options
from deva.modeling.propagation import (
    KeyProjection,
    PixelFeatures,
    PropagationModel,
    aggregate_probabilities,
)

log = logging.getLogger(__name__)


@dataclass
class FrameFeatures:
    """Everything the network computes from an image alone; compute once, reuse freely.

    image: (1, 3, H', W') padded normalised image; padding: what was added to reach H'×W'.
    """

    image: torch.Tensor
    padding: Padding
    pixel: PixelFeatures
    key: KeyProjection

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the image before padding."""
        h, w = self.image.shape[-2:]
        p = self.padding
        return h - p.top - p.bottom, w - p.left - p.right


@dataclass
class PropagationResult:
    """Per-frame output: probabilities (N + 1, H, W), channel 0 = background, channel i =
    ``object_ids[i - 1]``, at the processing resolution (before any resize to the original)."""

    prob: torch.Tensor
    object_ids: list[int]

    def index_mask(self) -> torch.Tensor:
        """(H, W) int64 map of object ids (0 = background) by arg-max."""
        lut = torch.tensor([0, *self.object_ids], dtype=torch.int64, device=self.prob.device)
        return lut[argmax_channels(self.prob)]


class Propagator:
    """Streams frames through the propagation model with XMem-style memory.

    A frame becomes a memory frame every ``mem_every`` frames and whenever masks are given.
    Objects given mid-video are merged with the prediction of existing objects (given masks
    win where they are foreground). ``chunk_size`` bounds how many objects go through the
    network at once. ``autocast_dtype`` (e.g. ``torch.bfloat16``) enables mixed precision
    (bf16 on a CPU needs native support; fp16 on a CPU is refused).

    The network runs as a cached inference copy of ``model``
    (:func:`~deva.modeling.inference_model.inference_model`): batch norm folded into the
    convolutions, weights stored once in the autocast dtype, channels-last layout when
    ``channels_last`` (default: on for the CPU), and in float32 on the
    CPU the wide 3×3 convolutions computed by Winograd's F(4×4, 3×3) (``winograd``, default
    on there; :mod:`deva.modeling.winograd`). ``compile`` wraps the copy's sub-networks in
    ``torch.compile`` (the first frames, and the first frame after the object count
    changes, pay the compilation; meant for long runs on a GPU). ``model`` itself is never
    modified; the copy follows it when its weights change.
    """

    def __init__(
        self,
        model: PropagationModel,
        memory: MemoryConfig | None = None,
        *,
        mem_every: int = 5,
        chunk_size: int = -1,
        autocast_dtype: torch.dtype | None = None,
        channels_last: bool | None = None,
        winograd: bool | None = None,
        compile: bool = False,
    ) -> None:
        if mem_every < 1:
            raise ValueError(f"mem_every must be >= 1, got {mem_every}")
        check_autocast(autocast_dtype, model.device)
        self.model = model.eval()
        self.channels_last, self.winograd = inference_options(
            model.device,
            autocast_dtype,
            channels_last=channels_last,
            winograd=winograd,
            compile=compile,
        )
        self.compile = compile
        self.memory_config = memory or MemoryConfig()
        self.mem_every = mem_every
        self.chunk_size = chunk_size
        self.autocast_dtype = autocast_dtype
        self.reset()

    def reset(self) -> None:
        """Forget everything: memory, objects, frame counter."""
        self.memory = InferenceMemory(self.memory_config)
        self._frame = -1
        self._last_memory_frame = -(10**9)
        self._last_prob: torch.Tensor | None = None  # (N, H', W') for memory.object_ids
        self._pending: _Pending | None = None

    @property
    def object_ids(self) -> list[int]:
        """Objects currently tracked, in channel order."""
        return self.memory.object_ids

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def network(self) -> PropagationModel:
        """The inference copy of the model that does the work (see the class docstring)."""
        return inference_model(
            self.model,
            dtype=self.autocast_dtype,
            channels_last=self.channels_last,
            winograd=self.winograd,
            compile=self.compile,
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @torch.inference_mode()
    def encode(self, image: torch.Tensor) -> FrameFeatures:
        """Image features of a normalised frame (3, H, W) or (1, 3, H, W)."""
        if image.ndim == 3:
            image = image.unsqueeze(0)
        if image.ndim != 4 or image.shape[:2] != (1, 3):
            raise ValueError(f"expected an image (3, H, W), got shape {tuple(image.shape)}")
        padded, padding = pad_to_multiple(image.to(self.device, torch.float32), 16)
        network = self.network
        with self._autocast():
            source = (
                padded.contiguous(memory_format=torch.channels_last)
                if self.channels_last
                else padded
            )
            pixel = network.encode_image(source)
            key = network.project_key(pixel)
        return FrameFeatures(padded, padding, pixel, key)

    def delete_objects(self, object_ids: list[int]) -> None:
        """Stop tracking objects and drop their memory."""
        if self._last_prob is not None:
            keep = [i for i, o in enumerate(self.object_ids) if o not in set(object_ids)]
            self._last_prob = self._last_prob[keep]
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
        with self._autocast():
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
        existing = self.object_ids
        predicted = _drop_channels(pending.prob, pending.object_ids, existing)
        ids = existing + [o for o in given_ids if o not in existing]
        with self._autocast():
            prob = self._merge(predicted if existing else None, given, given_ids, ids, features)
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
        if mask is None:
            if objects:
                raise ValueError("objects were given without a mask")
            return [], None
        mask = torch.as_tensor(mask, device=self.device)
        size = features.size
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
        if prob is not None and tuple(prob.shape[-2:]) != size:
            raise ValueError(f"mask size {tuple(prob.shape[-2:])} != image size {size}")
        if prob is None:
            return [], None
        if len(set(ids)) != len(ids) or any(o <= 0 for o in ids):
            raise ValueError(f"object ids must be distinct positive integers, got {ids}")
        existing = set(self.object_ids)
        nonempty = [
            i for i, o in enumerate(ids) if keep_empty or o in existing or bool(prob[i].any())
        ]
        if len(nonempty) < len(ids):
            log.debug(
                "ignoring new objects with empty masks: %s",
                [o for i, o in enumerate(ids) if i not in nonempty],
            )
            ids, prob = [ids[i] for i in nonempty], prob[nonempty]
        if not ids:
            return [], None
        return ids, pad_to_multiple(prob, 16)[0]

    def _predict(
        self, features: FrameFeatures, existing: list[int], *, update_sensory: bool
    ) -> torch.Tensor | None:
        """Probabilities (N + 1, H', W') of background + tracked objects from memory, or None."""
        if not existing:
            return None
        key = features.key
        network = self.network
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
            chunk_size=self.chunk_size,
        )
        if update_sensory:
            self.memory.set_sensory(existing, sensory)
        _, prob = network.aggregate(logits)
        return prob[0]

    @staticmethod
    def _merge(
        predicted: torch.Tensor | None,
        given: torch.Tensor | None,
        given_ids: list[int],
        ids: list[int],
        features: FrameFeatures,
    ) -> torch.Tensor:
        """Combine prediction and given masks into (N + 1, H', W') probabilities."""
        h, w = features.image.shape[-2:]
        if not ids:
            return features.image.new_ones(1, h, w)
        if given is None:
            return predicted
        combined = given.new_zeros(len(ids), h, w)
        if predicted is not None:
            combined[: predicted.shape[0] - 1] = predicted[1:].to(combined.dtype)
            combined[:, given.sum(dim=0) > 0.5] = 0
        for i, obj in enumerate(given_ids):
            combined[ids.index(obj)] = given[i]
        return torch.softmax(aggregate_probabilities(combined, dim=0), dim=0)

    def _write_memory(self, features: FrameFeatures, prob: torch.Tensor, ids: list[int]) -> None:
        key = features.key
        network = self.network
        template = prob.new_zeros(network.config.sensory_dim, *key.key.shape[-2:])
        sensory = self.memory.get_sensory(ids, template.to(key.key.dtype))
        value, sensory = network.encode_mask(
            features.image,
            features.pixel,
            sensory,
            prob.to(features.image.dtype),
            deep_update=True,
            chunk_size=self.chunk_size,
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
