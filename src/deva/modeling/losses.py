"""Training losses of the propagation model.

Per predicted frame the loss is

    bootstrapped cross-entropy + dice + 0.1 × auxiliary cross-entropy,

all computed on soft-aggregated predictions (background + N objects, see
:meth:`deva.modeling.propagation.PropagationModel.aggregate`).

- **Bootstrapped cross-entropy**: the plain pixel mean before ``start_warm``; afterwards only
  the hardest ``fraction`` of each sample's pixels (highest loss) is averaged, the fraction
  falling linearly from 1 to ``final_fraction`` (0.3) between ``start_warm`` and ``end_warm``
  (option: the hardest pixels of the whole batch).
- **Dice** over the object channels, one value per (sample, object slot), averaged over all
  slots as published, padded ones included (they add 0; option: over real objects only, so
  that the term does not shrink with the padding of a batch).
- **Auxiliary cross-entropy** on the stride-16 logits predicted from the sensory memory
  alone (``sensory_linear_pred``). Choice: the aggregated auxiliary *logits* are upsampled
  bilinearly to the full resolution (×16) and compared with the full-resolution target,
  rather than down-sampling the label map (nearest-neighbour down-sampling of labels drops
  thin objects and shifts boundaries; upsampling logits keeps the target exact).

Shape legend: B batch, N objects (padded), H×W image size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Published recipe (video stage, 150k iterations): warm-up from 10k to 35k iterations.
REFERENCE_ITERATIONS = 150_000
REFERENCE_START_WARM = 10_000
REFERENCE_END_WARM = 35_000


@dataclass(frozen=True)
class BootstrapSchedule:
    """Fraction of the hardest pixels kept by the bootstrapped cross-entropy at a step.

    1.0 (full cross-entropy) before ``start_warm``, linear from 1.0 to ``final_fraction``
    between ``start_warm`` and ``end_warm``, ``final_fraction`` afterwards.
    """

    start_warm: int = REFERENCE_START_WARM
    end_warm: int = REFERENCE_END_WARM
    final_fraction: float = 0.3

    def __post_init__(self) -> None:
        if self.start_warm < 0 or self.end_warm < self.start_warm:
            raise ValueError(
                f"need 0 <= start_warm <= end_warm, got {self.start_warm} and {self.end_warm}"
            )
        if not 0 < self.final_fraction <= 1:
            raise ValueError(f"final_fraction must lie in (0, 1], got {self.final_fraction}")

    @classmethod
    def scaled(
        cls,
        iterations: int,
        *,
        start_warm: int | None = None,
        end_warm: int | None = None,
        final_fraction: float = 0.3,
    ) -> BootstrapSchedule:
        """The published warm-up (10k → 35k of 150k) scaled to ``iterations``; explicit
        ``start_warm`` / ``end_warm`` win."""
        if start_warm is None:
            start_warm = round(iterations * REFERENCE_START_WARM / REFERENCE_ITERATIONS)
        if end_warm is None:
            end_warm = round(iterations * REFERENCE_END_WARM / REFERENCE_ITERATIONS)
        return cls(int(start_warm), int(max(end_warm, start_warm)), float(final_fraction))

    def fraction(self, step: int) -> float:
        """Fraction of pixels kept at global step ``step``."""
        if step < self.start_warm:
            return 1.0
        if step >= self.end_warm:
            return self.final_fraction
        progress = (step - self.start_warm) / (self.end_warm - self.start_warm)
        return 1.0 - (1.0 - self.final_fraction) * progress


def bootstrapped_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, fraction: float = 1.0, *, per_sample: bool = True
) -> torch.Tensor:
    """Mean cross-entropy over the hardest ``fraction`` of the pixels.

    ``per_sample`` (the published definition): each sample keeps its own hardest
    ``int(H·W·fraction)`` pixels, and the per-sample means are averaged. Otherwise the
    hardest pixels are chosen over the whole batch (a sample with many hard pixels then
    weighs more). Equal for ``fraction`` 1.

    Args:
        logits: (B, C, H, W) class logits (background + objects).
        target: (B, H, W) int64 labels in [0, C).
        fraction: in (0, 1]; 1 is the plain mean.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    raw = F.cross_entropy(logits.float(), target, reduction="none")
    raw = raw.flatten(1) if per_sample else raw.flatten().unsqueeze(0)
    if fraction >= 1:
        return raw.mean()
    k = max(1, int(raw.shape[1] * fraction))
    return raw.topk(k, dim=1, sorted=False).values.mean(dim=1).mean()


def dice_loss(
    prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft dice loss ``1 − (2|P∩G| + 1) / (|P| + |G| + 1)``, one value per (sample, object
    slot), averaged over all B × N slots (``valid`` None: the published definition; a padded
    slot, empty in prediction and ground truth, adds 0) or over the ``valid`` ones only.

    Args:
        prob: (B, N, H, W) object probabilities (background excluded).
        target: (B, N, H, W) binary ground truth per object.
        valid: (B, N) bool, which objects exist, to leave padded slots out of the mean.
    """
    if prob.shape != target.shape:
        raise ValueError(f"prob {tuple(prob.shape)} and target {tuple(target.shape)} differ")
    prob = prob.float().flatten(2)
    target = target.float().flatten(2)
    numerator = 2 * (prob * target).sum(-1) + 1
    denominator = prob.sum(-1) + target.sum(-1) + 1
    loss = 1 - numerator / denominator
    if valid is None:
        return loss.mean()
    valid = valid.to(loss.device, torch.bool)
    if not valid.any():
        return loss.sum() * 0
    return loss[valid].mean()


def mask_absent_objects(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Set the logits of padded objects to −inf: (B, N, ...) with ``valid`` (B, N).

    Before :meth:`~deva.modeling.propagation.PropagationModel.aggregate` this makes a padded
    object's probability exactly 0 (the background product is unchanged); after aggregation,
    on the (B, 1 + N, ...) logits (pass ``valid`` with a leading True for the background),
    it removes the channel from the softmax.
    """
    shape = valid.shape + (1,) * (logits.ndim - valid.ndim)
    return logits.masked_fill(~valid.to(logits.device, torch.bool).view(shape), float("-inf"))


@dataclass
class FrameLosses:
    """Loss terms of one frame (scalars)."""

    ce: torch.Tensor
    dice: torch.Tensor
    aux: torch.Tensor

    def total(self, *, dice_weight: float = 1.0, aux_weight: float = 0.1) -> torch.Tensor:
        return self.ce + dice_weight * self.dice + aux_weight * self.aux


def frame_losses(
    logits: torch.Tensor,
    prob: torch.Tensor,
    aux_logits: torch.Tensor | None,
    target: torch.Tensor,
    valid: torch.Tensor,
    *,
    fraction: float = 1.0,
    bootstrap_per_sample: bool = True,
    dice_padded_slots: bool = True,
) -> FrameLosses:
    """All loss terms of one predicted frame.

    Args:
        logits: (B, 1 + N, H, W) aggregated logits, padded objects already at −inf.
        prob: (B, 1 + N, H, W) their softmax.
        aux_logits: (B, 1 + N, H, W) aggregated, upsampled auxiliary logits, or None.
        target: (B, H, W) int64 labels 0..K (K ≤ N per sample).
        valid: (B, N) bool, which object channels exist.
        fraction: bootstrap fraction of the cross-entropy.
        bootstrap_per_sample: hardest pixels per sample (published) or over the batch.
        dice_padded_slots: dice averaged over all object slots (published) or real objects.
    """
    n = logits.shape[1] - 1
    labels = torch.arange(1, n + 1, device=target.device).view(1, n, 1, 1)
    one_hot = target.unsqueeze(1) == labels
    ce = bootstrapped_cross_entropy(logits, target, fraction, per_sample=bootstrap_per_sample)
    dice = dice_loss(prob[:, 1:], one_hot, None if dice_padded_slots else valid)
    aux = (
        F.cross_entropy(aux_logits.float(), target) if aux_logits is not None else ce.new_zeros(())
    )
    return FrameLosses(ce=ce, dice=dice, aux=aux)
