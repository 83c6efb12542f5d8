"""Exact resume: runs killed (SIGKILL) or interrupted (SIGINT) and resumed end with the weights
of an uninterrupted run, bit for bit; bad checkpoints give one line and exit status 2.

The runs are real ``deva-train`` processes on tiny CPU configs (tiny model, 64 px crops,
batch 2, a checkpoint every step).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import deva
from deva.cli import train as train_cli
from deva.cli import validate as validate_cli

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 8
SRC = Path(deva.__file__).resolve().parents[1]


def base_args(steps: int = STEPS) -> list[str]:
    """A real training command shrunk to a few CPU seconds, checkpointing every step."""
    return [
        "trainer=cpu",
        f"stage.iterations={steps}",
        "validation.at_start=false",
        "validation.at_end=false",
        "validation.every_n_steps=0",
        "checkpoint.every_n_steps=1",
        "checkpoint.save_top_k=-1",
        "export.weights=false",
        "logger=none",
    ]


#: synthetic data (debug=fast: tiny model and clips) with 3 batches an epoch, so that runs
#: cross epoch boundaries
SYNTHETIC = ("debug=fast", "trainer.fast_dev_run=false", "data.samples_per_epoch=6")

#: what debug=fast does, for image folders (its synthetic-only data keys do not apply)
FAST_STATIC = (
    "stage=static",
    "model=tiny",
    "stage.batch_size=2",
    "stage.crop_size=64",
    "trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
    "image_log_every=0",
    "data.min_object_pixels=20",
)


def launch(out: Path, *extra: str) -> subprocess.Popen:
    """Start ``deva-train`` in a new process (stderr into ``<out>.err``)."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        NO_ALBUMENTATIONS_UPDATE="1",
    )
    command = [sys.executable, "-m", "deva.cli.train", f"output_dir={out}", *base_args(), *extra]
    with open(f"{out}.err", "w") as err:  # the child keeps its own descriptor
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)


def finish(process: subprocess.Popen, out: Path, timeout: float = 120) -> tuple[int, str]:
    """Exit status and stderr of a run."""
    code = process.wait(timeout=timeout)
    return code, Path(f"{out}.err").read_text()


def run(out: Path, *extra: str) -> None:
    code, err = finish(launch(out, *extra), out)
    assert code == 0, err


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 90) -> None:
    """Poll until ``path`` exists (the run must still be going)."""
    end = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended (status {process.returncode}) first"
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.02)


def saved(out: Path, name: str = "last.ckpt") -> dict:
    return torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=True)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())


def assert_identical(reference: Path, resumed: Path) -> None:
    first, second = saved(reference), saved(resumed)
    assert first["global_step"] == second["global_step"] == STEPS
    a, b = first["state_dict"], second["state_dict"]
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{different[:3]}: max |Δw| = {max_difference(a, b)}"


def kill_and_resume(out: Path, *extra: str, at_step: int = 2) -> int:
    """A run SIGKILLed once the checkpoint of ``at_step`` is written, then resumed from its
    ``last.ckpt``; returns the step it was killed at."""
    process = launch(out, *extra)
    wait_for(out / "checkpoints" / f"step_{at_step:07d}.ckpt", process)
    process.kill()
    process.wait(timeout=30)
    killed_at = int(saved(out)["global_step"])  # last.ckpt follows the step file
    assert at_step - 1 <= killed_at < STEPS
    run(out, *extra, "ckpt_path=last")
    return killed_at


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted synthetic run of STEPS steps."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run(out, *SYNTHETIC)
    return out


@pytest.fixture(scope="module")
def image_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat folder of jpg + png pairs (one bright square object each)."""
    folder = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    for i in range(5):
        image = rng.integers(0, 120, size=(80, 80, 3), dtype=np.uint8)
        mask = np.zeros((80, 80), dtype=np.uint8)
        y, x = rng.integers(5, 40, size=2)
        image[y : y + 30, x : x + 30] = 220
        mask[y : y + 30, x : x + 30] = 255
        Image.fromarray(image).save(folder / f"img{i}.jpg", quality=95)
        Image.fromarray(mask).save(folder / f"img{i}.png")
    return folder


# -- bit-exact continuation ----------------------------------------------------------------


def test_synthetic_run_killed_and_resumed_is_bit_identical(reference: Path, tmp_path: Path) -> None:
    kill_and_resume(tmp_path / "run", *SYNTHETIC)
    assert_identical(reference, tmp_path / "run")


def test_image_folder_run_with_a_worker_killed_and_resumed_is_bit_identical(
    image_pairs: Path, tmp_path: Path
) -> None:
    static = [*FAST_STATIC, f"data.roots=[{image_pairs}]", "data.num_workers=1"]
    run(tmp_path / "whole", *static)
    kill_and_resume(tmp_path / "run", *static, at_step=3)
    assert_identical(tmp_path / "whole", tmp_path / "run")
    # a kill during a save leaves at most a temporary file, never a torn checkpoint
    for path in (tmp_path / "run" / "checkpoints").glob("*.ckpt"):
        if not path.name.startswith("."):
            torch.load(path, map_location="cpu", weights_only=True)


def test_ctrl_c_writes_last_checkpoint_and_says_how_to_resume(
    reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    process = launch(out, *SYNTHETIC)
    wait_for(out / "checkpoints" / "step_0000002.ckpt", process)
    process.send_signal(signal.SIGINT)
    code, err = finish(process, out)
    assert code == 130, err
    step = int(saved(out)["global_step"])
    assert 1 <= step < STEPS
    ours = [line for line in err.splitlines() if line.startswith("train:")]
    last = out / "checkpoints" / "last.ckpt"
    assert ours == [
        f"train: interrupted at step {step}; resume with ckpt_path={last} output_dir={out}"
    ]
    assert err.strip().splitlines()[-1] == ours[0] and "Traceback" not in err
    assert not (out / "model.pth").exists()
    run(out, *SYNTHETIC, f"ckpt_path={last}")
    assert_identical(reference, out)


# -- one-line errors -------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, list[str]]:
    code = train_cli.main([*base_args(), *SYNTHETIC, *args])
    return code, capsys.readouterr().err.strip().splitlines()


def test_bad_checkpoints_are_one_line_errors(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = f"output_dir={tmp_path / 'out'}"
    handlers_before = list(train_cli.logging.getLogger().handlers)
    good = reference / "checkpoints" / "last.ckpt"
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    truncated = tmp_path / "half.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    weights_only = tmp_path / "weights.pth"
    torch.save(saved(reference)["state_dict"], weights_only)
    mislabelled = tmp_path / "mislabelled.ckpt"
    data = saved(reference)
    data["hyper_parameters"]["model_config"]["pixel_dim"] *= 2
    torch.save(data, mislabelled)
    cases = {
        tmp_path / "missing.ckpt": "checkpoint to resume not found",
        empty: "the file is empty",
        text: "not a PyTorch checkpoint file",
        truncated: "truncated or damaged",
        weights_only: "not a deva-train checkpoint",
        mislabelled: "weights do not match the model",
    }
    for path, reason in cases.items():
        code, lines = cli(capsys, out, f"ckpt_path={path}")
        assert code == 2 and len(lines) == 1, (path, lines)
        assert lines[0].startswith("train: ") and reason in lines[0] and str(path) in lines[0]
    code, lines = cli(capsys, out, f"model.weights={truncated}")
    assert code == 2 and len(lines) == 1 and "truncated or damaged" in lines[0], lines
    # main() leaves the logging handlers as it found them, however often it runs
    assert train_cli.logging.getLogger().handlers == handlers_before


def test_a_checkpoint_of_another_size_resumes_as_what_it_is(
    reference: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    ckpt = reference / "checkpoints" / "last.ckpt"
    with caplog.at_level("INFO"):
        result = train_cli.train(
            train_cli.compose(
                "train",
                [
                    *base_args(STEPS + 1),
                    *SYNTHETIC,
                    "model=small",
                    f"output_dir={out}",
                    f"ckpt_path={ckpt}",
                ],
            )
        )
    assert result["global_step"] == STEPS + 1
    assert any(
        "resuming the tiny model" in r.message and "small" in r.message for r in caplog.records
    )


def test_validate_scores_readable_checkpoints_and_reports_the_others(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(reference / "config.yaml", run_dir / "config.yaml")
    shutil.copy(reference / "checkpoints" / "step_0000002.ckpt", run_dir / "checkpoints")
    (run_dir / "checkpoints" / "step_0000004.ckpt").write_bytes(b"")
    (run_dir / "checkpoints" / ".last.tmp-1234.ckpt").write_bytes(b"torn")  # a killed save
    args = [f"run={run_dir}", "threads=1", "sets=[synthetic]", "tensorboard=false"]
    assert validate_cli.main(args) == 0
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("validate:")]
    assert len(err) == 1 and "step_0000004.ckpt" in err[0] and "empty" in err[0], err
    (run_dir / "checkpoints" / "step_0000002.ckpt").write_text("garbage")
    assert validate_cli.main([*args, "force=true"]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("validate:")]
    assert len(err) == 3 and "no checkpoint could be scored" in err[-1], err
