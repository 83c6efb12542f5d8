"""Fine-tuning on a folder of your own videos, end to end through ``deva-train``: generated
videos with sparse annotations (``data.roots.generic``), ``stage=finetune`` from saved
weights with gradient accumulation, a resumed run ending bit-identical to an uninterrupted
one, then ``deva-validate`` on held-out videos and the exported ``model.pth`` loaded back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deva.cli import train as train_cli
from deva.cli import validate as validate_cli
from deva.data.synthetic import SyntheticVideoConfig, write_synthetic_dataset
from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel
from deva.modeling.weights import save_weights

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 4


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``mine``: 2 generated videos, every other frame annotated; ``held_out``: 1 fully
    annotated video; ``weights``: a tiny model to fine-tune."""
    root = tmp_path_factory.mktemp("finetune")
    config = SyntheticVideoConfig(num_frames=10, height=64, width=80)
    write_synthetic_dataset(root / "mine", config, num_videos=2, seed=0)
    for mask in (root / "mine" / "Annotations").glob("*/*.png"):
        if int(mask.stem) % 2 == 1:
            mask.unlink()
    write_synthetic_dataset(root / "held_out", config, num_videos=1, seed=9)
    torch.manual_seed(0)
    weights = save_weights(PropagationModel(PropagationConfig.preset("tiny")), root / "tiny.pth")
    return {"mine": root / "mine", "held_out": root / "held_out", "weights": weights}


def finetune_args(folders: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """The documented fine-tuning command, shrunk to a few CPU seconds."""
    return [
        "stage=finetune",
        f"model.weights={folders['weights']}",
        f"data.roots.generic={folders['mine']}",
        f"output_dir={out}",
        "trainer=cpu",
        f"stage.iterations={STEPS}",
        "stage.batch_size=4",
        "stage.accumulate_grad_batches=2",
        "stage.num_frames=4",
        "stage.crop_size=48",
        "data.num_workers=0",
        "data.pin_memory=false",
        "data.persistent_workers=false",
        "data.min_object_pixels=10",
        "validation.at_start=false",
        "validation.at_end=false",
        "validation.every_n_steps=0",
        "checkpoint.every_n_steps=1",
        "logger=none",
        "image_log_every=0",
        "trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false",
        *extra,
    ]


def weights_of(out: Path) -> dict[str, torch.Tensor]:
    saved = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == STEPS
    return saved["state_dict"]


def test_finetune_on_a_folder_resumes_exactly_and_validates(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train_cli.main(finetune_args(folders, whole)) == 0
    assert (
        "global batch 4 = 2 per device × 1 process(es) × 2 accumulation" in capsys.readouterr().out
    )
    # the same run stopped after 2 steps, then resumed from its last checkpoint
    assert train_cli.main(finetune_args(folders, parts, "trainer.max_steps=2")) == 0
    assert train_cli.main(finetune_args(folders, parts, "ckpt_path=last")) == 0
    a, b = weights_of(whole), weights_of(parts)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    start = PropagationModel.from_pretrained(folders["weights"]).state_dict()
    assert any(not torch.equal(a[f"model.{k}"], v) for k, v in start.items()), "nothing learnt"
    config = (whole / "config.yaml").read_text()
    assert "generic:" in config and str(folders["mine"]) in config

    # the result: scored on held-out videos, and loadable for tracking (model.weights=...)
    capsys.readouterr()
    held_out = f"+validation.sets.mine={{type: generic, root: {folders['held_out']}, size: -1}}"
    args = [f"run={whole}", "threads=1", "sets=[mine]", held_out, "tensorboard=false"]
    assert validate_cli.main(args) == 0, capsys.readouterr().err
    scores = json.loads((whole / "validation.json").read_text())
    assert "val/mine/jf" in json.dumps(scores)
    model = PropagationModel.from_pretrained(whole / "model.pth")
    assert model.config == PropagationConfig.preset("tiny")


def test_finetune_without_weights_or_data_is_one_line(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = finetune_args(folders, tmp_path / "out")
    no_weights = [a for a in args if not a.startswith("model.weights=")]
    assert train_cli.main(no_weights) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stage=finetune adapts trained weights" in err[0], err
    no_data = [a for a in args if not a.startswith("data.roots.generic=")]
    assert train_cli.main(no_data) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.roots.generic" in err[0], err
    assert train_cli.main([*args, f"data.roots.mine={folders['mine']}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown" in err[0], err
