"""Training losses: bootstrap schedule, bootstrapped CE, dice, padded objects."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from deva.modeling.losses import (
    BootstrapSchedule,
    bootstrapped_cross_entropy,
    dice_loss,
    frame_losses,
    mask_absent_objects,
)
from deva.modeling.propagation import PropagationModel


def test_bootstrap_schedule_values() -> None:
    schedule = BootstrapSchedule(start_warm=10_000, end_warm=35_000, final_fraction=0.3)
    assert schedule.fraction(0) == 1.0
    assert schedule.fraction(9_999) == 1.0
    assert schedule.fraction(10_000) == pytest.approx(1.0)
    assert schedule.fraction(22_500) == pytest.approx(0.65)
    assert schedule.fraction(35_000) == pytest.approx(0.3)
    assert schedule.fraction(150_000) == pytest.approx(0.3)
    fractions = [schedule.fraction(s) for s in range(0, 40_000, 1000)]
    assert all(a >= b for a, b in itertools.pairwise(fractions))


def test_bootstrap_schedule_scaled_to_stage_length() -> None:
    assert BootstrapSchedule.scaled(150_000) == BootstrapSchedule(10_000, 35_000, 0.3)
    static = BootstrapSchedule.scaled(80_000)
    assert (static.start_warm, static.end_warm) == (5_333, 18_667)
    explicit = BootstrapSchedule.scaled(1000, start_warm=0, end_warm=0)
    assert explicit.fraction(0) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        BootstrapSchedule(start_warm=10, end_warm=5)


def test_bootstrapped_ce_keeps_the_hardest_pixels() -> None:
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    raw = F.cross_entropy(logits, target, reduction="none").flatten(1)  # (2, 20)
    assert bootstrapped_cross_entropy(logits, target, 1.0) == pytest.approx(raw.mean().item())
    # published: each sample's own hardest int(20 · 0.3) = 6 pixels, the two means averaged
    per_sample = raw.sort(dim=1, descending=True).values[:, :6].mean(1).mean()
    assert bootstrapped_cross_entropy(logits, target, 0.3) == pytest.approx(per_sample.item())
    top = raw.flatten().sort(descending=True).values[:12]
    batch = bootstrapped_cross_entropy(logits, target, 0.3, per_sample=False)
    assert batch == pytest.approx(top.mean().item())
    assert bootstrapped_cross_entropy(logits, target, 0.3) >= raw.mean()


def test_bootstrapped_ce_per_sample_by_hand() -> None:
    """Two samples of 4 pixels with known losses: per sample, the top half of each; over
    the batch, the top half of all eight (here all of the first sample)."""
    # logits for 2 classes with target 0: the loss of a pixel is softplus(l1 - l0)
    gaps = torch.tensor([[4.0, 3.0, 2.0, 1.0], [-1.0, -2.0, -3.0, -4.0]])
    logits = torch.stack([torch.zeros_like(gaps), gaps], dim=1).view(2, 2, 1, 4)
    target = torch.zeros(2, 1, 4, dtype=torch.long)
    loss = F.softplus(gaps)
    per_sample = (loss[0, :2].mean() + loss[1, :2].mean()) / 2
    assert bootstrapped_cross_entropy(logits, target, 0.5).item() == pytest.approx(
        per_sample.item()
    )
    whole_batch = bootstrapped_cross_entropy(logits, target, 0.5, per_sample=False)
    assert whole_batch.item() == pytest.approx(loss[0].mean().item())


def test_dice_hand_made_cases() -> None:
    target = torch.zeros(1, 2, 4, 4)
    target[0, 0, :2, :2] = 1  # 4 pixels
    target[0, 1, 2:, 2:] = 1  # 4 pixels
    assert dice_loss(target.clone(), target).item() == pytest.approx(0.0)
    swapped = target.flip(1)  # each prediction disjoint from its object
    assert dice_loss(swapped, target).item() == pytest.approx(1 - 1 / 9)
    half = target.clone()
    half[0, 0] = 0.5 * target[0, 0]  # |P∩G| = 2, |P| = 2, |G| = 4
    expected = ((1 - 5 / 7) + 0.0) / 2
    assert dice_loss(half, target).item() == pytest.approx(expected)
    valid = torch.tensor([[False, True]])
    assert dice_loss(half, target, valid).item() == pytest.approx(0.0)


def test_dice_over_padded_slots_by_hand() -> None:
    """A batch of 2 samples × 2 slots, the second sample's second slot padded (empty in
    prediction and ground truth): published, the mean over all 4 slots (the padded one adds
    0); with ``valid``, over the 3 real objects."""
    target = torch.zeros(2, 2, 2, 2)
    target[0, 0, 0] = 1  # 2 pixels
    target[0, 1, 1] = 1
    target[1, 0, :, 0] = 1
    prob = torch.zeros(2, 2, 2, 2)
    prob[0, 0, 0, 0] = 1.0  # |P∩G| = 1, |P| = 1, |G| = 2 → 1 − 3/4
    prob[0, 1] = target[0, 1]  # exact → 0
    prob[1, 0, 0] = 1.0  # |P∩G| = 1, |P| = 2, |G| = 2 → 1 − 3/5
    losses = [1 - 3 / 4, 0.0, 1 - 3 / 5]
    assert dice_loss(prob, target).item() == pytest.approx((sum(losses) + 0.0) / 4)
    valid = torch.tensor([[True, True], [True, False]])
    assert dice_loss(prob, target, valid).item() == pytest.approx(sum(losses) / 3)


def test_absent_object_changes_nothing() -> None:
    """A padded object (masked to −inf) leaves background, probabilities and losses intact
    (the dice over real objects; the published dice over all slots is diluted by it)."""
    logits2 = torch.randn(1, 2, 8, 8)
    logits3 = torch.cat([logits2, torch.randn(1, 1, 8, 8) * 5], dim=1)
    valid2 = torch.tensor([[True, True]])
    valid3 = torch.tensor([[True, True, False]])
    target = torch.randint(0, 3, (1, 32, 32))
    results = []
    for logits, valid in ((logits2, valid2), (logits3, valid3)):
        agg, _ = PropagationModel.aggregate(mask_absent_objects(logits, valid))
        with_bg = torch.cat([valid.new_ones(1, 1), valid], dim=1)
        agg = mask_absent_objects(agg, with_bg)
        prob = torch.softmax(agg, dim=1)
        terms = frame_losses(agg, prob, agg, target, valid, fraction=0.5, dice_padded_slots=False)
        results.append((prob[:, :3], terms))
    (p2, t2), (p3, t3) = results
    torch.testing.assert_close(p2, p3)
    assert torch.all(p3.sum(1) - 1 < 1e-5)
    for name in ("ce", "dice", "aux"):
        assert getattr(t2, name).item() == pytest.approx(getattr(t3, name).item(), rel=1e-6)
        assert math.isfinite(getattr(t3, name).item())


def test_masked_logits_have_finite_gradients() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    valid = torch.tensor([[True, False, False], [True, True, True]])
    agg, _ = PropagationModel.aggregate(mask_absent_objects(logits, valid))
    agg = mask_absent_objects(agg, torch.cat([valid.new_ones(2, 1), valid], dim=1))
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[1, :4] = 3
    prob = torch.softmax(agg, dim=1)
    frame_losses(agg, prob, None, target, valid, fraction=0.3).total().backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad[0, 1:] == 0)
