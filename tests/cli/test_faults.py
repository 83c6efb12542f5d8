"""Fault injection through the real command lines: kills at random frames, full disks,
read-only outputs, corrupt or foreign weights, mismatched inputs.

Every case ends either in a run whose outputs equal an uninterrupted run's, or in one line
on stderr with exit status 2 (130 for Ctrl+C) and nothing of the user's lost. Kills run
``tools/track.py`` in a subprocess; the other cases call the tools' ``main`` in this process
(the same code path) so that writers can be patched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import av
import cv2
import numpy as np
import pytest
import torch

import deva.io.atomic
from deva.data.synthetic import SyntheticVideoConfig, generate_video, write_synthetic_video
from deva.errors import one_line as error_text
from deva.inference.propagator import Propagator
from deva.io.atomic import is_temporary
from deva.io.frames import read_frame
from deva.io.masks import read_mask_png, write_mask_png
from deva.io.outputs import OutputFolder, read_run
from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel
from deva.pipelines.vos import segment_frames
from tests.helpers import EMBEDDED, REPO, load_tool

H, W, T = 72, 96, 36

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def track() -> ModuleType:
    return load_tool("track")


@pytest.fixture(scope="module")
def evaluate() -> ModuleType:
    return load_tool("evaluate")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> dict[str, Path]:
    """A generated clip in the DAVIS-style layout (frames, first-frame masks, detections)."""
    root = tmp_path_factory.mktemp("faults")
    config = SyntheticVideoConfig(num_frames=T, height=H, width=W, num_objects=3)
    video = generate_video(config, seed=11)
    write_synthetic_video(OutputFolder(root / "data", tool="test"), "v", video, config=config)
    data = root / "data"
    return {
        "root": data,
        "frames": data / "JPEGImages" / "v",
        "dets": data / "Detections" / "v",
        "images": data / "JPEGImages",
        "detections": data / "Detections",
    }


def track_args(
    clip: dict[str, Path], out: Path, mode: str = "online", weights: Path = EMBEDDED
) -> list[str]:
    return [
        f"input={clip['frames']}",
        f"output={out}",
        f"detections={clip['dets']}",
        f"mode={mode}",
        f"model.weights={weights}",
        "detect_every=4",
        "size=-1",
        "state_every=3",
        "progress=false",
    ]


def call(tool: ModuleType, capsys, *args: str) -> tuple[int, str]:
    """``tool.main(args)`` in this process: exit status and stderr."""
    code = tool.main(list(args))
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    """stderr holds exactly one non-empty line, and no traceback; returns it."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def tool_process(tool: str, *args: str) -> subprocess.Popen:
    """``python tools/<tool>.py args`` started in the repository, one torch thread."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "tools" / f"{tool}.py"), *args]
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def outputs(out: Path) -> dict[str, object]:
    """What a finished run leaves that a user reads: masks, RLE, objects of the summary."""
    masks = {p.name: p.read_bytes() for p in sorted((out / "masks").iterdir())}
    summary = json.loads((out / "summary.json").read_text())
    return {
        "masks": masks,
        "rle": json.loads((out / "coco_rle.json").read_text()),
        "objects": summary["objects"],
    }


def no_torn_files(out: Path) -> None:
    """No temporary file is left, every PNG decodes and every JSON parses."""
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        assert not is_temporary(path), path
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".png":
            read_mask_png(path)


def playable_frames(path: Path) -> int:
    """How many frames of an mp4 decode (it must open: a header was written)."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))


def wait_for_masks(process: subprocess.Popen, out: Path, count: int) -> int:
    """Poll until ``count`` frames are written (or the process ends); frames written."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        written = len(list((out / "masks").glob("*.json"))) if (out / "masks").is_dir() else 0
        if written >= count:
            return written
        time.sleep(0.005)
    raise AssertionError(f"the run ended or stalled before frame {count}")


@pytest.fixture(scope="module")
def uninterrupted(clip, tmp_path_factory) -> dict[str, dict]:
    """The outputs of uninterrupted runs, per mode, from the command line."""
    root = tmp_path_factory.mktemp("uninterrupted")
    results = {}
    for mode in ("online", "semionline"):
        code, err = finish(tool_process("track", *track_args(clip, root / mode, mode)))
        assert code == 0, err
        results[mode] = outputs(root / mode)
    return results


@pytest.mark.parametrize("mode", ["online", "semionline"])
def test_killed_tracking_resumes_exactly(clip, uninterrupted, tmp_path, mode: str) -> None:
    """SIGKILL at a random frame, resume, SIGINT at a later random frame, resume: the
    outputs equal an uninterrupted run's, the overlay plays after each kill."""
    rng = random.Random(f"{mode}-kills")
    out = tmp_path / "out"
    args = track_args(clip, out, mode)
    first, second = sorted(rng.sample(range(4, T - 6), 2))

    process = tool_process("track", *args)
    wait_for_masks(process, out, first)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert read_run(out)["state"] == "running"  # it had no chance to say more
    no_torn_files(out)
    written = len(list((out / "masks").glob("*.json")))
    assert playable_frames(out / "overlay.mp4") <= written  # up to its last fragment

    process = tool_process("track", *args, "resume=true")
    wait_for_masks(process, out, max(second, written + 1))
    process.send_signal(signal.SIGINT)
    code, err = finish(process)
    line = one_line(err)
    assert code == 130 and "resume with resume=true" in line, err
    stopped = int(line.split("interrupted at frame ")[1].split(";")[0])
    assert read_run(out)["state"] == f"interrupted at frame {stopped}"
    assert playable_frames(out / "overlay.mp4") == stopped  # finished on Ctrl+C
    no_torn_files(out)

    code, err = finish(tool_process("track", *args, "resume=true"))
    assert code == 0, err
    assert outputs(out) == uninterrupted[mode]
    assert playable_frames(out / "overlay.mp4") == T
    assert read_run(out)["state"] == "done"
    assert not (out / "tracker_state.pt").exists()
    no_torn_files(out)


class _FailingReplace:
    """``os`` for :mod:`deva.io.atomic` whose ``replace`` fails from the ``after``-th call."""

    def __init__(self, code: int, after: int) -> None:
        self.code, self.after, self.calls = code, after, 0

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    def replace(self, source: str | Path, target: str | Path) -> None:
        self.calls += 1
        if self.calls >= self.after:
            raise OSError(self.code, os.strerror(self.code), str(target))
        os.replace(source, target)


@pytest.mark.parametrize(("code", "after"), [(errno.ENOSPC, 12), (errno.EROFS, 1)])
def test_full_disk_or_read_only_output_is_one_line_then_resumes(
    track, clip, uninterrupted, tmp_path, capsys, monkeypatch, code: int, after: int
) -> None:
    """A write that fails (full disk mid-run, read-only output from the start) ends with one
    line naming the reason; no torn file is left and, the disk freed, resume completes to
    the uninterrupted result."""
    out = tmp_path / "out"
    failing = _FailingReplace(code, after)
    monkeypatch.setattr(deva.io.atomic, "os", failing)
    status, err = call(track, capsys, *track_args(clip, out))
    reason = error_text(OSError(code, os.strerror(code)))
    assert status == 2 and one_line(err).startswith(f"error: {reason} ({out}")
    monkeypatch.undo()
    no_torn_files(out)
    status, err = call(track, capsys, *track_args(clip, out), "resume=true")
    assert status == 0, err
    assert outputs(out) == uninterrupted["online"]


@contextlib.contextmanager
def small_tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` (skips where mounting is not allowed)."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_real_full_disk_and_read_only_mount(clip, tmp_path) -> None:
    """The same on real file systems: a 96 KiB tmpfs fills up mid-run; a read-only one
    refuses the first write. One line each, nothing torn."""
    with small_tmpfs(tmp_path / "full", "size=96k") as full:
        code, err = finish(tool_process("track", *track_args(clip, full / "out")))
        assert code == 2 and "no space left on the device" in one_line(err)
        assert len(list((full / "out" / "masks").glob("*.json"))) > 0  # it got somewhere
        no_torn_files(full / "out")
    with small_tmpfs(tmp_path / "ro", "size=1m,ro") as read_only:
        code, err = finish(tool_process("track", *track_args(clip, read_only / "out")))
        assert code == 2 and "read-only file system" in one_line(err)


def _weights(kind: str, tmp_path: Path) -> Path:
    """A weights file that cannot serve: empty, truncated, text, or of other shapes."""
    path = tmp_path / f"{kind}.pth"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = EMBEDDED.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "other-shapes":
        state = PropagationModel(PropagationConfig.preset("tiny")).state_dict()
        key = next(k for k, v in state.items() if v.ndim == 4)
        state[key] = torch.zeros(3, 3, 3, 3)
        torch.save(state, path)
    return path


WEIGHTS_CASES = {
    "empty": "empty",
    "truncated": "truncated",
    "text": "not a pytorch",
    "other-shapes": "do not match",
}


@pytest.mark.parametrize("kind", sorted(WEIGHTS_CASES))
def test_corrupt_or_foreign_weights(track, evaluate, clip, tmp_path, capsys, kind: str) -> None:
    weights = _weights(kind, tmp_path)
    out = tmp_path / "out"
    code, err = call(track, capsys, *track_args(clip, out, weights=weights))
    line = one_line(err)
    assert code == 2 and weights.name in line and WEIGHTS_CASES[kind] in line.lower(), line
    assert not (out / "masks").exists()
    evaluation = [
        "benchmark=detections",
        f"data.images={clip['images']}",
        f"data.detections={clip['detections']}",
        f"output={tmp_path / 'eval'}",
        f"model.weights={weights}",
    ]
    code, err = call(evaluate, capsys, *evaluation)
    line = one_line(err)
    assert code == 2 and weights.name in line and WEIGHTS_CASES[kind] in line.lower(), line


@pytest.mark.parametrize("value", ["abc", "[1,2]"])
def test_bad_option_types_are_one_line(track, evaluate, clip, tmp_path, capsys, value) -> None:
    code, err = call(track, capsys, *track_args(clip, tmp_path / "t"), f"size={value}")
    assert code == 2 and "size" in one_line(err)
    evaluation = [
        "benchmark=detections",
        f"data.images={clip['images']}",
        f"data.detections={clip['detections']}",
        f"output={tmp_path / 'e'}",
        f"size={value}",
    ]
    code, err = call(evaluate, capsys, *evaluation)
    assert code == 2 and "size" in one_line(err)
    assert not (tmp_path / "t").exists() and not (tmp_path / "e").exists()


def test_mismatched_detections(track, clip, tmp_path, capsys) -> None:
    """Detections named unlike every frame, or for frames the video lacks: one line naming
    the first mismatch, before any frame is tracked; ``extra_detections=warn`` goes on."""
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for path in sorted(clip["dets"].iterdir()):
        shutil.copy(path, renamed / f"frame_{path.name}")
    args = [a for a in track_args(clip, tmp_path / "a") if not a.startswith("detections=")]
    code, err = call(track, capsys, *args, f"detections={renamed}")
    assert code == 2 and "frame_00000" in one_line(err)
    assert not (tmp_path / "a" / "masks").exists()

    extra = tmp_path / "extra"
    shutil.copytree(clip["dets"], extra)
    shutil.copy(extra / "00000.png", extra / "09999.png")
    shutil.copy(extra / "00000.json", extra / "09999.json")
    args = [a for a in track_args(clip, tmp_path / "b") if not a.startswith("detections=")]
    code, err = call(track, capsys, *args, f"detections={extra}")
    line = one_line(err)
    assert code == 2 and "09999" in line and "extra_detections=warn" in line
    code, err = call(track, capsys, *args, f"detections={extra}", "extra_detections=warn")
    assert code == 0, err
    assert len(list((tmp_path / "b" / "masks").glob("*.png"))) == T

    # detections inside the output folder are refused, and left alone
    out = tmp_path / "c"
    shutil.copytree(clip["dets"], out / "masks")
    before = sorted(p.name for p in (out / "masks").iterdir())
    args = [a for a in track_args(clip, out) if not a.startswith("detections=")]
    code, err = call(track, capsys, *args, f"detections={out / 'masks'}", "overwrite=true")
    assert code == 2 and "inside" in one_line(err)
    assert sorted(p.name for p in (out / "masks").iterdir()) == before


def test_rgb_encoded_first_masks_beyond_255_objects(evaluate, tmp_path, capsys) -> None:
    """A first-frame mask with 300 objects, RGB-encoded as the tracker writes them, is read
    by ``evaluate.py`` and by :func:`segment_frames`; the ids come back unchanged."""
    height, width = 60, 80
    ids = np.zeros((height, width), np.int64)
    blocks = [(y, x) for y in range(0, height, 3) for x in range(0, width, 4)][:300]
    for object_id, (y, x) in enumerate(blocks, start=1):
        ids[y : y + 3, x : x + 4] = object_id
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for t in range(2):
        frame = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        (root / "JPEGImages" / "v").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "JPEGImages" / "v" / f"{t:05d}.png"), frame)
    write_mask_png(root / "Annotations" / "v" / "00000.png", ids)
    assert read_mask_png(root / "Annotations" / "v" / "00000.png").max() == 300

    out = tmp_path / "out"
    args = ["benchmark=generic", f"data.root={root}", f"output={out}", "size=-1"]
    code, err = call(evaluate, capsys, *args, f"model.weights={EMBEDDED}")
    assert code == 0, err
    first = read_mask_png(out / "v" / "00000.png")
    assert first.max() > 255 and len(np.unique(first)) > 256

    model = PropagationModel.from_pretrained(EMBEDDED)
    frames = [(p.stem, read_frame(p)) for p in sorted((root / "JPEGImages" / "v").iterdir())]
    with torch.inference_mode():
        results = dict(
            segment_frames(
                Propagator(model),
                frames,
                {"00000": root / "Annotations" / "v" / "00000.png"},
                shorter_side=-1,
            )
        )
    assert np.array_equal(results["00000"], first)
