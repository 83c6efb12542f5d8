"""Open-world tracking validation (OWTA) on the BURST layout (``type: burst``): OWTA / DetRe /
AssA for the all, common and uncommon class splits.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
from torchmetrics import Metric

from deva.inference.options import InferenceOptions
from deva.inference.tracker import TrackedFrame
from deva.inference.tracker_config import TrackerConfig
from deva.io import burst
from deva.io.frames import list_frame_files
from deva.metrics import scoring
from deva.metrics.owta import OpenWorldTrackingAccuracy
from deva.pipelines.inputs import DetectionSource, VideoSource
from deva.pipelines.writers import BurstWriter
from deva.training.tasks.tracking import TrackingTask, _FrameFiles
from deva.types import ImageSegmenter

log = logging.getLogger(__name__)


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
        options: InferenceOptions | None = None,
        max_detections: int = burst.MAX_DETECTIONS,
        similarity: str = "box",
    ) -> None:
        super().__init__(
            name, config, max_frames=max_frames, preview_frames=preview_frames, options=options
        )
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
