"""tools/track.py end to end: every segmenter, the outputs, overwrite / resume, odd inputs."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import av
import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from deva.data.synthetic import SyntheticVideoConfig, generate_video, write_synthetic_video
from deva.io.masks import read_mask_png
from deva.io.outputs import OutputFolder
from deva.io.video import read_video, write_mp4
from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel
from deva.modeling.weights import save_weights
from tests.helpers import load_tool, mp4_info

H, W, T, FPS = 48, 64, 5, 12


@pytest.fixture(scope="module")
def track() -> ModuleType:
    return load_tool("track")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> dict[str, Path]:
    """A synthetic clip as mp4 + frame folder, and its simulated detections."""
    root = tmp_path_factory.mktemp("clip")
    config = SyntheticVideoConfig(
        num_frames=T, height=H, width=W, num_objects=2, num_stuff_regions=1
    )
    video = generate_video(config, seed=3)
    write_mp4(root / "clip.mp4", list(video.frames), fps=FPS)
    frames = root / "frames"
    frames.mkdir()
    for t, frame in enumerate(video.frames):
        cv2.imwrite(str(frames / f"{t:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    write_synthetic_video(OutputFolder(root / "syn", tool="test"), "v", video, config=config)
    dets = root / "syn" / "Detections" / "v"
    return {"mp4": root / "clip.mp4", "frames": frames, "dets": dets}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("transformers")
    from deva.segmenters import tiny

    root = tmp_path_factory.mktemp("tiny_models")
    return {
        "sam": tiny.save_tiny_sam(root / "sam"),
        "gdino": tiny.save_tiny_grounding_dino(root / "gdino"),
        "mask2former": tiny.save_tiny_mask2former(root / "m2f"),
        "oneformer": tiny.save_tiny_oneformer(root / "oneformer"),
        "sam3": tiny.save_tiny_sam3(root / "sam3"),
        "owlv2": tiny.save_tiny_owlv2(root / "owlv2"),
        "sam2_video": tiny.save_tiny_sam2_video(root / "sam2_video"),
        "sam3_video": tiny.save_tiny_sam3_tracker_video(root / "sam3_video"),
        "edgetam_video": tiny.save_tiny_edgetam_video(root / "edgetam_video"),
    }


def run(track: ModuleType, capsys, *args: str) -> tuple[int, str, str]:
    code = track.main(["model=tiny", "size=-1", "progress=false", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def check_outputs(out: Path, names: list[str], fps: float, size: tuple[int, int]) -> dict:
    """Masks, JSON, RLE, overlay and summary agree with each other."""
    masks = out / "masks"
    assert sorted(p.stem for p in masks.glob("*.png")) == names
    assert sorted(p.stem for p in masks.glob("*.json")) == names
    rle = json.loads((out / "coco_rle.json").read_text())
    (meta,) = rle["videos"]
    assert meta["file_names"] == names and (meta["height"], meta["width"]) == size
    by_id = {a["id"]: a for a in rle["annotations"]}
    summary = json.loads((out / "summary.json").read_text())
    for t, name in enumerate(names):
        ids = read_mask_png(masks / f"{name}.png")
        assert ids.shape == size
        infos = json.loads((masks / f"{name}.json").read_text())
        present = set(np.unique(ids).tolist()) - {0}
        assert [i["id"] for i in infos] == sorted(present) or {i["id"] for i in infos} == present
        for info in infos:
            assert {"id", "label", "category_id", "score", "box", "area"} <= set(info)
            obj = ids == info["id"]
            ys, xs = np.nonzero(obj)
            assert info["area"] == int(obj.sum())
            assert info["box"] == [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
            # the whole-video RLE decodes to exactly this frame's mask of the object
            rle_t = by_id[info["id"]]["segmentations"][t]
            assert np.array_equal(mask_utils.decode(rle_t).astype(bool), obj)
            assert by_id[info["id"]]["label"] == info["label"]
        for object_id, annotation in by_id.items():
            if object_id not in present:
                assert annotation["segmentations"][t] is None
    count, rate, frame_size = mp4_info(out / "overlay.mp4")
    assert count == len(names)
    assert rate == pytest.approx(fps, rel=1e-3)
    assert frame_size == (size[0] + size[0] % 2, size[1] + size[1] % 2)
    assert summary["frames"] == len(names)
    objects = {o["id"]: o for o in summary["objects"]}
    assert set(objects) == set(by_id)
    for object_id, o in objects.items():
        seen = [n for n, r in zip(names, by_id[object_id]["segmentations"]) if r is not None]
        assert (o["first_frame"], o["last_frame"]) == (seen[0], seen[-1])
    assert summary["timings"]["total_s"] > 0
    assert summary["settings"]["segmenter"]["name"]
    return summary


SEGMENTER_ARGS = {
    "sam": lambda m: [
        f"segmenter.model={m['sam']}",
        "segmenter.points_per_side=3",
        "segmenter.pred_iou_thresh=-10",
        "segmenter.stability_thresh=0",
        "segmenter.min_area=4",
    ],
    "grounded_sam": lambda m: [
        f"segmenter.model={m['gdino']}",
        f"segmenter.sam_model={m['sam']}",
        "prompt=person. dog.",
        "segmenter.box_threshold=0",
        "segmenter.text_threshold=0",
    ],
    "owlv2_sam": lambda m: [
        f"segmenter.model={m['owlv2']}",
        f"segmenter.sam_model={m['sam']}",
        "prompt=person. dog.",
        "segmenter.box_threshold=0",
    ],
    "sam3": lambda m: [
        f"segmenter.model={m['sam3']}",
        "prompt=person. dog.",
        "segmenter.score_threshold=0",
    ],
    "mask2former": lambda m: [
        f"segmenter.model={m['mask2former']}",
        "segmenter.threshold=0",
        "segmenter.overlap_threshold=0",
    ],
    "oneformer": lambda m: [
        f"segmenter.model={m['oneformer']}",
        "segmenter.threshold=0",
        "segmenter.overlap_threshold=0",
    ],
}


@pytest.mark.parametrize("name", sorted(SEGMENTER_ARGS))
def test_model_segmenters_end_to_end(track, clip, tiny, tmp_path, capsys, name: str) -> None:
    out = tmp_path / name
    args = SEGMENTER_ARGS[name](tiny)
    code, stdout, err = run(
        track, capsys, f"input={clip['mp4']}", f"output={out}", f"segmenter={name}", *args,
        "mode=online", "detect_every=2",
    )  # fmt: skip
    assert code == 0, err
    assert f"with {name}" in stdout and f"done: {T} frames" in stdout
    summary = check_outputs(out, [f"{t:05d}" for t in range(T)], FPS, (H, W))
    assert summary["timings"]["segmenter_calls"] == 3  # frames 0, 2, 4
    assert summary["objects"], "the random tiny models should still produce segments"
    if name in ("grounded_sam", "owlv2_sam", "sam3"):
        assert {o["label"] for o in summary["objects"]} <= {"person", "dog"}
        assert all(
            o["category_id"] == ["person", "dog"].index(o["label"]) for o in summary["objects"]
        )
    if name in ("mask2former", "oneformer"):
        from deva.segmenters.tiny import TINY_LABELS

        assert all(o["label"] == TINY_LABELS[o["category_id"]] for o in summary["objects"])


def test_precomputed_semionline_from_frame_folder(track, clip, tmp_path, capsys) -> None:
    out = tmp_path / "pre"
    code, _, err = run(
        track, capsys, f"input={clip['frames']}", f"output={out}", "segmenter=precomputed",
        f"detections={clip['dets']}", "mode=semionline", "detect_every=2", "clip_size=2", "fps=7.5",
    )  # fmt: skip
    assert code == 0, err
    summary = check_outputs(out, [f"{t:05d}" for t in range(T)], 7.5, (H, W))
    assert summary["objects"] and summary["propagator"] == "deva"


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_hold_propagator_end_to_end(track, clip, tmp_path, capsys, mode: str) -> None:
    out = tmp_path / mode
    code, stdout, err = run(
        track, capsys, f"input={clip['mp4']}", f"output={out}", "segmenter=precomputed",
        f"detections={clip['dets']}", f"mode={mode}", "propagator=hold",
    )  # fmt: skip
    assert code == 0, err
    assert "propagator hold, no propagation network" in stdout
    summary = check_outputs(out, [f"{t:05d}" for t in range(T)], FPS, (H, W))
    assert summary["propagator"] == "hold" and summary["objects"]
    code, _, err = run(
        track, capsys, f"input={clip['mp4']}", f"output={tmp_path / 'bad'}",
        "segmenter=precomputed", f"detections={clip['dets']}", "propagator=sam9",
    )  # fmt: skip
    assert code == 2 and "unknown propagator 'sam9'" in err


@pytest.mark.parametrize(
    ("propagator", "mode"), [("sam2", "semionline"), ("sam3", "online"), ("edgetam", "offline")]
)
def test_sam_family_propagators_end_to_end(
    track, clip, tiny, tmp_path, capsys, propagator: str, mode: str
) -> None:
    """SAM 2 / SAM 3's tracker / EdgeTAM propagate under the unchanged tracker: valid outputs
    (no overlaps, ids match the JSON, RLE equals the PNGs) and the backend in summary.json."""
    out = tmp_path / propagator
    folder = tiny[f"{propagator}_video"]
    code, stdout, err = run(
        track, capsys, f"input={clip['mp4']}", f"output={out}", "segmenter=precomputed",
        f"detections={clip['dets']}", f"mode={mode}", f"propagator={propagator}",
        f"propagator_model={folder}",
    )  # fmt: skip
    assert code == 0, err
    assert f"propagator {propagator}, model {folder}" in stdout
    summary = check_outputs(out, [f"{t:05d}" for t in range(T)], FPS, (H, W))
    assert summary["propagator"] == propagator and summary["objects"]
    code, _, err = run(
        track, capsys, f"input={clip['mp4']}", f"output={tmp_path / 'missing'}",
        "segmenter=precomputed", f"detections={clip['dets']}", f"propagator={propagator}",
        f"propagator_model={tmp_path / 'no_such_model'}",
    )  # fmt: skip
    assert code == 2 and "model folder not found" in error_line(err)


def test_unknown_segmenter_lists_available(track, clip, tmp_path, capsys) -> None:
    code, _, err = run(
        track, capsys, f"input={clip['mp4']}", f"output={tmp_path}", "segmenter=yolo"
    )
    assert code == 2
    line = error_line(err)
    assert "'yolo'" in line
    names = ("sam", "grounded_sam", "owlv2_sam", "sam3", "mask2former", "oneformer", "precomputed")
    for name in names:
        assert name in line


def test_prompt_required_and_offline_error(track, clip, tmp_path, capsys) -> None:
    code, _, err = run(track, capsys, f"input={clip['mp4']}", f"output={tmp_path / 'a'}",
                       "segmenter=grounded_sam")  # fmt: skip
    assert code == 2 and "prompt" in error_line(err)
    pytest.importorskip("transformers")
    code, _, err = run(
        track, capsys, f"input={clip['mp4']}", f"output={tmp_path / 'b'}", "segmenter=sam",
        "offline_models=true",
    )  # fmt: skip
    assert code == 2
    line = error_line(err)
    assert "facebook/sam-vit-base" in line and "config.json" in line


def test_sam3_prompt_errors_are_one_line(track, clip, tiny, tmp_path, capsys) -> None:
    base = [f"input={clip['mp4']}", "segmenter=sam3", f"segmenter.model={tiny['sam3']}"]
    code, _, err = run(track, capsys, *base, f"output={tmp_path / 'a'}")
    assert code == 2 and "needs a text prompt" in error_line(err)
    code, _, err = run(track, capsys, *base, f"output={tmp_path / 'b'}", "prompt=...")
    assert code == 2 and "names no objects" in error_line(err)


def test_overwrite_and_resume(track, clip, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    torch.manual_seed(3)
    weights = save_weights(PropagationModel(PropagationConfig.preset("tiny")), tmp_path / "w.pth")
    common = [f"input={clip['frames']}", f"output={out}", "mode=online", "detect_every=2",
              f"model.weights={weights}"]  # fmt: skip
    code, _, err = run(track, capsys, *common, f"detections={clip['dets']}")
    assert code == 0, err
    first = {p.name: p.read_bytes() for p in (out / "masks").iterdir()}
    # a second run into the same folder is refused, with overwrite=true it replaces the first
    code, _, err = run(track, capsys, *common, f"detections={clip['dets']}")
    assert code == 2 and "overwrite=true" in error_line(err)
    # ... but never deletes a file no run wrote: it refuses and deletes nothing
    (out / "masks" / "stale.png").write_bytes(first["00000.png"])
    code, _, err = run(track, capsys, *common, f"detections={clip['dets']}", "overwrite=true")
    assert code == 2 and "no deva run wrote" in error_line(err)
    assert (out / "masks" / "stale.png").exists() and (out / "masks" / "00000.png").exists()
    (out / "masks" / "stale.png").unlink()
    code, _, err = run(track, capsys, *common, f"detections={clip['dets']}", "overwrite=true")
    assert code == 0, err
    # a complete run is not resumed
    code, _, err = run(track, capsys, *common, f"detections={clip['dets']}", "resume=true")
    assert code == 2 and "already complete" in error_line(err)

    # a run that stops at frame 00004 (its detections are unreadable) after its state was
    # saved at frame 4 resumes there and ends with exactly the masks of an uninterrupted run
    dets = tmp_path / "dets"
    shutil.copytree(clip["dets"], dets)
    good = (dets / "00004.json").read_text()
    (dets / "00004.json").write_text("{broken")
    broken = [*common, f"detections={dets}", "state_every=2", "overwrite=true"]
    code, _, err = run(track, capsys, *broken)
    assert code == 2 and "00004" in error_line(err)
    assert json.loads((out / "run.json").read_text())["state"].startswith("failed: ")
    (dets / "00004.json").write_text(good)
    kept = {n: (out / "masks" / n).stat().st_mtime_ns for n in ("00000.png", "00002.json")}
    again = [*common, f"detections={dets}", "state_every=2"]
    # other settings are refused
    code, _, err = run(track, capsys, *again, "resume=true", "detect_every=3")
    assert code == 2 and "detect_every" in error_line(err)
    code, stdout, err = run(track, capsys, *again, "resume=true")
    assert code == 0, err
    assert "4 kept" in stdout
    summary = check_outputs(out, [f"{t:05d}" for t in range(T)], 24.0, (H, W))
    assert summary["resumed_frames"] == 4 and summary["frames_tracked"] == 1
    assert {n: (out / "masks" / n).stat().st_mtime_ns for n in kept} == kept
    assert {p.name: p.read_bytes() for p in (out / "masks").iterdir()} == first

    # offline mode says why it cannot resume
    off = tmp_path / "off"
    offline = [f"input={clip['frames']}", f"output={off}", f"detections={clip['dets']}",
               "mode=offline"]  # fmt: skip
    assert run(track, capsys, *offline)[0] == 0
    state = json.loads((off / "run.json").read_text())
    state["state"] = "running"
    (off / "run.json").write_text(json.dumps(state))
    code, _, err = run(track, capsys, *offline, "resume=true")
    assert code == 2 and "mode=offline" in error_line(err)


def write_vfr_odd_video(path: Path, frames: list[np.ndarray], pts: list[int]) -> None:
    """An mp4 with the given presentation times (1/1000 s) and the frames' (odd) size."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
        for frame, t in zip(frames, pts):
            padded = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
            video_frame = av.VideoFrame.from_ndarray(padded, format="rgb24")
            video_frame.pts = t
            video_frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_variable_frame_rate_and_odd_size(track, clip, tmp_path, capsys) -> None:
    frames = [np.ascontiguousarray(f[:45, :61]) for _, f in read_video(clip["frames"])]
    source = tmp_path / "vfr.mp4"
    write_vfr_odd_video(source, frames, [0, 50, 150, 200, 400])
    reader = read_video(source)
    decoded = list(reader)
    assert len(decoded) == T and reader.fps and reader.fps > 0
    size = decoded[0][1].shape[:2]
    out = tmp_path / "vfr"
    code, _, err = run(
        track, capsys, f"input={source}", f"output={out}", f"detections={clip['dets']}",
        "mode=semionline", "detect_every=2", "clip_size=2",
    )  # fmt: skip
    assert code == 0, err
    check_outputs(out, [f"{t:05d}" for t in range(T)], reader.fps, size)


def test_corrupt_frame_is_named_and_earlier_outputs_kept(track, clip, tmp_path, capsys) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for path in sorted(clip["frames"].iterdir()):
        (frames / path.name).write_bytes(path.read_bytes())
    (frames / "00003.png").write_bytes(b"not an image at all")
    out = tmp_path / "out"
    code, _, err = run(
        track, capsys, f"input={frames}", f"output={out}", f"detections={clip['dets']}",
        "mode=online",
    )  # fmt: skip
    assert code == 2
    assert "00003.png" in error_line(err)
    assert sorted(p.stem for p in (out / "masks").glob("*.png")) == ["00000", "00001", "00002"]
    assert json.loads((out / "run.json").read_text())["state"].startswith("failed")
    count, _, _ = mp4_info(out / "overlay.mp4")
    assert count == 3


def test_library_api(clip, tmp_path) -> None:
    """PropagationModel.from_pretrained + DecoupledTracker + read_video, as in the README."""
    from deva.inference.tracker import DecoupledTracker
    from deva.inference.tracker_config import TrackerConfig
    from deva.modeling.config import PropagationConfig
    from deva.modeling.propagation import PropagationModel
    from deva.modeling.weights import save_weights
    from deva.segmenters import PrecomputedSegmenter

    weights = save_weights(PropagationModel(PropagationConfig.preset("tiny")), tmp_path / "w.pth")
    tracker = DecoupledTracker(
        PropagationModel.from_pretrained(str(weights)),
        PrecomputedSegmenter(clip["dets"]),
        TrackerConfig(mode="online", shorter_side=-1),
    )
    results = list(tracker.stream(read_video(clip["mp4"])))
    assert [r.name for r in results] == [f"{t:05d}" for t in range(T)]
    assert all(tuple(r.mask.shape) == (H, W) for r in results)
    assert any(r.segments for r in results)
