"""Propagation training: the real entry point on shrunken configs, resume, the unroll."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback
from torch.utils.data import default_collate

from deva.cli.train import train
from deva.config import compose
from deva.config.builder.tasks import validation_tasks
from deva.config.builder.training import per_device_batch_size
from deva.data.synthetic_clips import SyntheticClipDataset
from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel
from deva.training.callbacks import MaxSkipCurriculum
from deva.training.module import LRSchedule, PropagationTrainingModule, clip_grid
from deva.training.tasks.base import rank_indices
from deva.training.tasks.vos import SyntheticVideos, VOSTask

TINY = PropagationConfig.preset("tiny").to_dict()


pytestmark = pytest.mark.usefixtures("one_thread")


def shrunk(tmp_path: Path, *extra: str) -> Any:
    """The real ``train`` config, shrunk to a few CPU seconds."""
    return compose("train", ["debug=fast", f"output_dir={tmp_path}", *extra])


def steps(n: int, *extra: str) -> list[str]:
    """Overrides for a short real run of ``n`` steps (instead of fast_dev_run)."""
    return [
        "trainer.fast_dev_run=false",
        f"stage.iterations={n}",
        "validation.at_start=false",
        "validation.at_end=false",
        "validation.every_n_steps=0",
        *extra,
    ]


def tiny_batch(num_objects: list[int], size: int = 64, frames: int = 3) -> dict[str, Any]:
    masks = torch.zeros(len(num_objects), frames, size, size, dtype=torch.long)
    for b, k in enumerate(num_objects):
        for obj in range(1, k + 1):
            masks[b, :, 8 * obj : 8 * obj + 12, 5 + 4 * obj : 25 + 4 * obj] = obj
    return {
        "frames": torch.randn(len(num_objects), frames, 3, size, size),
        "masks": masks,
        "num_objects": torch.tensor(num_objects),
    }


# -- entry point -------------------------------------------------------------------------------


def test_fast_dev_run_through_the_entry_point(tmp_path: Path) -> None:
    result = train(shrunk(tmp_path))
    assert result["global_step"] == 1
    assert result["metrics"]["train/loss"] > 0
    jf = result["validation"]["val/synthetic/jf"]
    assert 0.0 <= jf <= 1.0
    assert (tmp_path / "config.yaml").is_file()


class Capture(Callback):
    """Records the state a (resumed) run starts from and the losses of every step."""

    def __init__(self) -> None:
        self.start: dict[str, Any] = {}
        self.losses: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = {
            "step": trainer.global_step,
            "optimizer": copy.deepcopy(trainer.optimizers[0].state_dict()),
            "scheduler": trainer.lr_scheduler_configs[0].scheduler.state_dict(),
            "params": {k: v.detach().clone() for k, v in pl_module.state_dict().items()},
            "max_skip": trainer.datamodule.max_skip,
        }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_kill_and_resume_continues_exactly(tmp_path: Path) -> None:
    # A 4-iteration run "killed" after 2 steps (checkpoint every 2 steps) ...
    first = train(
        shrunk(
            tmp_path,
            *steps(4, "trainer.max_steps=2", "checkpoint.every_n_steps=2"),
            "logger=tensorboard",
            "image_log_every=1",
        )
    )
    assert first["global_step"] == 2
    ckpt_path = first["last_checkpoint"]
    saved = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 2
    # ... is resumed from its checkpoint and continues at the same step with the same state.
    capture = Capture()
    second = train(shrunk(tmp_path, *steps(4), f"ckpt_path={ckpt_path}"), callbacks=[capture])
    assert capture.start["step"] == 2
    assert second["global_step"] == 4
    assert capture.start["scheduler"]["last_epoch"] == saved["lr_schedulers"][0]["last_epoch"]
    opt_saved = saved["optimizer_states"][0]["state"]
    opt_now = capture.start["optimizer"]["state"]
    assert opt_saved.keys() == opt_now.keys() and opt_now
    for index, state in opt_saved.items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(opt_now[index][key], state[key])
    for key, value in saved["state_dict"].items():
        torch.testing.assert_close(capture.start["params"][key], value)
    # curriculum of the synthetic stage (2, 3, 4, 2 at 10/30/80 %): step 2 of 4 → 4
    assert capture.start["max_skip"] == 4
    # TensorBoard scalars and image grids were written by the first run.
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


def test_checkpoint_alone_rebuilds_the_model(tmp_path: Path) -> None:
    result = train(shrunk(tmp_path, *steps(1)))
    ckpt = Path(result["last_checkpoint"])
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain containers only
    hparams = raw["hyper_parameters"]
    assert hparams["model_config"] == TINY
    assert hparams["train_config"]["stage"]["name"] == "quick"
    assert (ckpt.parent / "config.yaml").is_file() and (tmp_path / "config.yaml").is_file()
    model = PropagationModel.from_pretrained(ckpt)
    module = PropagationTrainingModule.load_from_checkpoint(ckpt, map_location="cpu")
    for key, value in module.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    exported = PropagationModel.from_pretrained(result["weights"])
    assert exported.config == model.config


def test_loss_goes_down_when_overfitting_one_clip(tmp_path: Path) -> None:
    capture = Capture()
    overrides = steps(
        30,
        "data.fixed_seed=0",
        "data.samples_per_epoch=2",
        "data.augment=false",
        "stage.lr=1e-3",
        "stage.schedule=constant",
        "stage.warmup_steps=0",
        "stage.max_skip=null",  # the curriculum would change the (fixed-seed) clips
        "stage.deep_update_prob=0",
        "stage.loss.start_warm=1000",  # plain cross-entropy throughout
        "stage.loss.end_warm=1000",
        "checkpoint.every_n_steps=0",
        "export.weights=false",
    )
    train(shrunk(tmp_path, *overrides), callbacks=[capture])
    losses = capture.losses
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, losses


def test_global_batch_is_divided_over_processes() -> None:
    assert per_device_batch_size(16, 8) == 2
    assert per_device_batch_size(16, 2, accumulate=2) == 4
    with pytest.raises(ValueError, match="multiple"):
        per_device_batch_size(16, 3)


def test_config_groups_compose() -> None:
    video = compose("train", ["stage=video"])
    assert video.data.source == "video" and video.stage.num_frames == 8
    assert video.stage.loss.start_warm == 10_000 and video.stage.milestones == [120_000, 140_000]
    assert compose("train", ["stage=video", "data=shards"]).data.source == "shards"
    assert compose("train", ["stage=static"]).stage.num_ref_frames == 2
    # the documented cluster command: stage=video trainer.devices=8 -> GPU DDP, published model
    cluster = compose("train", ["stage=video", "trainer.devices=8"])
    assert (cluster.trainer.accelerator, cluster.trainer.strategy) == ("gpu", "ddp")
    assert cluster.trainer.devices == 8 and cluster.model.preset == "published"
    assert compose("train", ["stage=video", "trainer=cpu"]).trainer.accelerator == "cpu"
    default = compose("train", [])
    assert default.model.preset == "small" and default.data.source == "synthetic"
    assert default.trainer.gradient_clip_val == 3.0


# -- the unroll ----------------------------------------------------------------------------------


def test_padded_objects_do_not_change_the_loss() -> None:
    """Predictions never depend on the padding; the loss does not either with the dice over
    real objects (the published dice averages over every slot)."""
    module = PropagationTrainingModule(TINY, num_ref_frames=2, dice_padded_slots=False).train()
    batch = tiny_batch([2, 1])
    results = []
    for pad in (None, 3, 5):
        module.hparams.pad_objects_to = pad
        torch.manual_seed(3)
        out = module.unroll(batch["frames"], batch["masks"], batch["num_objects"], step=0)
        results.append(out)
    for other in results[1:]:
        assert other.loss.item() == pytest.approx(results[0].loss.item(), rel=1e-5)
        torch.testing.assert_close(other.prob[:, :, :3], results[0].prob, rtol=1e-4, atol=1e-5)
        assert torch.all(other.prob[:, :, 3:] == 0)


def test_every_parameter_gets_a_finite_gradient() -> None:
    module = PropagationTrainingModule(TINY, num_ref_frames=2).train()
    batch = tiny_batch([2, 3], frames=4)
    out = module.unroll(batch["frames"], batch["masks"], batch["num_objects"], step=0)
    out.loss.backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())
    # frozen batch-norm: training mode elsewhere, eval mode for batch-norm layers
    assert module.model.pixel_encoder.res2.training
    assert not module.model.pixel_encoder.bn1.training


def test_reference_frames_are_drawn_per_sample_as_published() -> None:
    module = PropagationTrainingModule(TINY, num_ref_frames=3)
    assert module._reference_frames(2, batch=2) == [[0, 1], [0, 1]]
    torch.manual_seed(0)
    draws = [module._reference_frames(7, batch=4) for _ in range(50)]
    for refs in (r for batch in draws for r in batch):
        assert len(set(refs)) == 3 and all(0 <= r < 7 for r in refs) and refs == sorted(refs)
    assert any(0 not in r for batch in draws for r in batch)  # frame 0 is not guaranteed
    assert any(len({tuple(r) for r in batch}) > 1 for batch in draws)  # samples differ
    seen = torch.zeros(7)
    for refs in (r for batch in draws for r in batch):
        seen[refs] += 1
    assert seen.min() > 0.5 * seen.mean()  # every earlier frame drawn (uniform: 3/7 each)


def test_reference_frames_shared_with_the_first_frame() -> None:
    module = PropagationTrainingModule(TINY, num_ref_frames=3, ref_frames_per_sample=False)
    assert module._reference_frames(2, batch=2) == [[0, 1], [0, 1]]
    for t in range(4, 8):
        refs = module._reference_frames(t, batch=3)
        assert refs[0] == refs[1] == refs[2]
        assert len(refs[0]) == 3 and refs[0][0] == 0 and all(0 < r < t for r in refs[0][1:])
        assert len(set(refs[0])) == 3


def test_per_sample_memory_frames_read_each_samples_own_frames() -> None:
    """The readout of a sample with its own draw equals that sample alone in a batch of one
    with the same draw (the gather picks frames per sample)."""
    module = PropagationTrainingModule(TINY, num_ref_frames=2).eval()
    batch = tiny_batch([2, 2], frames=5)
    draws = iter([[[0, 2], [1, 3]], [[1, 3]]])
    module._reference_frames = lambda t, b: next(draws) if t == 4 else [list(range(min(t, 2)))] * b
    with torch.no_grad():
        model = module.model
        frames = batch["frames"]
        features = model.encode_image(frames.flatten(0, 1))
        keys = model.project_key(features)
        hw = keys.key.shape[-2:]
        key_all = keys.key.view(2, 5, -1, hw[0] * hw[1])
        shrink_all = keys.shrinkage.view(2, 5, 1, hw[0] * hw[1])
        values = [torch.randn(2, 2, model.config.value_dim, *hw) for _ in range(4)]
        _, both = module._memory_readout(features, keys, key_all, shrink_all, values, 4)
        features1 = model.encode_image(frames[1:].flatten(0, 1))
        keys1 = model.project_key(features1)
        _, alone = module._memory_readout(
            features1, keys1, key_all[1:], shrink_all[1:], [v[1:] for v in values], 4
        )
    torch.testing.assert_close(both[1:], alone, rtol=1e-4, atol=1e-5)


def test_lr_schedules() -> None:
    step = LRSchedule("step", milestones=[10, 20], gamma=0.1)
    assert [step(0), step(10), step(25)] == pytest.approx([1, 0.1, 0.01])
    poly = LRSchedule("poly", total_steps=100, power=0.9)
    assert poly(50) == pytest.approx(0.5**0.9) and poly(100) == 0
    assert LRSchedule("constant", warmup_steps=4)(1) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        LRSchedule("cosine")


def test_max_skip_curriculum_values() -> None:
    curriculum = MaxSkipCurriculum()
    assert [curriculum.value_at(s, 100) for s in (0, 10, 29, 30, 79, 80, 100)] == [
        5,
        10,
        10,
        15,
        15,
        5,
        5,
    ]


def test_synthetic_clips_follow_the_sample_contract() -> None:
    data = SyntheticClipDataset(
        length=4, num_frames=3, crop_size=64, video_frames=8, height=96, width=96,
        min_object_pixels=20, fixed_seed=0,
    )  # fmt: skip
    sample = data[1]
    assert sample["frames"].shape == (3, 3, 64, 64) and sample["frames"].dtype == torch.float32
    assert sample["masks"].shape == (3, 64, 64) and sample["masks"].dtype == torch.int64
    assert 1 <= sample["num_objects"] <= 3
    assert int(sample["masks"].max()) <= sample["num_objects"]
    torch.testing.assert_close(data[1]["frames"], sample["frames"])  # fixed seed


def test_clip_grid_shape() -> None:
    batch = tiny_batch([2], size=32, frames=3)
    grid = clip_grid(batch["frames"][0], batch["masks"][0], batch["masks"][0, 1:])
    assert grid.shape == (3, 3 * 32, 3 * 32)
    assert grid.min() >= 0 and grid.max() <= 1


# -- the Predictor --------------------------------------------------------------------------------


def test_videos_are_split_over_ranks_without_duplicates() -> None:
    for count in (1, 5, 8):
        parts = [list(rank_indices(count, r, 3)) for r in range(3)]
        assert sorted(i for part in parts for i in part) == list(range(count))


def test_vos_task_on_memory_and_folder_videos(tmp_path: Path) -> None:
    from deva.data.synthetic import SyntheticVideoConfig, write_synthetic_dataset

    model = PropagationModel(PropagationConfig.preset("tiny"))
    settings = {"num_frames": 4, "height": 48, "width": 64}
    memory = VOSTask("mem", SyntheticVideos(2, seed=7, **settings), shorter_side=-1)
    metric = memory.make_metric()
    for i in range(len(memory)):
        memory.process(model, i, metric)
    values = memory.summarize(metric)
    assert set(values) == {"jf", "j", "f", "num_objects"}
    assert all(0 <= values[k] <= 1 for k in ("jf", "j", "f")) and values["num_objects"] >= 2

    write_synthetic_dataset(tmp_path / "set", SyntheticVideoConfig(**settings), num_videos=2)
    (folder,) = validation_tasks({"folder": {"type": "generic", "root": str(tmp_path / "set")}})
    folder.shorter_side = -1
    metric = folder.make_metric()
    for i in range(len(folder)):
        folder.process(model, i, metric)
    assert 0 <= folder.summarize(metric)["jf"] <= 1


def test_collated_synthetic_batch_trains_one_step() -> None:
    data = SyntheticClipDataset(
        length=2, num_frames=3, crop_size=64, video_frames=8, height=96, width=96,
        min_object_pixels=20, fixed_seed=1,
    )  # fmt: skip
    batch = default_collate([data[0], data[1]])
    module = PropagationTrainingModule(TINY, num_ref_frames=2)
    out = module.unroll(batch["frames"], batch["masks"], batch["num_objects"], step=0)
    assert torch.isfinite(out.loss) and out.prob.shape[:2] == (2, 2)


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_batchnorm_keeps_running_statistics(tmp_path: Path, freeze: bool) -> None:
    cfg = shrunk(
        tmp_path, *steps(2, f"freeze_batchnorm={str(freeze).lower()}", "export.weights=true")
    )
    before = PropagationModel(PropagationConfig.preset("tiny")).state_dict()
    result = train(cfg)
    after = PropagationModel.from_pretrained(result["weights"]).state_dict()
    key = "pixel_encoder.bn1.running_mean"
    assert torch.equal(before[key], torch.zeros_like(before[key]))
    assert torch.equal(after[key], before[key]) is freeze
