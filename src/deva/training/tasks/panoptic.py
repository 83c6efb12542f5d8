"""Panoptic tracking validation (VPQ / STQ): VIPSeg folders and generated videos.

- :class:`VipsegTask` (``type: vipseg``): VIPSeg layout -> VPQ^k (things / stuff), STQ.
- :class:`SyntheticPanopticTask` (``type: synthetic_panoptic``): generated videos with their
  simulated detections and panoptic ground truth -> VPQ / STQ with no download.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from torchmetrics import Metric, MetricCollection

from deva.data.synthetic import SyntheticVideoConfig, frame_name, generate_video, video_seed
from deva.data.synthetic_benchmarks import panoptic_ground_truth, synthetic_categories
from deva.inference.options import InferenceOptions
from deva.inference.tracker import TrackedFrame
from deva.inference.tracker_config import TrackerConfig
from deva.io import vipseg
from deva.io.masks import read_id_png
from deva.metrics import scoring
from deva.metrics.vpq import VideoPanopticQuality, window_name
from deva.pipelines.inputs import DetectionSource
from deva.pipelines.writers import PanopticIds
from deva.training.tasks.tracking import DictSegmenter, TrackingTask, _FrameFiles, _frames_by_stem
from deva.types import ImageSegmenter

log = logging.getLogger(__name__)


class _PanopticTask(TrackingTask):
    """Shared VPQ + STQ scoring of tracks turned into per-video panoptic ids."""

    categories: dict[int, bool]

    def make_metric(self) -> Metric:
        return MetricCollection(
            {
                "vpq": VideoPanopticQuality(self.categories),
                "stq": scoring.stq_metric(self.categories),
            },
            compute_groups=False,
        )

    @abstractmethod
    def panoptic_ground_truth(self, index: int) -> tuple[np.ndarray, list[list[dict]]]:
        """(T, H, W) ground-truth ids and per-frame ``segments_info`` of the scored frames."""

    def score(self, index: int, tracked: list[TrackedFrame], metric: Metric) -> None:
        ids = PanopticIds()
        remapped = [ids.remap(frame) for frame in tracked]
        pred_ids = np.stack([r[0] for r in remapped])
        pred_segments = [r[1] for r in remapped]
        gt_ids, gt_segments = self.panoptic_ground_truth(index)
        vpq = metric["vpq"]
        vpq.update_stats(scoring.vpq_stats(vpq, gt_ids, pred_ids, gt_segments, pred_segments))
        scoring.update_stq(metric["stq"], gt_ids, pred_ids, gt_segments, pred_segments, index)

    def summarize(self, metric: Metric) -> dict[str, float]:
        """``vpq`` (VPQ-bar), ``vpq_k<k>``, ``vpq_things``, ``vpq_stuff``, ``stq``, ``aq``,
        ``sq`` (VPQ ×100 as the official tool prints it, STQ as a fraction)."""
        vpq = {k: float(v) for k, v in metric["vpq"].compute().items()}
        stq = {k: float(v) for k, v in metric["stq"].compute().items()}
        out = {
            "vpq": vpq["VPQ_bar"],
            "vpq_things": vpq["VPQ_bar_things"],
            "vpq_stuff": vpq["VPQ_bar_stuff"],
        }
        for k in metric["vpq"].window_sizes:
            out[f"vpq_k{window_name(k)}"] = vpq[f"VPQ_{window_name(k)}"]
        out.update(stq=stq["STQ"], aq=stq["AQ"], sq=stq["SQ"])
        return out


class SyntheticPanopticTask(_PanopticTask):
    """Generated videos, their simulated detections and their panoptic ground truth.

    Video ``i`` is ``generate_video(config, [seed, i])`` (pick a seed training does not use).
    """

    def __init__(
        self,
        name: str,
        config: TrackerConfig,
        *,
        num_videos: int = 4,
        seed: int = 54321,
        max_frames: int | None = None,
        preview_frames: int = 4,
        options: InferenceOptions | None = None,
        **video_config: Any,
    ) -> None:

        super().__init__(
            name, config, max_frames=max_frames, preview_frames=preview_frames, options=options
        )
        if num_videos < 1:
            raise ValueError(f"validation set {name!r} is empty (num_videos={num_videos})")
        self.num_videos = int(num_videos)
        self.seed = int(seed)
        self.video_config = SyntheticVideoConfig(**video_config)
        self.categories = {
            int(c["id"]): bool(c["isthing"]) for c in synthetic_categories(self.video_config)
        }
        self._cache: tuple[int, Any] | None = None

    def __len__(self) -> int:
        return self.num_videos

    def _video(self, index: int) -> tuple[Any, Any]:
        """Video ``index`` and its panoptic ground truth (the latest one is kept)."""

        if self._cache is None or self._cache[0] != index:
            video = generate_video(self.video_config, video_seed(self.seed, index))
            self._cache = (index, (video, panoptic_ground_truth(video)))
        return self._cache[1]

    def num_frames(self, index: int) -> int:
        total = self.video_config.num_frames
        return min(total, self.max_frames) if self.max_frames else total

    def frames(self, index: int) -> Iterator[tuple[str, np.ndarray]]:

        video = self._video(index)[0]
        for t in range(self.num_frames(index)):
            yield frame_name(t), video.frames[t]

    def segmenter(self, index: int) -> ImageSegmenter:

        video = self._video(index)[0]
        return DictSegmenter({frame_name(t): d for t, d in enumerate(video.detections)})

    def panoptic_ground_truth(self, index: int) -> tuple[np.ndarray, list[list[dict]]]:
        gt = self._video(index)[1]
        n = self.num_frames(index)
        return gt.ids[:n], gt.segments[:n]

    def ground_truth_ids(self, index: int, position: int, shape: tuple[int, int]) -> np.ndarray:
        return self._video(index)[1].ids[position].astype(np.int64)


class VipsegTask(_FrameFiles, _PanopticTask):
    """VIPSeg: ``images/<video>/``, ``panomasksRGB/``, ``panoptic_gt_VIPSeg_<split>.json``.

    ``gt`` is the json file or the VIPSeg root; ``detections`` is in the VIPSeg prediction
    layout (``pred.json`` + ``pan_pred/``) or the generic per-frame layout. The ground truth's
    frames (in its order) are tracked; every one must exist under ``images``.
    """

    def __init__(
        self,
        name: str,
        config: TrackerConfig,
        *,
        images: str | Path,
        gt: str | Path,
        detections: str | Path,
        split: str = "val",
        max_videos: int | None = None,
        max_frames: int | None = None,
        preview_frames: int = 4,
        options: InferenceOptions | None = None,
    ) -> None:
        super().__init__(
            name, config, max_frames=max_frames, preview_frames=preview_frames, options=options
        )
        images = Path(images)
        if not images.is_dir():
            raise FileNotFoundError(f"validation set {name!r}: images folder not found: {images}")
        self.gt = vipseg.load_ground_truth(gt, split)
        self.categories = self.gt.isthing
        videos = self.gt.videos[:max_videos] if max_videos else self.gt.videos
        if not videos:
            raise ValueError(f"validation set {name!r} is empty: no video in {gt}")
        self.videos = videos
        self.source = DetectionSource(detections, single_video=False)
        self.files: list[list[Path]] = []
        for video in videos:
            on_disk = _frames_by_stem(images / video.video_id)
            wanted = [Path(str(image["file_name"])).stem for image in video.images]
            missing = [stem for stem in wanted if stem not in on_disk]
            if missing:
                raise FileNotFoundError(
                    f"validation set {name!r}: video {video.video_id!r} has no frame "
                    f"{missing[0]!r} under {images / video.video_id}"
                )
            self.source.check_frames(video.video_id, list(on_disk))
            self.source.segmenter(video.video_id)  # fails now if its detections are missing
            self.files.append([on_disk[stem] for stem in wanted])

    def __len__(self) -> int:
        return len(self.videos)

    def segmenter(self, index: int) -> ImageSegmenter:
        return self.source.segmenter(self.videos[index].video_id)

    def _gt_png(self, index: int, position: int) -> Path:
        video = self.videos[index]
        name = Path(str(video.images[position]["file_name"])).with_suffix(".png").name
        return self.gt.png_root / video.video_id / name

    def panoptic_ground_truth(self, index: int) -> tuple[np.ndarray, list[list[dict]]]:
        n = self.num_frames(index)
        ids = np.stack([read_id_png(self._gt_png(index, t)) for t in range(n)])
        return ids, self.videos[index].segments[:n]

    def ground_truth_ids(self, index: int, position: int, shape: tuple[int, int]) -> np.ndarray:
        return read_id_png(self._gt_png(index, position))
