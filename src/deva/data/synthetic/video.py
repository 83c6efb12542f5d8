"""The assembled synthetic video: frames, ground truth and simulated detections, in memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from deva.data.synthetic.appearance import Appearance, ProceduralAppearance
from deva.data.synthetic.config import StuffRegion, SyntheticObject, SyntheticVideoConfig
from deva.data.synthetic.detections import simulate_detections
from deva.data.synthetic.render import _render
from deva.types import Segmentation


@dataclass
class SyntheticVideo:
    """A generated video with its ground truth and simulated detections.

    Shapes: T frames, H×W pixels, K objects.

    - ``frames``: (T, H, W, 3) uint8 RGB.
    - ``masks``: (T, H, W) uint8, object k (``objects[k-1]``) has label k, 0 elsewhere.
    - ``stuff``: (T, H, W) uint8 background region index (1..R) under every pixel, objects
      ignored (the panoptic ground truth is ``masks`` on top of ``stuff``).
    - ``visible_area``: (T, K) pixels of each object in the ground truth.
    - ``unoccluded_area``: (T, K) pixels each object would have in the frame without the
      objects in front of it; ``visible_area < unoccluded_area`` means it is occluded.
    - ``detections``: one simulated image-model :class:`Segmentation` per frame.
    """

    frames: np.ndarray
    masks: np.ndarray
    stuff: np.ndarray
    objects: list[SyntheticObject]
    stuff_regions: list[StuffRegion]
    visible_area: np.ndarray
    unoccluded_area: np.ndarray
    detections: list[Segmentation] = field(default_factory=list)
    seed: int | list[int] | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def visible(self) -> np.ndarray:
        """(T, K) bool: whether each object has at least one pixel in each frame."""
        return self.visible_area > 0

    def meta(self, config: SyntheticVideoConfig | None = None) -> dict:
        """A JSON-serialisable description of what was generated (per-frame visibility too)."""
        meta: dict = {
            "num_frames": self.num_frames,
            "height": int(self.frames.shape[1]),
            "width": int(self.frames.shape[2]),
            "seed": self.seed,
            "objects": [
                {
                    **asdict(obj),
                    "visible": self.visible[:, i].tolist(),
                    "visible_area": self.visible_area[:, i].tolist(),
                    "unoccluded_area": self.unoccluded_area[:, i].tolist(),
                }
                for i, obj in enumerate(self.objects)
            ],
            "stuff": [asdict(region) for region in self.stuff_regions],
        }
        if config is not None:
            meta["config"] = asdict(config)
        return meta


def generate_video(
    config: SyntheticVideoConfig | None = None,
    seed: int | Sequence[int] = 0,
    appearance: Appearance | None = None,
) -> SyntheticVideo:
    """Generate one synthetic video, its ground truth and simulated detections, in memory.

    The same ``config``, ``seed`` and ``appearance`` (default: procedural textures and
    shapes) always give identical arrays. Scene and detections use
    independent random streams, so changing only the ``det_*`` settings keeps the frames.
    """
    config = config or SyntheticVideoConfig()
    scene_seq, det_seq = np.random.SeedSequence(seed).spawn(2)
    frames, masks, stuff, plans, regions, unoccluded = _render(
        config, np.random.default_rng(scene_seq), appearance or ProceduralAppearance()
    )
    objects = [plan.obj for plan in plans]
    visible_area = (
        np.stack([np.count_nonzero(masks == obj.id, axis=(1, 2)) for obj in objects], axis=1)
        if objects
        else np.zeros((config.num_frames, 0), dtype=np.int64)
    )
    detections = simulate_detections(
        masks, stuff, objects, regions, config, det_seq, unoccluded_area=unoccluded
    )
    return SyntheticVideo(
        frames=frames,
        masks=masks,
        stuff=stuff,
        objects=objects,
        stuff_regions=regions,
        visible_area=visible_area.astype(np.int64),
        unoccluded_area=unoccluded,
        detections=detections,
        seed=seed if isinstance(seed, int) else [int(s) for s in seed],
    )
