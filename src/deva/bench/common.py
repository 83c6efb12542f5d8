"""What every benchmark suite shares: options, the machine description, models, videos,
memory readings and the mask comparison of a variant against its reference."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import resource
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from deva.config import ConfigError, builder, compose, repository_path
from deva.config.schema import BenchmarkConfig, ModelSection, parse
from deva.data.synthetic import SyntheticVideo, SyntheticVideoConfig, generate_video
from deva.inference.backends import BACKENDS
from deva.modeling.config import PropagationConfig
from deva.modeling.inference_model import check_autocast, cpu_supports_bf16
from deva.modeling.propagation import PropagationModel

SUITES = ("propagation", "backends", "tracker", "consensus", "memory", "training", "data")
AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FP32_MAX_DIFFER_PCT = 0.01
MIN_IOU = 0.99
RSS_VARIANTS = ("fp32-reference", "fp32", "bf16")
RSS_MODES = ("vos", "semionline", "online", "offline")
#: The training input pipelines the data suite times.
DATA_SOURCES = ("static", "video", "shards")


# ---- options --------------------------------------------------------------------------------
def parse_options(argv: list[str]) -> DictConfig:
    """``benchmark.yaml`` ← its ``quick_settings`` (``quick=true``, for the keys not given)
    ← ``key=value`` overrides, checked against the schema."""
    given = {item.partition("=")[0].lstrip("+~") for item in argv}
    config = parse(BenchmarkConfig, compose("benchmark", list(argv)))
    if config.quick:
        for key, value in config.quick_settings.items():
            if key not in given:
                setattr(config, key, value)
    cfg = OmegaConf.create(dataclasses.asdict(config))
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
    for key in ("rss_modes", "rss_length_modes", "rss_lengths"):
        if isinstance(cfg[key], (str, int)):
            cfg[key] = [cfg[key]]
    for key in ("rss_modes", "rss_length_modes"):
        bad_modes = sorted(set(cfg[key]) - set(RSS_MODES))
        if bad_modes:
            raise ConfigError(f"{key} must be among {list(RSS_MODES)}, got {bad_modes}")
    if not all(isinstance(n, int) and n > 0 for n in cfg.rss_lengths):
        raise ConfigError(f"rss_lengths must be positive frame counts, got {list(cfg.rss_lengths)}")
    for key in ("data_sources", "data_workers"):
        if isinstance(cfg[key], (str, int)):
            cfg[key] = [cfg[key]]
    bad_sources = sorted(set(cfg.data_sources) - set(DATA_SOURCES))
    if bad_sources:
        raise ConfigError(f"data_sources must be among {list(DATA_SOURCES)}, got {bad_sources}")
    if not all(isinstance(n, int) and n >= 0 for n in cfg.data_workers):
        raise ConfigError(f"data_workers must be worker counts >= 0, got {list(cfg.data_workers)}")
    if isinstance(cfg.train_presets, str):
        cfg.train_presets = [cfg.train_presets]
    if isinstance(cfg.backends, str):
        cfg.backends = [cfg.backends]
    bad_backends = sorted(set(cfg.backends) - set(BACKENDS))
    if bad_backends:
        raise ConfigError(f"backends must be among {list(BACKENDS)}, got {bad_backends}")
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


EMBEDDED = {
    "small": repository_path("checkpoints/deva-small-synthetic.pth"),
    "mobile": repository_path("checkpoints/deva-mobile-real.pth"),
}


def _model(
    preset: str, device: torch.device, seed: int, weights: str | None = None
) -> tuple[PropagationModel, str]:
    """The network and where its weights came from (``auto``: the embedded trained
    checkpoint of ``small`` or ``mobile`` when present, else random)."""
    if weights == "auto":
        embedded = EMBEDDED.get(preset)
        weights = str(embedded) if embedded is not None and embedded.is_file() else None
    if weights:
        section = ModelSection(preset=preset, weights=weights)
        return builder.model(section).to(device).eval(), Path(weights).name
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


# ---- machine -------------------------------------------------------------------------------
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

    return cpu_supports_bf16()
