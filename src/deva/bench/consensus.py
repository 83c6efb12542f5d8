"""The consensus suite: the in-clip consensus alone on drifting Voronoi partitions."""

from __future__ import annotations

import time

import numpy as np
from omegaconf import DictConfig

from deva.bench.common import _width
from deva.bench.tracker import partition
from deva.inference.consensus import build_consensus


def bench_consensus(cfg: DictConfig) -> dict:
    """The in-clip consensus alone (pairwise IoU + integer program + painting)."""
    height = int(cfg.tracker_size or cfg.size)
    clip = [
        partition(height, _width(height), cfg.segments, seed=t, shift=3.0)
        for t in range(cfg.clip_size)
    ]
    build_consensus(clip)  # warm-up
    times = []
    for _ in range(cfg.repeats):
        start = time.perf_counter()
        result = build_consensus(clip)
        times.append(time.perf_counter() - start)
    return {
        "suite": "consensus",
        "frame": f"{height}x{_width(height)}",
        "proposals": sum(len(s.segments) for s in clip),
        "output_segments": len(result.segmentation.segments),
        "ms_median": 1000 * float(np.median(times)),
        "ms_min": 1000 * float(np.min(times)),
    }
