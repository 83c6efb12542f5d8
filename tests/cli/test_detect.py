"""tools/detect.py: an image segmenter's detections once, over many processes, in the layout
that ``segmenter=precomputed`` and ``evaluate.py benchmark=detections`` read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deva.data.synthetic import SyntheticVideoConfig, generate_video, write_synthetic_dataset
from deva.io.video import write_mp4
from tests.helpers import EMBEDDED, REPO, output_files

pytest.importorskip("transformers")

from deva.segmenters.tiny import save_tiny_mask2former

VIDEO = SyntheticVideoConfig(num_frames=5, height=48, width=64, num_objects=2)


def tool(name: str, *args: str, threads: int | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if threads:  # bit-equal float scores need the same threads per process
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("detect")
    write_synthetic_dataset(root / "set", VIDEO, num_videos=3, seed=4)
    write_mp4(root / "clip.mp4", list(generate_video(VIDEO, seed=5).frames), fps=10)
    return {
        "videos": root / "set" / "JPEGImages",
        "mp4": root / "clip.mp4",
        "model": save_tiny_mask2former(root / "m2f"),
    }


def segmenter(inputs: dict[str, Path], threshold: float = 0) -> list[str]:
    return [
        "segmenter=mask2former",
        f"segmenter.model={inputs['model']}",
        f"segmenter.threshold={threshold}",
        "segmenter.overlap_threshold=0",
        "progress=false",
    ]


def test_two_processes_equal_one_and_feed_evaluate(inputs, tmp_path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    args = [f"input={inputs['videos']}", *segmenter(inputs)]
    result = tool("detect", *args, f"output={one}", threads=1)
    assert result.returncode == 0, result.stderr
    assert "segments in 15 frames of 3 video(s)" in result.stdout
    many = ["trainer.devices=2", "trainer.accelerator=cpu"]
    result = tool("detect", *args, f"output={two}", *many, threads=1)
    assert result.returncode == 0, result.stderr
    assert output_files(one) == output_files(two)
    names = sorted(output_files(one))
    assert len(names) == 30 and names[0] == "video_000/00000.json"
    assert not (two / ".parts").exists()
    tracked = tmp_path / "tracked"
    result = tool(
        "evaluate", "benchmark=detections", f"data.images={inputs['videos']}",
        f"data.detections={one}", f"output={tracked}", f"model.weights={EMBEDDED}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "done: 15 frames tracked" in result.stdout


def test_video_file_feeds_track(inputs, tmp_path) -> None:
    dets = tmp_path / "dets"
    result = tool("detect", f"input={inputs['mp4']}", f"output={dets}", *segmenter(inputs))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dets.glob("*.json"))[:2] == ["00000.json", "00001.json"]
    out = tmp_path / "track"
    result = tool(
        "track", f"input={inputs['mp4']}", f"output={out}", "segmenter=precomputed",
        f"detections={dets}", f"model.weights={EMBEDDED}", "progress=false", "mode=online",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(list((out / "masks").glob("*.png"))) == 5


def test_refusals_are_one_line(inputs, tmp_path) -> None:
    cases = [
        ([f"input={inputs['videos']}", "segmenter=precomputed"], "detect.py runs an image model"),
        ([f"input={tmp_path / 'none'}", *segmenter(inputs)], "input not found"),
        ([f"input={inputs['videos']}", *segmenter(inputs, threshold=1.1)], "not one segment"),
    ]
    for args, message in cases:
        result = tool("detect", *args, f"output={tmp_path / 'out'}", "overwrite=true")
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert message in lines[0] and "Traceback" not in result.stderr
