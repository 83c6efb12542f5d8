"""The memory suite: RSS and stored memory elements over a long video (with a plot), and
the peak RSS of each variant in a fresh process."""

from __future__ import annotations

import multiprocessing
import resource
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image, ImageDraw

from deva.bench.common import RSS_VARIANTS, _model, _rss_mib, _steady_video, _width
from deva.bench.tracker import ListSegmenter
from deva.inference.memory import MemoryConfig
from deva.inference.options import InferenceOptions
from deva.inference.preprocess import preprocess_frame, preprocess_mask
from deva.inference.propagator import Propagator
from deva.inference.tracker import DecoupledTracker
from deva.inference.tracker_config import TrackerConfig, TrackingMode


def bench_memory(cfg: DictConfig, device: torch.device, plot: Path | None) -> dict:
    """A long video (a generated clip played back and forth) through the propagator: RSS and
    stored memory elements per frame; flat after the long-term memory saturates?"""
    height = int(cfg.memory_size)
    width = _width(height)
    base = _steady_video(height, min(100, int(cfg.memory_frames)), cfg.objects, cfg.seed)
    order = list(range(base.num_frames)) + list(range(base.num_frames - 2, 0, -1))
    model, _ = _model(cfg.memory_preset, device, cfg.seed, cfg.weights)
    memory_config = MemoryConfig()
    propagator = Propagator(model, memory_config)
    first = torch.from_numpy(base.masks[0].astype(np.int64))
    trace: dict[str, list] = defaultdict(list)
    start = time.perf_counter()
    saturated_at = None
    lt_full = memory_config.max_long_term_elements - memory_config.num_prototypes
    with torch.inference_mode():
        for t in range(int(cfg.memory_frames)):
            frame = base.frames[order[t % len(order)]]
            image, geometry = preprocess_frame(frame, -1, device=device)
            mask = preprocess_mask(first, geometry).to(device) if t == 0 else None
            propagator.step(image, mask)
            stats = propagator.memory.stats()
            if saturated_at is None and stats.long_term_elements >= lt_full:
                saturated_at = t
            if t % int(cfg.memory_record_every) == 0 or t == cfg.memory_frames - 1:
                trace["frame"].append(t)
                trace["rss_mib"].append(round(_rss_mib(), 2))
                trace["elements"].append(stats.total)
                trace["long_term"].append(stats.long_term_elements)
                trace["working"].append(stats.working_elements)
    seconds = time.perf_counter() - start
    frames = np.asarray(trace["frame"])
    rss = np.asarray(trace["rss_mib"])
    elements = np.asarray(trace["elements"])
    flat: dict[str, Any] = {"saturated_at_frame": saturated_at}
    if saturated_at is not None:
        after = frames >= saturated_at
        if after.sum() >= 2:
            span = max(float(frames[after][-1] - frames[after][0]), 1.0)
            slope = float(np.polyfit(frames[after], rss[after], 1)[0]) if after.sum() > 2 else 0.0
            flat.update(
                {
                    "rss_min_mib": float(rss[after].min()),
                    "rss_max_mib": float(rss[after].max()),
                    "rss_slope_mib_per_1000_frames": 1000 * slope,
                    "elements_min": int(elements[after].min()),
                    "elements_max": int(elements[after].max()),
                    "frames_after_saturation": int(span),
                }
            )
    result = {
        "suite": "memory",
        "preset": cfg.memory_preset,
        "frame": f"{height}x{width}",
        "frames": int(cfg.memory_frames),
        "fps": cfg.memory_frames / seconds,
        "seconds": seconds,
        "flatness": flat,
        "trace": dict(trace),
    }
    if plot is not None:
        plot_memory_trace(result, plot)
        result["plot"] = str(plot)
    return result


def _peak_rss_child(options: dict[str, Any]) -> dict[str, float]:
    """In a fresh process, one variant on a generated video: VOS propagation from the first
    frame's masks, or the decoupled tracker (``semionline`` / ``online``) fed the
    generator's own detections. Returns the RSS before the first frame (interpreter, model,
    video) and the process peak (MiB)."""
    torch.set_num_threads(int(options["threads"]))
    video = _steady_video(
        int(options["size"]), int(options["frames"]), int(options["objects"]), int(options["seed"])
    )
    model, _ = _model(options["preset"], torch.device("cpu"), int(options["seed"]), "auto")
    variant, mode = options["variant"], options["mode"]
    dtype = torch.bfloat16 if variant == "bf16" else None
    runtime = InferenceOptions(autocast=dtype, plain=variant == "fp32-reference")
    before = _rss_mib()
    with torch.inference_mode():
        if mode == "vos":
            first = torch.from_numpy(video.masks[0].astype(np.int64))
            propagator = Propagator(model, options=runtime)
            for t, frame in enumerate(video.frames):
                image, geometry = preprocess_frame(frame, -1)
                mask = preprocess_mask(first, geometry) if t == 0 else None
                propagator.step(image, mask).index_mask()
        else:
            config = TrackerConfig(
                mode=TrackingMode.parse(mode),
                clip_size=int(options["clip_size"]),
                detect_every=int(options["detect_every"]),
                shorter_side=-1,
                memory=MemoryConfig(),
            )
            segmenter = ListSegmenter(video.detections)
            tracker = DecoupledTracker(model, segmenter, config, options=runtime)
            for _ in tracker.stream((f"{t:05d}", f) for t, f in enumerate(video.frames)):
                pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rss_before_mib": before, "peak_rss_mib": peak}


def bench_peak_rss(cfg: DictConfig, amp: torch.dtype | None) -> list[dict]:
    """Peak RSS per preset, mode (``rss_modes``) and variant, each run in its own process
    (``ru_maxrss`` is a per-process high-water mark). CPU only."""

    context = multiprocessing.get_context("spawn")
    rows = []
    for preset in cfg.rss_presets:
        for mode in cfg.rss_modes:
            for variant in RSS_VARIANTS:
                if variant == "bf16" and amp != torch.bfloat16:
                    continue
                options = {
                    "preset": preset,
                    "mode": mode,
                    "variant": variant,
                    "size": int(cfg.size),
                    "frames": int(cfg.rss_frames),
                    "objects": int(cfg.objects),
                    "seed": int(cfg.seed),
                    "clip_size": int(cfg.clip_size),
                    "detect_every": int(cfg.detect_every),
                    "threads": int(cfg.threads) or torch.get_num_threads(),
                }
                with context.Pool(1) as pool:
                    measured = pool.apply(_peak_rss_child, (options,))
                rows.append(
                    {
                        "suite": "memory",
                        "measure": "peak_rss",
                        "preset": preset,
                        "mode": mode,
                        "variant": variant,
                        "frame": f"{options['size']}x{_width(options['size'])}",
                        "frames": options["frames"],
                        **measured,
                    }
                )
    return rows


def plot_memory_trace(result: dict, path: Path) -> None:
    """Two stacked line plots (RSS, stored elements) over frames, drawn with PIL."""

    trace = result["trace"]
    frames = np.asarray(trace["frame"], dtype=float)
    series = [
        ("process RSS (MiB)", np.asarray(trace["rss_mib"], dtype=float), (200, 40, 40)),
        ("stored memory elements", np.asarray(trace["elements"], dtype=float), (40, 80, 200)),
    ]
    width, panel, margin = 900, 260, 70
    image = Image.new("RGB", (width, panel * 2 + 40), "white")
    draw = ImageDraw.Draw(image)
    title = (
        f"{result['preset']} model, {result['frame']}, {result['frames']} frames "
        f"(long-term memory full at frame {result['flatness'].get('saturated_at_frame')})"
    )
    draw.text((margin, 8), title, fill="black")
    x_max = max(float(frames.max()), 1.0) if frames.size else 1.0
    for i, (label, values, colour) in enumerate(series):
        top = 30 + i * panel
        left, right, bottom = margin, width - 20, top + panel - 40
        draw.rectangle((left, top, right, bottom), outline="black")
        if values.size == 0:
            continue
        low, high = float(values.min()), float(values.max())
        pad = max((high - low) * 0.1, 1.0)
        low, high = max(low - pad, 0.0) if low >= 0 else low - pad, high + pad
        points = [
            (
                left + (right - left) * f / x_max,
                bottom - (bottom - top) * (v - low) / (high - low),
            )
            for f, v in zip(frames, values, strict=True)
        ]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        draw.text((left + 5, top + 4), label, fill=colour)
        draw.text((4, top), f"{high:.0f}", fill="black")
        draw.text((4, bottom - 12), f"{low:.0f}", fill="black")
        draw.text((right - 60, bottom + 4), f"{int(x_max)}", fill="black")
        draw.text((left, bottom + 4), "0", fill="black")
        draw.text(((left + right) // 2 - 20, bottom + 4), "frame", fill="black")
        saturated = result["flatness"].get("saturated_at_frame")
        if saturated is not None:
            x = left + (right - left) * saturated / x_max
            draw.line([(x, top), (x, bottom)], fill=(120, 120, 120), width=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
