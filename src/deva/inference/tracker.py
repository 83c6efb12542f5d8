"""The decoupled tracker (paper §3): image segmentations + temporal propagation → video.

>>> tracker = DecoupledTracker(model, segmenter, TrackerConfig(mode=TrackingMode.SEMI_ONLINE))
>>> for result in tracker.stream(frames):        # frames: iterable of (name, RGB uint8 H×W×3)
...     ids, segments = result.mask, result.segments

Where the paper leaves details open or its wording differs, the tracker follows the published
implementation, whose outputs are the paper's numbers (see ``deva.inference.merging`` for the
merge itself). Three modes (:class:`TrackingMode`):

- ``ONLINE``: on frames 0, e, 2e, … (e = ``detect_every``) the image segmentation of that
  frame is the consensus (a clip of one frame) and is merged with the propagation (§3.2.2);
  the other frames are propagated.
- ``SEMI_ONLINE``: clip k is scheduled at t_k = k·e and nominally covers t_k .. t_k+n−1
  (n = ``clip_size``); it is used only when it fits in the video (t_k + n − 1 < T). Its
  segmentations are aligned to its first frame (eq. 1), their in-clip consensus is merged
  there and the clip's other frames are propagated. When e < n the nominal windows overlap;
  frames already output by the previous clip cannot be merged again, so clips after the
  first hold only the e frames t_k+n−e .. t_k+n−1, and the merge happens at t_k+n−e (the
  published code does the same: it buffers frames t with t + n > t_k + n − 1 and processes
  the buffer when frame t_k + n − 1 arrives). Frames after the last clip that fits are only
  propagated (:meth:`DecoupledTracker.finish`), and frames between clips (e > n) too.
  Results come out up to n−1 frames late. With ``clip_size=1`` this is exactly ``ONLINE``.
  *Deliberate difference:* a video shorter than n frames (the published code writes nothing)
  is processed as one clip of all its frames, so every frame gets a result.
- ``OFFLINE`` (referring / unsupervised VOS): the whole video is buffered (in RAM up to a
  budget, the rest spilled losslessly to a temporary folder, see
  :class:`~deva.inference.spill.SpillList`, so memory stays flat in the length); the key frame is
  the best-scoring of ``num_key_candidates`` uniformly spaced frames, the consensus of the
  clip starting there initialises the objects, which are propagated forward and — with a
  second propagator on the reversed frames — backward. No further detections.

All work happens at the processing resolution (shorter side ``shorter_side``, padded to a
multiple of 16); detection id maps are brought there with pixel-centre nearest sampling
(``nearest-exact``). A merge frame, in order: predict from memory (with the sensory update),
associate, paint, update miss counters, delete, write the merged masks to memory (a memory
frame), output. Deleted objects (more than ``max_missed`` consecutive misses) leave the
registry and the memory, and their pixels are background in the memory frame and in the
output. Every output, merge frames included, comes from probabilities: bilinearly resized to
the original size and arg-maxed (for a merge frame, the soft-aggregated one-hot masks written
to memory).

Object identity lives in one :class:`~deva.inference.objects.ObjectRegistry`: ids are never
reused; an object's category is the vote over all detections merged into it (ties to the
smallest id), its score their mean. ``isthing`` separates things and stuff only for panoptic
input (``TrackerConfig.panoptic``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deva.inference.backend import PropagationBackend, PropagationResult
from deva.inference.backends import backend_name, make_backend
from deva.inference.consensus import in_clip_consensus
from deva.inference.merging import merge_with_consensus
from deva.inference.objects import ObjectRegistry
from deva.inference.options import InferenceOptions
from deva.inference.preprocess import (
    FrameGeometry,
    clear_padding,
    preprocess_frame,
    probabilities_to_ids,
    resize_mask,
    resize_segmentation,
)
from deva.inference.spill import DEFAULT_BUDGET_MIB, SpillList, compact_ids
from deva.inference.tracker_config import TrackerConfig, TrackingMode
from deva.modeling.propagation import PropagationModel
from deva.types import ImageSegmenter, Segment, Segmentation, check_image

logger = logging.getLogger(__name__)


@dataclass
class TrackedFrame:
    """One output frame.

    Attributes:
        name: the frame name given with the frame.
        index: position of the frame in the stream (0-based).
        mask: (H, W) int64 CPU tensor of object ids at the original resolution (0 = none).
        segments: one ``Segment`` per id present in ``mask`` (id, category, score, isthing).
        removed_ids: objects deleted at this frame (merge frames only); they are not in
            ``mask`` or ``segments``.
        image: the RGB uint8 (H, W, 3) frame as it was given (for overlays); not a copy.
    """

    name: str
    index: int
    mask: torch.Tensor
    segments: list[Segment]
    removed_ids: list[int] = field(default_factory=list)
    image: np.ndarray | None = field(default=None, repr=False)

    @property
    def segmentation(self) -> Segmentation:
        """The result as a ``Segmentation`` (for the writers in ``deva.io``)."""
        return Segmentation(mask=self.mask, segments=self.segments)


def frame_score(segmentation: Segmentation) -> float:
    """Confidence of an image segmentation: mean score of its scored segments (0 if none).

    Used by offline mode to pick the key frame; pass another function to the tracker for
    segmenters whose confidence lives elsewhere.
    """
    scores = [float(s.score) for s in segmentation.segments if s.score is not None]
    return sum(scores) / len(scores) if scores else 0.0


def key_frame_candidates(num_frames: int, count: int) -> list[int]:
    """``count`` uniformly spaced frame indices over ``num_frames`` (first and last included)."""
    if num_frames <= 0:
        return []
    spaced = np.linspace(0, num_frames - 1, min(count, num_frames)).round()
    return sorted({int(i) for i in spaced})


@dataclass
class _Frame:
    """A frame on its way through the tracker: pixels, network input and cached features."""

    index: int
    name: str
    rgb: np.ndarray
    geometry: FrameGeometry
    features: Any  # the backend's encoding of the frame


class DecoupledTracker:
    """Decoupled video segmentation with an image segmenter and a propagation model.

    ``propagation`` is our :class:`~deva.modeling.propagation.PropagationModel` (run by the
    backend ``config.propagator`` names, by default a
    :class:`~deva.inference.propagator.Propagator` with ``options``) or any
    :class:`~deva.inference.backend.PropagationBackend`; the tracker talks to it only through
    that protocol. The tracker owns all its state: the backend (memory and the object
    registry it shares with the tracker), the frame buffers. Use :meth:`stream` for a whole
    video, or :meth:`step` per frame followed by :meth:`finish`; call :meth:`reset`
    (``stream`` does) before the next video. ``timer(name)``, when given, is entered around
    each alignment (``"alignment"``), in-clip consensus (``"consensus"``) and merge
    (``"merge"``): benchmarks time the stages with it. Offline mode buffers the video's frames
    and its backward results each in RAM up to ``buffer_mib``, the rest in a temporary folder
    under ``spill_dir`` (default ``$TMPDIR``), deleted when the video ends.
    """

    def __init__(
        self,
        propagation: PropagationModel | PropagationBackend,
        segmenter: ImageSegmenter,
        config: TrackerConfig | None = None,
        *,
        options: InferenceOptions | None = None,
        key_frame_score: Callable[[Segmentation], float] = frame_score,
        timer: Callable[[str], contextlib.AbstractContextManager] | None = None,
        buffer_mib: float = DEFAULT_BUDGET_MIB,
        spill_dir: str | Path | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.config = config or TrackerConfig()
        if isinstance(propagation, PropagationModel):
            c = self.config
            backend: PropagationBackend = make_backend(
                c.propagator,
                propagation,
                c.memory,
                mem_every=c.mem_every,
                options=options,
                source=c.propagator_model,
            )
            self.propagator_name = c.propagator
        elif options is not None:
            raise ValueError("options configure our propagation network; a backend has its own")
        else:
            backend = propagation
            self.propagator_name = backend_name(backend)
        self._propagator = backend
        self.key_frame_score = key_frame_score
        self._timer = timer or (lambda name: contextlib.nullcontext())
        self._buffer = {"budget_mib": buffer_mib, "directory": spill_dir}
        self._offline: _OfflineFrames | None = None
        self.reset()

    # ---- state -------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the current video: memory, objects, buffers, frame counter."""
        self._propagator.reset()
        self._next_index = 0
        # Last frame of the next scheduled clip (t_k + n - 1) and the frames buffered for it.
        self._clip_end = self.config.clip_length - 1
        self._clips_done = 0
        self._clip: list[_Frame] = []
        if self._offline is not None:
            self._offline.close()
        self._offline = (
            _OfflineFrames(**self._buffer) if self.mode is TrackingMode.OFFLINE else None
        )
        self._size: tuple[int, int] | None = None
        self._finished = False
        self.key_frame: int | None = None  # offline: index of the chosen key frame

    @property
    def registry(self) -> ObjectRegistry:
        """The live objects, shared with the propagation backend (read it; the tracker
        changes it)."""
        return self._propagator.objects

    @property
    def _registry(self) -> ObjectRegistry:
        return self._propagator.objects

    @property
    def propagator(self) -> PropagationBackend:
        """The forward propagation backend (its memory holds the live objects)."""
        return self._propagator

    @property
    def mode(self) -> TrackingMode:
        return self.config.mode

    # ---- public streaming API ----------------------------------------------------------
    def stream(self, frames: Iterable[tuple[str, np.ndarray]]) -> Iterator[TrackedFrame]:
        """Track one video: yields one result per input frame, in order.

        Semi-online results lag up to n−1 frames; offline results all come after the last
        frame was read. The tracker is reset first.
        """
        self.reset()
        for name, frame in frames:
            yield from self.step(name, frame)
        yield from self._finish()

    def step(self, name: str, frame: np.ndarray) -> list[TrackedFrame]:
        """Feed the next frame (RGB uint8 H×W×3); returns the results that became ready."""
        if self._finished:
            raise RuntimeError("this video is finished; call reset() before a new one")
        size = check_image(frame)
        if self._size is None:
            self._size = size
        elif size != self._size:
            raise ValueError(f"frame {name!r} is {size}, earlier frames were {self._size}")
        index = self._next_index
        self._next_index += 1
        if self._offline is not None:
            self._offline.append(str(name), frame)
            return []
        current = self._prepare(index, str(name), frame)
        # Frames that belong to the next clip's window (and were not output by the previous
        # clip) wait for its last frame; the others are propagated right away.
        if index + self.config.clip_length <= self._clip_end:
            return [self._propagate(current)]
        self._clip.append(current)
        if index < self._clip_end:
            return []
        clip, self._clip = self._clip, []
        self._clip_end += self.config.detect_every
        return self._process_clip(clip)

    def finish(self) -> list[TrackedFrame]:
        """End of the video: return the remaining results.

        Frames buffered for a clip that does not fit in the video are only propagated (no
        merge); a video shorter than one clip is processed as one clip of all its frames.
        """
        return list(self._finish())

    def _finish(self) -> Iterator[TrackedFrame]:
        if self._finished:
            return
        self._finished = True
        if self._offline is not None:
            try:
                yield from self._run_offline(self._offline)
            finally:
                self._offline.close()
        elif self._clip:
            clip, self._clip = self._clip, []
            if self._clips_done == 0:
                # Deliberate difference from the published code (which writes nothing): a
                # video shorter than one clip is processed as one clip of all its frames.
                logger.debug("video of %d frames: one clip of %d", len(clip), len(clip))
                yield from self._process_clip(clip)
            else:
                # The last clip does not fit in the video: its frames are only propagated.
                for frame in clip:
                    yield self._propagate(frame)

    @property
    def frames_fed(self) -> int:
        """How many frames of the current video were fed (results may still be pending)."""
        return self._next_index

    @property
    def can_save_state(self) -> bool:
        """Whether :meth:`state_dict` can be taken now: online or semi-online, and no frame
        is waiting in a clip buffer (every frame fed so far has its result out)."""
        return self.mode is not TrackingMode.OFFLINE and not self._clip and not self._finished

    def state_dict(self) -> dict[str, Any]:
        """The tracker's state after the frames fed so far — the backend's memory and
        objects, the frame counter and the clip schedule — as tensors and plain data:
        :meth:`load_state_dict` on a tracker with the same model, segmenter and config then
        continues exactly as this one would (see :attr:`can_save_state`)."""
        if not self.can_save_state:
            raise RuntimeError(
                "tracker state can be saved only in online / semi-online mode between clips"
            )
        return {
            "backend": self._propagator.state_dict(),
            "next_index": self._next_index,
            "clip_end": self._clip_end,
            "clips_done": self._clips_done,
            "size": list(self._size) if self._size else None,
            "config": _plain(dataclasses.asdict(self.config)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of a tracker with the same settings."""
        if dict(state["config"]) != _plain(dataclasses.asdict(self.config)):
            raise ValueError("the saved tracker state was made with other tracker settings")
        self.reset()
        self._propagator.load_state_dict(state["backend"])
        self._next_index = int(state["next_index"])
        self._clip_end = int(state["clip_end"])
        self._clips_done = int(state["clips_done"])
        self._size = tuple(state["size"]) if state["size"] else None

    # ---- building blocks ---------------------------------------------------------------
    def _prepare(self, index: int, name: str, rgb: np.ndarray) -> _Frame:
        image, geometry = preprocess_frame(
            rgb, self.config.shorter_side, device=self._propagator.device
        )
        return _Frame(index, name, rgb, geometry, self._propagator.encode(image))

    def _detect(self, frame: _Frame) -> Segmentation:
        """The segmenter's output for a frame, at the processing (padded) size, on the CPU.

        The id map is resized with pixel-centre nearest sampling; segments that lose all
        their pixels stay listed (no minimum area).
        """
        seg = self.segmenter(frame.rgb, frame_name=frame.name)
        height, width = frame.geometry.original_size
        if tuple(seg.mask.shape) != (height, width):
            seg = resize_segmentation(seg, height, width)
        mask = torch.as_tensor(seg.mask).long().cpu()
        geometry = frame.geometry
        mask = resize_mask(mask, geometry.resized_size)
        p = geometry.padding
        mask = torch.nn.functional.pad(mask, (p.left, p.right, p.top, p.bottom))
        return Segmentation(mask=mask, segments=list(seg.segments))

    def _consensus(self, clip: list[_Frame], segs: list[Segmentation]) -> Segmentation:
        """Align the clip's segmentations to its first frame (eq. 1) and vote (eq. 4)."""
        key = clip[0]
        # One batched alignment of all the clip's other frames onto the key frame, reusing
        # the cached features and the propagator's network settings (precision, layout).
        aligned = [segs[0]]
        if len(clip) > 1:
            with self._timer("alignment"):
                projected = self._propagator.align(
                    [(frame.features, seg) for frame, seg in zip(clip[1:], segs[1:])],
                    key.features,
                )
            # The network also predicts in the frame's padding; the vote (and the memory the
            # consensus is written to) sees the image only, as detections are padded with
            # background — the published code crops the projected masks the same way.
            padding = key.geometry.padding
            aligned += [
                dataclasses.replace(seg, mask=clear_padding(seg.mask, padding)) for seg in projected
            ]
        with self._timer("consensus"):
            return in_clip_consensus(aligned, separate_things=self.config.panoptic)

    def _process_clip(self, clip: list[_Frame]) -> list[TrackedFrame]:
        self._clips_done += 1
        segs = [self._detect(frame) for frame in clip]
        consensus = self._consensus(clip, segs)
        logger.debug(
            "frame %d: %s proposals -> %d consensus segments",
            clip[0].index,
            [len(s.segments) for s in segs],
            len(consensus.segments),
        )
        results = [self._incorporate(clip[0], consensus)]
        results.extend(self._propagate(frame) for frame in clip[1:])
        return results

    def _propagate(self, frame: _Frame) -> TrackedFrame:
        result = self._propagator.step(features=frame.features)
        return self._from_probabilities(frame, result)

    def _incorporate(self, frame: _Frame, consensus: Segmentation) -> TrackedFrame:
        """A merge frame: predict (sensory update), merge, delete, write memory, output."""
        # R_t: the prediction from memory; the memory is written by the commit below.
        peek = self._propagator.predict(features=frame.features)
        propagated = self._as_segmentation(peek.index_mask().cpu()) if peek.object_ids else None
        c = self.config
        with self._timer("merge"):
            merged = merge_with_consensus(
                propagated,
                consensus,
                self._registry,
                max_missed=c.max_missed,
                max_objects=c.max_objects,
                separate_things=c.panoptic,
                incremental=c.incremental,
            )
        if merged.removed_ids:
            logger.debug(
                "deleting objects %s after %d misses", merged.removed_ids, c.max_missed + 1
            )
            self._propagator.delete_objects(merged.removed_ids)
        objects = self._registry.ids
        masks = self._object_masks(merged.segmentation.mask, objects, self._propagator)
        result = self._propagator.commit(
            masks, objects if masks is not None else None, keep_empty=True
        )
        return self._from_probabilities(frame, result, merged.removed_ids)

    @staticmethod
    def _object_masks(
        ids: torch.Tensor, objects: list[int], propagator: PropagationBackend
    ) -> torch.Tensor | None:
        """(N, H, W) float masks of ``objects`` from an id map, for ``propagator``.

        A new object without pixels is still an object (rule of the published
        implementation): its all-zero mask is committed with ``keep_empty=True``.
        """
        if not objects:
            return None
        ids = ids.to(propagator.device)
        return torch.stack([ids == o for o in objects]).float()

    def _as_segmentation(self, ids: torch.Tensor) -> Segmentation:
        present = set(torch.unique(ids).tolist())
        segments = [self._registry[o].to_segment() for o in self._registry.ids if o in present]
        return Segmentation(mask=ids, segments=segments)

    def _from_probabilities(
        self, frame: _Frame, result: PropagationResult, removed_ids: list[int] | None = None
    ) -> TrackedFrame:
        """A result from probabilities: un-pad, bilinear resize to the original size, arg-max."""
        ids = probabilities_to_ids(result.prob, result.object_ids, frame.geometry).cpu()
        seg = self._as_segmentation(ids)
        return TrackedFrame(
            frame.name, frame.index, ids, seg.segments, list(removed_ids or []), image=frame.rgb
        )

    # ---- offline -------------------------------------------------------------------------
    def _run_offline(self, frames: _OfflineFrames) -> Iterator[TrackedFrame]:
        """Key frame by score, consensus there, then backward and forward propagation."""
        if not len(frames):
            return
        total = len(frames)
        candidates = key_frame_candidates(total, self.config.num_key_candidates)
        detections: dict[int, tuple[_Frame, Segmentation]] = {}
        scores = []
        for i in candidates:
            frame = self._prepare(i, *frames[i])
            seg = self._detect(frame)
            detections[i] = (frame, seg)
            scores.append(self.key_frame_score(seg))
        key = candidates[int(np.argmax(scores))]
        self.key_frame = key
        logger.debug("offline key frame %d (scores %s at %s)", key, scores, candidates)
        clip, segs = [], []
        for i in range(key, min(key + self.config.clip_length, total)):
            frame, seg = detections.get(i) or (None, None)
            if frame is None:
                frame = self._prepare(i, *frames[i])
                seg = self._detect(frame)
            clip.append(frame)
            segs.append(seg)
        detections.clear()
        consensus = self._consensus(clip, segs)
        key_frame = clip[0]
        del clip, segs
        merged = merge_with_consensus(
            None,
            consensus,
            self._registry,
            max_missed=self.config.max_missed,
            max_objects=self.config.max_objects,
            separate_things=self.config.panoptic,
        )
        objects = self._registry.ids
        key_masks = self._object_masks(merged.segmentation.mask, objects, self._propagator)
        given = objects if key_masks is not None else None

        # Backward: a second propagator over key, key-1, ..., 0.
        backward = self._propagator.fork()
        backward.step(features=key_frame.features, mask=key_masks, objects=given, keep_empty=True)
        earlier = SpillList(**self._buffer)  # id maps of frames key-1, ..., 0
        segments: list[list[Segment]] = []
        try:
            for i in range(key - 1, -1, -1):
                frame = self._prepare(i, *frames[i])
                result = backward.step(features=frame.features, end=i == 0)
                tracked = self._from_probabilities(frame, result)
                earlier.append(compact_ids(tracked.mask.numpy()))
                segments.append(tracked.segments)
            del backward
            for i in range(key):
                j = key - 1 - i
                name, rgb = frames[i]
                mask = torch.from_numpy(earlier[j].astype(np.int64))
                yield TrackedFrame(name, i, mask, segments[j], image=rgb)
        finally:
            earlier.close()

        # Forward: the tracker's own propagator over key, key+1, ..., T-1.
        result = self._propagator.step(
            features=key_frame.features, mask=key_masks, objects=given, keep_empty=True
        )
        yield self._from_probabilities(key_frame, result)
        del key_frame
        for i in range(key + 1, total):
            frame = self._prepare(i, *frames[i])
            result = self._propagator.step(features=frame.features, end=i == total - 1)
            yield self._from_probabilities(frame, result)


class _OfflineFrames:
    """The frames of an offline video: names in a list, pixels in a :class:`SpillList`."""

    def __init__(self, **buffer: Any) -> None:
        self._names: list[str] = []
        self._pixels = SpillList(**buffer)

    def __len__(self) -> int:
        return len(self._names)

    def append(self, name: str, rgb: np.ndarray) -> None:
        self._names.append(name)
        self._pixels.append(rgb)

    def __getitem__(self, index: int) -> tuple[str, np.ndarray]:
        return self._names[index], self._pixels[index]

    def close(self) -> None:
        self._names.clear()
        self._pixels.close()


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Settings as :func:`torch.save` / JSON keep them (enums by value)."""
    return {k: v.value if isinstance(v, enum.Enum) else v for k, v in values.items()}
