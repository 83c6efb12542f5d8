"""Two-process CPU DDP (gloo, ``ddp_spawn``) through the real entry point.

``strategy=ddp`` would re-launch the current command (pytest itself) for the second rank, so
the test uses ``ddp_spawn``; ``tools/train.py trainer=ddp`` uses the ``ddp`` launcher.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from deva.cli.train import train
from deva.config import compose
from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel
from deva.training.predictor import Predictor
from deva.training.tasks.vos import SyntheticVideos, VOSTask
from tests.helpers import REPO

TINY = PropagationConfig.preset("tiny")

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


class DumpRankState(Callback):
    """Each rank saves its parameters, step and validation results when training ends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_train_end(self, trainer, pl_module) -> None:
        predictor = next(c for c in trainer.callbacks if isinstance(c, Predictor))
        flat = torch.cat([p.detach().flatten() for p in pl_module.model.parameters()])
        torch.save(
            {
                "params": flat,
                "step": trainer.global_step,
                "world": trainer.world_size,
                "validation": dict(predictor.results),
                "per_device_batch": trainer.train_dataloader.batch_size,
            },
            self.folder / f"rank{trainer.global_rank}.pt",
        )


def test_two_process_ddp_keeps_ranks_in_sync(tmp_path: Path) -> None:
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    cfg = compose(
        "train",
        [
            "debug=fast",
            f"output_dir={tmp_path / 'run'}",
            "trainer.fast_dev_run=false",
            "trainer.devices=2",
            "trainer.strategy=ddp_spawn",
            "stage.iterations=3",
            "stage.batch_size=2",  # global: one sample per process
            "stage.lr=1e-3",
            "checkpoint.every_n_steps=0",
            "export.weights=false",
            "validation.at_start=false",
            "validation.at_end=true",
            "validation.every_n_steps=0",
        ],
    )
    torch.manual_seed(cfg.seed)  # train() seeds the same way before building the network
    initial = torch.cat([p.detach().flatten() for p in PropagationModel(TINY).parameters()])
    train(cfg, callbacks=[DumpRankState(dumps)])
    rank0 = torch.load(dumps / "rank0.pt", weights_only=True)
    rank1 = torch.load(dumps / "rank1.pt", weights_only=True)
    assert rank0["world"] == rank1["world"] == 2
    assert rank0["step"] == rank1["step"] == 3
    assert rank0["per_device_batch"] == rank1["per_device_batch"] == 1
    torch.testing.assert_close(rank0["params"], rank1["params"], rtol=0, atol=0)
    assert rank0["params"].shape == initial.shape
    assert not torch.equal(rank0["params"], initial)  # the ranks did train

    # Each rank validated one of the two videos; the synced metric holds both on both ranks.
    assert rank0["validation"] == rank1["validation"]
    model = PropagationModel(TINY)
    torch.nn.utils.vector_to_parameters(rank0["params"], model.parameters())
    sets = cfg.validation.sets.synthetic
    videos = SyntheticVideos(
        sets.num_videos, seed=sets.seed, num_frames=sets.num_frames, height=sets.height,
        width=sets.width,
    )  # fmt: skip
    task = VOSTask("synthetic", videos, shorter_side=-1)
    metric = task.make_metric()
    for index in range(len(task)):
        task.process(model, index, metric)
    single = task.summarize(metric)
    assert rank0["validation"]["val/synthetic/num_objects"] == single["num_objects"]
    # (J&F of a barely trained model moves with thread counts: ties at p = 0.5 flip)
    assert rank0["validation"]["val/synthetic/jf"] == pytest.approx(single["jf"], abs=0.02)


def test_torchrun_launch_of_two_cpu_processes(tmp_path: Path) -> None:
    """``torchrun --nproc_per_node=2 tools/train.py trainer.strategy=ddp``: Lightning takes the
    ranks from torchrun's environment; the start-up line shows the global-batch arithmetic."""
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(REPO / "tools" / "train.py"), "debug=fast", f"output_dir={out}",
        "trainer.fast_dev_run=false", "trainer.accelerator=cpu", "trainer.devices=2",
        "trainer.strategy=ddp", "trainer.precision=32-true", "stage.iterations=2",
        "stage.batch_size=2", "export.weights=false", "validation.at_start=false",
        "validation.at_end=false", "validation.every_n_steps=0",
    ]  # fmt: skip
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "global batch 2 = 1 per device × 2 process(es) × 1 accumulation" in result.stdout
    assert result.stdout.count("global step: 2") == 1  # the summary comes from rank 0 only
    saved = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 2
