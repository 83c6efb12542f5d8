"""The metric classes drop into a LightningModule: update in steps, ``log_dict(compute())``."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from deva.metrics import JAndF, SegmentationAndTrackingQuality


class _Scorer(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)  # a module needs parameters for the trainer
        self.jf = JAndF()
        self.stq = SegmentationAndTrackingQuality(num_classes=2, thing_ids=[1])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        pred, gt = batch["pred"][0], batch["gt"][0]
        self.jf.update(pred, gt, sequence_id=batch_idx)
        self.stq.update((pred << 16) + pred, (gt << 16) + gt, sequence_id=batch_idx)

    def on_validation_epoch_end(self) -> None:
        self.log_dict({f"val/{k}": v.float() for k, v in self.jf.compute().items()})
        self.log_dict({f"val/{k}": v.float() for k, v in self.stq.compute().items()})
        self.jf.reset()
        self.stq.reset()


def test_metrics_log_from_a_lightning_module() -> None:
    gt = torch.zeros(4, 8, 8, dtype=torch.long)
    gt[:, 2:6, 2:6] = 1
    half = gt.clone()
    half[:, 2:4, 2:6] = 0
    data = [{"pred": gt.clone(), "gt": gt}, {"pred": half, "gt": gt}]
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(_Scorer(), DataLoader(data, batch_size=1), verbose=False)
    metrics = trainer.callback_metrics
    # Sequence 0 perfect (J = 1), sequence 1 covers half of the object (J = 1/2).
    assert float(metrics["val/J-Mean"]) == pytest.approx(0.75)
    assert float(metrics["val/J&F-Mean"]) < 1.0
    assert 0.0 < float(metrics["val/STQ"]) < 1.0
