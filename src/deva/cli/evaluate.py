r"""Run the propagation model over a benchmark and write its official output format.

    deva-evaluate benchmark=davis|ytvos|generic data.root=DIR output=DIR \
        model.weights=FILE [size=480] [use_all_masks=true]

Decoupled tracking from precomputed detections (online / semi-online / offline):

    deva-evaluate benchmark=detections|vipseg|burst data.images=DIR \
        data.detections=DIR_OR_JSON mode=online|semionline|offline output=DIR \
        model.weights=FILE [detect_every=5] [clip_size=3] [max_missed=5] [max_objects=N] \
        [data.gt=BURST_GT_JSON]

``python tools/evaluate.py`` takes the same arguments.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path

from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig
from tqdm import tqdm

from deva.cli.common import run_tool
from deva.config import ConfigError, builder, compose
from deva.config.schema import EvaluateConfig, parse
from deva.inference.backend import PropagationBackend
from deva.inference.backends import check_backend, make_backend, needs_model
from deva.inference.options import InferenceOptions
from deva.io import davis
from deva.io.frames import list_frame_files
from deva.io.outputs import OutputFolder, check_folder
from deva.pipelines.dataset_tracking import track_dataset
from deva.pipelines.inputs import check_frame_sizes
from deva.pipelines.sharding import Processes, VideoParts, launch, open_output, recorded_run
from deva.pipelines.vos import (
    VOSVideo,
    davis_videos,
    generic_videos,
    segment_video,
    youtube_vos_videos,
)

log = logging.getLogger("evaluate")

VOS_BENCHMARKS = ("davis", "ytvos", "generic")
TRACKING_BENCHMARKS = ("detections", "vipseg", "burst")


def _videos(config: EvaluateConfig) -> list[VOSVideo]:
    root = config.data.root
    if root is None:
        raise ConfigError("data.root is required (the benchmark folder)")
    if config.benchmark == "davis":
        return davis_videos(root, config.data.split, config.data.resolution)
    if config.benchmark == "ytvos":
        return youtube_vos_videos(root, config.data.meta)
    return generic_videos(root, use_all_masks=config.use_all_masks)


def run(cfg: DictConfig | EvaluateConfig) -> int:
    """Dispatch on ``benchmark``; returns the number of frames written."""
    config = parse(EvaluateConfig, cfg)
    if config.benchmark not in VOS_BENCHMARKS + TRACKING_BENCHMARKS:
        raise ConfigError(
            f"unknown benchmark {config.benchmark!r}; expected one of "
            f"{VOS_BENCHMARKS + TRACKING_BENCHMARKS}"
        )
    t = config.trainer
    processes = launch(t.devices, t.num_nodes, t.accelerator)
    if config.benchmark in VOS_BENCHMARKS:
        return run_vos(config, processes)
    return run_tracking(config, processes)


def run_tracking(config: EvaluateConfig, processes: Processes | None = None) -> int:
    """Decoupled tracking from precomputed detections; the benchmark's output format."""
    processes = processes or Processes()
    data = config.data
    for key in ("images", "detections"):
        if getattr(data, key) is None:
            raise ConfigError(f"data.{key}=PATH is required for benchmark={config.benchmark}")
        if not Path(getattr(data, key)).exists():
            raise FileNotFoundError(f"data.{key} not found: {getattr(data, key)}")
    inputs = [data.images, data.detections, data.gt]
    check_folder(_output(config), overwrite=config.overwrite, resume=config.resume, inputs=inputs)
    processes.barrier()  # every process has checked the folder before the first writes into it
    tracker = builder.tracker_config(config)
    options = _options(config, processes)
    device = options.torch_device()
    _say(
        processes,
        f"{config.benchmark}: tracking {data.images} with detections {data.detections} "
        f"({tracker.mode.value}, detect every {tracker.detect_every}, clip "
        f"{tracker.clip_length}, max missed {tracker.max_missed}) on {device}"
        f"{processes.label} -> {config.output} "
        f"({builder.propagation_summary(config.model, tracker)})",
    )
    model, options = builder.propagation(
        config.model, tracker, options, local_files_only=builder.offline_models(None)
    )
    start = time.perf_counter()
    out = open_output(
        _output(config),
        "evaluate",
        processes,
        overwrite=config.overwrite,
        resume=config.resume,
        inputs=inputs,
    )
    frames = recorded_run(
        out,
        dataclasses.asdict(config),
        processes,
        lambda: track_dataset(
            config.benchmark,
            model,
            tracker,
            options=options,
            images=data.images,
            detections=data.detections,
            output=out,
            gt=data.gt,
            split=data.split,
            extra_detections=config.extra_detections,
            progress=processes.main,
            processes=processes,
        ),
        resume=config.resume,
    )
    elapsed = time.perf_counter() - start
    _say(
        processes,
        f"done: {frames} frames tracked, {config.benchmark} output in {out.root} in "
        f"{elapsed:.1f} s ({frames / max(elapsed, 1e-9):.2f} frames/s)",
    )
    return frames


def run_vos(config: EvaluateConfig, processes: Processes | None = None) -> int:
    """Semi-supervised VOS: propagate the given masks; index PNGs per frame."""
    processes = processes or Processes()
    videos = _videos(config)
    for video in videos:  # one frame size per video, before any work
        check_frame_sizes(list_frame_files(video.frames_dir))
    inputs = [config.data.root]
    check_folder(_output(config), overwrite=config.overwrite, resume=config.resume, inputs=inputs)
    processes.barrier()
    options = _options(config, processes)
    device = options.torch_device()
    model = builder.model(config.model).to(device) if needs_model(config.propagator) else None
    memory = builder.memory_config(config.memory)
    propagator = make_backend(
        check_backend(config.propagator),
        model,
        memory,
        mem_every=config.mem_every,
        options=options,
        source=config.propagator_model,
        local_files_only=builder.offline_models(None),
    )
    if processes.main:
        log.info(
            "%s: %d videos from %s -> %s on %s%s (size %s, propagator %s, weights %s)",
            config.benchmark,
            len(videos),
            config.data.root,
            config.output,
            device,
            processes.label,
            config.size,
            config.propagator,
            config.model.weights or "RANDOM",
        )
    out = open_output(
        _output(config),
        "evaluate",
        processes,
        overwrite=config.overwrite,
        resume=config.resume,
        inputs=inputs,
    )
    start = time.perf_counter()
    frames = recorded_run(
        out,
        dataclasses.asdict(config),
        processes,
        lambda: _propagate_videos(out, propagator, videos, config, processes),
        resume=config.resume,
    )
    elapsed = time.perf_counter() - start
    _say(
        processes,
        f"done: {frames} frames of {len(videos)} videos written to {out.root} in "
        f"{elapsed:.1f} s ({frames / max(elapsed, 1e-9):.2f} frames/s)",
    )
    return frames


def _propagate_videos(
    out: OutputFolder,
    propagator: PropagationBackend,
    videos: list[VOSVideo],
    config: EvaluateConfig,
    processes: Processes,
) -> int:
    """This process's share of the videos (those an earlier run finished are skipped); the
    frames of the whole output."""
    parts = VideoParts(out)
    names = [v.name for v in videos]
    todo = parts.pending(names, [len(list_frame_files(v.frames_dir)) for v in videos], processes)
    bars = not processes.main
    with processes.share():
        for index in tqdm(todo, desc="videos", unit="video", position=0, disable=bars):
            video, frames = videos[index], 0
            for name, ids in tqdm(
                segment_video(propagator, video, shorter_side=config.size),
                desc=video.name,
                unit="frame",
                leave=False,
                position=1,
                disable=bars,
            ):
                out.path(f"{video.name}/{name}.png")
                davis.write_prediction(out.root, video.name, name, ids)
                frames += 1
            parts.write(video.name, {"frames": frames})
    total = sum(int(r["frames"]) for r in parts.collect(names, processes))
    if processes.main:
        parts.clear(names)
    return total


def _options(config: EvaluateConfig, processes: Processes) -> InferenceOptions:
    """The runtime options, on this process's own device when there are several."""
    options = builder.inference_options(config)
    if processes.device is not None:
        options = dataclasses.replace(options, device=str(processes.device))
    return options


def _say(processes: Processes, line: str) -> None:
    if processes.main:
        print(line)


def _output(config: EvaluateConfig) -> str:
    if config.output is None:
        raise ConfigError("output=DIR is required")
    return config.output


def main(argv: list[str] | None = None) -> int:
    """Compose ``evaluate.yaml`` with ``argv`` and run it; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_tool(
        "error:", lambda: run(compose("evaluate", argv)), silent=lambda: rank_zero_only.rank != 0
    )


if __name__ == "__main__":
    sys.exit(main())
