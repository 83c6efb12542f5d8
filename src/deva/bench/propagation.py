"""The propagation suite: VOS propagation from the first frame's masks by several variants,
stepped interleaved frame by frame, each variant's masks compared with ``fp32-reference``."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig

from deva.bench.common import (
    MaskComparison,
    _compile_variants,
    _kind,
    _model,
    _peak_mib,
    _steady_video,
    _sync,
    _width,
)
from deva.data.synthetic import SyntheticVideo
from deva.inference.options import InferenceOptions
from deva.inference.preprocess import preprocess_frame, preprocess_mask
from deva.inference.propagator import Propagator


class _Variant(NamedTuple):
    """One timed way of running the propagator."""

    name: str
    dtype: torch.dtype | None  # autocast dtype; None: fp32
    channels_last: bool
    reference: bool  # the plain eager model (reference mode)
    winograd: bool
    compiled: bool

    def options(self) -> InferenceOptions:
        return InferenceOptions(
            autocast=self.dtype,
            channels_last=self.channels_last,
            winograd=self.winograd,
            compile=self.compiled,
            plain=self.reference,
        )


#: The network calls each propagation row splits its time into (``ms_by_part``), plus the
#: memory read (``memory_read``) and the rest (``other``: pre/post-processing, merging).
NETWORK_PARTS = ("encode_image", "project_key", "encode_mask", "segment")


class _PartTimer:
    """Seconds each variant spends in each network call and memory read, while ``on``.

    The calls are wrapped once per network object (plain variants share the model itself)
    and charged to the variant that is stepping (``current``)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.spent: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.current = ""
        self.on = False
        self._wrapped: set[int] = set()

    def attach(self, prop: Propagator) -> None:
        module = prop.network.module
        if id(module) not in self._wrapped:
            self._wrapped.add(id(module))
            for name in NETWORK_PARTS:
                object.__setattr__(module, name, self._wrap(getattr(module, name), name))
        prop.memory.read = self._wrap(prop.memory.read, "memory_read")

    def _wrap(self, call: Callable[..., Any], part: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.on:
                return call(*args, **kwargs)
            start = time.perf_counter()
            out = call(*args, **kwargs)
            _sync(self.device)
            self.spent[self.current][part] += time.perf_counter() - start
            return out

        return timed

    def ms_by_part(self, variant: str, frames: int, total_s: float) -> dict[str, float]:
        """Milliseconds per timed frame of each part of ``variant`` and of the rest."""
        parts = dict(self.spent[variant])
        parts["other"] = total_s - sum(parts.values())
        return {k: 1000 * v / max(frames, 1) for k, v in parts.items()}


def _propagation_variants(
    cfg: DictConfig, device: torch.device, amp: torch.dtype | None
) -> list[_Variant]:
    """The variants to time on ``device``; ``fp32-reference`` first (the others' reference)."""
    variants = [
        _Variant("fp32-reference", None, False, True, False, False),
        _Variant("fp32", None, False, False, False, False),
        _Variant("fp32-channels-last", None, True, False, False, False),
    ]
    if device.type == "cpu":
        variants += [
            _Variant("fp32-winograd", None, False, False, True, False),
            _Variant("fp32-winograd-channels-last", None, True, False, True, False),
        ]
    compiled = _compile_variants(cfg, device)
    if compiled:
        variants.append(_Variant("fp32-compiled", None, False, False, False, True))
    if amp is not None:
        name = str(cfg.amp)
        variants += [
            _Variant(f"{name}-reference-autocast", amp, False, True, False, False),
            _Variant(f"{name}-channels-last", amp, True, False, False, False),
        ]
        if compiled:
            variants.append(_Variant(f"{name}-compiled", amp, True, False, False, True))
    return variants


def _frame_order(variants: list[_Variant], t: int) -> list[_Variant]:
    """The reference first (its masks are compared); the others rotate with the frame index
    so that no variant always follows the same one."""
    rest = variants[1:]
    shift = t % len(rest) if rest else 0
    return [variants[0], *rest[shift:], *rest[:shift]]


def _decisive_pixels(prob: torch.Tensor, cfg: DictConfig) -> dict[str, torch.Tensor]:
    """Per check kind, where the reference's top-2 probability margin is large enough."""
    top2 = prob.topk(min(2, prob.shape[0]), dim=0).values
    margin = (top2[0] - top2[-1]).cpu()
    return {
        "fp32": margin >= cfg.decisive_margin,
        "reduced": margin >= cfg.decisive_margin_amp,
    }


def _step_interleaved(
    video: SyntheticVideo,
    variants: list[_Variant],
    props: dict[str, Propagator],
    comparisons: dict[str, MaskComparison],
    cfg: DictConfig,
    device: torch.device,
    parts: _PartTimer,
) -> dict[str, list[float]]:
    """Step every variant through the video frame by frame; the seconds per timed frame (after
    the warm-up) of each variant. Masks after the first frame go into ``comparisons``."""
    timings: dict[str, list[float]] = defaultdict(list)
    first = torch.from_numpy(video.masks[0].astype(np.int64))
    with torch.inference_mode():
        for t, frame in enumerate(video.frames):
            ref_mask = decisive = None
            parts.on = t >= cfg.warmup
            for variant in _frame_order(variants, t):
                parts.current = variant.name
                start = time.perf_counter()
                image, geometry = preprocess_frame(frame, -1, device=device)
                mask = preprocess_mask(first, geometry).to(device) if t == 0 else None
                result = props[variant.name].step(image, mask)
                ids = result.index_mask().cpu()
                _sync(device)
                if t >= cfg.warmup:
                    timings[variant.name].append(time.perf_counter() - start)
                if variant.name == "fp32-reference":
                    ref_mask = ids
                    decisive = _decisive_pixels(result.prob, cfg)
                elif t > 0:
                    comparison = comparisons[variant.name]
                    comparison.add(ids, ref_mask, decisive[comparison.kind])
    return timings


def bench_propagation(
    preset: str, cfg: DictConfig, device: torch.device, amp: torch.dtype | None
) -> tuple[list[dict], list[dict]]:
    """Time the propagation variants of one preset, interleaved; compare their masks."""
    height, width = int(cfg.size), _width(int(cfg.size))
    video = _steady_video(height, cfg.frames + cfg.warmup, cfg.objects, cfg.seed)
    model, source = _model(preset, device, cfg.seed, cfg.weights)
    variants = _propagation_variants(cfg, device, amp)
    props = {v.name: Propagator(model, options=v.options()) for v in variants}
    parts = _PartTimer(device)
    for prop in props.values():
        parts.attach(prop)
    comparisons = {
        v.name: MaskComparison(v.name, "fp32-reference", _kind(v.dtype)) for v in variants[1:]
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timings = _step_interleaved(video, variants, props, comparisons, cfg, device, parts)
    rows = []
    for v in variants:
        seconds = float(np.sum(timings[v.name]))
        frames = len(timings[v.name])
        rows.append(
            {
                "suite": "propagation",
                "preset": preset,
                "weights": source,
                "variant": v.name,
                "precision": "fp32" if v.dtype is None else str(cfg.amp),
                "channels_last": v.channels_last,
                "winograd": v.winograd,
                "compiled": v.compiled,
                "inference_copy": not v.reference,
                "frame": f"{height}x{width}",
                "objects": len(video.objects),
                "frames": frames,
                "fps": frames / seconds if seconds else float("nan"),
                "ms_per_frame": 1000 * seconds / max(frames, 1),
                "ms_by_part": parts.ms_by_part(v.name, frames, seconds),
                "memory_elements": props[v.name].memory.stats().total,
                "peak_mib": _peak_mib(device),
            }
        )
    checks = [
        {"suite": "propagation", "preset": preset, "weights": source, **c.result()}
        for c in comparisons.values()
    ]
    return rows, checks
