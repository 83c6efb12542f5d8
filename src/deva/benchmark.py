"""Speed, memory and mask-equality benchmarks (``tools/benchmark.py`` is the command line).

Suites (``suite=propagation|tracker|consensus|memory|training|all``, ``tasks=`` is an alias):

- **propagation**: a generated 16:9 video at ``size`` (shorter side) is propagated from its
  first-frame masks by several *variants*, stepped interleaved frame by frame in one process
  (so load from other processes hits all of them alike): ``fp32-reference`` (the plain eager
  model, :func:`~deva.modeling.inference_model.reference_mode`), ``fp32`` (inference copy,
  batch norm folded), ``fp32-channels-last``, on the CPU ``fp32-winograd`` and
  ``fp32-winograd-channels-last`` (the default fp32 CPU path), and with ``amp``:
  ``<amp>-reference-autocast`` (autocast over the plain model) and ``<amp>-channels-last``
  (weights cast once); with ``compile`` (default on a GPU) also ``fp32-compiled`` and
  ``<amp>-compiled`` (``torch.compile``; warm-up frames absorb the compilation). Every
  variant's masks are compared with ``fp32-reference``.
- **tracker**: the semi-online tracker over a stream whose segmenter returns ``segments``
  drifting Voronoi segments per frame (or, ``tracker_detections=video``, the generated
  video's own simulated detections: its objects and stuff regions with noise); variants
  ``fp32-reference`` (plain model, one throw-away propagator per alignment: the previous code
  path), ``fp32-reference-batched``
  (plain model, batched alignment: must be identical), ``fp32`` and ``<amp>``; time shares of
  alignment, consensus and merging.
- **consensus**: the in-clip consensus alone on ``clip_size`` partitions.
- **memory**: a long looped video through the small model at low resolution; process RSS and
  stored memory elements per frame, a PNG plot, and whether both are flat once the long-term
  memory is full. Then (CPU) the peak RSS of VOS propagation at ``size`` per ``rss_presets``
  and variant (``fp32-reference``, ``fp32``, ``bf16``), each in a fresh process.
- **training**: optimizer step time and samples/s of the training unroll per preset.

Mask checks: fp32 variants pass when at most 0.01 % of the *decisive* pixels differ (pixels
whose fp32-reference top-2 probability margin is at least ``decisive_margin``; with random
weights many pixels are exact ties that any float reordering flips — the raw count is reported
too); reduced-precision variants pass with mean per-object IoU ≥ 0.99.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import resource
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import deva.inference.tracker as tracker_module
from deva.config import ConfigError
from deva.data.synthetic import SyntheticVideo, SyntheticVideoConfig, generate_video
from deva.inference.alignment import _align_with_propagator
from deva.inference.consensus import build_consensus
from deva.inference.memory import MemoryConfig
from deva.inference.preprocess import preprocess_frame, preprocess_mask
from deva.inference.propagator import Propagator
from deva.inference.tracker import DecoupledTracker, TrackerConfig, TrackingMode
from deva.modeling.config import PropagationConfig
from deva.modeling.inference_model import check_autocast, reference_mode
from deva.modeling.propagation import PropagationModel
from deva.modeling.weights import pick_device
from deva.types import Segment, Segmentation

log = logging.getLogger(__name__)

SUITES = ("propagation", "tracker", "consensus", "memory", "training")
AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FP32_MAX_DIFFER_PCT = 0.01
MIN_IOU = 0.99
RSS_VARIANTS = ("fp32-reference", "fp32", "bf16")
RSS_MODES = ("vos", "semionline", "online")

DEFAULTS: dict[str, Any] = {
    "suite": None,  # list or name; default [propagation]
    "tasks": None,  # alias of suite (earlier commands)
    "presets": ["small", "published"],
    "size": 480,
    "frames": 20,
    "warmup": 2,
    "objects": 2,
    "device": "auto",
    "amp": "bf16",
    "compile": "auto",  # torch.compile variants: auto = on a GPU only (CPU compiles take minutes)
    "threads": 0,
    "quick": False,
    "out": None,
    "seed": 0,
    "decisive_margin": 1e-3,  # fp32 checks: reference top-2 probability margin
    "decisive_margin_amp": 0.05,  # reduced-precision checks
    "weights": "auto",  # auto: the embedded checkpoint for preset small, random otherwise
    # tracker / consensus
    "segments": 40,  # Voronoi segments per frame (tracker_detections=partition, consensus)
    "tracker_detections": "partition",  # or "video": the generator's simulated detections
    "clip_size": 3,
    "detect_every": 5,
    "repeats": 5,
    "tracker_frames": 10,
    "tracker_size": None,  # default: size
    # memory
    "memory_preset": "small",
    "memory_frames": 10_000,
    "memory_size": 64,
    "memory_record_every": 10,
    "rss_presets": ["published"],  # peak RSS, each variant in a fresh process ([] to skip)
    "rss_frames": 10,
    "rss_modes": list(RSS_MODES),  # vos, semionline, online (tracker with detections)
    "plot": None,  # PNG path; default next to out, else benchmark_memory.png
    # training
    "train_presets": ["tiny", "small", "published"],
    "train_size": 384,
    "train_frames": 3,
    "train_batch": 2,
    "train_objects": 3,
    "train_steps": 3,
}

QUICK: dict[str, Any] = {
    "size": 64,
    "frames": 3,
    "warmup": 1,
    "segments": 6,
    "repeats": 1,
    "tracker_frames": 5,
    "memory_frames": 40,
    "memory_size": 32,
    "memory_record_every": 1,
    "rss_presets": ["tiny"],
    "rss_frames": 3,
    "train_presets": ["tiny"],
    "train_size": 64,
    "train_steps": 1,
    "train_batch": 1,
}


# ---- options --------------------------------------------------------------------------------
def parse_options(argv: list[str]) -> DictConfig:
    """Defaults ← quick settings (``quick=true``) ← ``key=value`` overrides."""
    user = OmegaConf.from_dotlist(argv)
    unknown = sorted(set(user.keys()) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown options {unknown}; known: {sorted(DEFAULTS)}")
    layers = [OmegaConf.create(DEFAULTS)]
    if user.get("quick"):
        layers.append(OmegaConf.create(QUICK))
    cfg = OmegaConf.merge(*layers, user)
    suite = cfg.suite if cfg.suite is not None else cfg.tasks
    if suite is None:
        suite = ["propagation"]
    names = [suite] if isinstance(suite, str) else list(suite)
    if "all" in names:
        names = list(SUITES)
    bad = sorted(set(names) - set(SUITES))
    if bad:
        raise ConfigError(f"suite must be among {[*SUITES, 'all']}, got {bad}")
    cfg.suite = names
    cfg.tasks = names
    if isinstance(cfg.presets, str):
        cfg.presets = [cfg.presets]
    if isinstance(cfg.rss_presets, str):
        cfg.rss_presets = [cfg.rss_presets]
    if isinstance(cfg.rss_modes, str):
        cfg.rss_modes = [cfg.rss_modes]
    bad_modes = sorted(set(cfg.rss_modes) - set(RSS_MODES))
    if bad_modes:
        raise ConfigError(f"rss_modes must be among {list(RSS_MODES)}, got {bad_modes}")
    if isinstance(cfg.train_presets, str):
        cfg.train_presets = [cfg.train_presets]
    if cfg.tracker_detections not in ("partition", "video"):
        raise ConfigError(
            f"tracker_detections must be partition or video, got {cfg.tracker_detections!r}"
        )
    if str(cfg.amp) not in AMP:
        raise ConfigError(f"amp must be one of {sorted(AMP)}, got {cfg.amp!r}")
    if cfg.compile not in ("auto", True, False):
        raise ConfigError(f"compile must be auto, true or false, got {cfg.compile!r}")
    return cfg


def _compile_variants(cfg: DictConfig, device: torch.device) -> bool:
    """Whether to time ``torch.compile`` variants (``compile=auto``: on a GPU)."""
    return device.type == "cuda" if cfg.compile == "auto" else bool(cfg.compile)


def _amp_dtype(cfg: DictConfig, device: torch.device) -> tuple[torch.dtype | None, str | None]:
    """The reduced precision to time (or None) and, when it is skipped, why."""
    dtype = AMP[str(cfg.amp)]
    if dtype is None:
        return None, None
    try:
        check_autocast(dtype, device)
    except ValueError as error:
        return None, str(error)
    return dtype, None


def _width(height: int) -> int:
    return (height * 16 // 9) // 2 * 2


def _steady_video(height: int, frames: int, objects: int, seed: int) -> SyntheticVideo:
    """A generated 16:9 video whose objects stay in view (VOS from the first frame's masks)."""
    config = SyntheticVideoConfig(
        num_frames=frames,
        height=height,
        width=_width(height),
        num_objects=objects,
        enter_leave=False,
        exit_and_return=False,
    )
    return generate_video(config, seed=seed)


def _rss_mib() -> float:
    """Current resident set size of this process (MiB)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


EMBEDDED = Path(__file__).resolve().parents[2] / "checkpoints" / "deva-small-synthetic.pth"


def _model(
    preset: str, device: torch.device, seed: int, weights: str | None = None
) -> tuple[PropagationModel, str]:
    """The network and where its weights came from (``auto``: the embedded trained
    checkpoint for ``small`` when present, else random)."""
    if weights == "auto":
        weights = str(EMBEDDED) if preset == "small" and EMBEDDED.is_file() else None
    if weights:
        from deva.modeling.weights import build_model

        return build_model(preset, weights).to(device).eval(), Path(weights).name
    torch.manual_seed(seed)
    return PropagationModel(PropagationConfig.preset(preset)).to(device).eval(), "random"


# ---- mask comparison ------------------------------------------------------------------------
class MaskComparison:
    """Accumulates pixel differences and per-object IoU of a variant against a reference."""

    def __init__(self, variant: str, reference: str, kind: str) -> None:
        self.variant, self.reference, self.kind = variant, reference, kind
        self.pixels = self.differ = self.decisive = self.decisive_differ = 0
        self.has_margin = False  # whether reference margins were given (decisive pixels)
        self.inter: dict[int, int] = defaultdict(int)
        self.union: dict[int, int] = defaultdict(int)
        self.d_inter: dict[int, int] = defaultdict(int)
        self.d_union: dict[int, int] = defaultdict(int)

    def add(self, mask: torch.Tensor, ref: torch.Tensor, decisive: torch.Tensor | None) -> None:
        """Masks (H, W) of object ids; ``decisive``: bool (H, W) where the reference is sure."""
        differ = mask != ref
        self.pixels += mask.numel()
        self.differ += int(differ.sum())
        if decisive is not None:
            self.has_margin = True
            self.decisive += int(decisive.sum())
            self.decisive_differ += int((differ & decisive).sum())
        for obj in set(torch.unique(ref).tolist()) | set(torch.unique(mask).tolist()):
            if obj == 0:
                continue
            a, b = mask == obj, ref == obj
            self.inter[obj] += int((a & b).sum())
            self.union[obj] += int((a | b).sum())
            if decisive is not None:
                self.d_inter[obj] += int((a & b & decisive).sum())
                self.d_union[obj] += int(((a | b) & decisive).sum())

    def result(self) -> dict[str, Any]:
        ious = [self.inter[o] / self.union[o] for o in self.union if self.union[o]]
        mean_iou = float(np.mean(ious)) if ious else 1.0
        d_ious = [self.d_inter[o] / self.d_union[o] for o in self.d_union if self.d_union[o]]
        decisive_iou = float(np.mean(d_ious)) if self.decisive and d_ious else mean_iou
        decisive_out: float | None = decisive_iou
        if self.has_margin and not self.decisive:
            decisive_out = None
        pct = 100 * self.differ / max(self.pixels, 1)
        decisive_pct = 100 * self.decisive_differ / self.decisive if self.decisive else 0.0
        if not self.has_margin:  # no margins (tracker outputs): every pixel counts
            decisive_pct = pct
        passed: bool | None
        if self.kind == "identical":
            passed, rule = self.differ == 0, "no pixel differs"
        elif self.has_margin and self.decisive == 0 and self.differ:
            # Random weights give near-uniform probabilities: arg-max ties everywhere.
            passed, rule = None, "inconclusive: no decisive reference pixel (random weights)"
        elif self.kind == "fp32":
            passed = decisive_pct <= FP32_MAX_DIFFER_PCT
            where = "decisive pixels" if self.has_margin else "pixels"
            rule = f"<= {FP32_MAX_DIFFER_PCT} % of {where} differ"
        else:
            passed = decisive_iou >= MIN_IOU
            where = "decisive pixels" if self.has_margin else "all pixels"
            rule = f"mean object IoU on {where} >= {MIN_IOU}"
        return {
            "variant": self.variant,
            "reference": self.reference,
            "kind": self.kind,
            "pixels": self.pixels,
            "pixels_differ": self.differ,
            "pixels_differ_pct": pct,
            "decisive_pixels": self.decisive,
            "decisive_pixels_differ": self.decisive_differ,
            "decisive_pixels_differ_pct": decisive_pct,
            "mean_object_iou": mean_iou,
            "decisive_mean_object_iou": decisive_out,
            "rule": rule,
            "passed": passed if passed is None else bool(passed),
        }


def _kind(dtype: torch.dtype | None) -> str:
    return "fp32" if dtype is None else "reduced"


# ---- propagation ----------------------------------------------------------------------------
def bench_propagation(
    preset: str, cfg: DictConfig, device: torch.device, amp: torch.dtype | None
) -> tuple[list[dict], list[dict]]:
    """Time the propagation variants of one preset, interleaved; compare their masks."""
    height, width = int(cfg.size), _width(int(cfg.size))
    video = _steady_video(height, cfg.frames + cfg.warmup, cfg.objects, cfg.seed)
    model, source = _model(preset, device, cfg.seed, cfg.weights)
    # (name, autocast dtype, channels-last, plain reference model, Winograd, compiled)
    variants: list[tuple[str, torch.dtype | None, bool, bool, bool, bool]] = [
        ("fp32-reference", None, False, True, False, False),
        ("fp32", None, False, False, False, False),
        ("fp32-channels-last", None, True, False, False, False),
    ]
    if device.type == "cpu":
        variants += [
            ("fp32-winograd", None, False, False, True, False),
            ("fp32-winograd-channels-last", None, True, False, True, False),
        ]
    compiled = _compile_variants(cfg, device)
    if compiled:
        variants.append(("fp32-compiled", None, False, False, False, True))
    if amp is not None:
        name = str(cfg.amp)
        variants += [
            (f"{name}-reference-autocast", amp, False, True, False, False),
            (f"{name}-channels-last", amp, True, False, False, False),
        ]
        if compiled:
            variants.append((f"{name}-compiled", amp, True, False, False, True))
    props = {
        v: Propagator(model, autocast_dtype=dt, channels_last=cl, winograd=wg, compile=cp)
        for v, dt, cl, _, wg, cp in variants
    }
    comparisons = {v: MaskComparison(v, "fp32-reference", _kind(dt)) for v, dt, *_ in variants[1:]}
    timings: dict[str, list[float]] = defaultdict(list)
    first = torch.from_numpy(video.masks[0].astype(np.int64))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        for t, frame in enumerate(video.frames):
            ref_mask = decisive = None
            # The reference must run first (its masks are compared); the others rotate so
            # that no variant always follows the same one.
            rest = variants[1:]
            shift = t % len(rest) if rest else 0
            for variant, _, _, reference, *_ in [variants[0], *rest[shift:], *rest[:shift]]:
                context = reference_mode() if reference else contextlib.nullcontext()
                start = time.perf_counter()
                with context:
                    image, geometry = preprocess_frame(frame, -1, device=device)
                    mask = preprocess_mask(first, geometry).to(device) if t == 0 else None
                    result = props[variant].step(image, mask)
                    ids = result.index_mask().cpu()
                _sync(device)
                if t >= cfg.warmup:
                    timings[variant].append(time.perf_counter() - start)
                if variant == "fp32-reference":
                    ref_mask = ids
                    top2 = result.prob.topk(min(2, result.prob.shape[0]), dim=0).values
                    margin = (top2[0] - top2[-1]).cpu()
                    decisive = {
                        "fp32": margin >= cfg.decisive_margin,
                        "reduced": margin >= cfg.decisive_margin_amp,
                    }
                elif t > 0:
                    comparison = comparisons[variant]
                    comparison.add(ids, ref_mask, decisive[comparison.kind])
    rows = []
    for variant, dt, cl, reference, wg, cp in variants:
        seconds = float(np.sum(timings[variant]))
        frames = len(timings[variant])
        rows.append(
            {
                "suite": "propagation",
                "preset": preset,
                "weights": source,
                "variant": variant,
                "precision": "fp32" if dt is None else str(cfg.amp),
                "channels_last": cl,
                "winograd": wg,
                "compiled": cp,
                "inference_copy": not reference,
                "frame": f"{height}x{width}",
                "objects": len(video.objects),
                "frames": frames,
                "fps": frames / seconds if seconds else float("nan"),
                "ms_per_frame": 1000 * seconds / max(frames, 1),
                "memory_elements": props[variant].memory.stats().total,
                "peak_mib": _peak_mib(device),
            }
        )
    checks = [
        {"suite": "propagation", "preset": preset, "weights": source, **c.result()}
        for c in comparisons.values()
    ]
    return rows, checks


# ---- consensus ------------------------------------------------------------------------------
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


class ListSegmenter:
    """Returns precomputed per-frame segmentations (the generator's simulated detections)."""

    def __init__(self, segmentations: list[Segmentation]) -> None:
        self.segmentations = segmentations

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        return self.segmentations[int(frame_name or 0)]


class PartitionSegmenter:
    """Returns a drifting Voronoi partition with a fixed number of segments per frame."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        h, w = image.shape[:2]
        return partition(h, w, self.count, int(frame_name or 0), shift=3.0)


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


# ---- tracker --------------------------------------------------------------------------------
def _legacy_align_segmentations(
    model: PropagationModel,
    sources: list[tuple[Any, Segmentation]],
    target: Any,
    **options: Any,
) -> list[Segmentation]:
    """The previous alignment: one throw-away propagator per clip frame."""
    out = []
    for features, seg in sources:
        if not seg.segments or not torch.as_tensor(seg.mask).any():
            out.append(Segmentation(mask=torch.zeros(target.size, dtype=torch.long), segments=[]))
            continue
        ids = _align_with_propagator(model, features, seg, target, **options)
        present = set(torch.unique(ids).tolist())
        segments = [replace(s) for s in seg.segments if s.id in present]
        out.append(Segmentation(mask=ids, segments=segments))
    return out


_TIMED = ("in_clip_consensus", "align_segmentations", "merge_with_consensus")


@contextlib.contextmanager
def _tracker_hooks(spent: dict[str, float], legacy: bool) -> Iterator[None]:
    """Time the tracker's consensus / alignment / merge calls; optionally the old alignment."""
    originals = {name: getattr(tracker_module, name) for name in _TIMED}

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return wrapper

    for name, fn in originals.items():
        if legacy and name == "align_segmentations":
            fn = _legacy_align_segmentations
        setattr(tracker_module, name, timed(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(tracker_module, name, fn)


def bench_tracker(
    preset: str, cfg: DictConfig, device: torch.device, amp: torch.dtype | None
) -> tuple[list[dict], list[dict]]:
    """Semi-online tracking with precomputed (partition) detections, variants interleaved."""
    height = int(cfg.tracker_size or cfg.size)
    width = _width(height)
    video = generate_video(
        SyntheticVideoConfig(
            num_frames=cfg.tracker_frames, height=height, width=width, num_objects=cfg.objects
        ),
        seed=cfg.seed,
    )
    model, source = _model(preset, device, cfg.seed, cfg.weights)
    # (name, dtype, plain model, legacy alignment)
    variants: list[tuple[str, torch.dtype | None, bool, bool]] = [
        ("fp32-reference", None, True, True),
        ("fp32-reference-batched", None, True, False),
        ("fp32", None, False, False),
    ]
    if amp is not None:
        variants.append((str(cfg.amp), amp, False, False))
    trackers, spent, outputs, timings = {}, {}, {}, {}
    for name, dtype, _, _ in variants:
        config = TrackerConfig(
            mode=TrackingMode.SEMI_ONLINE,
            clip_size=cfg.clip_size,
            detect_every=cfg.detect_every,
            shorter_side=-1,
            memory=MemoryConfig(),
            autocast_dtype=dtype,
        )
        segmenter = (
            ListSegmenter(video.detections)
            if cfg.tracker_detections == "video"
            else PartitionSegmenter(int(cfg.segments))
        )
        trackers[name] = DecoupledTracker(model, segmenter, config)
        spent[name], outputs[name], timings[name] = defaultdict(float), {}, 0.0

    def run(name: str, plain: bool, legacy: bool, call: Callable[[], list]) -> None:
        context = reference_mode() if plain else contextlib.nullcontext()
        start = time.perf_counter()
        with context, _tracker_hooks(spent[name], legacy), torch.inference_mode():
            results = call()
        _sync(device)
        timings[name] += time.perf_counter() - start
        for r in results:
            outputs[name][r.index] = r.mask

    # Warm-up (untimed): one clip per variant, so that first-call costs (oneDNN primitive
    # creation, the inference copy) are not charged to whichever variant runs first.
    warm = video.frames[: cfg.clip_size + 1]
    for name, _, plain, legacy in variants:
        context = reference_mode() if plain else contextlib.nullcontext()
        with context, _tracker_hooks(defaultdict(float), legacy), torch.inference_mode():
            list(trackers[name].stream((f"{t:05d}", f) for t, f in enumerate(warm)))
        trackers[name].reset()
    for t, frame in enumerate(video.frames):
        order = variants[t % len(variants) :] + variants[: t % len(variants)]
        for name, _, plain, legacy in order:
            tracker = trackers[name]
            run(name, plain, legacy, lambda tr=tracker, t=t, f=frame: tr.step(f"{t:05d}", f))
    for name, _, plain, legacy in variants:
        run(name, plain, legacy, trackers[name].finish)

    rows, checks = [], []
    for name, dtype, _, _ in variants:
        total = timings[name]
        parts = {k: spent[name][k] for k in _TIMED}
        parts["other"] = total - sum(parts.values())
        frames = len(outputs[name])
        rows.append(
            {
                "suite": "tracker",
                "preset": preset,
                "weights": source,
                "variant": name,
                "precision": "fp32" if dtype is None else str(cfg.amp),
                "frame": f"{height}x{width}",
                "frames": frames,
                "fps": frames / total if total else float("nan"),
                "ms_per_frame": 1000 * total / max(frames, 1),
                "objects_created": trackers[name].registry.next_id - 1,
                "seconds": parts,
                "share": {k: v / total for k, v in parts.items()} if total else {},
            }
        )
        if name == "fp32-reference":
            continue
        # Bit-identical on the CPU; cuDNN may pick other algorithms for the batched decoder's
        # larger batch, so on a GPU the batched alignment is an fp32 variant like the others.
        identical = name == "fp32-reference-batched" and device.type == "cpu"
        kind = "identical" if identical else _kind(dtype)
        comparison = MaskComparison(name, "fp32-reference", kind)
        for index, mask in outputs["fp32-reference"].items():
            comparison.add(outputs[name][index], mask, None)
        check = comparison.result()
        if source == "random" and kind != "identical" and not check["passed"]:
            # Tracker outputs carry no probabilities to find decisive pixels with; a random
            # network's near-uniform probabilities make any float reordering flip ties, and
            # merging then amplifies them.
            check["passed"] = None
            check["rule"] = "inconclusive: random weights (" + check["rule"] + " not met)"
        checks.append({"suite": "tracker", "preset": preset, "weights": source, **check})
    return rows, checks


# ---- memory ---------------------------------------------------------------------------------
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
    context = reference_mode() if variant == "fp32-reference" else contextlib.nullcontext()
    before = _rss_mib()
    with context, torch.inference_mode():
        if mode == "vos":
            first = torch.from_numpy(video.masks[0].astype(np.int64))
            propagator = Propagator(model, autocast_dtype=dtype)
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
                autocast_dtype=dtype,
            )
            tracker = DecoupledTracker(model, ListSegmenter(video.detections), config)
            for _ in tracker.stream((f"{t:05d}", f) for t, f in enumerate(video.frames)):
                pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rss_before_mib": before, "peak_rss_mib": peak}


def bench_peak_rss(cfg: DictConfig, amp: torch.dtype | None) -> list[dict]:
    """Peak RSS per preset, mode (``rss_modes``) and variant, each run in its own process
    (``ru_maxrss`` is a per-process high-water mark). CPU only."""
    import multiprocessing

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
    from PIL import Image, ImageDraw

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


# ---- training -------------------------------------------------------------------------------
def bench_training(preset: str, cfg: DictConfig, device: torch.device) -> dict:
    """Optimizer steps of the training unroll (fp32) on random clips: time and samples/s."""
    from deva.training.module import PropagationTrainingModule

    torch.manual_seed(cfg.seed)
    module = PropagationTrainingModule(
        PropagationConfig.preset(preset).to_dict(), num_ref_frames=max(cfg.train_frames - 1, 1)
    ).to(device)
    module.train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-5, weight_decay=1e-3)
    b, t, s, k = cfg.train_batch, cfg.train_frames, cfg.train_size, cfg.train_objects
    g = torch.Generator().manual_seed(cfg.seed)
    frames = torch.randn(b, t, 3, s, s, generator=g).to(device)
    masks = torch.zeros(b, t, s, s, dtype=torch.long)
    for obj in range(1, k + 1):
        y, x = (obj - 1) * s // (k + 1), (obj - 1) * s // (k + 2)
        masks[:, :, y : y + s // 3, x : x + s // 3] = obj
    masks = masks.to(device)
    num_objects = torch.full((b,), k, dtype=torch.long, device=device)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        out = module.unroll(frames, masks, num_objects, step=0)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 3.0)
        optimizer.step()
        return float(out.loss.detach())

    step()  # warm-up
    times = []
    for _ in range(cfg.train_steps):
        start = time.perf_counter()
        loss = step()
        _sync(device)
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    return {
        "suite": "training",
        "preset": preset,
        "batch": b,
        "clip_frames": t,
        "crop": f"{s}x{s}",
        "objects": k,
        "steps": len(times),
        "step_s": seconds,
        "samples_per_s": b / seconds,
        "loss": loss,
        "peak_mib": _peak_mib(device),
    }


# ---- the whole run --------------------------------------------------------------------------
def machine_description(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "device": str(device),
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_bf16": device.type == "cpu" and _cpu_bf16(),
        "load_average_at_start": list(load) if load else None,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _cpu_bf16() -> bool:
    from deva.modeling.inference_model import cpu_supports_bf16

    return cpu_supports_bf16()


def run_benchmark(cfg: DictConfig, *, progress: Callable[[str], None] | None = None) -> dict:
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
    if "training" in cfg.suite:
        for preset in cfg.train_presets:
            say(f"training: {preset}, batch {cfg.train_batch} x {cfg.train_frames} frames")
            rows.append(bench_training(preset, cfg, device))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    setup["load_average_at_end"] = list(load) if load else None
    result = {"setup": setup, "rows": rows, "checks": checks, **extra}
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(result, indent=2, default=float))
    return result


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else "pass" if passed else "FAIL"


def format_table(result: dict) -> str:
    """A Markdown table of the timed rows followed by the mask checks."""
    lines = [
        "| suite | preset | variant | frame | frames/s | ms/frame | notes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        suite = row["suite"]
        if suite in ("propagation", "tracker"):
            note = f"peak {row['peak_mib']:.0f} MiB" if "peak_mib" in row else ""
            if suite == "tracker":
                share = row.get("share", {})
                note = f"alignment {100 * share.get('align_segmentations', 0):.0f} %"
            lines.append(
                f"| {suite} | {row['preset']} ({row['weights']}) | {row['variant']} | "
                f"{row['frame']} | {row['fps']:.2f} | {row['ms_per_frame']:.0f} | {note} |"
            )
        elif suite == "consensus":
            lines.append(
                f"| consensus | - | - | {row['frame']} | - | {row['ms_median']:.1f} | "
                f"{row['proposals']} proposals |"
            )
        elif suite == "memory" and row.get("measure") == "peak_rss":
            lines.append(
                f"| peak RSS {row['mode']} | {row['preset']} | {row['variant']} | {row['frame']} | "
                "- | - | "
                f"peak {row['peak_rss_mib']:.0f} MiB (before the first frame "
                f"{row['rss_before_mib']:.0f}) |"
            )
        elif suite == "memory":
            flat = row["flatness"]
            note = f"full at frame {flat.get('saturated_at_frame')}"
            if "rss_max_mib" in flat:
                note += (
                    f"; after: RSS {flat['rss_min_mib']:.0f}-{flat['rss_max_mib']:.0f} MiB, "
                    f"elements {flat['elements_min']}-{flat['elements_max']}"
                )
            lines.append(
                f"| memory | {row['preset']} | {row['frames']} frames | {row['frame']} | "
                f"{row['fps']:.1f} | {1000 / row['fps']:.1f} | {note} |"
            )
        elif suite == "training":
            lines.append(
                f"| training | {row['preset']} | batch {row['batch']}x{row['clip_frames']} | "
                f"{row['crop']} | {row['samples_per_s']:.2f} samples/s | "
                f"{1000 * row['step_s']:.0f} ms/step | |"
            )
    if result["checks"]:
        lines += [
            "",
            "| suite | preset | variant vs reference | pixels differ | decisive differ | "
            "mean object IoU | check |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for c in result["checks"]:
            lines.append(
                f"| {c['suite']} | {c['preset']} ({c['weights']}) | {c['variant']} | "
                f"{c['pixels_differ']} ({c['pixels_differ_pct']:.4f} %) | "
                f"{c['decisive_pixels_differ']} ({c['decisive_pixels_differ_pct']:.4f} %) | "
                f"{c['mean_object_iou']:.4f} (decisive {_number(c['decisive_mean_object_iou'])}) | "
                f"{_verdict(c['passed'])}: {c['rule']} |"
            )
    return "\n".join(lines)
