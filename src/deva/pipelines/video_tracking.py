"""Track one video file or frame folder and write everything a user looks at or loads.

:func:`track_video` runs :class:`~deva.inference.tracker.DecoupledTracker` over the frames and
writes into ``output``:

- ``masks/<frame>.png`` (palette ids; RGB-encoded beyond 255) + ``masks/<frame>.json``
  (``[{id, label, category_id, score, isthing, area, box}]``);
- ``coco_rle.json``: the whole video in the YouTube-VIS layout — ``videos``, ``categories``
  and ``annotations``, one per object with ``label``, ``score``, ``first_frame`` /
  ``last_frame`` and ``segmentations``: per frame a COCO RLE (``{"size", "counts"}``, decode
  with ``pycocotools.mask.decode``) or null where the object is absent;
- ``overlay.mp4``: coloured masks with ids and labels, at the input's frame rate;
- ``summary.json``: settings, timings and the objects with their first and last frame;
- ``run.json``: the settings of the run and its state (running / failed / done), used to
  refuse writing over another run and to resume this one.

Resuming (``resume=True``) keeps the frames already written and continues after the last
one: the tracker is re-initialised from that frame's saved masks
(:meth:`~deva.inference.tracker.DecoupledTracker.seed`: its objects keep their ids and
metadata; new objects get ids above all ids used before), so no finished frame is
recomputed. The overlay of the finished frames is re-rendered from the saved masks. The
propagation memory before that frame is not restored, so a resumed run can differ slightly
from an uninterrupted one. Offline mode cannot be resumed: it chooses its key frame from the
whole video and propagates backwards from it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from tqdm import tqdm

from deva.inference.options import InferenceOptions
from deva.inference.tracker import DecoupledTracker, TrackedFrame
from deva.inference.tracker_config import TrackerConfig, TrackingMode
from deva.io.detections import read_frame_segmentation, segment_infos, write_frame_segmentation
from deva.io.video import Mp4Writer, VideoFrames, draw_labels, overlay_mask
from deva.modeling.propagation import PropagationModel
from deva.types import ImageSegmenter, Segmentation

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
RLE_FILE = "coco_rle.json"
OVERLAY_FILE = "overlay.mp4"
MASKS_DIR = "masks"


class ResumeError(ValueError):
    """An output folder that cannot be resumed (another run's, finished, or offline mode)."""


@dataclass
class TrackingReport:
    """What :func:`track_video` did: frame counts, objects, timings, the summary written."""

    frames: int
    resumed_frames: int
    objects: int
    elapsed_s: float
    summary: dict[str, Any] = field(default_factory=dict)


class _TimedSegmenter:
    """Wraps a segmenter to count its calls and the time spent in it."""

    def __init__(self, segmenter: ImageSegmenter) -> None:
        self.inner = segmenter
        self.calls = 0
        self.seconds = 0.0

    @property
    def category_names(self) -> dict[int, str]:
        names = getattr(self.inner, "category_names", None)
        return {int(k): str(v) for k, v in dict(names or {}).items()}

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        start = time.perf_counter()
        try:
            return self.inner(image, frame_name=frame_name)
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - start


@dataclass
class _ObjectTrack:
    """Per-object accumulation for ``coco_rle.json`` and ``summary.json``."""

    id: int
    label: str | None = None
    category_id: int | None = None
    score: float | None = None
    isthing: bool | None = None
    rles: dict[int, dict[str, Any]] = field(default_factory=dict)  # frame index -> RLE
    areas: dict[int, int] = field(default_factory=dict)
    boxes: dict[int, list[float]] = field(default_factory=dict)


class _VideoWriter:
    """Writes masks, overlay frames and collects the per-object RLEs."""

    def __init__(self, out: Path, names: dict[int, str], overlay: Mp4Writer | None) -> None:
        self.out = out
        self.masks = out / MASKS_DIR
        self.names = names
        self.overlay = overlay
        self.frame_names: list[str] = []
        self.objects: dict[int, _ObjectTrack] = {}
        self.size: tuple[int, int] | None = None

    def labelled(self, seg: Segmentation) -> Segmentation:
        """Fill in missing labels from the segmenter's category names."""
        segments = [
            s
            if s.label is not None or s.category_id is None
            else replace(s, label=self.names.get(int(s.category_id)))
            for s in seg.segments
        ]
        return Segmentation(mask=seg.mask, segments=segments)

    def add(self, name: str, seg: Segmentation, image: np.ndarray | None, *, write: bool) -> None:
        """Record frame ``name``; ``write`` saves its PNG + JSON (False when resuming)."""
        seg = self.labelled(seg)
        mask = seg.mask.cpu().numpy() if isinstance(seg.mask, torch.Tensor) else seg.mask
        mask = np.asarray(mask).astype(np.int64)
        self.size = self.size or (int(mask.shape[0]), int(mask.shape[1]))
        if write:
            write_frame_segmentation(self.masks, name, seg, details=True)
        index = len(self.frame_names)
        self.frame_names.append(name)
        infos = segment_infos(seg, details=True)
        for s, info in zip(seg.segments, infos):
            if not info["area"]:
                continue
            track = self.objects.setdefault(s.id, _ObjectTrack(s.id))
            track.label, track.category_id = s.label, s.category_id
            track.score, track.isthing = s.score, s.isthing
            rle = mask_utils.encode(np.asfortranarray((mask == s.id).astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            track.rles[index] = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]}
            x0, y0, x1, y1 = info["box"]
            track.boxes[index] = [x0, y0, x1 - x0 + 1, y1 - y0 + 1]
            track.areas[index] = int(info["area"])
        if self.overlay is not None and image is not None:
            frame = overlay_mask(image, mask)
            texts = {s.id: f"{s.id} {s.label}" if s.label else str(s.id) for s in seg.segments}
            boxes = {info["id"]: info["box"] for info in infos}
            self.overlay.write(draw_labels(frame, texts, boxes))

    def objects_summary(self) -> list[dict[str, Any]]:
        return [
            {
                "id": t.id,
                "label": t.label,
                "category_id": t.category_id,
                "score": t.score,
                "isthing": t.isthing,
                "first_frame": self.frame_names[min(t.rles)],
                "last_frame": self.frame_names[max(t.rles)],
                "num_frames": len(t.rles),
            }
            for t in sorted(self.objects.values(), key=lambda t: t.id)
        ]

    def write_rle(self, source: str) -> Path:
        """``coco_rle.json`` (YouTube-VIS layout, see the module docstring)."""
        count = len(self.frame_names)
        height, width = self.size or (0, 0)
        categories = {int(k): v for k, v in self.names.items()}
        for t in self.objects.values():
            if t.category_id is not None and t.category_id not in categories:
                categories[int(t.category_id)] = t.label or str(t.category_id)
        annotations = []
        for t in sorted(self.objects.values(), key=lambda t: t.id):
            annotations.append(
                {
                    "id": t.id,
                    "video_id": 1,
                    "category_id": t.category_id,
                    "label": t.label,
                    "score": t.score,
                    "isthing": t.isthing,
                    "iscrowd": 0,
                    "first_frame": self.frame_names[min(t.rles)],
                    "last_frame": self.frame_names[max(t.rles)],
                    "segmentations": [t.rles.get(i) for i in range(count)],
                    "areas": [t.areas.get(i) for i in range(count)],
                    "bboxes": [t.boxes.get(i) for i in range(count)],
                }
            )
        data = {
            "info": {"description": "deva tracking output", "source": source},
            "videos": [
                {
                    "id": 1,
                    "name": Path(source).stem,
                    "width": width,
                    "height": height,
                    "length": count,
                    "file_names": list(self.frame_names),
                }
            ],
            "categories": [{"id": k, "name": v} for k, v in sorted(categories.items())],
            "annotations": annotations,
        }
        path = self.out / RLE_FILE
        path.write_text(json.dumps(data))
        return path


def _comparable(settings: Mapping[str, Any]) -> dict[str, Any]:
    ignored = {"resume", "overwrite", "progress", "device"}
    return {k: v for k, v in dict(settings).items() if k not in ignored}


def read_run(output: str | Path) -> dict[str, Any] | None:
    """The ``run.json`` of an output folder, or None."""
    path = Path(output) / RUN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def check_resumable(output: str | Path, settings: Mapping[str, Any]) -> None:
    """Raise :class:`ResumeError` unless ``output`` holds an unfinished run of ``settings``."""
    run = read_run(output)
    if run is None:
        raise ResumeError(f"resume=true: {output} holds no run to resume (no {RUN_FILE})")
    if run.get("state") == "done":
        raise ResumeError(f"resume=true: the run in {output} is already complete")
    if _comparable(run.get("settings", {})) != _comparable(settings):
        changed = sorted(
            k
            for k in set(_comparable(run.get("settings", {}))) | set(_comparable(settings))
            if _comparable(run.get("settings", {})).get(k) != _comparable(settings).get(k)
        )
        raise ResumeError(
            f"resume=true: the run in {output} used different settings ({', '.join(changed)}); "
            f"use another output folder or overwrite=true"
        )
    if TrackingMode.parse(settings.get("mode", "semionline")) is TrackingMode.OFFLINE:
        raise ResumeError(
            "resume=true is not possible with mode=offline: it picks its key frame from the "
            "whole video and propagates backwards from it, so nothing can be continued; "
            "rerun with overwrite=true"
        )


def clear_outputs(output: str | Path) -> list[Path]:
    """Delete the files a previous run wrote in ``output`` (only ours); returns them."""
    out = Path(output)
    removed = [out / n for n in (RUN_FILE, SUMMARY_FILE, RLE_FILE, OVERLAY_FILE)]
    removed = [p for p in removed if p.is_file()]
    masks = out / MASKS_DIR
    if masks.is_dir():
        removed += [p for p in masks.iterdir() if p.suffix in (".png", ".json") and p.is_file()]
    for path in removed:
        path.unlink()
    return removed


def _results(
    tracker: DecoupledTracker, frames: Iterator[tuple[str, np.ndarray]], fresh: bool
) -> Iterator[TrackedFrame]:
    if fresh:
        yield from tracker.stream(frames)
        return
    for name, frame in frames:
        yield from tracker.step(name, frame)
    yield from tracker.finish()


def track_video(
    model: PropagationModel,
    segmenter: ImageSegmenter,
    config: TrackerConfig,
    *,
    options: InferenceOptions | None = None,
    source: str | Path,
    output: str | Path,
    overlay: bool = True,
    fps: float | None = None,
    progress: bool = True,
    resume: bool = False,
    settings: Mapping[str, Any] | None = None,
) -> TrackingReport:
    """Track a video file or frame folder and write the outputs listed in the module docstring.

    ``settings`` (JSON-serialisable) are stored in ``run.json`` / ``summary.json`` and must
    match when resuming. Errors (e.g. a corrupt frame) propagate after the frames tracked so
    far have been written and ``run.json`` marked failed.
    """
    start = time.perf_counter()
    settings = dict(settings or {})
    settings.setdefault("mode", config.mode.value)
    frames = VideoFrames(source)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    masks = out / MASKS_DIR
    if resume:
        check_resumable(out, settings)
    timed = _TimedSegmenter(segmenter)
    tracker = DecoupledTracker(model, timed, config, options=options)
    rate = float(fps or frames.fps or 24.0)
    run = {"settings": settings, "state": "running", "source": str(source)}
    (out / RUN_FILE).write_text(json.dumps(run, indent=1))
    video = Mp4Writer(out / OVERLAY_FILE, rate) if overlay else None
    writer = _VideoWriter(out, timed.category_names, video)
    total = len(frames) or None
    bar = tqdm(total=total, desc="tracking", unit="frame", disable=not progress)
    done = 0
    resumed = 0
    try:
        iterator = iter(frames)
        if resume:
            iterator, resumed = _replay_finished(tracker, iterator, writer, masks, bar)
        fresh = resumed == 0
        for result in _results(tracker, iterator, fresh):
            writer.add(result.name, result.segmentation, result.image, write=True)
            done += 1
            bar.update(1)
            bar.set_postfix(objects=len(tracker.registry), refresh=False)
    except BaseException as error:
        run["state"] = f"failed: {error}"
        (out / RUN_FILE).write_text(json.dumps(run, indent=1))
        raise
    finally:
        bar.close()
        if video is not None:
            video.close()
    elapsed = time.perf_counter() - start
    writer.write_rle(str(source))
    objects = writer.objects_summary()
    summary = {
        "source": str(source),
        "settings": settings,
        "frames": len(writer.frame_names),
        "frames_tracked": done,
        "resumed_frames": resumed,
        "fps": rate,
        "size": list(writer.size) if writer.size else None,
        "mode": config.mode.value,
        "timings": {
            "total_s": round(elapsed, 3),
            "frames_per_s": round(done / elapsed, 3) if elapsed > 0 else None,
            "segmenter_s": round(timed.seconds, 3),
            "segmenter_calls": timed.calls,
        },
        "objects_created": len(objects),
        "objects": objects,
        "outputs": {
            "masks": MASKS_DIR,
            "coco_rle": RLE_FILE,
            "overlay": OVERLAY_FILE if overlay else None,
        },
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    run["state"] = "done"
    (out / RUN_FILE).write_text(json.dumps(run, indent=1))
    return TrackingReport(len(writer.frame_names), resumed, len(objects), elapsed, summary)


def _replay_finished(
    tracker: DecoupledTracker,
    frames: Iterator[tuple[str, np.ndarray]],
    writer: _VideoWriter,
    masks: Path,
    bar: tqdm,
) -> tuple[Iterator[tuple[str, np.ndarray]], int]:
    """Record the frames an interrupted run wrote and seed the tracker from the last one
    (its objects keep their ids; new objects get ids above every id used before).

    Returns the frames still to track and how many were finished.
    """
    last: tuple[np.ndarray, Segmentation] | None = None
    pending: tuple[str, np.ndarray] | None = None
    for name, image in frames:
        if not ((masks / f"{name}.png").is_file() and (masks / f"{name}.json").is_file()):
            pending = (name, image)
            break
        seg = read_frame_segmentation(masks, name)
        writer.add(name, seg, image, write=False)
        last = (image, seg)
        bar.update(1)
    finished = len(writer.frame_names)
    if last is not None:
        ids_used = 0
        for path in masks.glob("*.json"):
            for info in json.loads(path.read_text()):
                ids_used = max(ids_used, int(info.get("id", 0)))
        tracker.reset()
        tracker.seed(*last, next_id=ids_used + 1)
        logger.info("resuming after %d finished frames (last %s)", finished, writer.frame_names[-1])
    rest = iter(()) if pending is None else _chain(pending, frames)
    return rest, finished


def _chain(
    first: tuple[str, np.ndarray], rest: Iterator[tuple[str, np.ndarray]]
) -> Iterator[tuple[str, np.ndarray]]:
    yield first
    yield from rest
