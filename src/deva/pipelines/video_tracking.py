"""Track one video file or frame folder and write everything a user looks at or loads.

:func:`track_video` runs :class:`~deva.inference.tracker.DecoupledTracker` over the frames and
writes into ``output`` (an :class:`~deva.io.outputs.OutputFolder`: every file recorded
in its manifest before it is written, each written whole or not at all):

- ``masks/<frame>.png`` (palette ids; RGB-encoded beyond 255) + ``masks/<frame>.json``
  (``[{id, label, category_id, score, isthing, area, box}]``);
- ``coco_rle.json``: the whole video in the YouTube-VIS layout (:mod:`deva.pipelines.coco_rle`);
- ``overlay.mp4``: coloured masks with ids and labels, at the input's frame rate; a
  fragmented mp4, playable up to its last second after any kill;
- ``summary.json``: settings, timings and the objects with their first and last frame;
- ``run.json``: the tool, the settings of the run and its state (``running``, ``done``,
  ``interrupted at frame N``, ``failed: <reason>``), and at the end the list of its files;
- while running, ``tracker_state.pt`` (every ``state_every`` frames and on Ctrl+C: the
  tracker's complete state, :meth:`~deva.inference.tracker.DecoupledTracker.state_dict`) and
  ``coco_rle.parts.jsonl``; both are removed when the run is done.

Resuming (``resume=True``) continues from the saved tracker state: the frames written after
it are tracked again, with the same results, so a resumed run writes exactly what an
uninterrupted one writes. Without a saved state the run starts again from the first frame.
The overlay of the finished frames is re-rendered from their saved masks. Offline mode cannot
be resumed: it chooses its key frame from the whole video and propagates backwards from it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from deva.errors import one_line
from deva.inference.backend import PropagationBackend
from deva.inference.options import InferenceOptions
from deva.inference.tracker import DecoupledTracker, TrackedFrame
from deva.inference.tracker_config import TrackerConfig, TrackingMode
from deva.io import atomic
from deva.io.detections import read_frame_segmentation, segment_infos, write_frame_segmentation
from deva.io.outputs import OutputFolder, foreign_files
from deva.io.video import Mp4Writer, VideoFrames, draw_labels, overlay_mask
from deva.modeling.propagation import PropagationModel
from deva.pipelines.coco_rle import CocoRleWriter
from deva.types import ImageSegmenter, Segmentation

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
RLE_FILE = "coco_rle.json"
RLE_PARTS = "coco_rle.parts.jsonl"
OVERLAY_FILE = "overlay.mp4"
MASKS_DIR = "masks"
STATE_FILE = "tracker_state.pt"


class ResumeError(ValueError):
    """An output folder that cannot be resumed (another run's, finished, or offline mode)."""


class EmptyResultError(ValueError):
    """A run that tracked no object although its image model detected some."""


class TrackingInterrupted(KeyboardInterrupt):
    """Ctrl+C during tracking; the message says where to resume."""


@dataclass
class TrackingReport:
    """What :func:`track_video` did: frame counts, objects, timings, the summary written."""

    frames: int
    resumed_frames: int
    objects: int
    elapsed_s: float
    summary: dict[str, Any] = field(default_factory=dict)


class _TimedSegmenter:
    """Wraps a segmenter to count its calls, the segments it returned and the time spent."""

    def __init__(self, segmenter: ImageSegmenter) -> None:
        self.inner = segmenter
        self.calls = 0
        self.segments = 0
        self.seconds = 0.0

    @property
    def category_names(self) -> dict[int, str]:
        names = getattr(self.inner, "category_names", None)
        return {int(k): str(v) for k, v in dict(names or {}).items()}

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        start = time.perf_counter()
        try:
            result = self.inner(image, frame_name=frame_name)
            self.segments += len(result.segments)
            return result
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - start


class _VideoWriter:
    """Writes masks and overlay frames, collects the RLEs and the per-object summary."""

    def __init__(self, out: OutputFolder, names: dict[int, str], overlay: Mp4Writer | None) -> None:
        self.out = out
        self.names = names
        self.overlay = overlay
        self.frame_names: list[str] = []
        self.size: tuple[int, int] | None = None
        self._rle: CocoRleWriter | None = None

    @property
    def rle(self) -> CocoRleWriter:
        """The RLE collector, started on the first frame unless :meth:`restore` made it."""
        if self._rle is None:
            self._rle = CocoRleWriter(self.out.path(RLE_PARTS))
        return self._rle

    def labelled(self, seg: Segmentation) -> Segmentation:
        """Fill in missing labels from the segmenter's category names."""
        segments = [
            s
            if s.label is not None or s.category_id is None
            else replace(s, label=self.names.get(int(s.category_id)))
            for s in seg.segments
        ]
        return Segmentation(mask=seg.mask, segments=segments)

    def add(self, name: str, seg: Segmentation, image: np.ndarray | None) -> None:
        """Frame ``name``: its PNG + JSON, its overlay frame and its RLEs."""
        seg = self.labelled(seg)
        self.out.path(f"{MASKS_DIR}/{name}.png")
        self.out.path(f"{MASKS_DIR}/{name}.json")
        write_frame_segmentation(self.out.root / MASKS_DIR, name, seg, details=True)
        mask = _ids(seg)
        self.size = self.size or (int(mask.shape[0]), int(mask.shape[1]))
        infos = segment_infos(seg, details=True)
        self.rle.add(len(self.frame_names), mask, seg.segments, infos)
        self.frame_names.append(name)
        self.render(image, mask, seg, infos)

    def render(
        self, image: np.ndarray | None, mask: np.ndarray, seg: Segmentation, infos: list[dict]
    ) -> None:
        """One overlay frame (nothing without an overlay or an image)."""
        if self.overlay is None or image is None:
            return
        frame = overlay_mask(image, mask)
        texts = {s.id: f"{s.id} {s.label}" if s.label else str(s.id) for s in seg.segments}
        boxes = {info["id"]: info["box"] for info in infos}
        self.overlay.write(draw_labels(frame, texts, boxes))

    def state(self) -> dict[str, Any]:
        return {"frame_names": list(self.frame_names), "size": self.size, "rle": self.rle.state()}

    def restore(self, state: Mapping[str, Any]) -> None:
        self._rle = CocoRleWriter.restore(self.out.path(RLE_PARTS), state["rle"])
        self.frame_names = list(state["frame_names"])
        self.size = tuple(state["size"]) if state["size"] else None

    def objects_summary(self) -> list[dict[str, Any]]:
        return [
            {
                "id": t.id,
                "label": t.label,
                "category_id": t.category_id,
                "score": t.score,
                "isthing": t.isthing,
                "first_frame": self.frame_names[min(t.frames)],
                "last_frame": self.frame_names[max(t.frames)],
                "num_frames": len(t.frames),
            }
            for t in sorted(self.rle.tracks.values(), key=lambda t: t.id)
        ]

    def finish(self, source: str) -> None:
        """``coco_rle.json``; the parts file is removed."""
        path = self.out.path(RLE_FILE)
        self.rle.write(
            path, source=source, frame_names=self.frame_names, size=self.size, names=self.names
        )
        self.rle.close()
        (self.out.root / RLE_PARTS).unlink(missing_ok=True)


def _ids(seg: Segmentation) -> np.ndarray:
    mask = seg.mask.cpu().numpy() if isinstance(seg.mask, torch.Tensor) else seg.mask
    return np.asarray(mask).astype(np.int64)


def _comparable(settings: Mapping[str, Any]) -> dict[str, Any]:
    ignored = {"resume", "overwrite", "progress", "device"}
    return {k: v for k, v in dict(settings).items() if k not in ignored}


def check_resumable(
    run: Mapping[str, Any] | None, output: Path, settings: Mapping[str, Any]
) -> None:
    """Raise :class:`ResumeError` unless ``run`` (the folder's ``run.json``) is an unfinished
    run of the same ``settings``. A folder without ``run.json`` that holds only files a deva
    run recorded (a run that failed at its first write) starts from the first frame."""
    if run is None:
        if not output.is_dir() or not foreign_files(output):
            logger.info("resume=true: no run recorded in %s; tracking from the first frame", output)
            return
        raise ResumeError(f"resume=true: {output} holds no run to resume (no run.json)")
    if run.get("state") == "done":
        raise ResumeError(f"resume=true: the run in {output} is already complete")
    before, now = _comparable(run.get("settings", {})), _comparable(settings)
    if before != now:
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
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


@dataclass
class _Run:
    """One call of :func:`track_video`: its folder, tracker, writer and counters."""

    out: OutputFolder
    tracker: DecoupledTracker
    writer: _VideoWriter
    segmenter: _TimedSegmenter
    record: dict[str, Any]
    state_every: int
    done: int = 0  # frames output by this call
    resumed: int = 0  # frames kept from the interrupted run
    last_state: int = -1

    @property
    def frames_out(self) -> int:
        return len(self.writer.frame_names)

    def save_state(self) -> None:
        """The tracker's and the writer's state, atomically, when they agree: the tracker
        allows it and every frame it was fed has its result written (a semi-online clip
        yields several results at once; a state taken between them would be ahead)."""
        tracker, done = self.tracker, self.frames_out
        if not tracker.can_save_state or tracker.frames_fed != done or self.last_state == done:
            return
        state = {"tracker": tracker.state_dict(), "writer": self.writer.state()}
        with atomic.atomic_path(self.out.path(STATE_FILE)) as temporary:
            torch.save(state, temporary)
        self.last_state = done

    def output(self, result: TrackedFrame) -> None:
        """Write one frame's masks, JSON, overlay frame (and state): all or, on Ctrl+C, all
        the same (the interruption waits), so the overlay holds every finished frame."""
        with _ctrl_c_deferred():
            self.writer.add(result.name, result.segmentation, result.image)
            self.done += 1
            if self.state_every and self.frames_out - max(self.last_state, 0) >= self.state_every:
                self.save_state()  # when due, at the first frame where a state can be taken

    def mark(self, state: str, *, final: bool = False) -> None:
        self.record["state"] = state
        self.out.write_run(self.record, final=final)


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """Hold a Ctrl+C (SIGINT) that comes inside the block until it ends, then deliver it.
    Outside the main thread (where handlers cannot be set) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        if callable(previous):
            previous(signal.SIGINT, None)
        else:
            raise KeyboardInterrupt


def track_video(
    model: PropagationModel | PropagationBackend,
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
    overwrite: bool = False,
    state_every: int = 50,
    inputs: Iterable[str | Path | None] = (),
    settings: Mapping[str, Any] | None = None,
) -> TrackingReport:
    """Track a video file or frame folder and write the outputs listed in the module docstring.

    ``settings`` (JSON-serialisable) are stored in ``run.json`` / ``summary.json`` and must
    match when resuming; ``inputs`` are further paths the run reads (detections), refused
    inside ``output`` as the source is. ``state_every``: frames between saved tracker states
    (0: only on Ctrl+C). Ctrl+C raises :class:`TrackingInterrupted` once the state is saved;
    other errors propagate after the frames tracked so far have been written and ``run.json``
    says why the run failed.
    """
    start = time.perf_counter()
    settings = dict(settings or {})
    settings.setdefault("mode", config.mode.value)
    frames = VideoFrames(source)
    out = OutputFolder(
        output, tool="track", overwrite=overwrite, resume=resume, inputs=[source, *inputs]
    )
    if resume:
        check_resumable(out.previous, out.root, settings)
    timed = _TimedSegmenter(segmenter)
    tracker = DecoupledTracker(model, timed, config, options=options)
    rate = float(fps or frames.fps or 24.0)
    video = Mp4Writer(out.path(OVERLAY_FILE), rate, fragmented=True) if overlay else None
    run = _Run(
        out,
        tracker,
        _VideoWriter(out, timed.category_names, video),
        timed,
        {"settings": settings, "state": "running", "source": str(source)},
        state_every,
    )
    run.mark("running")
    bar = tqdm(total=len(frames) or None, desc="tracking", unit="frame", disable=not progress)
    try:
        remaining = _restart(run, iter(frames), bar) if resume else iter(frames)
        for result in _results(tracker, remaining, fresh=run.resumed == 0):
            run.output(result)
            bar.update(1)
            bar.set_postfix(objects=len(tracker.registry), refresh=False)
    except KeyboardInterrupt:
        run.save_state()
        where = f"interrupted at frame {run.frames_out}"
        run.mark(where, final=True)
        raise TrackingInterrupted(f"{where}; resume with resume=true") from None
    except BaseException as error:
        run.mark(f"failed: {one_line(error)}", final=True)
        raise
    finally:
        bar.close()
        if video is not None:
            video.close()
    return _finish(run, source, rate, overlay, time.perf_counter() - start)


def _results(
    tracker: DecoupledTracker, frames: Iterator[tuple[str, np.ndarray]], *, fresh: bool
) -> Iterator[TrackedFrame]:
    if fresh:
        yield from tracker.stream(frames)
        return
    for name, frame in frames:
        yield from tracker.step(name, frame)
    yield from tracker.finish()


def _restart(
    run: _Run, frames: Iterator[tuple[str, np.ndarray]], bar: tqdm
) -> Iterator[tuple[str, np.ndarray]]:
    """Continue from the saved state: its frames are re-rendered into the overlay from their
    masks and skipped; returns the frames still to track."""
    path = run.out.root / STATE_FILE
    if not path.is_file():
        logger.info("resume=true: no saved tracker state; tracking from the first frame")
        return frames
    state = torch.load(path, map_location=run.tracker.propagator.device, weights_only=True)
    run.tracker.load_state_dict(state["tracker"])
    run.writer.restore(state["writer"])
    names = run.writer.frame_names
    for (name, image), saved in zip(islice(frames, len(names)), names, strict=True):
        if name != saved:
            raise ResumeError(
                f"resume=true: frame {len(names)} of the source is {name}, not {saved}"
            )
        seg = read_frame_segmentation(run.out.root / MASKS_DIR, name)
        run.writer.render(image, _ids(seg), seg, segment_infos(seg, details=True))
        bar.update(1)
    run.resumed = run.last_state = len(names)
    logger.info(
        "resuming after %d finished frames (last %s)", len(names), names[-1] if names else "-"
    )
    return frames


def _finish(
    run: _Run, source: str | Path, rate: float, overlay: bool, elapsed: float
) -> TrackingReport:
    """``coco_rle.json``, ``summary.json``, ``run.json`` done; an empty result is an error."""
    writer, timed = run.writer, run.segmenter
    writer.finish(str(source))
    objects = writer.objects_summary()
    summary = {
        "source": str(source),
        "settings": run.record["settings"],
        "frames": run.frames_out,
        "frames_tracked": run.done,
        "resumed_frames": run.resumed,
        "fps": rate,
        "size": list(writer.size) if writer.size else None,
        "mode": run.tracker.config.mode.value,
        "propagator": run.tracker.propagator_name,
        "timings": {
            "total_s": round(elapsed, 3),
            "frames_per_s": round(run.done / elapsed, 3) if elapsed > 0 else None,
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
    run.out.write_json(SUMMARY_FILE, summary)
    (run.out.root / STATE_FILE).unlink(missing_ok=True)
    if not objects and timed.segments:
        message = (
            f"tracked 0 objects although the image model returned {timed.segments} segment(s) "
            f"on {timed.calls} frame(s); check the detections (names, sizes) and max_objects"
        )
        run.mark(f"failed: {message}", final=True)
        raise EmptyResultError(message)
    run.mark("done", final=True)
    return TrackingReport(run.frames_out, run.resumed, len(objects), elapsed, summary)
