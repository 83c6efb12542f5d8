"""Speed and memory benchmarks; results go in the README's benchmark table.

    python tools/benchmark.py [presets=[small,published]] [size=480] [frames=20] \
        [objects=2] [device=auto] [threads=0] [out=benchmark.json]

Propagation: a synthetic video at ``size`` (shorter side, 16:9 frame) is propagated from its
first-frame masks; the first 3 frames are warm-up. Reported: frames per second, milliseconds
per frame, stored memory elements at the end and peak memory (CUDA allocator peak on GPU,
process max RSS on CPU).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import torch
from omegaconf import OmegaConf

from deva.data.synthetic import SyntheticVideoConfig, generate_video
from deva.inference.propagator import Propagator
from deva.io.frames import preprocess_frame, preprocess_mask
from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel
from deva.modeling.weights import pick_device

DEFAULTS = {
    "presets": ["small", "published"],
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
    for preset in cfg.presets:
        with torch.inference_mode():
            row = bench_propagation(preset, cfg, device)
        rows.append(row)
        print(
            f"| {row['task']} | {row['preset']} | {row['frame']} | {row['objects']} | "
            f"{row['fps']:.2f} | {row['ms_per_frame']:.0f} | {row['peak_mib']:.0f} |"
        )
    if cfg.out:
        with open(cfg.out, "w") as f:
            json.dump({"setup": header, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
