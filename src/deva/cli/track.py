r"""Track every object of your own video with an image segmenter + the propagation model.

    deva-track input=VIDEO_OR_FRAME_DIR_OR_FOLDER_OF_VIDEOS output=DIR \
        segmenter=sam|grounded_sam|owlv2_sam|sam3|mask2former|oneformer|precomputed \
        [prompt="a. b."] [mode=online|semionline|offline] [size=480] [model.weights=FILE] \
        [segmenter.model=HUB_ID_OR_DIR] [propagator=deva|hold|sam2|sam3|edgetam] \
        [propagator_model=HUB_ID_OR_DIR] [amp=bf16] [resume=true] [overwrite=true]

``propagator=hold`` (each object keeps its last merged mask, no propagation network) is the
baseline to compare a propagation model with; ``sam2`` / ``sam3`` / ``edgetam`` propagate with
SAM 2, SAM 3's tracker or EdgeTAM (:mod:`deva.inference.sam_video`); ``summary.json`` names the
backend.

Writes ``DIR/masks/<frame>.png`` (palette ids, RGB-encoded beyond 255) + ``<frame>.json``
(``[{id, label, category_id, score, isthing, area, box}]``), ``DIR/coco_rle.json`` (whole
video, per object label, score and per-frame COCO RLE), ``DIR/overlay.mp4`` (input frame
rate) and ``DIR/summary.json``; see ``deva.pipelines.video_tracking``. Segmenter options are
``segmenter.KEY=VALUE`` (``deva/configs/segmenter/<name>.yaml``). Precomputed detections use the
generic per-frame format (``deva.io.detections``), named like the frames (video files:
``00000``, ``00001``, ...). A folder of videos (video files and frame folders at any depth)
is tracked video by video into ``DIR/<video>/``, the videos split over ``trainer.devices``
processes (:mod:`deva.pipelines.video_folders`). ``python tools/track.py`` takes the same
arguments.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path

from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from deva.cli.common import run_tool
from deva.config import ConfigError, builder, compose
from deva.config.schema import TrackConfig, parse
from deva.io.outputs import check_folder
from deva.io.video import VideoFrames
from deva.pipelines.inputs import check_detections
from deva.pipelines.sharding import Processes, launch
from deva.pipelines.video_folders import INDEX_FILE, FolderVideo, folder_videos, track_videos
from deva.pipelines.video_tracking import track_video
from deva.segmenters.precomputed import PrecomputedSegmenter
from deva.segmenters.registry import PROMPTED, check_segmenter_name
from deva.types import ImageSegmenter

log = logging.getLogger("track")


def _requested_segmenter(argv: list[str]) -> str | None:
    """The ``segmenter=NAME`` override, checked before Hydra sees it (one-line error)."""
    for item in argv:
        key, _, value = item.partition("=")
        if key.lstrip("+~") == "segmenter":
            return check_segmenter_name(value.strip())
    return None


def _check(config: TrackConfig) -> None:
    """The tool's own rules on top of the schema's types; the output before slow work."""
    if config.input is None:
        raise ConfigError("input=VIDEO_OR_FRAME_DIR is required")
    if not Path(config.input).exists():
        raise FileNotFoundError(f"input not found: {config.input}")
    if config.output is None:
        raise ConfigError("output=DIR is required")
    check_folder(
        config.output,
        overwrite=config.overwrite,
        resume=config.resume,
        inputs=[config.input, config.detections],
    )


def run(cfg: DictConfig | TrackConfig) -> int:
    """Track ``cfg.input``; returns the number of frames in the output."""
    config = parse(TrackConfig, cfg)
    if config.input is not None and Path(config.input).is_dir():
        videos = folder_videos(config.input)
        if videos is not None:
            return run_folder(config, videos)
    _check(config)
    name = config.segmenter["name"]
    if name not in PROMPTED and config.prompt:
        log.warning("prompt=%r is ignored by segmenter=%s", config.prompt, name)
    tracker = builder.tracker_config(config)
    options = builder.inference_options(config)
    device = options.torch_device()
    segmenter = builder.segmenter(
        config.segmenter,
        prompt=config.prompt,
        detections=config.detections,
        device=device,
        amp=config.amp,
        local_files_only=builder.offline_models(config.offline_models),
    )
    if isinstance(segmenter, PrecomputedSegmenter):
        frames = VideoFrames(config.input).names()
        where = str(segmenter.directory)
        check_detections(
            segmenter.frame_names(),
            frames,
            where,
            extra=config.extra_detections,
            hint="extra_detections=warn to go on",
        )
    what = f"{name} prompt {config.prompt!r}" if config.prompt and name in PROMPTED else name
    model_id = config.detections if name == "precomputed" else config.segmenter.get("model")
    print(
        f"tracking {config.input} with {what} ({model_id}) ({tracker.mode.value}, detect every "
        f"{tracker.detect_every}, clip {tracker.clip_length}) on {device} -> {config.output} "
        f"({builder.propagation_summary(config.model, tracker)})"
        f"{' [resume]' if config.resume else ''}"
    )
    model, model_options = builder.propagation(
        config.model,
        tracker,
        options,
        local_files_only=builder.offline_models(config.offline_models),
    )
    start = time.perf_counter()
    report = track_video(
        model,
        segmenter,
        tracker,
        options=model_options,
        source=config.input,
        output=config.output,
        overlay=config.overlay,
        fps=config.fps,
        progress=config.progress,
        resume=config.resume,
        overwrite=config.overwrite,
        state_every=config.state_every,
        inputs=[config.detections],
        settings=dataclasses.asdict(config),
    )
    elapsed = time.perf_counter() - start
    resumed = f" ({report.resumed_frames} kept from the interrupted run)" if config.resume else ""
    print(
        f"done: {report.frames} frames{resumed}, {report.objects} objects in {elapsed:.1f} s "
        f"-> {config.output}"
    )
    return report.frames


def run_folder(config: TrackConfig, videos: list[FolderVideo]) -> int:
    """Track every video of a folder of videos into ``output/<video>/``, the videos split over
    ``trainer.devices × trainer.num_nodes`` processes; returns the frames of all outputs."""
    if config.output is None:
        raise ConfigError("output=DIR is required")
    name = config.segmenter["name"]
    detections = Path(config.detections) if config.detections else None
    if name == "precomputed":
        if detections is None or not detections.is_dir():
            raise FileNotFoundError(
                f"detections folder not found: {config.detections} (a folder of videos needs "
                "detections=DIR with DIR/<video>/<frame>.png + .json, e.g. from tools/detect.py)"
            )
        for video in videos:
            found = detections / video.name
            if not found.is_dir():
                raise FileNotFoundError(f"no detections for video {video.name!r}: {found}")
            check_detections(
                PrecomputedSegmenter(found).frame_names(),
                VideoFrames(video.source).names(),
                str(found),
                extra=config.extra_detections,
                hint="extra_detections=warn to go on",
            )
    t = config.trainer
    processes = launch(t.devices, t.num_nodes, t.accelerator)
    return _run_folder(config, videos, processes, detections)


def _run_folder(
    config: TrackConfig, videos: list[FolderVideo], processes: Processes, detections: Path | None
) -> int:
    name = config.segmenter["name"]
    tracker = builder.tracker_config(config)
    options = builder.inference_options(config)
    if processes.device is not None:
        options = dataclasses.replace(options, device=str(processes.device))
    device = options.torch_device()
    local = builder.offline_models(config.offline_models)

    def build(detections: Path | None = None) -> ImageSegmenter:
        return builder.segmenter(
            config.segmenter,
            prompt=config.prompt,
            detections=detections,
            device=device,
            amp=config.amp,
            local_files_only=local,
        )

    shared = None if name == "precomputed" else build()
    if processes.main:
        where = f", {processes.world} processes" if processes.world > 1 else ""
        print(
            f"tracking {len(videos)} videos of {config.input} with {name} "
            f"({tracker.mode.value}, detect every {tracker.detect_every}) on {device}{where} -> "
            f"{config.output}/<video> ({builder.propagation_summary(config.model, tracker)})"
            f"{' [resume]' if config.resume else ''}"
        )
    model, model_options = builder.propagation(
        config.model, tracker, options, local_files_only=local
    )
    start = time.perf_counter()
    index = track_videos(
        model,
        lambda video: shared if shared is not None else build(detections / video.name),
        tracker,
        videos,
        config.output,
        processes=processes,
        options=model_options,
        inputs_for=lambda video: [detections / video.name if detections else None],
        resume=config.resume,
        overwrite=config.overwrite,
        progress=config.progress,
        settings=dataclasses.asdict(config),
        overlay=config.overlay,
        fps=config.fps,
        state_every=config.state_every,
    )
    frames = sum(int(v["frames"] or 0) for v in index["videos"])
    if processes.main:
        print(
            f"done: {len(videos)} videos, {frames} frames in {time.perf_counter() - start:.1f} s "
            f"-> {config.output} ({INDEX_FILE})"
        )
    return frames


def main(argv: list[str] | None = None) -> int:
    """Compose ``track.yaml`` with ``argv`` and track; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)

    def body() -> None:
        _requested_segmenter(argv)
        run(compose("track", argv))

    return run_tool("error:", body, silent=lambda: rank_zero_only.rank != 0)


if __name__ == "__main__":
    sys.exit(main())
