"""The data suite: training samples per second of the real input pipelines.

Static image folders, video folders and webdataset shards, each read, decoded, augmented and
collated by the data module a training run builds (``deva.config.builder.training``), with
0, 1, 2, ... DataLoader workers. The sources are generated at the published video size
(``data_height`` × ``data_width``, JPEG frames) into a temporary folder first; crops and
clip lengths are the stages' own (``stage=static`` / ``stage=video``).
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

from deva.config import compose
from deva.config.builder.training import datamodule
from deva.config.schema import TrainConfig, parse, parse_data
from deva.data.shards import write_shards
from deva.data.synthetic import SyntheticVideoConfig, generate_video, write_synthetic_video
from deva.data.video import generic_records
from deva.io.outputs import OutputFolder

logger = logging.getLogger(__name__)


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
    if source == "static":
        return ["stage=static", "data=static", f"data.roots=[{roots['static']}]", *common]
    if source == "video":
        return ["stage=video", "data=video", f"data.roots.generic={roots['video']}", *common]
    return ["stage=video", "data=shards", f"data.urls={roots['shards']}", *common]


def _time_loader(config: TrainConfig, batch: int, batches: int) -> dict[str, float]:
    """Seconds to the first batch (workers starting) and samples/s over the next ``batches``."""
    stage = config.stage
    first_gap = int(stage.max_skip.values[0]) if stage.max_skip else 5
    module = datamodule(parse_data(config.data), stage, batch_size=batch, max_skip=first_gap)
    module.setup("fit")
    start = time.perf_counter()
    iterator = _endless(module.train_dataloader())
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


def bench_data(cfg: DictConfig) -> list[dict[str, Any]]:
    """Samples/s per source (``data_sources``) and worker count (``data_workers``)."""
    rows = []
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
    return rows
