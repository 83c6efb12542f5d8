"""Speed and memory benchmarks; results go in the README's benchmark table.

    python tools/benchmark.py [tasks=[propagation,consensus,tracker]] [presets=[small,published]]
        [size=480] [frames=20] [objects=2] [device=auto] [threads=0] [out=benchmark.json]
        [segments=40] [clip_size=3] [detect_every=5] [repeats=5] [tracker_frames=10]

- propagation: a synthetic video at ``size`` (shorter side, 16:9 frame) is propagated from its
  first-frame masks; the first ``warmup`` frames are not timed. Reported: frames per second,
  milliseconds per frame and peak memory (CUDA allocator peak on GPU, process max RSS on CPU).
- consensus: the in-clip consensus alone (pairwise IoU + exact integer program + painting) on
  ``clip_size`` Voronoi segmentations of ``segments`` proposals each.
- tracker: the semi-online tracker (random weights, first preset) over a stream whose segmenter
  returns ``segments`` segments per frame; the share of time in consensus, alignment, merging
  and the rest.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import torch
from omegaconf import OmegaConf

import deva.inference.tracker as tracker_module
from deva.data.synthetic import SyntheticVideoConfig, generate_video
from deva.inference.consensus import build_consensus
from deva.inference.memory import MemoryConfig
from deva.inference.propagator import Propagator
from deva.inference.segmentation import Segment, Segmentation
from deva.inference.tracker import DecoupledTracker, TrackerConfig, TrackingMode
from deva.io.frames import preprocess_frame, preprocess_mask
from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel
from deva.modeling.weights import pick_device

DEFAULTS = {
    "tasks": ["propagation"],
    "presets": ["small", "published"],
    "segments": 40,
    "clip_size": 3,
    "detect_every": 5,
    "repeats": 5,
    "tracker_frames": 10,
    "size": 480,
    "frames": 20,
    "objects": 2,
    "device": "auto",
    "threads": 0,
    "warmup": 3,
    "out": None,
}


def bench_propagation(preset: str, cfg, device: torch.device) -> dict:
    height = cfg.size
    width = (cfg.size * 16 // 9) // 2 * 2
    video = generate_video(
        SyntheticVideoConfig(
            num_frames=cfg.frames + cfg.warmup,
            height=height,
            width=width,
            num_objects=cfg.objects,
            enter_leave=False,
            exit_and_return=False,
        ),
        seed=0,
    )
    model = PropagationModel(PropagationConfig.preset(preset)).to(device).eval()
    propagator = Propagator(model)
    first = torch.from_numpy(video.masks[0].astype(np.int64))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timings = []
    for t, frame in enumerate(video.frames):
        start = time.perf_counter()
        image, geometry = preprocess_frame(frame, -1, device=device)
        mask = preprocess_mask(first, geometry).to(device) if t == 0 else None
        result = propagator.step(image, mask)
        result.prob.argmax(0).cpu()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if t >= cfg.warmup:
            timings.append(time.perf_counter() - start)
    seconds = float(np.sum(timings))
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "task": "propagation",
        "preset": preset,
        "frame": f"{height}x{width}",
        "objects": len(video.objects),
        "frames": len(timings),
        "fps": len(timings) / seconds,
        "ms_per_frame": 1000 * seconds / len(timings),
        "memory_elements": propagator.memory.stats().total,
        "peak_mib": peak,
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
    cfg = OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.from_dotlist(argv))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    header = (
        f"device {device} ({name or platform.machine()}), {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}"
    )
    print(header, file=sys.stderr)
    rows = []
    if "propagation" in cfg.tasks:
        for preset in cfg.presets:
            with torch.inference_mode():
                row = bench_propagation(preset, cfg, device)
            rows.append(row)
            print(
                f"| {row['task']} | {row['preset']} | {row['frame']} | {row['objects']} | "
                f"{row['fps']:.2f} | {row['ms_per_frame']:.0f} | {row['peak_mib']:.0f} |"
            )
    opts = {
        "height": cfg.size,
        "width": (cfg.size * 16 // 9) // 2 * 2,
        "segments": cfg.segments,
        "clip_size": cfg.clip_size,
        "detect_every": cfg.detect_every,
        "repeats": cfg.repeats,
        "frames": cfg.tracker_frames,
        "preset": cfg.presets[0],
    }
    if "consensus" in cfg.tasks:
        rows.append({"task": "consensus", **time_consensus(opts)})
        print(json.dumps(rows[-1]))
    if "tracker" in cfg.tasks:
        rows.append({"task": "tracker", **time_tracker(opts)})
        print(json.dumps(rows[-1]))
    if cfg.out:
        with open(cfg.out, "w") as f:
            json.dump({"setup": header, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
