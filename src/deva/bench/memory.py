"""The memory suite: RSS and stored memory elements over a long video (with a plot), the
peak RSS of each variant in a fresh process, and peak RSS against video length in every
tracking mode (with a plot)."""

from __future__ import annotations

import logging
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
from deva.data.synthetic import SyntheticVideo
from deva.inference.memory import MemoryConfig
from deva.inference.options import InferenceOptions
from deva.inference.preprocess import preprocess_frame, preprocess_mask
from deva.inference.propagator import Propagator
from deva.inference.spill import DEFAULT_BUDGET_MIB
from deva.inference.tracker import DecoupledTracker
from deva.inference.tracker_config import TrackerConfig, TrackingMode
from deva.modeling.propagation import PropagationModel
from deva.types import Segmentation

logger = logging.getLogger(__name__)


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


def _ping_pong(num_frames: int) -> list[int]:
    """Frame order that plays a clip forward then backward (no repeated end frames)."""
    return list(range(num_frames)) + list(range(num_frames - 2, 0, -1))


class _LoopedSegmenter:
    """The generator's detections of a clip played back and forth (frame names are indices)."""

    def __init__(self, detections: list[Segmentation], order: list[int]) -> None:
        self.detections = detections
        self.order = order

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        return self.detections[self.order[int(frame_name or 0) % len(self.order)]]


def _run_mode(
    model: PropagationModel,
    mode: str,
    base: SyntheticVideo,
    length: int,
    runtime: InferenceOptions,
    options: dict[str, Any],
) -> None:
    """``length`` frames of ``base`` played back and forth, decoded one at a time: VOS from
    the first frame's masks, or the decoupled tracker in ``mode`` on the clip's detections."""
    order = _ping_pong(base.num_frames)
    frames = ((f"{t:05d}", base.frames[order[t % len(order)]]) for t in range(length))
    if mode == "vos":
        first = torch.from_numpy(base.masks[0].astype(np.int64))
        propagator = Propagator(model, options=runtime)
        for t, (_, frame) in enumerate(frames):
            image, geometry = preprocess_frame(frame, -1)
            mask = preprocess_mask(first, geometry) if t == 0 else None
            propagator.step(image, mask).index_mask()
        return
    config = TrackerConfig(
        mode=TrackingMode.parse(mode),
        clip_size=int(options["clip_size"]),
        detect_every=int(options["detect_every"]),
        shorter_side=-1,
        memory=MemoryConfig(),
    )
    segmenter = _LoopedSegmenter(base.detections, order)
    buffer = float(options.get("buffer_mib", DEFAULT_BUDGET_MIB))
    tracker = DecoupledTracker(model, segmenter, config, options=runtime, buffer_mib=buffer)
    for _ in tracker.stream(frames):
        pass


def _peak_rss_child(options: dict[str, Any]) -> dict[str, float]:
    """In a fresh process, one variant and mode on ``length`` frames of a generated clip of
    ``frames`` frames (looped back and forth when longer; see :func:`_run_mode`). Returns
    the RSS before the first frame (interpreter, model, clip) and the process peak (MiB)."""
    torch.set_num_threads(int(options["threads"]))
    length = int(options.get("length", options["frames"]))
    video = _steady_video(
        int(options["size"]), int(options["frames"]), int(options["objects"]), int(options["seed"])
    )
    model, _ = _model(options["preset"], torch.device("cpu"), int(options["seed"]), "auto")
    variant = options["variant"]
    dtype = torch.bfloat16 if variant == "bf16" else None
    runtime = InferenceOptions(autocast=dtype, plain=variant == "fp32-reference")
    before = _rss_mib()
    start = time.perf_counter()
    with torch.inference_mode():
        _run_mode(model, options["mode"], video, length, runtime, options)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rss_before_mib": before, "peak_rss_mib": peak, "seconds": seconds}


def _child_options(cfg: DictConfig, **run: Any) -> dict[str, Any]:
    """What :func:`_peak_rss_child` needs: the suite's shared settings plus ``run``'s."""
    return {
        "objects": int(cfg.objects),
        "seed": int(cfg.seed),
        "clip_size": int(cfg.clip_size),
        "detect_every": int(cfg.detect_every),
        "threads": int(cfg.threads) or torch.get_num_threads(),
        **run,
    }


def _in_fresh_process(options: dict[str, Any]) -> dict[str, float]:
    """:func:`_peak_rss_child` in a spawned process (``ru_maxrss`` is per process)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_peak_rss_child, (options,))


def bench_rss_by_length(cfg: DictConfig, plot: Path | None) -> list[dict]:
    """Peak RSS against video length (``rss_lengths``) for each tracking mode
    (``rss_length_modes``), the ``memory_preset`` model at ``memory_size``, each run in its
    own process on a clip of at most 100 generated frames looped back and forth. Offline mode
    buffers frames in RAM up to ``rss_buffer_mib``, the rest on disk. CPU only."""
    height = int(cfg.memory_size)
    rows = []
    for mode in cfg.rss_length_modes:
        for length in cfg.rss_lengths:
            options = _child_options(
                cfg,
                preset=cfg.memory_preset,
                mode=mode,
                variant="fp32",
                size=height,
                frames=min(100, int(length)),
                length=int(length),
                buffer_mib=float(cfg.rss_buffer_mib),
            )
            measured = _in_fresh_process(options)
            logger.info(
                "%s, %d frames: peak RSS %.0f MiB (%.0f s)",
                mode,
                length,
                measured["peak_rss_mib"],
                measured["seconds"],
            )
            rows.append(
                {
                    "suite": "memory",
                    "measure": "rss_by_length",
                    "preset": cfg.memory_preset,
                    "mode": mode,
                    "frame": f"{height}x{_width(height)}",
                    "frames": int(length),
                    "buffer_mib": options["buffer_mib"],
                    **measured,
                }
            )
    if plot is not None and rows:
        plot_rss_by_length(rows, plot)
        for row in rows:
            row["plot"] = str(plot)
    return rows


def bench_peak_rss(cfg: DictConfig, amp: torch.dtype | None) -> list[dict]:
    """Peak RSS per preset, mode (``rss_modes``) and variant, each run in its own process
    (``ru_maxrss`` is a per-process high-water mark). CPU only."""

    rows = []
    for preset in cfg.rss_presets:
        for mode in cfg.rss_modes:
            for variant in RSS_VARIANTS:
                if variant == "bf16" and amp != torch.bfloat16:
                    continue
                options = _child_options(
                    cfg,
                    preset=preset,
                    mode=mode,
                    variant=variant,
                    size=int(cfg.size),
                    frames=int(cfg.rss_frames),
                )
                measured = _in_fresh_process(options)
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


#: Line colours of the tracking modes in :func:`plot_rss_by_length`.
_MODE_COLOURS = {
    "vos": (90, 90, 90),
    "online": (40, 80, 200),
    "semionline": (40, 150, 60),
    "offline": (200, 40, 40),
}


def plot_rss_by_length(rows: list[dict], path: Path) -> None:
    """Peak RSS (MiB) against video length (log axis), one line per mode, drawn with PIL."""
    lengths = sorted({int(r["frames"]) for r in rows})
    peaks = [float(r["peak_rss_mib"]) for r in rows]
    width, height, margin = 760, 420, 70
    left, right, top, bottom = margin, width - 150, 40, height - 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    first = rows[0]
    draw.text(
        (margin, 10),
        f"peak RSS against video length: {first['preset']} model, {first['frame']} frames",
        fill="black",
    )
    draw.rectangle((left, top, right, bottom), outline="black")
    low, high = 0.0, max(peaks) * 1.15
    span = np.log10(max(lengths[-1], 2)) - np.log10(max(lengths[0], 1))

    def x_of(n: int) -> float:
        if span <= 0:
            return (left + right) / 2
        return left + (right - left) * (np.log10(n) - np.log10(lengths[0])) / span

    def y_of(v: float) -> float:
        return bottom - (bottom - top) * (v - low) / (high - low)

    for n in lengths:
        draw.line([(x_of(n), bottom), (x_of(n), bottom + 4)], fill="black")
        draw.text((x_of(n) - 12, bottom + 8), str(n), fill="black")
    draw.text(((left + right) // 2 - 40, bottom + 26), "frames (log scale)", fill="black")
    for k in range(5):
        value = low + (high - low) * k / 4
        draw.text((8, y_of(value) - 6), f"{value:.0f}", fill="black")
        draw.line([(left - 4, y_of(value)), (left, y_of(value))], fill="black")
    draw.text((8, top - 24), "MiB", fill="black")
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    for i, mode in enumerate(modes):
        colour = _MODE_COLOURS.get(mode, (0, 0, 0))
        points = [
            (x_of(int(r["frames"])), y_of(float(r["peak_rss_mib"])))
            for r in sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["frames"])
        ]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        draw.text((right + 12, top + 18 * i), mode, fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
