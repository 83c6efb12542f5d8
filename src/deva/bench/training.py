"""The training suite: optimizer step time and samples/s of the training unroll."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from omegaconf import DictConfig

from deva.bench.common import _peak_mib, _sync
from deva.modeling.config import PropagationConfig
from deva.training.module import PropagationTrainingModule


def trainer_for(
    preset: str, num_ref_frames: int, device: torch.device, seed: int
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], float]:
    """One fp32 AdamW optimizer step of the training unroll of ``preset`` (gradient clip 3.0)
    on a batch ``(frames, masks, num_objects)``; returns the loss."""
    torch.manual_seed(seed)
    module = PropagationTrainingModule(
        PropagationConfig.preset(preset).to_dict(), num_ref_frames=num_ref_frames
    ).to(device)
    module.train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-5, weight_decay=1e-3)

    def step(frames: torch.Tensor, masks: torch.Tensor, num_objects: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        out = module.unroll(frames, masks, num_objects, step=0)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 3.0)
        optimizer.step()
        return float(out.loss.detach())

    return step


def bench_training(preset: str, cfg: DictConfig, device: torch.device) -> dict:
    """Optimizer steps of the training unroll (fp32) on random clips: time and samples/s."""
    train_step = trainer_for(preset, max(cfg.train_frames - 1, 1), device, int(cfg.seed))
    b, t, s, k = cfg.train_batch, cfg.train_frames, cfg.train_size, cfg.train_objects
    g = torch.Generator().manual_seed(cfg.seed)
    frames = torch.randn(b, t, 3, s, s, generator=g).to(device)
    masks = torch.zeros(b, t, s, s, dtype=torch.long)
    for obj in range(1, k + 1):
        y, x = (obj - 1) * s // (k + 1), (obj - 1) * s // (k + 2)
        masks[:, :, y : y + s // 3, x : x + s // 3] = obj
    masks = masks.to(device)
    num_objects = torch.full((b,), k, dtype=torch.long, device=device)

    train_step(frames, masks, num_objects)  # warm-up
    times = []
    for _ in range(cfg.train_steps):
        start = time.perf_counter()
        loss = train_step(frames, masks, num_objects)
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
