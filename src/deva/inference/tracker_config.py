"""The decoupled tracker's algorithm settings: the tracking mode and :class:`TrackerConfig`.

How the network runs (precision, layout, objects per pass) is separate:
:class:`~deva.inference.options.InferenceOptions`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from deva.inference.memory import MemoryConfig
from deva.inference.merging import MAX_MISSED


class TrackingMode(enum.Enum):
    """How image segmentations are brought in (see :mod:`deva.inference.tracker`)."""

    ONLINE = "online"
    SEMI_ONLINE = "semionline"
    OFFLINE = "offline"

    @classmethod
    def parse(cls, value: str | TrackingMode) -> TrackingMode:
        """``online`` | ``semionline`` (also ``semi-online``, ``semi_online``) | ``offline``."""
        if isinstance(value, TrackingMode):
            return value
        key = str(value).strip().lower().replace("-", "").replace("_", "")
        for mode in cls:
            if mode.value == key:
                return mode
        raise ValueError(
            f"unknown tracking mode {value!r}; expected one of {[m.value for m in cls]}"
        )


@dataclass(frozen=True)
class TrackerConfig:
    """Algorithm settings of :class:`DecoupledTracker` (paper defaults). How the network runs
    (precision, layout, objects per pass) is :class:`~deva.inference.options.InferenceOptions`.

    Attributes:
        mode: online, semi-online or offline.
        detect_every: frames between detection frames (online / semi-online).
        clip_size: frames in a consensus clip (n); online always uses 1.
        max_missed: an object is deleted when its consecutive missed merges exceed this (L),
            i.e. at the (L+1)-th miss, as in the published implementation; 0 deletes at the
            first miss.
        max_objects: cap on live objects: a merge whose detections would exceed it together
            with the live objects discards all of its detections (with a warning).
        shorter_side: processing size (shorter side; -1 keeps the original size).
        mem_every: a propagated frame becomes a memory frame every this many frames.
        memory: sizes of the propagator memory; its ``top_k`` is also used for alignment.
        num_key_candidates: offline mode: frames considered for the key frame.
        panoptic: the detections are panoptic (VIPSeg-style): things, stuff and unknown
            ``isthing`` are matched separately, in consensus and merging. False (generic,
            BURST) puts all segments in one group.
        incremental: incremental mode (automatic segmentation): an unassociated object whose
            propagated mask is non-empty has its miss counter reset instead of increased.
        propagator: the propagation backend built for a model (:mod:`deva.inference.backends`:
            ``deva``, the ``hold`` baseline, or ``sam2`` / ``sam3`` / ``edgetam``).
        propagator_model: the SAM-family backend's model: a hub id or a ``save_pretrained``
            folder (None: the family's default hub id).
    """

    mode: TrackingMode = TrackingMode.SEMI_ONLINE
    detect_every: int = 5
    clip_size: int = 3
    max_missed: int = MAX_MISSED
    max_objects: int | None = None
    shorter_side: int = 480
    mem_every: int = 5
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    num_key_candidates: int = 10
    panoptic: bool = False
    incremental: bool = False
    propagator: str = "deva"
    propagator_model: str | None = None

    def __post_init__(self) -> None:
        from deva.inference.backends import check_backend  # the backends import the network

        check_backend(self.propagator)
        object.__setattr__(self, "mode", TrackingMode.parse(self.mode))
        for name in ("detect_every", "clip_size", "mem_every", "num_key_candidates"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.max_missed, int) or self.max_missed < 0:
            raise ValueError(f"max_missed must be an integer >= 0, got {self.max_missed!r}")
        if self.max_objects is not None and self.max_objects < 0:
            raise ValueError(f"max_objects must be >= 0 or None, got {self.max_objects}")

    @property
    def clip_length(self) -> int:
        """Frames per consensus clip: 1 online, ``clip_size`` otherwise."""
        return 1 if self.mode is TrackingMode.ONLINE else self.clip_size
