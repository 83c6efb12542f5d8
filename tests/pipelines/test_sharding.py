"""Whole datasets over several processes (``tools/evaluate.py trainer.devices=N``, CPU gloo):
every video on exactly one process, outputs equal to one process's (the merged VIPSeg
``pred.json`` and BURST json included), and a restart skips the videos already finished."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deva.data.synthetic import (
    SyntheticVideoConfig,
    generate_video,
    video_name,
    video_seed,
    write_synthetic_dataset,
)
from deva.data.synthetic_benchmarks import write_burst_layout, write_vipseg_layout
from deva.pipelines.sharding import assign
from tests.helpers import EMBEDDED, REPO, output_files

TOOL = REPO / "tools" / "evaluate.py"
VIDEO = SyntheticVideoConfig(num_frames=6, height=64, width=96, num_objects=3)
TRACKING = ["size=-1", "mode=semionline", "detect_every=2", "clip_size=2"]


def evaluate(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(TOOL), f"model.weights={EMBEDDED}", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_assign_gives_each_video_to_one_process_balanced_by_frames() -> None:
    lengths = [10, 3, 8, 8, 1, 5]
    ranks = assign(lengths, 2)
    assert ranks == assign(lengths, 2) and set(ranks) == {0, 1}
    loads = [sum(n for n, r in zip(lengths, ranks, strict=True) if r == k) for k in (0, 1)]
    assert abs(loads[0] - loads[1]) <= max(lengths) and sum(loads) == sum(lengths)
    assert assign(lengths, 1) == [0] * 6 and assign([4, 4], 3) == [0, 1]
    with pytest.raises(ValueError):
        assign(lengths, 0)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("sets")
    videos = [(video_name(i), generate_video(VIDEO, video_seed(7, i))) for i in range(3)]
    write_synthetic_dataset(root / "vos", VIDEO, num_videos=3, seed=3)
    return {
        "vos": {"root": root / "vos"},
        "vipseg": write_vipseg_layout(root / "vipseg", videos, VIDEO),
        "burst": write_burst_layout(root / "burst", videos, VIDEO, annotate_every=2),
    }


def _args(benchmark: str, paths: dict[str, Path], out: Path) -> list[str]:
    if benchmark == "generic":
        return [f"benchmark={benchmark}", f"data.root={paths['root']}", f"output={out}"]
    args = [f"benchmark={benchmark}", f"data.images={paths['images']}", f"output={out}"]
    args += [f"data.detections={paths['detections']}", *TRACKING]
    if benchmark == "burst":
        args.append(f"data.gt={paths['gt'] / 'all_classes.json'}")
    return args


@pytest.mark.parametrize(
    ("name", "key"), [("generic", "vos"), ("vipseg", "vipseg"), ("burst", "burst")]
)
def test_two_processes_equal_one(datasets, tmp_path, name: str, key: str) -> None:
    one = tmp_path / "one"
    two = tmp_path / "two"
    evaluate(*_args(name, datasets[key], one))
    result = evaluate(
        *_args(name, datasets[key], two), "trainer.devices=2", "trainer.accelerator=cpu"
    )
    assert "process 1 of 2" in result.stdout + result.stderr
    assert output_files(one) == output_files(two)
    run = json.loads((two / "run.json").read_text())
    assert run["state"] == "done" and run["frames"] == 18
    recorded = set(run["files"])
    assert {
        p for p in output_files(two)
    } <= recorded  # the second process's files are in the record
    merged = {"vipseg": "pred.json", "burst": "burst_predictions.json"}.get(name)
    if merged:
        data = json.loads((two / merged).read_text())
        entries = data["annotations"] if name == "vipseg" else data["sequences"]
        assert len(entries) == 3  # one per video, in the dataset's order


def test_killed_run_resumes_skipping_finished_videos(tmp_path) -> None:
    """SIGKILL once the first video is finished, then resume on two processes: the finished
    video is not tracked again and the output equals an uninterrupted run's; the per-video
    records are gone once the output is complete."""
    config = SyntheticVideoConfig(num_frames=8, height=240, width=320, num_objects=3)
    videos = [(video_name(i), generate_video(config, video_seed(9, i))) for i in range(3)]
    paths = write_vipseg_layout(tmp_path / "set", videos, config)
    whole, out = tmp_path / "whole", tmp_path / "out"
    evaluate(*_args("vipseg", paths, whole))
    command = [sys.executable, str(TOOL), f"model.weights={EMBEDDED}", *_args("vipseg", paths, out)]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not list((out / ".parts").glob("*.json")) and process.poll() is None:
        assert time.monotonic() < deadline, "no video finished in time"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    finished = sorted(p.stem for p in (out / ".parts").glob("*.json"))
    assert 1 <= len(finished) < 3 and not (out / "pred.json").exists()
    kept = {p: p.stat().st_mtime_ns for p in (out / "pan_pred" / finished[0]).glob("*.png")}
    result = evaluate(
        *_args("vipseg", paths, out), "resume=true", "trainer.devices=2", "trainer.accelerator=cpu"
    )
    assert f"skipping {len(finished)} video(s) finished by the earlier run" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert output_files(out) == output_files(whole) and not (out / ".parts").exists()
    again = evaluate(*_args("vipseg", paths, out), "resume=true")  # a complete run: no work
    assert "is complete (24 frames): nothing to resume" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert output_files(out) == output_files(whole)


def test_a_failing_process_stops_them_all(datasets, tmp_path) -> None:
    """A frame that cannot be decoded, on whichever process: every process stops (no wait
    for the failed one), with one line naming the frame, exit 2."""
    root = tmp_path / "set"
    shutil.copytree(datasets["vos"]["root"], root)
    frame = sorted((root / "JPEGImages" / "video_002").glob("*.jpg"))[3]
    frame.write_bytes(frame.read_bytes()[:400])  # the header reads, the pixels do not
    result = subprocess.run(
        [sys.executable, str(TOOL), f"model.weights={EMBEDDED}", "benchmark=generic",
         f"data.root={root}", f"output={tmp_path / 'out'}", "trainer.devices=2",
         "trainer.accelerator=cpu"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert frame.name in lines[0]
