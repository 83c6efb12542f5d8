"""Validation tasks that run the whole decoupled loop: detections + propagation → tracks.

Each task runs the real :class:`~deva.inference.tracker.DecoupledTracker` (with the task's
own tracker settings) on one video at a time with precomputed detections, and scores the
tracks with the benchmark's metric through :mod:`deva.scoring` — the same per-video code as
``tools/score.py``, so a task's numbers equal ``tools/evaluate.py`` + ``tools/score.py`` on
the same data, weights and settings.

- :class:`VipsegTask` (``type: vipseg``): VIPSeg layout → VPQ^k (things / stuff), STQ.
- :class:`BurstTask` (``type: burst``): BURST layout → OWTA / DetRe / AssA for the all,
  common and uncommon class splits.
- :class:`SyntheticPanopticTask` (``type: synthetic_panoptic``): generated videos with their
  simulated detections and panoptic ground truth → VPQ / STQ with no download.

Everything that can be wrong with a set (missing folders, frames, detections for frames that
do not exist, an empty set) is found when the task is built, before training starts. The
first video of each pass also yields a picture (:attr:`TrackingTask.preview`): sampled
frames, ground truth and our tracks with their ids.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torchmetrics import Metric, MetricCollection

from deva import scoring
from deva.inference.inputs import DetectionSource, VideoSource
from deva.inference.segmentation import Segmentation
from deva.inference.tracker import DecoupledTracker, TrackedFrame, TrackerConfig
from deva.inference.writers import BurstWriter, PanopticIds
from deva.io import burst, vipseg
from deva.io.frames import list_frame_files, read_frame
from deva.io.masks import read_id_png
from deva.io.video import overlay_mask
from deva.metrics.owta import OpenWorldTrackingAccuracy
from deva.metrics.vpq import VideoPanopticQuality, window_name
from deva.modeling.propagation import PropagationModel
from deva.segmenters.base import ImageSegmenter, check_image, empty_segmentation
from deva.training.predictor import PredictionTask

log = logging.getLogger(__name__)

PREVIEW_WIDTH = 256


class TrackingTask(PredictionTask):
    """A validation set scored through the decoupled tracker (one video per ``process``).

    Subclasses say which frames a video has, which segmenter serves its detections, what the
    ground truth of a frame is, and how a tracked video is scored.

    Args:
        name: the set's name (``val/<name>/...``).
        config: tracker settings (mode, detect_every, clip_size, max_missed, size, ...).
        max_frames: only the first N frames of each video (None: all).
        preview_frames: frames in the picture of the first video (0: no picture).
    """

    def __init__(
        self,
        name: str,
        config: TrackerConfig,
        *,
        max_frames: int | None = None,
        preview_frames: int = 4,
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"validation set {name!r}: max_frames must be >= 1, got {max_frames}")
        self.name = name
        self.config = config
        self.max_frames = max_frames
        self.preview_frames = preview_frames
        self.preview: np.ndarray | None = None

    # -- what subclasses provide ---------------------------------------------------------
    @abstractmethod
    def frames(self, index: int) -> Iterator[tuple[str, np.ndarray]]:
        """``(frame name, RGB uint8)`` of video ``index`` (at most ``max_frames``)."""

    @abstractmethod
    def num_frames(self, index: int) -> int:
        """How many frames :meth:`frames` yields for video ``index``."""

    @abstractmethod
    def segmenter(self, index: int) -> ImageSegmenter:
        """The detections of video ``index``."""

    @abstractmethod
    def score(self, index: int, tracked: list[TrackedFrame], metric: Metric) -> None:
        """Update ``metric`` with the tracks of video ``index`` (frames in order)."""

    @abstractmethod
    def ground_truth_ids(self, index: int, position: int, shape: tuple[int, int]) -> np.ndarray:
        """(H, W) ground-truth ids of frame ``position`` of video ``index`` (for pictures)."""

    # -- the shared loop -----------------------------------------------------------------
    def process(self, model: PropagationModel, index: int, metric: Metric) -> None:
        """Track video ``index`` with the current weights and score it."""
        tracker = DecoupledTracker(model, self.segmenter(index), self.config)
        count = self.num_frames(index)
        shown = _spread(count, self.preview_frames) if index == 0 else []
        kept: list[TrackedFrame] = []
        pictures: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for result in tracker.stream(self.frames(index)):
            if result.index in shown and result.image is not None:
                ids = result.mask.numpy()
                gt = self.ground_truth_ids(index, result.index, ids.shape)
                pictures.append((result.image, gt, ids))
            result.image = None  # frames are not kept in memory
            kept.append(result)
        if len(kept) != count:
            raise RuntimeError(
                f"{self.name}: tracked {len(kept)} of {count} frames of video {index}"
            )
        self.score(index, kept, metric)
        if pictures:
            self.preview = preview_strip(pictures)


def _spread(count: int, wanted: int) -> list[int]:
    if count <= 0 or wanted <= 0:
        return []
    return sorted({round(float(v)) for v in np.linspace(0, count - 1, min(wanted, count))})


def preview_strip(pictures: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """One RGB image: frames (top), ground truth (middle), our tracks with ids (bottom)."""
    columns = []
    for rgb, gt, pred in pictures:
        height, width = rgb.shape[:2]
        scale = min(1.0, PREVIEW_WIDTH / width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        gt_small = cv2.resize(gt.astype(np.int32), size, interpolation=cv2.INTER_NEAREST)
        pred_small = cv2.resize(pred.astype(np.int32), size, interpolation=cv2.INTER_NEAREST)
        tracks = overlay_mask(small, pred_small)
        for value in np.unique(pred_small):
            if value == 0:
                continue
            ys, xs = np.nonzero(pred_small == value)
            at = (int(xs.mean()) - 6, int(ys.mean()) + 4)
            cv2.putText(tracks, str(int(value)), at, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3)
            cv2.putText(tracks, str(int(value)), at, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255,) * 3, 1)
        columns.append(np.concatenate([small, overlay_mask(small, gt_small), tracks], axis=0))
    height = min(c.shape[0] for c in columns)
    return np.concatenate([c[:height] for c in columns], axis=1)


class DictSegmenter:
    """Detections held in memory, looked up by frame name (missing frames: no segments)."""

    def __init__(self, detections: dict[str, Segmentation]) -> None:
        self.detections = detections

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        height, width = check_image(image)
        found = self.detections.get(str(frame_name))
        return found if found is not None else empty_segmentation(height, width)


# -- panoptic (VPQ / STQ) ---------------------------------------------------------------------


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
        **video_config: Any,
    ) -> None:
        from deva.data.synthetic import SyntheticVideoConfig
        from deva.data.synthetic_benchmarks import synthetic_categories

        super().__init__(name, config, max_frames=max_frames, preview_frames=preview_frames)
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
        from deva.data.synthetic import generate_video, video_seed
        from deva.data.synthetic_benchmarks import panoptic_ground_truth

        if self._cache is None or self._cache[0] != index:
            video = generate_video(self.video_config, video_seed(self.seed, index))
            self._cache = (index, (video, panoptic_ground_truth(video)))
        return self._cache[1]

    def num_frames(self, index: int) -> int:
        total = self.video_config.num_frames
        return min(total, self.max_frames) if self.max_frames else total

    def frames(self, index: int) -> Iterator[tuple[str, np.ndarray]]:
        from deva.data.synthetic import frame_name

        video = self._video(index)[0]
        for t in range(self.num_frames(index)):
            yield frame_name(t), video.frames[t]

    def segmenter(self, index: int) -> ImageSegmenter:
        from deva.data.synthetic import frame_name

        video = self._video(index)[0]
        return DictSegmenter({frame_name(t): d for t, d in enumerate(video.detections)})

    def panoptic_ground_truth(self, index: int) -> tuple[np.ndarray, list[list[dict]]]:
        gt = self._video(index)[1]
        n = self.num_frames(index)
        return gt.ids[:n], gt.segments[:n]

    def ground_truth_ids(self, index: int, position: int, shape: tuple[int, int]) -> np.ndarray:
        return self._video(index)[1].ids[position].astype(np.int64)


def _frames_by_stem(directory: Path) -> dict[str, Path]:
    return {p.stem: p for p in list_frame_files(directory)}


class _FrameFiles:
    """Frames read from files: ``self.files[index]`` lists video ``index``'s frames."""

    files: list[list[Path]]
    max_frames: int | None

    def num_frames(self, index: int) -> int:
        total = len(self.files[index])
        return min(total, self.max_frames) if self.max_frames else total

    def frames(self, index: int) -> Iterator[tuple[str, np.ndarray]]:
        for path in self.files[index][: self.num_frames(index)]:
            yield path.stem, read_frame(path)


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
    ) -> None:
        super().__init__(name, config, max_frames=max_frames, preview_frames=preview_frames)
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


# -- open world (OWTA) ------------------------------------------------------------------------


class BurstTask(_FrameFiles, TrackingTask):
    """BURST: ``images`` = ``frames/<split>`` (``<dataset>/<seq_name>/<frame>``), ``gt`` = the
    folder with ``all_classes.json``, ``common_classes.json``, ``uncommon_classes.json``,
    ``detections`` = a BURST-style json (or any detections layout). Every frame of a sequence
    is tracked; its annotated frames are scored, for each class split present in ``gt``.
    """

    def __init__(
        self,
        name: str,
        config: TrackerConfig,
        *,
        images: str | Path,
        gt: str | Path,
        detections: str | Path,
        max_videos: int | None = None,
        max_frames: int | None = None,
        preview_frames: int = 4,
        max_detections: int = burst.MAX_DETECTIONS,
        similarity: str = "box",
    ) -> None:
        super().__init__(name, config, max_frames=max_frames, preview_frames=preview_frames)
        images, gt = Path(images), Path(gt)
        if not images.is_dir():
            raise FileNotFoundError(f"validation set {name!r}: frames folder not found: {images}")
        if not (gt / burst.SPLIT_FILES["all"]).is_file():
            raise FileNotFoundError(
                f"validation set {name!r}: {gt / burst.SPLIT_FILES['all']} not found (gt must be "
                "the folder of the BURST class-split jsons)"
            )
        self.split_gt: dict[str, dict[str, burst.BurstSequence]] = {}
        for split, file_name in burst.SPLIT_FILES.items():
            if (gt / file_name).is_file():
                sequences = burst.load_burst(gt / file_name).sequences
                self.split_gt[split] = {f"{s.dataset}/{s.seq_name}": s for s in sequences}
        keys = list(self.split_gt["all"])
        keys = keys[:max_videos] if max_videos else keys
        if not keys:
            raise ValueError(f"validation set {name!r} is empty: no sequence in {gt}")
        self.keys = keys
        self.max_detections = max_detections
        self.similarity = similarity
        self.source = DetectionSource(detections, single_video=False)
        self.files: list[list[Path]] = []
        for key in keys:
            directory = images / key
            if not directory.is_dir():
                raise FileNotFoundError(
                    f"validation set {name!r}: no frames folder for sequence {key!r}: {directory}"
                )
            files = list_frame_files(directory)
            self.source.check_frames(key, [p.stem for p in files])
            self.files.append(files)

    def __len__(self) -> int:
        return len(self.keys)

    def make_metric(self) -> Metric:
        return OpenWorldTrackingAccuracy(splits=list(self.split_gt))

    def segmenter(self, index: int) -> ImageSegmenter:
        return self.source.segmenter(self.keys[index])

    def _ground_truth(self, index: int, split: str) -> burst.BurstSequence | None:
        """The split's sequence, restricted to the tracked frames."""
        seq = self.split_gt[split].get(self.keys[index])
        if seq is None or not self.max_frames:
            return seq
        tracked = {p.name for p in self.files[index][: self.num_frames(index)]}
        keep = [i for i, p in enumerate(seq.annotated_image_paths) if p in tracked]
        return replace(
            seq,
            annotated_image_paths=[seq.annotated_image_paths[i] for i in keep],
            segmentations=[seq.segmentations[i] for i in keep],
        )

    def score(self, index: int, tracked: list[TrackedFrame], metric: Metric) -> None:
        key = self.keys[index]
        writer = BurstWriter(Path(), {key: self.split_gt["all"][key]}, None)
        files = self.files[index]
        writer.start(VideoSource(key, tuple(files)))
        by_stem = {p.stem: p.name for p in files}
        for frame in tracked:
            writer.add(frame, by_stem[frame.name])
        writer.end()
        prediction = writer.sequences[-1]
        for split in self.split_gt:
            gt = self._ground_truth(index, split)
            if gt is None:
                continue
            stats = scoring.owta_stats(
                gt, prediction, max_detections=self.max_detections, similarity=self.similarity
            )
            metric.update_stats(stats, split=split)

    def ground_truth_ids(self, index: int, position: int, shape: tuple[int, int]) -> np.ndarray:
        seq = self.split_gt["all"][self.keys[index]]
        name = self.files[index][position].name
        ids = np.zeros(shape, dtype=np.int64)
        if name in seq.annotated_image_paths:
            objects = seq.segmentations[seq.annotated_image_paths.index(name)]
            for track, det in objects.items():
                ids[burst.decode_rle(det["rle"], *shape).astype(bool)] = int(track)
        return ids

    def summarize(self, metric: Metric) -> dict[str, float]:
        """``owta_<split>``, ``detre_<split>``, ``assa_<split>`` (×100, as the official tool)."""
        computed = metric.compute()
        out: dict[str, float] = {}
        for split in self.split_gt:
            for key in ("OWTA", "DetRe", "AssA"):
                name = key if len(self.split_gt) == 1 else f"{key}/{split}"
                out[f"{key.lower()}_{split}"] = float(computed[name])
        return out


def tracker_settings(name: str, spec: dict[str, Any], *, default_size: int) -> TrackerConfig:
    """Pop the tracker keys of a validation set (``mode``, ``detect_every``, ``clip_size``,
    ``max_missed``, ``size``, ``mem_every``, ``top_k``, ...) into a :class:`TrackerConfig`."""
    from dataclasses import fields

    from deva.inference.memory import MemoryConfig

    names = {f.name for f in fields(TrackerConfig)} - {"memory", "autocast_dtype", "shorter_side"}
    kwargs = {key: spec.pop(key) for key in list(spec) if key in names}
    kwargs["shorter_side"] = int(spec.pop("size", spec.pop("shorter_side", default_size)))
    memory = {
        key: spec.pop(key) for key in list(spec) if key in {f.name for f in fields(MemoryConfig)}
    }
    try:
        return TrackerConfig(memory=MemoryConfig(**memory), **kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"validation set {name!r}: {error}") from error


def build_tracking_task(
    name: str, kind: str, spec: dict[str, Any], *, autocast_dtype: torch.dtype | None = None
) -> TrackingTask:
    """One tracking task from its ``validation.sets.<name>`` entry (``type`` already popped).

    Unknown keys are an error, so a typo fails at start-up rather than being ignored.
    """
    spec = dict(spec)
    # panoptic input (VIPSeg, the generator's things + stuff): things and stuff are matched
    # separately, as tools/evaluate.py does for benchmark=vipseg; BURST is matched as one group
    spec.setdefault("panoptic", kind != "burst")
    default_size = -1 if kind == "synthetic_panoptic" else 480
    config = replace(
        tracker_settings(name, spec, default_size=default_size), autocast_dtype=autocast_dtype
    )
    common = {k: spec.pop(k) for k in ("max_frames", "preview_frames") if k in spec}
    if kind == "synthetic_panoptic":
        return SyntheticPanopticTask(
            name, config, **common, **_checked(name, spec, _synthetic_keys())
        )
    paths = {}
    for key in ("images", "gt", "detections"):
        value = spec.pop(key, None)
        if not value:
            raise ValueError(f"validation set {name!r} ({kind}) needs {key}=PATH")
        paths[key] = value
    if kind == "vipseg":
        allowed = {"split", "max_videos"}
        return VipsegTask(name, config, **paths, **common, **_checked(name, spec, allowed))
    allowed = {"max_videos", "max_detections", "similarity"}
    return BurstTask(name, config, **paths, **common, **_checked(name, spec, allowed))


def _synthetic_keys() -> set[str]:
    from dataclasses import fields

    from deva.data.synthetic import SyntheticVideoConfig

    return {"num_videos", "seed"} | {f.name for f in fields(SyntheticVideoConfig)}


def _checked(name: str, spec: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"validation set {name!r}: unknown key(s) {unknown}")
    return spec


TRACKING_TYPES = ("vipseg", "burst", "synthetic_panoptic")
