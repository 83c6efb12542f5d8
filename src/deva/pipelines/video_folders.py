"""Track every video of a folder (``tools/track.py input=FOLDER_OF_VIDEOS``), over many
processes.

A folder of videos holds video files and folders of frames at any depth; each video gets its
own output folder ``<output>/<video>/`` with everything :func:`track_video` writes for one
video (``masks/``, ``coco_rle.json``, ``overlay.mp4``, ``summary.json``, ``run.json``). The
videos are split over the processes of :func:`deva.pipelines.sharding.launch` (longest first
to the least-loaded process); a restart skips the videos whose run is done and resumes the
interrupted ones exactly (their saved tracker state). The first process writes
``<output>/videos.json``: every video's state, frames and objects.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from deva.inference.backend import PropagationBackend
from deva.inference.options import InferenceOptions
from deva.inference.tracker_config import TrackerConfig
from deva.io import atomic
from deva.io.frames import is_video_file, list_frame_files, natural_sorted
from deva.io.outputs import OutputError, inside, read_run
from deva.io.video import VideoFrames
from deva.modeling.propagation import PropagationModel
from deva.pipelines.inputs import find_videos
from deva.pipelines.sharding import Processes
from deva.pipelines.video_tracking import track_video
from deva.types import ImageSegmenter

log = logging.getLogger(__name__)

INDEX_FILE = "videos.json"


@dataclass(frozen=True)
class FolderVideo:
    """One video of a folder of videos: its name (path relative to the folder, without a
    file's suffix) and its source (a video file or a folder of frames)."""

    name: str
    source: Path

    def length(self) -> int:
        """Its frame count (a video file's, as its container reports it; 0 when unknown)."""
        if self.source.is_dir():
            return len(list_frame_files(self.source))
        return len(VideoFrames(self.source))


def folder_videos(path: str | Path) -> list[FolderVideo] | None:
    """The videos of a folder of videos, or None when ``path`` is one video (a video file or
    a folder holding frames itself). FileNotFoundError when the folder holds no video."""
    root = Path(path)
    if root.is_file():
        return None
    files = [
        p
        for p in natural_sorted(root.rglob("*"), key=str)
        if p.is_file()
        and is_video_file(p)
        and not any(s.startswith(".") for s in p.relative_to(root).parts)
    ]
    try:
        frame_folders, single = find_videos(root)
    except FileNotFoundError:
        if not files:
            raise FileNotFoundError(
                f"no video files or frames found under {root}; expected a video, a folder of "
                "frames or a folder of videos"
            ) from None
        frame_folders, single = [], False
    if single:
        return None
    videos = [FolderVideo(p.relative_to(root).with_suffix("").as_posix(), p) for p in files]
    videos += [FolderVideo(v.name, root / v.name) for v in frame_folders]
    names = [v.name for v in videos]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"{root}: two videos are both named {clash[0]!r} (a file and a folder)")
    return natural_sorted(videos, key=lambda v: v.name)


def track_videos(
    model: PropagationModel | PropagationBackend,
    segmenter_for: Callable[[FolderVideo], ImageSegmenter],
    config: TrackerConfig,
    videos: list[FolderVideo],
    output: str | Path,
    *,
    processes: Processes | None = None,
    options: InferenceOptions | None = None,
    inputs_for: Callable[[FolderVideo], Iterable[str | Path | None]] = lambda v: (),
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    settings: Mapping[str, Any] | None = None,
    **video_options: Any,
) -> dict[str, Any]:
    """Track ``videos`` into ``<output>/<video>/`` (see the module docstring); returns the
    index written to ``videos.json`` (on every process)."""
    processes = processes or Processes()
    root = Path(output)
    for video in videos:
        if inside(root, video.source) or inside(video.source, root):
            raise OutputError(f"output {root} and input video {video.source} overlap")
    if root.is_dir() and any(root.iterdir()) and not (resume or overwrite):
        raise OutputError(
            f"output folder {root} is not empty; pass resume=true to continue the run there or "
            "overwrite=true to replace its videos' outputs"
        )
    if resume and overwrite:
        raise OutputError("resume=true and overwrite=true contradict each other; pick one")
    processes.barrier()  # every process has checked the folder before any writes into it
    done = {v.name for v in videos if _state(root / v.name) == "done"}
    if done and processes.main:
        log.info("skipping %d video(s) finished by the earlier run", len(done))
    mine = processes.mine([v.length() for v in videos])
    todo = [i for i in mine if not (resume and videos[i].name in done)]
    bars = not (progress and processes.main)
    with processes.share():
        for index in tqdm(todo, desc="videos", unit="video", disable=bars or len(todo) < 2):
            video = videos[index]
            target = root / video.name
            again = resume and _state(target) is not None
            track_video(
                model,
                segmenter_for(video),
                config,
                options=options,
                source=video.source,
                output=target,
                progress=not bars,
                resume=again,
                overwrite=overwrite and not again,
                inputs=inputs_for(video),
                settings={**dict(settings or {}), "video": video.name},
                **video_options,
            )
    index = {"videos": [_entry(root, v) for v in videos]}
    if processes.main:
        atomic.write_text(root / INDEX_FILE, json.dumps(index, indent=1))
    return index


def _state(folder: Path) -> str | None:
    run = read_run(folder)
    return None if run is None else str(run.get("state"))


def _entry(root: Path, video: FolderVideo) -> dict[str, Any]:
    summary_path = root / video.name / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return {
        "name": video.name,
        "source": str(video.source),
        "state": _state(root / video.name),
        "frames": summary.get("frames"),
        "objects": len(summary.get("objects", [])),
    }
