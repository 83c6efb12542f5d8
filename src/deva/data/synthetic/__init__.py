"""Procedurally generated videos with exact ground truth and a simulated noisy image model.

A synthetic video is a textured background (split into a few "stuff" regions) seen by a
moving camera, with textured "thing" objects (ellipses, star polygons, smooth blobs) moving
in front of it with translation, rotation, scaling and a mild non-rigid warp. Objects are
painted back to front, so they occlude each other. With the default configuration every
video contains an object that enters the view, one that leaves it, one that leaves and comes
back (disappears and reappears) and one whose path crosses another object (occlusion).

Besides the frames and the ground-truth masks (object k has label k in every frame), the
generator simulates a per-frame image segmenter: ids drawn at random in every frame,
boundaries dilated or eroded, missed and spurious detections, splits and merges, and the
background returned as stuff segments. Everything is deterministic given the seed, and the
whole video lives in memory, so datasets, tests and benchmarks can use it without disk;
:func:`write_synthetic_video` writes it in a DAVIS-style layout when a folder is wanted.

Modules: :mod:`~deva.data.synthetic.config` (settings, records, names and seeds),
:mod:`~deva.data.synthetic.textures`, :mod:`~deva.data.synthetic.motion` (object and camera
paths), :mod:`~deva.data.synthetic.render`, :mod:`~deva.data.synthetic.detections` (the
simulated image model), :mod:`~deva.data.synthetic.video` (:func:`generate_video`) and
:mod:`~deva.data.synthetic.writing` (the folder layout).
"""

from deva.data.synthetic.config import (
    ROLES,
    SHAPES,
    StuffRegion,
    SyntheticObject,
    SyntheticVideoConfig,
    frame_name,
    video_name,
    video_seed,
)
from deva.data.synthetic.detections import simulate_detections
from deva.data.synthetic.video import SyntheticVideo, generate_video
from deva.data.synthetic.writing import (
    write_synthetic_dataset,
    write_synthetic_video,
)

__all__ = [
    "ROLES",
    "SHAPES",
    "StuffRegion",
    "SyntheticObject",
    "SyntheticVideo",
    "SyntheticVideoConfig",
    "frame_name",
    "generate_video",
    "simulate_detections",
    "video_name",
    "video_seed",
    "write_synthetic_dataset",
    "write_synthetic_video",
]
