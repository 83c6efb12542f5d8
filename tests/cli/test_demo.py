"""The tracking example of the README (tools/demo.py) and the embedded checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel
from tests.helpers import EMBEDDED, REPO

MOBILE = REPO / "checkpoints" / "deva-mobile-real.pth"


def test_embedded_checkpoint_is_the_small_model() -> None:
    assert EMBEDDED.is_file(), "the quick stage's checkpoint must ship with the repository"
    assert EMBEDDED.stat().st_size < 10 * 2**20
    model = PropagationModel.from_pretrained(EMBEDDED)
    assert model.config == PropagationConfig.preset("small")


def test_default_checkpoint_is_the_mobile_model_in_fp16() -> None:
    assert MOBILE.is_file(), "the demo's default checkpoint must ship with the repository"
    assert MOBILE.stat().st_size < 20 * 2**20
    stored = torch.load(MOBILE, map_location="cpu", weights_only=True)
    assert {t.dtype for t in stored["state_dict"].values() if t.is_floating_point()} == {
        torch.float16
    }
    model = PropagationModel.from_pretrained(MOBILE)
    assert model.config == PropagationConfig.preset("mobile")


def _clip(root: Path, name: str, *, annotate_first: bool = True) -> Path:
    """A DAVIS-layout clip: a square sliding right over 6 frames, masks on frames 0, 2, 4."""
    (root / "JPEGImages" / name).mkdir(parents=True)
    (root / "Annotations" / name).mkdir(parents=True)
    for t in range(6):
        frame = np.full((64, 96, 3), 40, np.uint8)
        mask = np.zeros((64, 96), np.uint8)
        mask[20:44, 10 + 6 * t : 34 + 6 * t] = 1
        frame[mask == 1] = (220, 60, 60)
        Image.fromarray(frame).save(root / "JPEGImages" / name / f"{t:05d}.jpg", quality=95)
        if t % 2 == 0 and (t > 0 or annotate_first):
            palette = Image.fromarray(mask, mode="P")
            palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
            palette.save(root / "Annotations" / name / f"{t:05d}.png")
    return root / name


def _demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def test_demo_on_a_real_clip_scores_its_annotated_frames(tmp_path: Path) -> None:
    clip = _clip(tmp_path / "clips", "slide")
    result = _demo(f"output={tmp_path / 'out'}", f"clip={clip}")
    assert result.returncode == 0, result.stderr
    assert "6 frames of" in result.stdout and "(3 annotated), 1 objects" in result.stdout
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    # frame 0 is the given mask, so J is 1 there; the square is easy to follow
    assert scores["J-Mean"] > 0.5
    with Image.open(tmp_path / "out" / "montage.png") as montage:
        assert montage.size == (4 * 96, 2 * 64)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root / "nothing", "clip: no frames in"),
        (lambda root: _clip(root, "bare", annotate_first=False), "the first frame needs a mask"),
    ],
)
def test_demo_refuses_a_clip_it_cannot_use(tmp_path: Path, make, message: str) -> None:
    result = _demo(f"output={tmp_path / 'out'}", f"clip={make(tmp_path / 'clips')}")
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_demo_writes_overlay_montage_and_scores(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "demo.py"),
            f"output={tmp_path}",
            "num_frames=6",
            "height=64",
            "width=96",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert "J&F-Mean" in result.stdout
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert 0.0 <= scores["J&F-Mean"] <= 1.0
    assert (tmp_path / "overlay.mp4").stat().st_size > 0
    with Image.open(tmp_path / "montage.png") as montage:
        assert montage.size == (4 * 96, 2 * 64)
    missing = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo.py"), "model.weights=nope.pth"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert missing.returncode == 2 and "nope.pth" in missing.stderr
