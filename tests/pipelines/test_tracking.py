"""tools/evaluate.py benchmark=detections|vipseg|burst and tools/track.py, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from deva.data.synthetic import SyntheticVideoConfig, write_synthetic_dataset
from deva.io.masks import read_id_png, read_mask_png
from deva.io.video import write_mp4
from tests.helpers import EMBEDDED, REPO, load_tool

H, W, T = 64, 96, 8


@pytest.fixture(scope="module")
def evaluate() -> ModuleType:
    return load_tool("evaluate")


@pytest.fixture(scope="module")
def track() -> ModuleType:
    return load_tool("track")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn")
    config = SyntheticVideoConfig(
        num_frames=T, height=H, width=W, num_objects=3, num_stuff_regions=2
    )
    write_synthetic_dataset(root, config, num_videos=2, seed=1)
    return root


def _run(tool: ModuleType, capsys, *args: str) -> tuple[int, str, str]:
    code = tool.main(["model=tiny", "size=-1", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _frames_of(synthetic: Path, video: str) -> list[str]:
    return sorted(p.stem for p in (synthetic / "JPEGImages" / video).glob("*.jpg"))


@pytest.mark.parametrize("mode", ["online", "semionline", "offline"])
def test_detections_benchmark_writes_pngs_and_json(
    evaluate, synthetic: Path, tmp_path: Path, capsys, mode: str
) -> None:
    out = tmp_path / "out"
    code, stdout, err = _run(
        evaluate,
        capsys,
        "benchmark=detections",
        f"data.images={synthetic / 'JPEGImages'}",
        f"data.detections={synthetic / 'Detections'}",
        f"mode={mode}",
        f"output={out}",
        "detect_every=3",
        "clip_size=2",
        f"model.weights={EMBEDDED}",  # random weights may agree on no object, an error
    )
    assert code == 0, err
    assert f"done: {2 * T} frames tracked" in stdout
    assert mode in stdout  # says what it does
    for video in ("video_000", "video_001"):
        names = _frames_of(synthetic, video)
        assert sorted(p.stem for p in (out / video).glob("*.png")) == names
        assert sorted(p.stem for p in (out / video).glob("*.json")) == names
        for name in names:
            ids = read_mask_png(out / video / f"{name}.png")
            assert ids.shape == (H, W)
            infos = json.loads((out / video / f"{name}.json").read_text())
            assert {i["id"] for i in infos} == set(np.unique(ids).tolist()) - {0}
            assert all(set(i) == {"id", "category_id", "score", "isthing"} for i in infos)


def test_single_video_folder(evaluate, synthetic: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "single"
    code, _, err = _run(
        evaluate,
        capsys,
        "benchmark=detections",
        f"data.images={synthetic / 'JPEGImages' / 'video_001'}",
        f"data.detections={synthetic / 'Detections' / 'video_001'}",
        "mode=online",
        f"output={out}",
    )
    assert code == 0, err
    assert sorted(p.stem for p in (out / "video_001").glob("*.png")) == _frames_of(
        synthetic, "video_001"
    )


def test_vipseg_output_format(evaluate, synthetic: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "vipseg"
    code, _, err = _run(
        evaluate,
        capsys,
        "benchmark=vipseg",
        f"data.images={synthetic / 'JPEGImages'}",
        f"data.detections={synthetic / 'Detections'}",
        "mode=online",
        "detect_every=2",
        f"output={out}",
    )
    assert code == 0, err
    pred = json.loads((out / "pred.json").read_text())
    videos = {v["video_id"]: v["annotations"] for v in pred["annotations"]}
    assert sorted(videos) == ["video_000", "video_001"]
    meta = json.loads((synthetic / "dataset.json").read_text())
    stuff_categories = set(meta["stuff_categories"])
    for video, frames in videos.items():
        assert [f["file_name"] for f in frames] == [
            f"{n}.png" for n in _frames_of(synthetic, video)
        ]
        stuff_ids: dict[int, set[int]] = {}
        thing_category: dict[int, int] = {}
        for frame in frames:
            ids = read_id_png(out / "pan_pred" / video / frame["file_name"])
            assert ids.shape == (H, W)
            listed = {s["id"] for s in frame["segments_info"]}
            assert listed == set(np.unique(ids).tolist()) - {0}
            for s in frame["segments_info"]:
                assert set(s) == {"id", "category_id", "isthing"}
                if s["isthing"]:
                    # a thing id never changes category
                    assert thing_category.setdefault(s["id"], s["category_id"]) == s["category_id"]
                else:
                    assert s["category_id"] in stuff_categories
                    stuff_ids.setdefault(s["category_id"], set()).add(s["id"])
        # stuff: one id per category per video
        assert all(len(ids) == 1 for ids in stuff_ids.values())
        assert stuff_ids


def test_burst_output_format(evaluate, synthetic: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "burst"
    code, _, err = _run(
        evaluate,
        capsys,
        "benchmark=burst",
        f"data.images={synthetic / 'JPEGImages'}",
        f"data.detections={synthetic / 'Detections'}",
        "mode=semionline",
        f"output={out}",
    )
    assert code == 0, err
    data = json.loads((out / "burst_predictions.json").read_text())
    assert [s["seq_name"] for s in data["sequences"]] == ["video_000", "video_001"]
    for seq in data["sequences"]:
        names = _frames_of(synthetic, seq["seq_name"])
        assert seq["annotated_image_paths"] == [f"{n}.jpg" for n in names]
        assert (seq["height"], seq["width"]) == (H, W)
        assert len(seq["segmentations"]) == T
        union = np.zeros((H, W), dtype=int)
        for frame in seq["segmentations"]:
            for track_id, det in frame.items():
                assert track_id in seq["track_category_ids"]
                assert 0 <= det["score"] <= 1
                union += mask_utils.decode({"counts": det["rle"], "size": [H, W]})
        assert union.max() <= T  # decodable, and tracks do not overlap within a frame


def test_burst_with_ground_truth_selects_sequences_and_frames(
    evaluate, synthetic: Path, tmp_path: Path, capsys
) -> None:
    # BURST layout: frames/<dataset>/<seq_name>/, ground truth names the annotated frames.
    frames = tmp_path / "frames" / "synth"
    frames.mkdir(parents=True)
    (frames / "clip_a").symlink_to(synthetic / "JPEGImages" / "video_000")
    detections = tmp_path / "dets" / "synth"
    detections.mkdir(parents=True)
    (detections / "clip_a").symlink_to(synthetic / "Detections" / "video_000")
    gt = {
        "split": "val",
        "sequences": [
            {
                "id": 17,
                "dataset": "synth",
                "seq_name": "clip_a",
                "width": W,
                "height": H,
                "annotated_image_paths": ["00001.jpg", "00005.jpg"],
                "segmentations": [{}, {}],
                "track_category_ids": {},
            }
        ],
    }
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    out = tmp_path / "burst_gt"
    code, _, err = _run(
        evaluate,
        capsys,
        "benchmark=burst",
        f"data.images={tmp_path / 'frames'}",
        f"data.detections={tmp_path / 'dets'}",
        f"data.gt={gt_path}",
        "mode=online",
        f"output={out}",
    )
    assert code == 0, err
    (seq,) = json.loads((out / "burst_predictions.json").read_text())["sequences"]
    assert (seq["id"], seq["dataset"], seq["seq_name"]) == (17, "synth", "clip_a")
    assert seq["annotated_image_paths"] == ["00001.jpg", "00005.jpg"]
    assert len(seq["segmentations"]) == 2


@pytest.mark.parametrize("layout", ["vipseg", "burst"])
def test_own_outputs_are_valid_detection_inputs(
    evaluate, synthetic: Path, tmp_path: Path, capsys, layout: str
) -> None:
    # VIPSeg-style (pred.json + pan_pred/) and BURST-style (json) detections are recognised.
    first = tmp_path / "first"
    args = [f"data.images={synthetic / 'JPEGImages'}", "mode=online"]
    code, _, err = _run(
        evaluate,
        capsys,
        f"benchmark={layout}",
        f"data.detections={synthetic / 'Detections'}",
        f"output={first}",
        *args,
    )
    assert code == 0, err
    detections = first if layout == "vipseg" else first / "burst_predictions.json"
    out = tmp_path / "second"
    code, _, err = _run(
        evaluate,
        capsys,
        "benchmark=detections",
        f"data.detections={detections}",
        f"output={out}",
        *args,
    )
    assert code == 0, err
    for video in ("video_000", "video_001"):
        first_frame = json.loads((out / video / "00000.json").read_text())
        assert first_frame  # the detections were found
        assert len(list((out / video).glob("*.png"))) == T


def test_track_frame_folder_and_video_file(track, synthetic: Path, tmp_path: Path, capsys) -> None:
    frames_dir = synthetic / "JPEGImages" / "video_000"
    detections = synthetic / "Detections" / "video_000"
    out = tmp_path / "track"
    code, stdout, err = _run(
        track,
        capsys,
        f"input={frames_dir}",
        f"output={out}",
        "segmenter=precomputed",
        f"detections={detections}",
        "mode=semionline",
    )
    assert code == 0, err
    assert "tracking" in stdout and "done: 8 frames" in stdout
    names = _frames_of(synthetic, "video_000")
    assert sorted(p.stem for p in (out / "masks").glob("*.png")) == names
    assert sorted(p.stem for p in (out / "masks").glob("*.json")) == names
    assert (out / "overlay.mp4").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["frames"] == T

    # an mp4 input: frames are named 00000, 00001, ... like the synthetic detections
    from deva.io.frames import FrameReader

    video = tmp_path / "input.mp4"
    write_mp4(video, (frame for _, frame in FrameReader(frames_dir)), fps=10)
    out2 = tmp_path / "track_mp4"
    code, _, err = _run(
        track,
        capsys,
        f"input={video}",
        f"output={out2}",
        f"detections={detections}",
        "mode=offline",
        "overlay=false",
    )
    assert code == 0, err
    assert sorted(p.stem for p in (out2 / "masks").glob("*.png")) == names
    assert not (out2 / "overlay.mp4").exists()


GOOD = ("data.images={images}", "data.detections={dets}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data.detections={dets}", "output={out}"], "data.images"),
        ([*GOOD], "output=DIR is required"),
        (["data.images=/nope", "data.detections={dets}", "output={out}"], "not found"),
        (["data.images={empty}", "data.detections={dets}", "output={out}"], "no frames"),
        (["data.images={images}", "data.detections={empty}", "output={out}"], "detections folder"),
        ([*GOOD, "output={out}", "mode=sometimes"], "tracking mode"),
        ([*GOOD, "output={out}", "clip_size=0"], "clip_size"),
        ([*GOOD, "output={nonempty}"], "not empty"),
        (["benchmark=nonsense"], "unknown benchmark"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(
    evaluate, synthetic: Path, tmp_path: Path, capsys, args: list[str], message: str
) -> None:
    nonempty = tmp_path / "nonempty"
    nonempty.mkdir()
    (nonempty / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    values = {
        "images": synthetic / "JPEGImages",
        "dets": synthetic / "Detections",
        "nonempty": nonempty,
        "empty": tmp_path / "empty",
        "out": tmp_path / "out",
    }
    args = [a.format(**values) for a in args]
    if not args[0].startswith("benchmark="):
        args.insert(0, "benchmark=detections")
    code, _, err = _run(evaluate, capsys, *args)
    assert code != 0
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_track_bad_input(track, synthetic: Path, tmp_path: Path, capsys) -> None:
    cases = [
        (["output=/tmp/x"], "input="),
        ([f"input={tmp_path / 'missing'}", "output=/tmp/x"], "not found"),
        ([f"input={synthetic / 'JPEGImages' / 'video_000'}", "output=/tmp/x"], "detections="),
        (
            [
                f"input={synthetic / 'JPEGImages' / 'video_000'}",
                "segmenter=nonsense",
                "output=/tmp/x",
            ],
            "not available",
        ),
    ]
    for args, message in cases:
        code, _, err = _run(track, capsys, *args)
        assert code == 2
        assert message in err and "Traceback" not in err


def test_real_command_line_exit_status(synthetic: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "evaluate.py"),
            "benchmark=detections",
            f"data.images={tmp_path / 'nothing'}",
            f"data.detections={synthetic / 'Detections'}",
            f"output={tmp_path / 'o'}",
            "model=tiny",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: data.images not found")
