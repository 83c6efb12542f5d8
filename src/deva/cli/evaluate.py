"""Run the propagation model over a benchmark and write its official output format.

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

import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from deva.config import ConfigError, compose
from deva.config.options import inference_options, memory_config, output_folder, tracker_config
from deva.inference.options import pick_device
from deva.inference.propagator import Propagator
from deva.io.masks import write_mask_png
from deva.modeling.weights import build_model
from deva.pipelines.dataset_tracking import track_dataset
from deva.pipelines.vos import davis_videos, generic_videos, segment_video, youtube_vos_videos

log = logging.getLogger("evaluate")


def _videos(cfg):
    root = cfg.data.root
    if root is None:
        raise ConfigError("data.root is required (the benchmark folder)")
    if cfg.benchmark == "davis":
        return davis_videos(root, cfg.data.split, cfg.data.resolution)
    if cfg.benchmark == "ytvos":
        return youtube_vos_videos(root, cfg.data.meta)
    if cfg.benchmark == "generic":
        return generic_videos(root, use_all_masks=cfg.use_all_masks)
    raise ConfigError(f"unknown VOS benchmark {cfg.benchmark!r}; expected davis, ytvos or generic")


VOS_BENCHMARKS = ("davis", "ytvos", "generic")
TRACKING_BENCHMARKS = ("detections", "vipseg", "burst")


def run(cfg) -> int:
    """Dispatch on ``benchmark``; returns the number of frames written."""
    if cfg.benchmark in VOS_BENCHMARKS:
        return run_vos(cfg)
    if cfg.benchmark in TRACKING_BENCHMARKS:
        return run_tracking(cfg)
    raise ConfigError(
        f"unknown benchmark {cfg.benchmark!r}; expected one of "
        f"{VOS_BENCHMARKS + TRACKING_BENCHMARKS}"
    )


def run_tracking(cfg) -> int:
    """Decoupled tracking from precomputed detections; the benchmark's output format."""
    for key in ("images", "detections"):
        if cfg.data.get(key) is None:
            raise ConfigError(f"data.{key}=PATH is required for benchmark={cfg.benchmark}")
        if not Path(cfg.data[key]).exists():
            raise FileNotFoundError(f"data.{key} not found: {cfg.data[key]}")
    out = output_folder(cfg.output, cfg.overwrite)
    device = pick_device(cfg.device)
    config = tracker_config(cfg)
    print(
        f"{cfg.benchmark}: tracking {cfg.data.images} with detections {cfg.data.detections} "
        f"({config.mode.value}, detect every {config.detect_every}, clip "
        f"{config.clip_length}, max missed {config.max_missed}) on {device} -> {out} "
        f"(weights {cfg.model.weights or 'RANDOM'})"
    )
    model = build_model(cfg.model.preset, cfg.model.weights).to(device)
    start = time.perf_counter()
    frames = track_dataset(
        cfg.benchmark,
        model,
        config,
        options=inference_options(cfg),
        images=cfg.data.images,
        detections=cfg.data.detections,
        output=out,
        gt=cfg.data.get("gt"),
        split=cfg.data.split,
    )
    elapsed = time.perf_counter() - start
    print(
        f"done: {frames} frames tracked, {cfg.benchmark} output in {out} in {elapsed:.1f} s "
        f"({frames / max(elapsed, 1e-9):.2f} frames/s)"
    )
    return frames


def run_vos(cfg) -> int:
    """Semi-supervised VOS: propagate the given masks; index PNGs per frame."""
    videos = _videos(cfg)
    out = output_folder(cfg.output, cfg.overwrite)
    device = pick_device(cfg.device)
    options = inference_options(cfg)
    model = build_model(cfg.model.preset, cfg.model.weights).to(device)
    propagator = Propagator(model, memory_config(cfg), mem_every=cfg.mem_every, options=options)
    log.info(
        "%s: %d videos from %s -> %s on %s (size %s, weights %s)",
        cfg.benchmark,
        len(videos),
        cfg.data.root,
        out,
        device,
        cfg.size,
        cfg.model.weights or "RANDOM",
    )
    start, frames = time.perf_counter(), 0
    for video in tqdm(videos, desc="videos", unit="video", position=0):
        target = out / video.name
        for name, ids in tqdm(
            segment_video(propagator, video, shorter_side=cfg.size),
            desc=video.name,
            unit="frame",
            leave=False,
            position=1,
        ):
            write_mask_png(target / f"{name}.png", ids)
            frames += 1
    elapsed = time.perf_counter() - start
    print(
        f"done: {frames} frames of {len(videos)} videos written to {out} in {elapsed:.1f} s "
        f"({frames / max(elapsed, 1e-9):.2f} frames/s)"
    )
    return frames


def main(argv: list[str] | None = None) -> int:
    """Compose ``evaluate.yaml`` with ``argv`` and run it; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = compose("evaluate", argv)
        run(cfg)
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
