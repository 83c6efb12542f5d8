"""The tracking example of the README (tools/demo.py) and the embedded checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel
from tests.helpers import EMBEDDED, REPO


def test_embedded_checkpoint_is_the_small_model() -> None:
    assert EMBEDDED.is_file(), "the demo's checkpoint must ship with the repository"
    assert EMBEDDED.stat().st_size < 10 * 2**20
    model = PropagationModel.from_pretrained(EMBEDDED)
    assert model.config == PropagationConfig.preset("small")


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
