"""tools/track.py input=FOLDER_OF_VIDEOS: video files and frame folders at any depth, one
output folder per video, the videos split over processes (CPU gloo), restarts skipping
finished videos."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deva.data.synthetic import SyntheticVideoConfig, write_synthetic_dataset
from deva.io.frames import list_frame_files, read_frame
from deva.io.video import write_mp4
from tests.helpers import EMBEDDED, REPO

VIDEO = SyntheticVideoConfig(num_frames=5, height=48, width=64, num_objects=2)
NAMES = ["a", "b", "sub/c"]


def track(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "track.py"), f"model.weights={EMBEDDED}",
         "segmenter=precomputed", "progress=false", "size=-1", *args],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> dict[str, Path]:
    """``videos/a.mp4``, ``videos/b/`` (frames) and ``videos/sub/c.mp4`` with detections in
    ``dets/<video>/``."""
    root = tmp_path_factory.mktemp("folder")
    write_synthetic_dataset(root / "syn", VIDEO, num_videos=3, seed=6)
    videos, dets = root / "videos", root / "dets"
    for name, source in zip(NAMES, ["video_000", "video_001", "video_002"], strict=True):
        frames = list_frame_files(root / "syn" / "JPEGImages" / source)
        if name == "b":
            shutil.copytree(frames[0].parent, videos / name)
        else:
            (videos / name).parent.mkdir(parents=True, exist_ok=True)
            write_mp4(videos / f"{name}.mp4", [read_frame(p) for p in frames], fps=10)
        shutil.copytree(root / "syn" / "Detections" / source, dets / name)
    return {"videos": videos, "dets": dets}


def outputs(root: Path) -> dict[str, bytes]:
    """The tracks of every video (not the timings, run records or the encoded overlay)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and (p.parent.name == "masks" or p.name == "coco_rle.json")
    }


def test_folder_of_videos_on_one_and_two_processes(folder, tmp_path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    inputs = [f"input={folder['videos']}", f"detections={folder['dets']}"]
    result = track(*inputs, f"output={one}")
    assert result.returncode == 0, result.stderr
    assert "tracking 3 videos" in result.stdout and "done: 3 videos, 15 frames" in result.stdout
    index = json.loads((one / "videos.json").read_text())
    assert [v["name"] for v in index["videos"]] == NAMES
    assert all(v["state"] == "done" and v["frames"] == 5 for v in index["videos"])
    for name in NAMES:
        assert len(list((one / name / "masks").glob("*.png"))) == 5
        assert (one / name / "overlay.mp4").is_file()
    result = track(*inputs, f"output={two}", "trainer.devices=2", "trainer.accelerator=cpu")
    assert result.returncode == 0, result.stderr
    assert outputs(one) == outputs(two) and len(outputs(one)) == 33

    # a restart: finished videos are skipped, a missing one is tracked
    kept = {p: p.stat().st_mtime_ns for p in (one / "a" / "masks").glob("*.png")}
    shutil.rmtree(one / "b")
    result = track(*inputs, f"output={one}", "resume=true")
    assert result.returncode == 0, result.stderr
    assert "skipping 2 video(s) finished by the earlier run" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert outputs(one) == outputs(two)


def test_folder_refusals_are_one_line(folder, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    inputs = [f"input={folder['videos']}", f"detections={folder['dets']}"]
    cases = [
        ([*inputs, f"output={out}"], "not empty; pass resume=true"),
        ([f"input={folder['videos']}", f"detections={tmp_path}", f"output={tmp_path / 'x'}"],
         "no detections for video 'a'"),
    ]  # fmt: skip
    for args, message in cases:
        result = track(*args)
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert message in lines[0]
    assert (out / "mine.txt").read_text() == "keep"
