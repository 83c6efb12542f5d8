"""Writers of the decoupled tracker's results in the benchmarks' prediction formats.

A writer sees one video at a time: ``start(video, index)`` (``index``: the video's place in
the dataset), ``add(frame, file_name)`` per output frame, ``end()``, which returns the
video's *record* (plain JSON data: its share of a file written for the whole dataset).
``merge(records)`` writes the dataset-wide files from every video's record, in dataset
order, and returns the paths written; so videos may be tracked by different processes, or
in an earlier run that a restart resumes (:mod:`deva.pipelines.sharding`).

- :class:`GenericWriter`: ``<root>/<video>/<frame>.png`` (palette, or RGB ids above 255) +
  ``<frame>.json`` with ``[{id, category_id, score, isthing}]``;
- :class:`VipsegWriter`: ``<root>/pred.json`` + ``<root>/pan_pred/<video>/<frame>.png``, ids
  from :class:`PanopticIds` (stuff merged to one id per category per video, a new id for a
  thing whose voted category changes);
- :class:`BurstWriter`: one BURST prediction json; its :attr:`BurstWriter.sequences` are also
  usable in memory (the validation tasks score them without writing).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from deva.inference.tracker import TrackedFrame
from deva.io.burst import (
    BurstSequence,
    encode_rle,
    load_burst,
    prediction_sequence,
    write_burst,
)
from deva.io.detections import write_frame_segmentation
from deva.io.outputs import OutputFolder
from deva.io.vipseg import PRED_JSON, PRED_PNG_DIR, PredictionWriter, write_pred_json
from deva.pipelines.inputs import VideoSource
from deva.types import Segment


class GenericWriter:
    """``<root>/<video>/<frame>.png + .json``."""

    def __init__(self, out: OutputFolder) -> None:
        self.out = out

    def start(self, video: VideoSource, index: int = 0) -> None:
        self.video = video.name

    def add(self, frame: TrackedFrame, file_name: str) -> None:
        for suffix in (".png", ".json"):
            self.out.path(f"{self.video}/{frame.name}{suffix}")
        write_frame_segmentation(self.out.root / self.video, frame.name, frame.segmentation)

    def end(self) -> dict[str, Any]:
        return {}

    def merge(self, records: list[dict[str, Any]]) -> list[Path]:
        return [self.out.root]


class PanopticIds:
    """Per-video output ids for video panoptic formats (VIPSeg).

    Stuff objects of the same category share one id for the whole video; a thing gets one id
    per (object, category) pair, i.e. a new id when its voted category changes. Objects without
    a category are dropped (left as void). ``isthing=None`` counts as a thing.
    """

    def __init__(self) -> None:
        self._ids: dict[tuple[str, int, int], int] = {}

    def __call__(self, segment: Segment) -> int | None:
        if segment.category_id is None:
            return None
        category = int(segment.category_id)
        key = (
            ("stuff", category, 0) if segment.isthing is False else ("thing", segment.id, category)
        )
        if key not in self._ids:
            self._ids[key] = len(self._ids) + 1
        return self._ids[key]

    def remap(self, frame: TrackedFrame) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """(H, W) panoptic ids and their ``segments_info`` for one frame."""
        ids = frame.mask.numpy()
        out = np.zeros(ids.shape, dtype=np.int64)
        infos: dict[int, dict[str, Any]] = {}
        for seg in frame.segments:
            new = self(seg)
            if new is None:
                continue
            out[ids == seg.id] = new
            infos.setdefault(
                new,
                {
                    "id": new,
                    "category_id": int(seg.category_id),
                    "isthing": seg.isthing is not False,
                },
            )
        present = set(np.unique(out).tolist()) - {0}
        return out, [info for new, info in infos.items() if new in present]


class VipsegWriter:
    """``pred.json`` + ``pan_pred/<video>/<frame>.png`` through ``deva.io.vipseg``."""

    def __init__(self, out: OutputFolder) -> None:
        self.writer = PredictionWriter(out.root)
        self.out = out
        self.root = out.root

    def start(self, video: VideoSource, index: int = 0) -> None:
        self.video = PurePosixPath(video.name).name
        self.ids = PanopticIds()

    def add(self, frame: TrackedFrame, file_name: str) -> None:
        ids, infos = self.ids.remap(frame)
        png = f"{PurePosixPath(file_name).stem}.png"
        self.out.path(f"{PRED_PNG_DIR}/{self.video}/{png}")
        self.writer.add_frame(self.video, png, ids, infos, image_id=frame.name)

    def end(self) -> dict[str, Any]:
        """The video's ``pred.json`` entry."""
        return {"entry": self.writer.take(self.video)}

    def merge(self, records: list[dict[str, Any]]) -> list[Path]:
        self.out.path(PRED_JSON)
        path = write_pred_json(self.root, [r["entry"] for r in records])
        return [path, self.root / PRED_PNG_DIR]


class BurstWriter:
    """One BURST prediction json; with ground truth, only its annotated frames are written."""

    def __init__(self, path: Path, gt: dict[str, BurstSequence] | None, split: str | None) -> None:
        self.path = path
        self.gt = gt
        self.split = split
        self.sequences: list[BurstSequence] = []

    def start(self, video: VideoSource, index: int = 0) -> None:
        parts = PurePosixPath(video.name).parts
        template = self.gt.get(video.name) if self.gt else None
        self.annotated = set(template.annotated_image_paths) if template else None
        self.template = template or BurstSequence(
            id=index + 1,
            dataset=parts[0] if len(parts) > 1 else "",
            seq_name="/".join(parts[1:]) if len(parts) > 1 else parts[-1],
            width=None,
            height=None,
            annotated_image_paths=[],
            segmentations=[],
        )
        self.paths: list[str] = []
        self.frames: list[dict[int, dict[str, Any]]] = []

    def add(self, frame: TrackedFrame, file_name: str) -> None:
        if self.annotated is not None and file_name not in self.annotated:
            return
        ids = frame.mask.numpy()
        if self.template.height is None:
            height, width = (int(v) for v in ids.shape)
            self.template = replace(self.template, height=height, width=width)
        tracks = {
            int(seg.id): {
                "rle": encode_rle(ids == seg.id),
                "score": 1.0 if seg.score is None else float(seg.score),
                "category_id": seg.category_id,
            }
            for seg in frame.segments
        }
        self.paths.append(file_name)
        self.frames.append(tracks)

    def end(self) -> dict[str, Any]:
        """The video's predicted sequence, as written in the json."""
        sequence = prediction_sequence(self.template, self.frames, image_paths=self.paths)
        self.sequences.append(sequence)
        return {"sequence": sequence.to_json()}

    def merge(self, records: list[dict[str, Any]]) -> list[Path]:
        return [write_burst(self.path, [r["sequence"] for r in records], split=self.split)]


def burst_ground_truth(path: str | Path) -> dict[str, BurstSequence]:
    """BURST ground-truth sequences by ``<dataset>/<seq_name>`` (their frame folders)."""

    return {f"{s.dataset}/{s.seq_name}": s for s in load_burst(path).sequences}
