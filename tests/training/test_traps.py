"""No silent traps in ``deva-train``: random starting weights are announced, GPU trainers on a
machine without GPUs and the merge form of ``validation.sets`` are one-line errors, and the
progress bar counts iterations of the whole run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from deva.cli import train as train_cli
from deva.config import compose
from deva.config.builder.training import build_run
from deva.config.schema import TrainConfig, parse
from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel
from deva.modeling.weights import save_weights

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = ["logger=none", "validation.at_start=false", "validation.at_end=false"]


def errors(capsys: pytest.CaptureFixture, argv: list[str]) -> tuple[int, list[str]]:
    code = train_cli.main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def built(tmp_path: Path, *overrides: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Warnings logged while a run is built (nothing is trained; folders are read later)."""
    config = parse(TrainConfig, compose("train", [f"output_dir={tmp_path}", *QUIET, *overrides]))
    with caplog.at_level(logging.WARNING):
        build_run(config)
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("stage", ["static", "video"])
def test_published_stage_from_random_weights_warns(
    stage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = "data.roots=[/nowhere]" if stage == "static" else "data.roots.generic=/nowhere"
    args = [f"stage={stage}", "trainer=cpu", "model=tiny", data]
    warnings = built(tmp_path, *args, caplog=caplog)
    random = [w for w in warnings if "RANDOM weights" in w]
    assert len(random) == 1 and f"stage={stage}" in random[0] and "init.pixel_trunk" in random[0]
    # from trained weights: no warning
    caplog.clear()
    weights = save_weights(PropagationModel(PropagationConfig.preset("tiny")), tmp_path / "w.pth")
    warnings = built(tmp_path, *args, f"model.weights={weights}", caplog=caplog)
    assert not [w for w in warnings if "RANDOM weights" in w]


def test_synthetic_stages_from_scratch_do_not_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    warnings = built(tmp_path, "debug=fast", caplog=caplog)
    assert not [w for w in warnings if "RANDOM weights" in w]


@pytest.mark.parametrize(
    ("args", "asked"),
    [
        (["trainer=gpu"], "asks for 1 GPU(s)"),
        (["trainer=ddp", "trainer.devices=8"], "asks for 8 GPU(s)"),
        (["trainer=ddp"], "asks for at least 1 GPU(s)"),
        (["trainer.accelerator=gpu", "trainer.devices=[0,1]"], "asks for 2 GPU(s)"),
    ],
)
def test_gpu_trainer_without_gpus_is_one_line(
    args: list[str], asked: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    code, err = errors(capsys, ["debug=fast", *QUIET, *args])
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("train: trainer.accelerator=gpu") and asked in err[0]
    assert err[0].endswith("but none is available; use trainer=cpu")


def test_more_gpus_than_there_are_is_one_line(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code, err = errors(capsys, ["debug=fast", *QUIET, "trainer=ddp", "trainer.devices=8"])
    assert code == 2 and len(err) == 1 and "only 1 is/are available" in err[0], err


def test_validation_sets_merge_form_says_the_right_form(capsys: pytest.CaptureFixture) -> None:
    code, err = errors(capsys, ["debug=fast", "validation.sets={mine: {type: synthetic}}"])
    assert code == 2 and len(err) == 1, err
    assert "+validation.sets.mine={...}" in err[0] and "'~validation.sets'" in err[0]
    # both forms the line names do work
    added = compose("train", ["+validation.sets.mine={type: synthetic}"])
    assert set(added.validation.sets) == {"synthetic", "panoptic", "mine"}
    replaced = compose("train", ["~validation.sets", "+validation.sets={mine: {type: synthetic}}"])
    assert set(replaced.validation.sets) == {"mine"}
    # an unknown key keeps its own message
    code, err = errors(capsys, ["debug=fast", "validation.nothing=1"])
    assert code == 2 and len(err) == 1 and "unknown options ['validation.nothing']" in err[0]


def test_progress_bar_counts_iterations_of_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = [
        "debug=fast",
        *QUIET,
        "trainer.fast_dev_run=false",
        "stage.iterations=3",
        "validation.every_n_steps=0",
        "export.weights=false",
        "trainer.enable_progress_bar=true",
        f"output_dir={tmp_path}",
    ]
    assert train_cli.main(args) == 0
    out = capsys.readouterr().out
    assert "iterations" in out and "3/3" in out, out[-2000:]
    assert "Epoch" not in out and "/-" not in out
