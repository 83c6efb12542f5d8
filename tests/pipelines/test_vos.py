"""tools/evaluate.py on the VOS layouts: generic, DAVIS and YouTube-VOS."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deva.data.synthetic import SyntheticVideoConfig, write_synthetic_dataset
from deva.io.masks import read_index_png, write_index_png
from deva.modeling.inference_model import cpu_supports_bf16
from tests.helpers import EMBEDDED, REPO, results_in

TOOL = REPO / "tools" / "evaluate.py"


def _evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOL), "model=tiny", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn")
    config = SyntheticVideoConfig(num_frames=6, height=72, width=100, num_objects=3)
    write_synthetic_dataset(root, config, num_videos=2, seed=3)
    return root


def test_generic_writes_every_frame_with_input_names(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _evaluate("benchmark=generic", f"data.root={synthetic}", f"output={out}", "size=64")
    assert result.returncode == 0, result.stderr
    assert "RANDOMLY INITIALISED" in result.stderr
    assert "done: 12 frames of 2 videos" in result.stdout
    for video in sorted((synthetic / "JPEGImages").iterdir()):
        names = sorted(p.stem for p in video.glob("*.jpg"))
        written = sorted(p.stem for p in (out / video.name).glob("*.png"))
        assert written == names
        first_gt = read_index_png(synthetic / "Annotations" / video.name / f"{names[0]}.png")
        first_pred = read_index_png(out / video.name / f"{names[0]}.png")
        assert first_pred.shape == first_gt.shape  # original resolution
        # ids come from the first-frame annotation only
        allowed = set(np.unique(first_gt).tolist())
        for name in names:
            assert set(np.unique(read_index_png(out / video.name / f"{name}.png"))) <= allowed
        # first frame: the given mask is reproduced (up to resize rounding at the borders)
        assert (first_pred == first_gt).mean() > 0.9
    # refuses to write into a non-empty folder
    again = _evaluate("benchmark=generic", f"data.root={synthetic}", f"output={out}")
    assert again.returncode != 0 and "overwrite=true" in again.stderr


def test_davis_layout_and_errors(synthetic: Path, tmp_path: Path) -> None:
    davis = tmp_path / "DAVIS"
    for kind in ("JPEGImages", "Annotations"):
        shutil.copytree(synthetic / kind, davis / kind / "480p")
    (davis / "ImageSets" / "2017").mkdir(parents=True)
    (davis / "ImageSets" / "2017" / "val.txt").write_text("video_001\n")
    out = tmp_path / "davis_out"
    result = _evaluate("benchmark=davis", f"data.root={davis}", f"output={out}", "size=-1")
    assert result.returncode == 0, result.stderr
    assert results_in(out) == ["video_001"]
    assert len(list((out / "video_001").glob("*.png"))) == 6

    # missing first-frame mask
    (davis / "Annotations" / "480p" / "video_001" / "00000.png").unlink()
    result = _evaluate("benchmark=davis", f"data.root={davis}", f"output={tmp_path / 'o2'}")
    assert result.returncode == 2
    assert "missing first-frame mask" in result.stderr and "00000.png" in result.stderr
    assert "Traceback" not in result.stderr

    # size mismatch between frame and mask
    write_index_png(
        davis / "Annotations" / "480p" / "video_001" / "00000.png", np.ones((10, 10), np.uint8)
    )
    result = _evaluate("benchmark=davis", f"data.root={davis}", f"output={tmp_path / 'o3'}")
    assert result.returncode == 2 and "mask size" in result.stderr

    # unreadable frame
    write_index_png(
        davis / "Annotations" / "480p" / "video_001" / "00000.png", np.ones((72, 100), np.uint8)
    )
    (davis / "JPEGImages" / "480p" / "video_001" / "00003.jpg").write_bytes(b"garbage")
    result = _evaluate("benchmark=davis", f"data.root={davis}", f"output={tmp_path / 'o4'}")
    assert result.returncode == 2 and "00003.jpg" in result.stderr

    result = _evaluate("benchmark=davis", f"data.root={tmp_path / 'nowhere'}", "output=x")
    assert result.returncode == 2 and "not found" in result.stderr
    result = _evaluate("benchmark=nope", f"data.root={davis}", f"output={tmp_path / 'o5'}")
    assert result.returncode == 2 and "unknown benchmark" in result.stderr


def test_youtube_vos_objects_enter_late_and_only_listed_frames(tmp_path: Path) -> None:
    root = tmp_path / "valid"
    names = [f"{i:05d}" for i in range(0, 30, 5)]
    (root / "JPEGImages" / "v1").mkdir(parents=True)
    (root / "Annotations" / "v1").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [*names, "00002", "00007"]:  # the extra frames are not listed in meta.json
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            root / "JPEGImages" / "v1" / f"{name}.jpg"
        )
    first = np.zeros((48, 64), np.uint8)
    first[5:20, 5:20] = 1
    write_index_png(root / "Annotations" / "v1" / "00000.png", first)
    late = np.zeros((48, 64), np.uint8)
    late[25:45, 30:60] = 2
    write_index_png(root / "Annotations" / "v1" / "00010.png", late)
    meta = {
        "videos": {
            "v1": {
                "objects": {
                    "1": {"category": "a", "frames": names},
                    "2": {"category": "b", "frames": names[2:5]},
                }
            }
        }
    }
    (root / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    result = _evaluate("benchmark=ytvos", f"data.root={root}", f"output={out}", "size=-1")
    assert result.returncode == 0, result.stderr
    written = sorted(p.stem for p in (out / "v1").glob("*.png"))
    assert written == names
    assert 2 not in np.unique(read_index_png(out / "v1" / "00005.png"))
    entered = read_index_png(out / "v1" / "00010.png")
    assert (entered[25:45, 30:60] == 2).mean() > 0.9


def test_first_frame_mask_is_resized_with_pixel_centre_nearest() -> None:
    import torch

    from deva.inference.preprocess import preprocess_frame, restore_probabilities
    from deva.inference.propagator import Propagator
    from deva.modeling.config import PropagationConfig
    from deva.modeling.propagation import PropagationModel, aggregate_probabilities
    from deva.pipelines.vos import segment_frames

    torch.manual_seed(0)
    model = PropagationModel(PropagationConfig.preset("tiny")).eval()
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    given = np.zeros((37, 53), np.int64)
    given[3:20, 4:30] = 1
    given[22:25, 10:50] = 2  # thin: its rows move with the sampling rule
    ((name, out),) = segment_frames(
        Propagator(model), [("a", frame)], {"a": given}, shorter_side=60
    )
    # Expected: pixel-centre nearest to the processing size, soft aggregation, bilinear back.
    _, geometry = preprocess_frame(frame, shorter_side=60)
    h, w = geometry.resized_size
    rows = ((torch.arange(h) + 0.5) * 37 / h).long()
    cols = ((torch.arange(w) + 0.5) * 53 / w).long()
    resized = torch.from_numpy(given)[rows][:, cols]
    p = geometry.padding
    padded = torch.nn.functional.pad(resized, (p.left, p.right, p.top, p.bottom))
    one_hot = torch.stack([padded == 1, padded == 2]).float()
    prob = torch.softmax(aggregate_probabilities(one_hot, dim=0), dim=0)
    expected = restore_probabilities(prob, geometry).argmax(dim=0).numpy()
    assert name == "a"
    np.testing.assert_array_equal(out, expected)


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bfloat16")
def test_bf16_on_the_cpu_matches_fp32_masks(synthetic: Path, tmp_path: Path) -> None:
    """``amp=bf16`` on the CPU (channels-last bf16 path) against the default fp32 path
    (Winograd) with the embedded trained checkpoint: nearly the same masks."""
    weights = EMBEDDED
    outs = {}
    for amp in ("none", "bf16"):
        outs[amp] = tmp_path / amp
        result = _evaluate(
            "benchmark=generic",
            f"data.root={synthetic}",
            f"output={outs[amp]}",
            "size=64",
            "model=small",
            f"model.weights={weights}",
            f"amp={amp}",
        )
        assert result.returncode == 0, result.stderr
    same = total = 0
    for png in sorted(outs["none"].rglob("*.png")):
        a = read_index_png(png)
        b = read_index_png(outs["bf16"] / png.relative_to(outs["none"]))
        same += int((a == b).sum())
        total += a.size
    assert total > 0 and same / total > 0.99


def test_generic_with_the_sam2_propagator(synthetic: Path, tmp_path: Path) -> None:
    """``propagator=sam2`` writes the same layout from a local SAM 2 folder, without building
    our network (no random-weights warning)."""
    pytest.importorskip("transformers")
    from deva.segmenters.tiny import save_tiny_sam2_video

    folder = save_tiny_sam2_video(tmp_path / "sam2")
    out = tmp_path / "out"
    result = _evaluate(
        "benchmark=generic", f"data.root={synthetic}", f"output={out}", "size=64",
        "propagator=sam2", f"propagator_model={folder}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "RANDOMLY INITIALISED" not in result.stderr
    assert "done: 12 frames of 2 videos" in result.stdout
    for video in sorted((synthetic / "JPEGImages").iterdir()):
        first_gt = read_index_png(sorted((synthetic / "Annotations" / video.name).glob("*.png"))[0])
        written = sorted((out / video.name).glob("*.png"))
        assert len(written) == 6
        assert (read_index_png(written[0]) == first_gt).mean() > 0.9
