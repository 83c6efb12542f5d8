"""Lightning module that trains the propagation network on clips.

The clip unroll calls the network's public primitives — the ones the inference
:class:`~deva.inference.propagator.Propagator` calls — so training and inference cannot
drift apart:

1. ``encode_image`` + ``project_key`` on all T frames of the batch at once;
2. frame 0: ``encode_mask`` of the ground-truth masks (deep sensory update) → memory;
3. frame t ≥ 1: ``read_memory`` (full softmax) from up to ``num_ref_frames`` earlier memory
   frames (beyond that many, a uniform draw of them per sample, as published; or, with
   ``ref_frames_per_sample=False``, frame 0 — the only ground-truth memory — plus one draw
   shared by the batch), ``aux_logits`` from the incoming sensory memory, ``segment``,
   ``aggregate``;
   then (except for the last frame) ``encode_mask`` of the predicted probabilities, with a
   deep sensory update with probability ``deep_update_prob`` (0.2).

Samples of a batch may hold different numbers of objects K ≤ N: the missing objects are
"padded" — given empty masks, their probabilities forced to 0 before aggregation and their
channels removed from the softmax — so a padded object changes no prediction. The published
dice averages over every object slot, a padded one adding 0, so the loss (not the
prediction) depends on the padding unless ``dice_padded_slots=False``.
Batch-norm layers stay frozen (running statistics) by default, which also keeps objects
independent of each other inside the grouped encoders.

Shape legend: B batch, T frames, N objects (padded), H×W crop size, h×w = H/16×W/16.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from deva.data.sample import denormalise_frames
from deva.io.masks import davis_palette
from deva.modeling.config import PropagationConfig
from deva.modeling.losses import (
    BootstrapSchedule,
    FrameLosses,
    frame_losses,
    mask_absent_objects,
)
from deva.modeling.propagation import KeyProjection, PixelFeatures, PropagationModel

log = logging.getLogger(__name__)

SCHEDULES = ("constant", "step", "poly")


class LRSchedule:
    """Learning-rate multiplier per optimizer step (picklable, for ``LambdaLR``).

    ``constant``: 1. ``step``: ``gamma`` ** (number of ``milestones`` passed). ``poly``:
    ``(1 − step / total_steps) ** power``. An optional linear warm-up over ``warmup_steps``
    multiplies any of them.
    """

    def __init__(
        self,
        kind: str = "constant",
        *,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        total_steps: int | None = None,
        power: float = 0.9,
        warmup_steps: int = 0,
    ) -> None:
        if kind not in SCHEDULES:
            raise ValueError(f"unknown lr schedule {kind!r}; expected one of {SCHEDULES}")
        if kind == "poly" and not total_steps:
            raise ValueError("the poly schedule needs total_steps (the number of iterations)")
        self.kind = kind
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.total_steps = int(total_steps) if total_steps else None
        self.power = float(power)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: int) -> float:
        if self.kind == "step":
            factor = self.gamma ** sum(step >= m for m in self.milestones)
        elif self.kind == "poly":
            assert self.total_steps is not None
            factor = max(0.0, 1.0 - step / self.total_steps) ** self.power
        else:
            factor = 1.0
        if self.warmup_steps > 0 and step < self.warmup_steps:
            factor *= (step + 1) / self.warmup_steps
        return factor


@dataclass
class ClipOutput:
    """What one clip unroll produced.

    loss: the total (summed over predicted frames); terms: per-term sums (detached);
    prob: (B, T-1, 1 + N, H, W) predicted probabilities of frames 1..T-1 (detached);
    fraction: the bootstrap fraction used.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    prob: torch.Tensor
    fraction: float


def _bootstrap_schedule(
    total_steps: int | None, start_warm: int | None, end_warm: int | None, final_fraction: float
) -> BootstrapSchedule:
    """The bootstrap schedule: scaled to ``total_steps``, else explicit or published steps."""
    if total_steps is None:  # no stage length: explicit steps or the published ones
        published = BootstrapSchedule()
        return BootstrapSchedule(
            published.start_warm if start_warm is None else int(start_warm),
            published.end_warm if end_warm is None else int(end_warm),
            final_fraction,
        )
    return BootstrapSchedule.scaled(
        total_steps, start_warm=start_warm, end_warm=end_warm, final_fraction=final_fraction
    )


def _pick(x: torch.Tensor, batch: int, t: int) -> torch.Tensor:
    """Frame ``t`` of a tensor computed on (B·T) stacked frames."""
    return x.view(batch, -1, *x.shape[1:])[:, t]


def _frame(features: PixelFeatures, batch: int, t: int) -> PixelFeatures:
    """Features of frame ``t`` from features computed on (B·T) stacked frames."""
    return PixelFeatures(
        *(_pick(x, batch, t) for x in (features.f16, features.f8, features.f4, features.key_source))
    )


class PropagationTrainingModule(LightningModule):
    """Trains :class:`PropagationModel` (``self.model``) on clip samples of :mod:`deva.data`.

    Every constructor argument is a plain value saved as a hyper-parameter, so a checkpoint
    rebuilds the module (``load_from_checkpoint``) and the network
    (``PropagationModel.from_pretrained("x.ckpt")`` reads ``model_config``).

    Args:
        model_config: :meth:`PropagationConfig.to_dict` of the network.
        num_ref_frames: memory frames read per predicted frame (3 video, 2 static).
        deep_update_prob: probability of a deep sensory update when encoding a prediction.
        lr, weight_decay: AdamW settings.
        schedule: ``constant`` | ``step`` | ``poly`` (see :class:`LRSchedule`).
        milestones, gamma: ``step`` schedule (optimizer steps).
        total_steps: iterations of the stage (``poly``; default bootstrap warm-up scaling).
        poly_power, warmup_steps: ``poly`` exponent; linear lr warm-up length.
        start_warm, end_warm, final_fraction: bootstrapped cross-entropy schedule; ``None``
            scales the published 10k → 35k of 150k to ``total_steps``.
        dice_weight, aux_weight: loss weights (1 and 0.1).
        bootstrap_per_sample: the hardest pixels of the cross-entropy per sample (published)
            or over the whole batch.
        dice_padded_slots: dice averaged over all B × N object slots, padded ones included
            (published), or over the real objects only.
        ref_frames_per_sample: beyond ``num_ref_frames`` earlier frames, each sample reads
            its own uniform draw of them (published; frame 0 not guaranteed), or the batch
            shares one draw that always holds frame 0.
        pad_objects_to: pad every batch to this many objects (stable shapes for
            ``torch.compile``); ``None`` pads to the largest K of the batch.
        freeze_batchnorm: keep batch-norm layers in eval mode while training.
        compile: ``torch.compile`` the encoder and decoder sub-networks.
        image_log_every: log an image grid (frames, ground truth, prediction) every this many
            steps (0: never).
        train_config: the resolved training config, stored in checkpoints as a plain dict.
    """

    def __init__(
        self,
        model_config: Mapping[str, Any] | None = None,
        *,
        num_ref_frames: int = 3,
        deep_update_prob: float = 0.2,
        lr: float = 1e-5,
        weight_decay: float = 1e-3,
        schedule: str = "constant",
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        total_steps: int | None = None,
        poly_power: float = 0.9,
        warmup_steps: int = 0,
        start_warm: int | None = None,
        end_warm: int | None = None,
        final_fraction: float = 0.3,
        dice_weight: float = 1.0,
        aux_weight: float = 0.1,
        bootstrap_per_sample: bool = True,
        dice_padded_slots: bool = True,
        ref_frames_per_sample: bool = True,
        pad_objects_to: int | None = None,
        freeze_batchnorm: bool = True,
        compile: bool = False,
        image_log_every: int = 0,
        train_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if num_ref_frames < 1:
            raise ValueError(f"num_ref_frames must be >= 1, got {num_ref_frames}")
        if not 0 <= deep_update_prob <= 1:
            raise ValueError(f"deep_update_prob is a probability, got {deep_update_prob}")
        config = PropagationConfig.from_dict(dict(model_config or {}))
        self.save_hyperparameters(
            {
                "model_config": config.to_dict(),
                "num_ref_frames": int(num_ref_frames),
                "deep_update_prob": float(deep_update_prob),
                "lr": float(lr),
                "weight_decay": float(weight_decay),
                "schedule": str(schedule),
                "milestones": [int(m) for m in milestones],
                "gamma": float(gamma),
                "total_steps": None if total_steps is None else int(total_steps),
                "poly_power": float(poly_power),
                "warmup_steps": int(warmup_steps),
                "start_warm": None if start_warm is None else int(start_warm),
                "end_warm": None if end_warm is None else int(end_warm),
                "final_fraction": float(final_fraction),
                "dice_weight": float(dice_weight),
                "aux_weight": float(aux_weight),
                "bootstrap_per_sample": bool(bootstrap_per_sample),
                "dice_padded_slots": bool(dice_padded_slots),
                "ref_frames_per_sample": bool(ref_frames_per_sample),
                "pad_objects_to": None if pad_objects_to is None else int(pad_objects_to),
                "freeze_batchnorm": bool(freeze_batchnorm),
                "compile": bool(compile),
                "image_log_every": int(image_log_every),
                "train_config": _plain(train_config) if train_config is not None else None,
            }
        )
        self.model = PropagationModel(config)
        self.lr_schedule = LRSchedule(
            schedule,
            milestones=milestones,
            gamma=gamma,
            total_steps=total_steps,
            power=poly_power,
            warmup_steps=warmup_steps,
        )
        self.bootstrap = _bootstrap_schedule(total_steps, start_warm, end_warm, final_fraction)
        self._compiled = False
        self._last_step_time: float | None = None

    # -- setup ------------------------------------------------------------------------------

    def configure_model(self) -> None:
        """Compile the sub-networks in place (parameter names unchanged) when asked."""
        if self.hparams.compile and not self._compiled:
            for module in (
                self.model.pixel_encoder,
                self.model.key_proj,
                self.model.mask_encoder,
                self.model.mask_decoder,
            ):
                module.compile()
            self._compiled = True

    def train(self, mode: bool = True) -> PropagationTrainingModule:
        """Switch modes; batch-norm layers stay in eval mode when ``freeze_batchnorm``."""
        super().train(mode)
        if mode:
            self._freeze_batchnorm()
        return self

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Lightning restores each submodule's mode flag directly after validation (not via
        # train()), so the frozen batch norms are re-asserted before every step.
        self._freeze_batchnorm()

    def _freeze_batchnorm(self) -> None:
        if self.hparams.freeze_batchnorm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW (weight decay 1e-3) with a per-step ``LambdaLR`` schedule."""
        optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    # -- the clip unroll --------------------------------------------------------------------

    def unroll(
        self,
        frames: torch.Tensor,
        masks: torch.Tensor,
        num_objects: torch.Tensor,
        *,
        step: int | None = None,
    ) -> ClipOutput:
        """Propagate the first frame's masks through the clip and compute the losses.

        Args:
            frames: (B, T, 3, H, W) normalised frames; masks: (B, T, H, W) int64 labels 0..K;
            num_objects: (B,) K per sample.
            step: global step for the bootstrap schedule (default: the trainer's).
        """
        model = self.model
        b, t_len = frames.shape[:2]
        if t_len < 2:
            raise ValueError(f"a training clip needs at least 2 frames, got {t_len}")
        n, valid, valid_bg, one_hot = self._object_masks(frames, masks, num_objects)

        features = model.encode_image(frames.flatten(0, 1))
        keys = model.project_key(features)
        hw = keys.key.shape[-2:]
        key_all = keys.key.view(b, t_len, -1, hw[0] * hw[1])
        shrink_all = keys.shrinkage.view(b, t_len, 1, hw[0] * hw[1])

        fraction = self.bootstrap.fraction(self.global_step if step is None else step)
        first = _frame(features, b, 0)
        sensory = model.init_sensory(b, n, hw, like=first.f16)
        value, sensory = model.encode_mask(
            frames[:, 0], first, sensory, one_hot[:, 0], deep_update=True
        )
        values = [value]
        last_mask = one_hot[:, 0]
        total = frames.new_zeros(())
        sums = {"ce": 0.0, "dice": 0.0, "aux": 0.0}
        probs = []
        for t in range(1, t_len):
            frame, readout = self._memory_readout(features, keys, key_all, shrink_all, values, t)
            is_last = t == t_len - 1
            sensory, prob, terms = self._predict_frame(
                frame, readout, sensory, last_mask, masks[:, t], valid, valid_bg, fraction, is_last
            )
            total = total + self._weighted(terms)
            for name in sums:
                sums[name] = sums[name] + getattr(terms, name).detach()
            probs.append(prob.detach())
            last_mask = prob[:, 1:].to(frames.dtype)
            if not is_last:
                deep = bool(torch.rand(()) < self.hparams.deep_update_prob)
                value, sensory = model.encode_mask(
                    frames[:, t], frame, sensory, last_mask, deep_update=deep
                )
                values.append(value)
        terms_out = {k: torch.as_tensor(v, device=total.device) for k, v in sums.items()}
        return ClipOutput(total, terms_out, torch.stack(probs, dim=1), fraction)

    def _object_masks(
        self, frames: torch.Tensor, masks: torch.Tensor, num_objects: torch.Tensor
    ) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded object count N, (B, N) / (B, 1 + N) validity and (B, T, N, H, W) one-hot masks."""
        b = frames.shape[0]
        num_objects = torch.as_tensor(num_objects, device=frames.device).view(-1)
        n = int(self.hparams.pad_objects_to or int(num_objects.max()))
        if int(num_objects.max()) > n:
            raise ValueError(f"a sample has {int(num_objects.max())} objects > pad_objects_to={n}")
        valid = torch.arange(n, device=frames.device).view(1, n) < num_objects.view(b, 1)
        valid_bg = torch.cat([valid.new_ones(b, 1), valid], dim=1)
        labels = torch.arange(1, n + 1, device=masks.device).view(1, 1, n, 1, 1)
        one_hot = (masks.unsqueeze(2) == labels).to(frames.dtype)  # (B, T, N, H, W)
        return n, valid, valid_bg, one_hot

    def _memory_readout(
        self,
        features: PixelFeatures,
        keys: KeyProjection,
        key_all: torch.Tensor,
        shrink_all: torch.Tensor,
        values: list[torch.Tensor],
        t: int,
    ) -> tuple[PixelFeatures, torch.Tensor]:
        """Frame ``t``'s features and its readout of the memory frames drawn for it."""
        b = key_all.shape[0]
        refs = self._reference_frames(t, b)
        index = torch.as_tensor(refs, device=key_all.device)  # (B, k)
        rows = torch.arange(b, device=key_all.device).unsqueeze(1)
        memory_key = key_all[rows, index].permute(0, 2, 1, 3).flatten(2)
        memory_shrinkage = shrink_all[rows, index].permute(0, 2, 1, 3).flatten(2)
        memory_value = torch.stack(
            [torch.stack([values[r][i] for r in refs[i]], dim=2) for i in range(b)]
        ).flatten(3)
        frame = _frame(features, b, t)
        query = KeyProjection(
            _pick(keys.key, b, t), _pick(keys.shrinkage, b, t), _pick(keys.selection, b, t)
        )
        readout = self.model.read_memory(
            query, memory_key, memory_shrinkage, memory_value, top_k=None
        )
        return frame, readout

    def _predict_frame(
        self,
        frame: PixelFeatures,
        readout: torch.Tensor,
        sensory: torch.Tensor,
        last_mask: torch.Tensor,
        target: torch.Tensor,
        valid: torch.Tensor,
        valid_bg: torch.Tensor,
        fraction: float,
        is_last: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, FrameLosses]:
        """Segment one frame: new sensory memory, (B, 1 + N, H, W) probabilities, losses."""
        model = self.model
        aux = model.aux_logits(frame, sensory)
        aux_agg, _ = model.aggregate(mask_absent_objects(aux, valid), upsample=16)
        sensory, logits = model.segment(
            frame, readout, sensory, last_mask, update_sensory=not is_last
        )
        agg, _ = model.aggregate(mask_absent_objects(logits, valid))
        agg = mask_absent_objects(agg, valid_bg)
        prob = torch.softmax(agg.float(), dim=1)
        terms = frame_losses(
            agg,
            prob,
            mask_absent_objects(aux_agg, valid_bg),
            target,
            valid,
            fraction=fraction,
            bootstrap_per_sample=self.hparams.bootstrap_per_sample,
            dice_padded_slots=self.hparams.dice_padded_slots,
        )
        return sensory, prob, terms

    def _weighted(self, terms: FrameLosses) -> torch.Tensor:
        return terms.total(dice_weight=self.hparams.dice_weight, aux_weight=self.hparams.aux_weight)

    def _reference_frames(self, t: int, batch: int) -> list[list[int]]:
        """Memory frames read when predicting frame ``t``, per sample: all earlier frames if
        there are at most ``num_ref_frames``, else a random draw of that many of them — per
        sample from frames 0..t-1 (``ref_frames_per_sample``, published), or frame 0 plus one
        draw from frames 1..t-1 shared by the batch."""
        k = self.hparams.num_ref_frames
        if t <= k:
            return [list(range(t))] * batch
        if self.hparams.ref_frames_per_sample:
            return [torch.randperm(t)[:k].sort().values.tolist() for _ in range(batch)]
        others = (torch.randperm(t - 1)[: k - 1] + 1).sort().values
        return [[0, *others.tolist()]] * batch

    # -- Lightning hooks --------------------------------------------------------------------

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        frames, masks = batch["frames"], batch["masks"]
        out = self.unroll(frames, masks, batch["num_objects"])
        if not torch.isfinite(out.loss):
            raise FloatingPointError(
                f"non-finite training loss {float(out.loss)} at step {self.global_step}"
            )
        b = frames.shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=b)
        for name, value in out.terms.items():
            self.log(f"train/{name}", value, batch_size=b)
        self.log("train/bootstrap_fraction", out.fraction, batch_size=b)
        if self.trainer is not None and self.trainer.optimizers:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.log("train/lr", lr, batch_size=b)
        self._log_throughput(b)
        every = self.hparams.image_log_every
        if every and self.global_step % every == 0:
            self._log_images(frames, masks, out.prob)
        return out.loss

    def _log_throughput(self, batch_size: int) -> None:
        now = time.perf_counter()
        if self._last_step_time is not None:
            elapsed = now - self._last_step_time
            world = self.trainer.world_size if self.trainer is not None else 1
            if elapsed > 0:
                self.log("train/throughput", batch_size * world / elapsed, batch_size=batch_size)
        self._last_step_time = now

    def _log_images(self, frames: torch.Tensor, masks: torch.Tensor, prob: torch.Tensor) -> None:
        if self.trainer is None or not self.trainer.is_global_zero:
            return

        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                grid = clip_grid(frames[0], masks[0], prob[0].argmax(dim=1))
                logger.experiment.add_image("train/clip", grid, self.global_step)

    def on_train_epoch_start(self) -> None:
        self._last_step_time = None


# -- visualisation ---------------------------------------------------------------------------


def colorize(labels: torch.Tensor) -> torch.Tensor:
    """Integer label maps (..., H, W) → RGB (..., 3, H, W) in [0, 1]."""
    colors = torch.from_numpy(davis_palette()).float().div(255).to(labels.device)
    return colors[labels.long()].movedim(-1, -3)


def clip_grid(frames: torch.Tensor, masks: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """One image (3, 3·H, T·W): frames / ground truth / predictions (frame 0: the input).

    Args:
        frames: (T, 3, H, W) normalised; masks: (T, H, W) labels; predicted: (T-1, H, W).
    """

    rgb = denormalise_frames(frames.detach().float().cpu()).clamp(0, 1)
    gt = masks.detach().cpu().long()
    pred = torch.cat([gt[:1], predicted.detach().cpu().long()], dim=0)
    rows = [rgb, 0.5 * rgb + 0.5 * colorize(gt), 0.5 * rgb + 0.5 * colorize(pred)]
    return torch.cat([torch.cat(list(row), dim=-1) for row in rows], dim=-2)


def _plain(value: Any) -> Any:
    """Convert OmegaConf containers (or anything nested) into dicts / lists / scalars."""
    try:
        if isinstance(value, DictConfig | ListConfig):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
