"""The backends suite: VOS propagation from the first frame's masks by each propagation
backend (``propagator=``), stepped interleaved frame by frame in one process.

``deva`` runs our network (``backend_preset``, its embedded checkpoint when there is one),
``hold`` no network, and ``sam2`` / ``sam3`` / ``edgetam`` the ``transformers`` video models:
from ``backend_models.<name>`` (a hub id or folder) when given, else with random weights from
the published architecture's config (SAM 2.1 Hiera-tiny, SAM 3's tracker), which costs the
same time as the real weights. The published EdgeTAM's image encoder is a ``timm`` model, so
without a folder it is reported as skipped rather than timed on another architecture.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from omegaconf import DictConfig

from deva.bench.common import _model, _steady_video, _sync, _width
from deva.inference.backend import PropagationBackend
from deva.inference.hold import HoldBackend
from deva.inference.preprocess import preprocess_frame, preprocess_mask
from deva.inference.propagator import Propagator
from deva.inference.sam_video import FAMILIES, SamVideoBackend, load_sam_video

#: the ``transformers`` config whose defaults are each family's published architecture
_PUBLISHED_CONFIGS = {"sam2": "Sam2VideoConfig", "sam3": "Sam3TrackerVideoConfig"}


def _backend(name: str, cfg: DictConfig, device: torch.device) -> tuple[Any, str]:
    """The backend ``name`` and what it runs (for the row), or (None, why it is skipped)."""
    if name == "deva":
        preset = str(cfg.backend_preset)
        model, weights = _model(preset, device, int(cfg.seed), cfg.weights)
        return Propagator(model), f"{preset} ({weights})"
    if name == "hold":
        return HoldBackend(device), "no network"
    if name not in FAMILIES:
        raise ValueError(f"backends: unknown backend {name!r}")
    try:
        import transformers
    except ImportError:
        return None, "skipped: transformers is not installed (bash install.sh models)"
    source = (cfg.backend_models or {}).get(name)
    if source:
        return load_sam_video(name, source, device=device), str(source)
    if name not in _PUBLISHED_CONFIGS:
        return None, "skipped: its published image encoder is a timm model; give backend_models"
    family = FAMILIES[name]
    config = getattr(transformers, _PUBLISHED_CONFIGS[name])()
    model = getattr(transformers, family.model_class)(config).to(device).eval()
    backend = SamVideoBackend(model, name=name, mean=family.mean, std=family.std)
    return backend, f"{family.default_source} architecture (random weights)"


def bench_backends(cfg: DictConfig, device: torch.device) -> list[dict]:
    """One row per backend: frames/s of first-frame propagation at ``size``, ``objects``."""
    height = int(cfg.size)
    total = int(cfg.warmup) + int(cfg.backend_frames)
    video = _steady_video(height, total, int(cfg.objects), int(cfg.seed))
    built = [(name, *_backend(name, cfg, device)) for name in cfg.backends]
    running = [(name, backend) for name, backend, _ in built if backend is not None]
    spent = {name: 0.0 for name, _ in running}
    for t, frame in enumerate(video.frames):
        image, geometry = preprocess_frame(frame, height, device=device)
        mask = None
        if t == 0:
            mask = preprocess_mask(torch.from_numpy(video.masks[0]), geometry).to(device)
        for name, backend in running:
            _sync(device)
            start = time.perf_counter()
            _step(backend, image, mask, end=t == total - 1)
            _sync(device)
            if t >= int(cfg.warmup):
                spent[name] += time.perf_counter() - start
    rows = []
    frames = int(cfg.backend_frames)
    for name, backend, what in built:
        row: dict[str, Any] = {
            "suite": "backends",
            "backend": name,
            "model": what,
            "frame": f"{height}x{_width(height)}",
            "objects": int(cfg.objects),
        }
        if backend is not None:
            row.update(fps=frames / spent[name], ms_per_frame=1000 * spent[name] / frames)
            row["parameters"] = _parameters(backend)
        rows.append(row)
    return rows


def _step(
    backend: PropagationBackend, image: torch.Tensor, mask: torch.Tensor | None, end: bool
) -> None:
    with torch.inference_mode():
        backend.step(image, mask, end=end)


def _parameters(backend: Any) -> int:
    model = getattr(backend, "model", None)
    return sum(p.numel() for p in model.parameters()) if model is not None else 0
