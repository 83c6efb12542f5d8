"""Validation of the decoupled loop during training (TensorBoard scalars and pictures) and
after it (tools/validate.py over a run's checkpoints, 1 and 2 processes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from deva.cli.train import VALIDATION_HISTORY, headline_table, summary_lines, train
from deva.config import compose
from deva.config.builder.training import initial_model
from deva.config.schema import TrainConfig, parse
from deva.data.synthetic import SyntheticVideoConfig, generate_video, video_name, video_seed
from deva.data.synthetic_benchmarks import write_vipseg_layout
from deva.modeling import PropagationModel
from tests.helpers import REPO, load_tool, threads

SCRIPT = REPO / "tools" / "validate.py"
VIDEO = SyntheticVideoConfig(num_frames=6, height=64, width=96, num_objects=3)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vip(tmp_path_factory) -> dict[str, Path]:
    videos = [(video_name(i), generate_video(VIDEO, video_seed(9, i))) for i in range(2)]
    return write_vipseg_layout(tmp_path_factory.mktemp("vip"), videos, VIDEO)


def _vip_override(vip: dict[str, Path]) -> str:
    return (
        f"+validation.sets.vip={{type: vipseg, images: {vip['images']}, gt: {vip['gt']}, "
        f"detections: {vip['detections']}, size: -1, mode: semionline, detect_every: 2}}"
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory, vip) -> tuple[Path, dict]:
    """Two real training steps with a checkpoint each and validation before and after."""
    out = tmp_path_factory.mktemp("run")
    cfg = compose(
        "train",
        [
            "debug=fast",
            f"output_dir={out}",
            "trainer.fast_dev_run=false",
            "stage.iterations=2",
            "logger=tensorboard",
            "checkpoint.every_n_steps=1",
            "checkpoint.save_top_k=-1",
            "validation.at_start=true",
            "validation.every_n_steps=1",
            _vip_override(vip),
        ],
    )
    with threads(1):
        result = train(cfg)
    return out, result


def _scalars(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_training_logs_vpq_and_stq_of_the_decoupled_loop(run) -> None:
    out, result = run
    events = _scalars(Path(result["tensorboard"]))
    tags = events.Tags()
    for tag in ("val/vip/vpq", "val/vip/stq", "val/panoptic/vpq", "val/synthetic/jf"):
        assert tag in tags["scalars"], tag
        assert [e.step for e in events.Scalars(tag)] == [0, 1, 2]  # before, each step, end
    assert "val/vip/tracks" in tags["images"] and "val/panoptic/tracks" in tags["images"]
    history = json.loads((out / VALIDATION_HISTORY).read_text())
    assert sorted(history) == ["0", "1", "2"]
    assert history["2"]["val/vip/vpq"] == result["validation"]["val/vip/vpq"]
    lines = "\n".join(summary_lines(result))
    assert "step 0 -> step 2" in lines
    row = next(line.split() for line in lines.splitlines() if line.split()[:2] == ["vip", "VPQ"])
    before, after = history["0"]["val/vip/vpq"], history["2"]["val/vip/vpq"]
    assert row[2:] == [f"{before:.3f}", f"{after:.3f}", f"{after - before:+.3f}"]
    assert "val/vip/vpq_k1" not in lines  # headline numbers only; every key is in the file
    assert str(out / VALIDATION_HISTORY) in lines and "TensorBoard logs" in lines


def test_validate_scores_every_checkpoint_of_a_run(run, capsys) -> None:
    out, result = run
    tool = load_tool("validate")
    assert tool.main([f"run={out}", "threads=1"]) == 0
    printed = capsys.readouterr().out
    records = json.loads((out / "validation.json").read_text())
    assert [(r["checkpoint"], r["step"]) for r in records] == [
        ("step_0000001.ckpt", 1),
        ("step_0000002.ckpt", 2),
    ]
    # the checkpoint of step 2 holds the weights the Predictor scored at step 2
    history = json.loads((out / VALIDATION_HISTORY).read_text())
    for key in ("val/vip/vpq", "val/vip/stq", "val/panoptic/vpq", "val/synthetic/jf"):
        assert records[1]["results"][key] == history["2"][key], key
    assert "vip/vpq" in printed and "step_0000002.ckpt" in printed
    header = (out / "validation.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["checkpoint", "step"] and "val/vip/stq" in header
    # scalars land in the run's TensorBoard at the checkpoints' steps
    events = _scalars(Path(result["tensorboard"]))
    steps = [e.step for e in events.Scalars("val/vip/vpq")]
    assert sorted(steps) == [0, 1, 1, 2, 2]  # training (0, 1, 2) + validate.py (1, 2)

    # a second call skips what is scored; force=true scores again with the same numbers
    mtime = (out / "validation.json").stat().st_mtime_ns
    assert tool.main([f"run={out}", "threads=1"]) == 0
    assert (out / "validation.json").stat().st_mtime_ns == mtime
    assert tool.main([f"run={out}", "threads=1", "force=true", "sets=[vip]"]) == 0
    assert json.loads((out / "validation.json").read_text()) == records


def test_validate_one_checkpoint_with_an_added_set(run, vip, tmp_path: Path, capsys) -> None:
    out, _ = run
    tool = load_tool("validate")
    ckpt = out / "checkpoints" / "step_0000001.ckpt"
    args = [f"ckpt={ckpt}", "threads=1", f"output={tmp_path}", "sets=[extra]", "tensorboard=false"]
    extra = _vip_override(vip).replace("validation.sets.vip", "validation.sets.extra")
    assert tool.main([*args, extra.replace("detect_every: 2", "detect_every: 3")]) == 0
    (record,) = json.loads((tmp_path / "validation.json").read_text())
    assert record["step"] == 1 and set(record["results"]) >= {"val/extra/vpq", "val/extra/stq"}
    assert not any(k.startswith("val/vip/") for k in record["results"])


def test_a_checkpoints_folder_outside_a_run_gets_no_tensorboard(run, vip, tmp_path) -> None:
    """A checkpoint in some folder named checkpoints/ (a repository's, say) that is not a
    training run's: nothing is written beside that folder."""
    out, _ = run
    repo = tmp_path / "repo"
    (repo / "checkpoints").mkdir(parents=True)
    ckpt = repo / "checkpoints" / "model.ckpt"
    shutil.copy(out / "checkpoints" / "step_0000001.ckpt", ckpt)
    extra = _vip_override(vip).replace("validation.sets.vip", "validation.sets.extra")
    args = [f"ckpt={ckpt}", "threads=1", f"output={tmp_path / 'scores'}", "sets=[extra]", extra]
    assert load_tool("validate").main(args) == 0
    assert (tmp_path / "scores" / "validation.json").is_file()
    assert sorted(p.name for p in repo.iterdir()) == ["checkpoints"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["threads=1"], "exactly one of run=OUTPUT_DIR or ckpt=FILE"),
        (["run=/nonexistent/run"], "run folder not found"),
        (["sets=[nope]"], "unknown set(s) ['nope']"),
        (["+validation.sets.bad={type: vipseg}"], "needs images=PATH"),
    ],
)
def test_validate_bad_input_is_one_line(run, capsys, args, message) -> None:
    out, _ = run
    if not any(a.startswith("run=") for a in args) and args != ["threads=1"]:
        args = [f"run={out}", *args]
    assert load_tool("validate").main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_processes_give_exactly_the_numbers_of_one(run, tmp_path: Path) -> None:
    out, _ = run
    ckpt = out / "checkpoints" / "step_0000002.ckpt"
    results = {}
    for devices in (1, 2):
        folder = tmp_path / f"devices{devices}"
        command = [
            sys.executable,
            str(SCRIPT),
            f"ckpt={ckpt}",
            f"output={folder}",
            "threads=1",
            "tensorboard=false",
            "sets=[vip,panoptic]",
            "trainer.accelerator=cpu",
            f"trainer.devices={devices}",
            f"trainer.strategy={'ddp' if devices > 1 else 'auto'}",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        results[devices] = json.loads((folder / "validation.json").read_text())
    assert results[1] == results[2]
    assert results[1][0]["results"]["val/vip/vpq"] is not None


def test_the_default_run_fine_tunes_the_embedded_checkpoint_on_a_new_domain(
    tmp_path: Path, monkeypatch
) -> None:
    """The README's first command: a short fine-tuning of the embedded checkpoint on generated
    videos of a domain it was not trained on, validated on held-out videos of that domain."""
    cfg = compose("train", [])
    assert cfg.stage.name == "quick" and cfg.stage.iterations <= 500
    assert cfg.model.preset == "small" and cfg.trainer.accelerator == "cpu"
    assert cfg.validation.at_start and cfg.validation.at_end
    types = {spec.type for spec in cfg.validation.sets.values()}
    assert types == {"synthetic", "synthetic_panoptic"}
    # a new domain: the training videos and both held-out sets share it, unlike the defaults
    noise = cfg.data.video.noise_std
    assert noise > 2 * SyntheticVideoConfig().noise_std
    assert {spec.noise_std for spec in cfg.validation.sets.values()} == {noise}
    # it starts from the embedded checkpoint, found from any working folder
    monkeypatch.chdir(tmp_path)
    model_config, state = initial_model(parse(TrainConfig, cfg))
    embedded = PropagationModel.from_pretrained(REPO / "checkpoints" / "deva-small-synthetic.pth")
    assert model_config == embedded.config and state is not None
    for key, value in embedded.state_dict().items():
        assert torch.equal(state[key], value), key
    # training from scratch stays a named stage, on the default domain, from random weights
    scratch = compose("train", ["stage=scratch"])
    assert scratch.model.weights is None and scratch.stage.iterations == 200
    assert "noise_std" not in scratch.data.video
    assert compose("train", ["stage=synthetic"]).stage.iterations == 3000  # the full recipe
    assert compose("train", ["debug=fast"]).model.weights is None  # tests: a random tiny model


def test_the_headline_table_shows_before_after_and_change() -> None:
    history = {
        "0": {"val/a/jf": 0.5, "val/a/j": 0.4, "val/p/vpq": 60.0, "val/p/stq": 0.5},
        "150": {"val/a/jf": 0.625, "val/a/j": 0.6, "val/p/vpq": 58.5, "val/p/stq": 0.55},
    }
    lines = headline_table(history)
    assert lines[0] == "held-out numbers, step 0 -> step 150:"
    rows = [line.split() for line in lines[2:]]
    assert rows == [
        ["a", "J&F", "0.500", "0.625", "+0.125"],
        ["p", "VPQ", "60.000", "58.500", "-1.500"],
        ["p", "STQ", "0.500", "0.550", "+0.050"],
    ]
    single = headline_table({7: history["150"]})
    assert single[0] == "held-out numbers at step 7:" and single[2].split() == ["a", "J&F", "0.625"]
    assert headline_table({}) == [] and headline_table({"1": {"val/a/j": 0.3}}) == []


def test_fp16_validation_on_the_cpu_fails_before_training(tmp_path: Path) -> None:
    cfg = compose("train", ["debug=fast", f"output_dir={tmp_path}", "validation.autocast=fp16"])
    with pytest.raises(ValueError, match="amp=fp16 is not supported on the CPU"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()
