r"""Run an image segmenter over whole datasets once, on many devices, and keep its detections.

    deva-detect input=VIDEO_OR_FRAMES_OR_FOLDER_OF_VIDEOS output=DIR \
        segmenter=sam|grounded_sam|owlv2_sam|sam3|mask2former|oneformer [prompt="a. b."] \
        [segmenter.model=HUB_ID_OR_DIR] [trainer.devices=N] [trainer.num_nodes=M] \
        [resume=true] [overwrite=true]

Writes the generic per-frame layout (:mod:`deva.io.detections`): ``DIR/<frame>.png`` +
``<frame>.json`` for one video (a video file, whose frames are ``00000``, ``00001``, ..., or a
folder of frames), ``DIR/<video>/<frame>.png`` + ``.json`` for a folder of video folders. That
is what ``segmenter=precomputed detections=DIR`` (``tools/track.py``), ``tools/evaluate.py
benchmark=detections data.detections=DIR`` and the tracking validation sets read, so repeated
tracking runs and every validation pass reuse one segmentation pass. The videos are split over
``trainer.devices × trainer.num_nodes`` processes like ``tools/evaluate.py``'s
(:mod:`deva.pipelines.sharding`); ``resume=true`` skips the videos an interrupted run finished.
Detecting nothing at all in non-empty input is an error. ``python tools/detect.py`` takes the
same arguments.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig
from tqdm import tqdm

from deva.cli.common import run_tool
from deva.cli.track import _requested_segmenter
from deva.config import ConfigError, builder, compose
from deva.config.schema import DetectConfig, parse
from deva.io.detections import write_frame_segmentation
from deva.io.outputs import OutputFolder, check_folder
from deva.io.video import VideoFrames
from deva.pipelines.inputs import check_frame_sizes, find_videos
from deva.pipelines.sharding import Processes, VideoParts, launch, open_output, recorded_run
from deva.pipelines.video_tracking import EmptyResultError
from deva.types import ImageSegmenter


@dataclass(frozen=True)
class _Video:
    """One input video: its name, its output folder (relative) and its frames."""

    name: str
    folder: str
    source: Path | tuple[Path, ...]
    length: int

    def frames(self) -> Iterator[tuple[str, np.ndarray]]:
        if isinstance(self.source, Path):
            yield from VideoFrames(self.source)
        else:
            from deva.io.frames import read_frame

            for path in self.source:
                yield path.stem, read_frame(path)


def _videos(source: str) -> list[_Video]:
    """The input's videos: one video file, one folder of frames, or video folders."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {source}")
    if path.is_file():
        return [_Video(path.stem, "", path, len(VideoFrames(path)))]
    found, single = find_videos(path)
    for video in found:
        check_frame_sizes(video.files)
    return [_Video(v.name, "" if single else v.name, tuple(v.files), len(v.files)) for v in found]


def run(cfg: DictConfig | DetectConfig) -> int:
    """Detect in every frame of ``cfg.input``; returns the number of frames written."""
    config = parse(DetectConfig, cfg)
    if config.input is None:
        raise ConfigError("input=VIDEO_OR_FRAMES_OR_FOLDER_OF_VIDEOS is required")
    if config.output is None:
        raise ConfigError("output=DIR is required")
    name = config.segmenter["name"]
    if name == "precomputed":
        raise ConfigError("segmenter=precomputed reads detections; detect.py runs an image model")
    videos = _videos(config.input)
    check_folder(
        config.output, overwrite=config.overwrite, resume=config.resume, inputs=[config.input]
    )
    t = config.trainer
    return _run(config, videos, launch(t.devices, t.num_nodes, t.accelerator))


def _run(config: DetectConfig, videos: list[_Video], processes: Processes) -> int:
    name = config.segmenter["name"]
    device = processes.device or builder.inference_options(config).torch_device()
    segmenter = builder.segmenter(
        config.segmenter,
        prompt=config.prompt,
        device=device,
        amp=config.amp,
        local_files_only=builder.offline_models(config.offline_models),
    )
    if processes.main:
        print(
            f"detecting with {name} ({config.segmenter.get('model')}) in {len(videos)} video(s) "
            f"of {config.input} on {device}{processes.label} -> {config.output}"
            f"{' [resume]' if config.resume else ''}"
        )
    out = open_output(
        config.output,
        "detect",
        processes,
        overwrite=config.overwrite,
        resume=config.resume,
        inputs=[config.input],
    )
    start = time.perf_counter()
    totals: dict[str, int] = {}
    frames = recorded_run(
        out,
        dataclasses.asdict(config),
        processes,
        lambda: _detect(out, segmenter, videos, processes, config.progress, totals),
        resume=config.resume,
    )
    if processes.main and totals:
        elapsed = time.perf_counter() - start
        print(
            f"done: {totals['segments']} segments in {frames} frames of {len(videos)} video(s) "
            f"in {elapsed:.1f} s ({frames / max(elapsed, 1e-9):.2f} frames/s) -> {out.root}"
        )
    return frames


def _detect(
    out: OutputFolder,
    segmenter: ImageSegmenter,
    videos: list[_Video],
    processes: Processes,
    progress: bool,
    totals: dict[str, int],
) -> int:
    """This process's share of the videos (finished ones skipped); frames of the output."""
    parts = VideoParts(out)
    names = [v.name for v in videos]
    todo = parts.pending(names, [v.length for v in videos], processes)
    bars = not (progress and processes.main)
    with processes.share():
        for index in tqdm(todo, desc="videos", unit="video", position=0, disable=bars):
            video = videos[index]
            frames = segments = 0
            for name, rgb in tqdm(
                video.frames(), desc=video.name, unit="frame", leave=False, position=1, disable=bars
            ):
                segmentation = segmenter(rgb, frame_name=name)
                prefix = f"{video.folder}/{name}" if video.folder else name
                out.path(f"{prefix}.png")
                out.path(f"{prefix}.json")
                write_frame_segmentation(out.root / video.folder, name, segmentation)
                frames += 1
                segments += len(segmentation.segments)
            parts.write(video.name, {"frames": frames, "segments": segments})
    records = parts.collect(names, processes)
    totals.update(
        frames=sum(int(r["frames"]) for r in records),
        segments=sum(int(r["segments"]) for r in records),
    )
    if processes.main:
        parts.clear(names)
    if totals["frames"] and not totals["segments"]:
        raise EmptyResultError(
            f"{totals['frames']} frames but not one segment detected; check the segmenter's "
            "thresholds and prompt"
        )
    return totals["frames"]


def main(argv: list[str] | None = None) -> int:
    """Compose ``detect.yaml`` with ``argv`` and detect; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)

    def body() -> None:
        _requested_segmenter(argv)
        run(compose("detect", argv))

    return run_tool("error:", body, silent=lambda: rank_zero_only.rank != 0)


if __name__ == "__main__":
    sys.exit(main())
