"""Runs the requested benchmark suites and collects their rows and checks."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from deva.bench.backends import bench_backends
from deva.bench.common import _amp_dtype, _width, machine_description
from deva.bench.consensus import bench_consensus
from deva.bench.data import bench_data
from deva.bench.memory import bench_memory, bench_peak_rss, bench_rss_by_length
from deva.bench.propagation import bench_propagation
from deva.bench.tracker import bench_tracker
from deva.bench.training import bench_training
from deva.inference.options import pick_device

log = logging.getLogger(__name__)


def run_suites(cfg: DictConfig, *, progress: Callable[[str], None] | None = None) -> dict:
    """Run the requested suites; returns ``{"setup", "rows", "checks", ...}`` (JSON-ready)."""
    say = progress or log.info
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = pick_device(cfg.device)
    amp, amp_skipped = _amp_dtype(cfg, device)
    setup = machine_description(device)
    setup["options"] = OmegaConf.to_container(cfg, resolve=True)
    if amp_skipped:
        setup["amp_skipped"] = amp_skipped
        say(f"amp={cfg.amp} skipped: {amp_skipped}")
    rows: list[dict] = []
    checks: list[dict] = []
    extra: dict[str, Any] = {}
    if "propagation" in cfg.suite:
        for preset in cfg.presets:
            say(f"propagation: {preset} at {cfg.size}x{_width(int(cfg.size))}, {cfg.frames} frames")
            r, c = bench_propagation(preset, cfg, device, amp)
            rows += r
            checks += c
    if "backends" in cfg.suite:
        say(f"backends: {list(cfg.backends)} at {cfg.size}x{_width(int(cfg.size))}")
        rows += bench_backends(cfg, device)
    if "tracker" in cfg.suite:
        for preset in cfg.presets:
            detections = (
                "the generator's simulated detections"
                if cfg.tracker_detections == "video"
                else f"{cfg.segments} segments per frame"
            )
            say(f"tracker: {preset}, {cfg.tracker_frames} frames, {detections}")
            r, c = bench_tracker(preset, cfg, device, amp)
            rows += r
            checks += c
    if "consensus" in cfg.suite:
        say(f"consensus: {cfg.clip_size} frames of {cfg.segments} segments")
        rows.append(bench_consensus(cfg))
    if "memory" in cfg.suite:
        plot = cfg.plot
        if plot is None:
            plot = str(Path(cfg.out).with_suffix(".memory.png")) if cfg.out else None
        say(f"memory: {cfg.memory_preset}, {cfg.memory_frames} frames at {cfg.memory_size} px")
        memory = bench_memory(cfg, device, Path(plot) if plot else None)
        extra["memory_trace"] = memory.pop("trace")
        rows.append(memory)
        if device.type == "cpu" and cfg.rss_presets:
            say(f"peak RSS: {list(cfg.rss_presets)}, {cfg.rss_frames} frames, fresh processes")
            rows += bench_peak_rss(cfg, amp)
        if device.type == "cpu" and cfg.rss_length_modes and cfg.rss_lengths:
            length_plot = cfg.length_plot
            if length_plot is None and cfg.out:
                length_plot = str(Path(cfg.out).with_suffix(".rss_by_length.png"))
            say(
                f"peak RSS by length: {list(cfg.rss_length_modes)} x {list(cfg.rss_lengths)} "
                "frames, fresh processes"
            )
            rows += bench_rss_by_length(cfg, Path(length_plot) if length_plot else None)
    if "training" in cfg.suite:
        for preset in cfg.train_presets:
            say(f"training: {preset}, batch {cfg.train_batch} x {cfg.train_frames} frames")
            rows.append(bench_training(preset, cfg, device))
    if "data" in cfg.suite:
        say(f"data: {list(cfg.data_sources)} with {list(cfg.data_workers)} workers")
        rows += bench_data(cfg, device)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    setup["load_average_at_end"] = list(load) if load else None
    result = {"setup": setup, "rows": rows, "checks": checks, **extra}
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(result, indent=2, default=float))
    return result
