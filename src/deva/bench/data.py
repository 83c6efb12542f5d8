"""The data suite: training samples per second of the real input pipelines.

Static image folders, video folders and webdataset shards, each read, decoded, augmented and
collated by the data module a training run builds (``deva.config.builder.training``), with
0, 1, 2, ... DataLoader workers. The sources are generated at the published video size
(``data_height`` × ``data_width``, JPEG frames) into a temporary folder first; crops and
clip lengths are the stages' own (``stage=static`` / ``stage=video``). Then optimizer steps
of a model (``data_train_preset``) fed by the video-folder loader: training samples/s with
real data and the share of the time spent waiting for batches.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from omegaconf import DictConfig

from deva.bench.common import _sync
from deva.bench.training import trainer_for
from deva.config import compose
from deva.config.builder.training import datamodule
from deva.config.schema import TrainConfig, parse, parse_data
from deva.data.shards import write_shards
from deva.data.synthetic import SyntheticVideoConfig, generate_video, write_synthetic_video
from deva.data.video_folders import generic_records
from deva.io.outputs import OutputFolder

logger = logging.getLogger(__name__)

#: Copies of the generated sources in an epoch (thousands of samples, like real sets).
EPOCH_REPEATS = 256


def _write_sources(root: Path, cfg: DictConfig) -> dict[str, Path]:
    """Generated videos as a video folder, their frames as static image pairs, and shards."""
    config = SyntheticVideoConfig(
        num_frames=int(cfg.data_video_frames),
        height=int(cfg.data_height),
        width=int(cfg.data_width),
        num_objects=3,
    )
    videos = OutputFolder(root / "videos", tool="benchmark")
    pairs = root / "static"
    pairs.mkdir()
    for v in range(int(cfg.data_videos)):
        video = generate_video(config, seed=int(cfg.seed) + v)
        write_synthetic_video(videos, f"video_{v:03d}", video, config=config)
        for t in range(0, video.num_frames, 4):
            stem = pairs / f"v{v:03d}_{t:05d}"
            cv2.imwrite(f"{stem}.jpg", cv2.cvtColor(video.frames[t], cv2.COLOR_RGB2BGR))
            cv2.imwrite(f"{stem}.png", ((video.masks[t] == 1) * 255).astype(np.uint8))
    write_shards(generic_records(root / "videos"), root / "shards", samples_per_shard=2)
    return {"static": pairs, "video": root / "videos", "shards": root / "shards"}


def _overrides(source: str, roots: dict[str, Path], workers: int, crop: int | None) -> list[str]:
    pin = str(torch.cuda.is_available()).lower()
    common = [
        f"data.num_workers={workers}",
        "data.persistent_workers=false",
        f"data.pin_memory={pin}",
    ]
    if crop:
        common.append(f"stage.crop_size={crop}")
    # a few generated videos repeated into long epochs, as real training sets give: each
    # epoch starts the workers anew, which short epochs would time instead of the data
    if source == "static":
        return ["stage=static", "data=static", f"data.roots=[{roots['static']}]",
                f"+data.repeats.{roots['static'].name}={EPOCH_REPEATS}", *common]  # fmt: skip
    if source == "video":
        return ["stage=video", "data=video", f"data.roots.generic={roots['video']}",
                f"data.sources.generic.repeats={EPOCH_REPEATS}", *common]  # fmt: skip
    return ["stage=video", "data=shards", f"data.urls={roots['shards']}", *common]


def _loader(config: TrainConfig, batch: int) -> Iterable[Any]:
    stage = config.stage
    first_gap = int(stage.max_skip.values[0]) if stage.max_skip else 5
    module = datamodule(parse_data(config.data), stage, batch_size=batch, max_skip=first_gap)
    module.setup("fit")
    return module.train_dataloader()


def _time_loader(config: TrainConfig, batch: int, batches: int) -> dict[str, float]:
    """Seconds to the first batch (workers starting) and samples/s over the next ``batches``."""
    loader = _loader(config, batch)
    start = time.perf_counter()
    iterator = _endless(loader)
    next(iterator)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    del iterator
    return {
        "first_batch_s": startup,
        "seconds": seconds,
        "samples_per_s": batches * batch / seconds,
    }


def _endless(loader: Iterable[Any]) -> Iterator[Any]:
    """Batches of ``loader`` epoch after epoch (small generated sources end epochs early)."""
    while True:
        yield from loader


def _time_training(config: TrainConfig, cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """fp32 AdamW steps of ``data_train_preset`` on batches from the real loader: samples/s
    and the fraction of the time spent waiting for the next batch."""
    stage = config.stage
    train_step = trainer_for(
        str(cfg.data_train_preset), stage.num_ref_frames, device, int(cfg.seed)
    )
    iterator = _endless(_loader(config, int(cfg.data_batch)))

    def step() -> float:
        start = time.perf_counter()
        batch = next(iterator)
        waited = time.perf_counter() - start
        train_step(
            batch["frames"].to(device), batch["masks"].to(device), batch["num_objects"].to(device)
        )
        _sync(device)
        return waited

    step()  # workers starting, first step
    steps = int(cfg.data_train_steps)
    start = time.perf_counter()
    waited = sum(step() for _ in range(steps))
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "samples_per_s": steps * int(cfg.data_batch) / seconds,
        "step_s": seconds / steps,
        "data_wait_fraction": waited / seconds,
    }


def bench_data(cfg: DictConfig, device: torch.device | None = None) -> list[dict[str, Any]]:
    """Samples/s per source (``data_sources``) and worker count (``data_workers``), then
    training samples/s with the video-folder loader (``data_train_workers``)."""
    rows = []
    device = device or torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="deva-bench-data-") as folder:
        roots = _write_sources(Path(folder), cfg)
        for source in cfg.data_sources:
            for workers in cfg.data_workers:
                config = parse(
                    TrainConfig, compose("train", _overrides(source, roots, workers, cfg.data_crop))
                )
                measured = _time_loader(config, int(cfg.data_batch), int(cfg.data_batches))
                per_worker = measured["samples_per_s"] / max(int(workers), 1)
                logger.info(
                    "%s, %d worker(s): %.1f samples/s", source, workers, measured["samples_per_s"]
                )
                rows.append(
                    {
                        "suite": "data",
                        "source": source,
                        "workers": int(workers),
                        "crop": f"{config.stage.crop_size}x{config.stage.crop_size}",
                        "clip_frames": int(config.stage.num_frames),
                        "video": f"{cfg.data_height}x{cfg.data_width}",
                        "batch": int(cfg.data_batch),
                        "batches": int(cfg.data_batches),
                        "samples_per_s_per_worker": per_worker,
                        **measured,
                    }
                )
        if int(cfg.data_train_steps) > 0:
            workers = int(cfg.data_train_workers)
            config = parse(
                TrainConfig, compose("train", _overrides("video", roots, workers, cfg.data_crop))
            )
            measured = _time_training(config, cfg, device)
            logger.info(
                "training %s with %d worker(s): %.2f samples/s, %.0f %% waiting for data",
                cfg.data_train_preset,
                workers,
                measured["samples_per_s"],
                100 * measured["data_wait_fraction"],
            )
            rows.append(
                {
                    "suite": "data",
                    "source": f"video folders + training ({cfg.data_train_preset})",
                    "workers": workers,
                    "crop": f"{config.stage.crop_size}x{config.stage.crop_size}",
                    "clip_frames": int(config.stage.num_frames),
                    "video": f"{cfg.data_height}x{cfg.data_width}",
                    "batch": int(cfg.data_batch),
                    "batches": int(cfg.data_train_steps),
                    "samples_per_s_per_worker": measured["samples_per_s"] / max(workers, 1),
                    "device": str(device),
                    **measured,
                }
            )
    return rows
