"""How much of the tracker's time goes to in-clip consensus, alignment and merging.

    python tools/benchmark_tracker.py [preset=small] [height=480] [width=854] [frames=10] \
        [segments=40] [clip_size=3] [detect_every=5] [repeats=5] [out=FILE.json]

Part 1 times the consensus alone (pairwise IoU + exact integer program + painting) on a clip of
``clip_size`` segmentations with ``segments`` proposals each (so ``clip_size × segments``
proposals in total). Part 2 runs the semi-online tracker (random weights, ``preset``) over a
synthetic stream whose segmenter returns ``segments`` segments per frame and reports the share
of wall time spent in consensus, alignment, merging and the rest. Timings, not tests.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import torch
from omegaconf import OmegaConf

import deva.inference.tracker as tracker_module
from deva.inference.consensus import build_consensus
from deva.inference.memory import MemoryConfig
from deva.inference.segmentation import Segment, Segmentation
from deva.inference.tracker import DecoupledTracker, TrackerConfig, TrackingMode
from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel

DEFAULTS = {
    "preset": "small",
    "height": 480,
    "width": 854,
    "frames": 10,
    "segments": 40,
    "clip_size": 3,
    "detect_every": 5,
    "repeats": 5,
    "threads": 0,
    "out": None,
}


def partition(height: int, width: int, count: int, seed: int, shift: float) -> Segmentation:
    """A Voronoi partition into ``count`` segments (about 10 % left as background), seeds
    drifting by ``shift`` pixels per unit of ``seed`` so that nearby frames roughly agree."""
    rng = np.random.default_rng(0)
    points = rng.uniform((0, 0), (height, width), size=(count, 2))
    drift = np.random.default_rng(seed).normal(0, shift, size=points.shape)
    points = points + drift
    scale = 4
    ys, xs = np.mgrid[0 : height // scale, 0 : width // scale] * scale
    dist = (ys[..., None] - points[:, 0]) ** 2 + (xs[..., None] - points[:, 1]) ** 2
    labels = dist.argmin(-1) + 1
    labels = np.repeat(np.repeat(labels, scale, 0), scale, 1)[:height, :width]
    padded = np.zeros((height, width), dtype=np.int64)
    padded[: labels.shape[0], : labels.shape[1]] = labels
    dropped = np.random.default_rng(seed + 1000).random(count) < 0.1
    padded[np.isin(padded, np.flatnonzero(dropped) + 1)] = 0
    ids = sorted(set(np.unique(padded).tolist()) - {0})
    segments = [
        Segment(id=i, category_id=i % 7, score=0.5 + 0.4 * ((i * 37) % 10) / 10, isthing=i % 4 != 0)
        for i in ids
    ]
    return Segmentation(mask=torch.from_numpy(padded), segments=segments)


class PartitionSegmenter:
    """Returns a drifting Voronoi partition with a fixed number of segments per frame."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        h, w = image.shape[:2]
        return partition(h, w, self.count, int(frame_name), shift=3.0)


def time_consensus(opts: dict) -> dict:
    clip = [
        partition(opts["height"], opts["width"], opts["segments"], seed=t, shift=3.0)
        for t in range(opts["clip_size"])
    ]
    proposals = sum(len(s.segments) for s in clip)
    build_consensus(clip)  # warm-up
    times = []
    for _ in range(opts["repeats"]):
        start = time.perf_counter()
        result = build_consensus(clip)
        times.append(time.perf_counter() - start)
    return {
        "proposals": proposals,
        "output_segments": len(result.segmentation.segments),
        "consensus_ms_median": 1000 * float(np.median(times)),
        "consensus_ms_min": 1000 * float(np.min(times)),
    }


def _timed(table: dict, key: str, fn: Callable) -> Callable:
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            table[key] += time.perf_counter() - start

    return wrapper


def time_tracker(opts: dict) -> dict:
    torch.manual_seed(0)
    model = PropagationModel(PropagationConfig.preset(opts["preset"])).eval()
    spent: dict[str, float] = defaultdict(float)
    originals = {
        name: getattr(tracker_module, name)
        for name in ("in_clip_consensus", "align_segmentation", "merge_with_consensus")
    }
    for name, fn in originals.items():
        setattr(tracker_module, name, _timed(spent, name, fn))
    try:
        config = TrackerConfig(
            mode=TrackingMode.SEMI_ONLINE,
            clip_size=opts["clip_size"],
            detect_every=opts["detect_every"],
            shorter_side=-1,
            memory=MemoryConfig(),
        )
        segmenter = PartitionSegmenter(opts["segments"])
        tracker = DecoupledTracker(model, segmenter, config)
        rng = np.random.default_rng(0)
        frames = [
            (f"{t:05d}", rng.integers(0, 255, (opts["height"], opts["width"], 3), dtype=np.uint8))
            for t in range(opts["frames"])
        ]
        start = time.perf_counter()
        results = list(tracker.stream(frames))
        total = time.perf_counter() - start
    finally:
        for name, fn in originals.items():
            setattr(tracker_module, name, fn)
    parts = {name: spent[name] for name in originals}
    parts["other (encode, propagate, detect, resize)"] = total - sum(parts.values())
    return {
        "preset": opts["preset"],
        "frames": len(results),
        "objects_created": tracker.registry.next_id - 1,
        "total_s": total,
        "ms_per_frame": 1000 * total / max(len(results), 1),
        "seconds": parts,
        "share": {k: v / total for k, v in parts.items()},
    }


def main(argv: list[str]) -> int:
    try:
        opts = OmegaConf.to_container(
            OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.from_dotlist(argv))
        )
    except Exception as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    if opts["threads"]:
        torch.set_num_threads(int(opts["threads"]))
    print(
        f"consensus / tracker timing at {opts['height']}x{opts['width']}, {opts['segments']} "
        f"segments per frame, clip {opts['clip_size']}, {torch.get_num_threads()} CPU threads"
    )
    report = {"options": opts, "consensus": time_consensus(opts)}
    print(json.dumps(report["consensus"], indent=1))
    report["tracker"] = time_tracker(opts)
    print(json.dumps(report["tracker"], indent=1))
    if opts["out"]:
        Path(opts["out"]).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
