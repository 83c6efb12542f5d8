"""Tracking validation tasks (VIPSeg VPQ / STQ, BURST OWTA, synthetic VPQ) on small generated
sets in the official layouts: their numbers equal tools/evaluate.py + tools/score.py, bad sets
fail at start-up, and the picture of the first video is made."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from deva.config.builder.tasks import validation_tasks
from deva.data.synthetic import SyntheticVideoConfig, generate_video, video_name, video_seed
from deva.data.synthetic_benchmarks import (
    panoptic_ground_truth,
    write_burst_layout,
    write_vipseg_layout,
)
from deva.io.detections import write_frame_segmentation
from deva.io.masks import read_id_png
from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel
from deva.modeling.weights import save_weights
from deva.training.tasks.base import run_tasks
from deva.training.tasks.burst import BurstTask
from deva.training.tasks.panoptic import SyntheticPanopticTask, VipsegTask
from deva.types import empty_segmentation
from tests.helpers import EMBEDDED, load_tool

VIDEO = SyntheticVideoConfig(num_frames=8, height=64, width=96, num_objects=3)
TRACKER = {"size": -1, "mode": "semionline", "detect_every": 2, "clip_size": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def videos() -> list:
    return [(video_name(i), generate_video(VIDEO, video_seed(5, i))) for i in range(2)]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    model = PropagationModel(PropagationConfig.preset("tiny"))
    return save_weights(model, tmp_path_factory.mktemp("weights") / "tiny.pth")


@pytest.fixture(scope="module")
def model(weights: Path) -> PropagationModel:
    return PropagationModel.from_pretrained(weights)


@pytest.fixture(scope="module")
def trained() -> PropagationModel:
    """The embedded checkpoint: it tracks objects, so the scores compared are not all zero."""
    return PropagationModel.from_pretrained(EMBEDDED)


@pytest.fixture(scope="module")
def vipseg_set(tmp_path_factory, videos) -> dict[str, Path]:
    return write_vipseg_layout(tmp_path_factory.mktemp("vipseg"), videos, VIDEO)


@pytest.fixture(scope="module")
def burst_set(tmp_path_factory, videos) -> dict[str, Path]:
    return write_burst_layout(tmp_path_factory.mktemp("burst"), videos, VIDEO, annotate_every=2)


def _offline(capsys, tmp_path: Path, weights: Path, benchmark: str, paths, *extra: str) -> Path:
    out = tmp_path / f"offline_{benchmark}"
    code = load_tool("evaluate").main(
        [
            f"benchmark={benchmark}",
            f"data.images={paths['images']}",
            f"data.detections={paths['detections']}",
            f"output={out}",
            f"model.weights={weights}",
            "size=-1",
            "mode=semionline",
            "detect_every=2",
            "clip_size=2",
            *extra,
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return out


def _score(capsys, *args: str) -> dict:
    code = load_tool("score").main(list(args))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


@pytest.mark.parametrize("layout", ["vipseg", "generic"])
def test_vipseg_task_equals_evaluate_and_score(
    tmp_path: Path, capsys, videos, trained: PropagationModel, layout: str
) -> None:
    paths = write_vipseg_layout(tmp_path / "set", videos, VIDEO, detections=layout)
    spec = {"type": "vipseg", **{k: str(v) for k, v in paths.items()}, **TRACKER}
    (task,) = validation_tasks({"vip": spec})
    assert isinstance(task, VipsegTask)
    ours = run_tasks(trained, [task])

    out = _offline(capsys, tmp_path, EMBEDDED, "vipseg", paths)
    vpq = _score(capsys, "metric=vpq", f"gt={paths['gt']}", f"pred={out}")
    stq = _score(capsys, "metric=stq", f"gt={paths['gt']}", f"pred={out}")
    assert ours["val/vip/vpq"] == vpq["VPQ_bar"]
    assert ours["val/vip/vpq_things"] == vpq["VPQ_bar_things"]
    assert ours["val/vip/vpq_stuff"] == vpq["VPQ_bar_stuff"]
    for k in ("1", "2", "4", "6", "8", "10", "inf"):
        assert ours[f"val/vip/vpq_k{k}"] == vpq["VPQ"][k]
    assert (ours["val/vip/stq"], ours["val/vip/aq"], ours["val/vip/sq"]) == (
        stq["STQ"],
        stq["AQ"],
        stq["SQ"],
    )
    assert 0 <= ours["val/vip/vpq"] <= 100 and 0 <= ours["val/vip/stq"] <= 1


def test_burst_task_equals_evaluate_and_score(
    tmp_path: Path, capsys, burst_set, trained: PropagationModel
) -> None:
    spec = {"type": "burst", **{k: str(v) for k, v in burst_set.items()}, **TRACKER}
    (task,) = validation_tasks({"ow": spec})
    assert isinstance(task, BurstTask)
    ours = run_tasks(trained, [task])
    gt = burst_set["gt"]
    out = _offline(
        capsys, tmp_path, EMBEDDED, "burst", burst_set, f"data.gt={gt / 'all_classes.json'}"
    )
    official = _score(capsys, "metric=owta", f"gt={gt}", f"pred={out}")
    for split in ("all", "common", "uncommon"):
        assert ours[f"val/ow/owta_{split}"] == official["OWTA"][split]
        assert ours[f"val/ow/detre_{split}"] == official["DetRe"][split]
        assert ours[f"val/ow/assa_{split}"] == official["AssA"][split]
    assert ours["val/ow/owta_all"] > 10


def test_max_videos_and_max_frames_shorten_a_pass(vipseg_set, burst_set, model) -> None:
    spec = {k: str(v) for k, v in vipseg_set.items()}
    (short,) = validation_tasks(
        {"v": {"type": "vipseg", **spec, "max_videos": 1, "max_frames": 3, "size": -1}}
    )
    assert len(short) == 1 and short.num_frames(0) == 3
    gt_ids, gt_segments = short.panoptic_ground_truth(0)
    assert gt_ids.shape[0] == 3 and len(gt_segments) == 3
    run_tasks(model, [short])  # 3 frames scored against 3 ground-truth frames
    spec = {k: str(v) for k, v in burst_set.items()}
    (burst,) = validation_tasks({"b": {"type": "burst", **spec, "max_frames": 5, "size": -1}})
    # frames 0, 2, 4 of 8 are annotated (every 2nd); 5 tracked frames keep three of them
    assert burst._ground_truth(0, "all").annotated_image_paths == [
        "00000.jpg",
        "00002.jpg",
        "00004.jpg",
    ]
    assert "val/b/owta_all" in run_tasks(model, [burst])


def test_synthetic_panoptic_task_and_picture(model: PropagationModel) -> None:
    spec = {"type": "synthetic_panoptic", "num_videos": 2, "seed": 7, "num_frames": 6,
            "height": 64, "width": 96, "mode": "online", "detect_every": 2}  # fmt: skip
    (task,) = validation_tasks({"pan": spec})
    assert isinstance(task, SyntheticPanopticTask)
    assert task.config.shorter_side == -1 and task.config.detect_every == 2
    first = run_tasks(model, [task])
    keys = {"vpq", "vpq_things", "vpq_stuff", "stq", "aq", "sq"} | {
        f"vpq_k{k}" for k in (1, 2, 4, 6, 8, 10, "inf")
    }
    assert set(first) == {f"val/pan/{k}" for k in keys}
    assert first == run_tasks(model, [task])  # deterministic
    # frames / ground truth / tracks, 4 sampled frames of the first 64x96 video side by side
    assert task.preview is not None and task.preview.shape == (3 * 64, 4 * 96, 3)
    assert task.preview.dtype == np.uint8


def test_trained_weights_score_higher_vpq_than_random() -> None:
    """The task measures the propagation model: the embedded checkpoint beats random weights."""
    spec = {"type": "synthetic_panoptic", "num_videos": 1, "seed": 11, "num_frames": 12,
            "height": 96, "width": 128, "preview_frames": 0}  # fmt: skip
    (task,) = validation_tasks({"p": spec})
    trained = PropagationModel.from_pretrained(EMBEDDED)
    torch.manual_seed(0)
    random = PropagationModel(trained.config)
    good = run_tasks(trained.float(), [task])["val/p/vpq"]
    bad = run_tasks(random, [task])["val/p/vpq"]
    assert good > bad + 5


def test_synthetic_panoptic_ground_truth_is_things_over_stuff(videos) -> None:
    _, video = videos[0]
    gt = panoptic_ground_truth(video)
    assert gt.ids.shape == video.masks.shape
    things = video.masks > 0
    np.testing.assert_array_equal(gt.ids[things], 1000 + video.masks[things].astype(np.int32))
    assert np.all(gt.ids[~things] < 1000) and np.all(gt.ids > 0)
    for t, infos in enumerate(gt.segments):
        assert sorted(s["id"] for s in infos) == sorted(set(np.unique(gt.ids[t]).tolist()))


def test_written_vipseg_ground_truth_reads_back(vipseg_set, videos) -> None:
    name, video = videos[1]
    png = vipseg_set["gt"].parent / "panomasksRGB" / name / "00003.png"
    np.testing.assert_array_equal(read_id_png(png), panoptic_ground_truth(video).ids[3])


# -- bad sets fail when they are built --------------------------------------------------------


def test_bad_sets_fail_at_start_with_one_clear_error(tmp_path: Path, vipseg_set) -> None:
    good = {k: str(v) for k, v in vipseg_set.items()}
    cases = [
        ({"type": "vipsegg", **good}, "unknown type 'vipsegg'"),
        ({"type": "vipseg", **good, "images": str(tmp_path / "nope")}, "images folder not found"),
        ({"type": "vipseg", **good, "detections": str(tmp_path / "nope")}, "detections not found"),
        ({"type": "vipseg", "images": good["images"], "gt": good["gt"]}, "needs detections=PATH"),
        ({"type": "vipseg", **good, "mode": "sometimes"}, "unknown tracking mode"),
        ({"type": "vipseg", **good, "colour": 3}, "unknown key(s) ['colour']"),
        ({"type": "synthetic_panoptic", "num_videos": 0}, "is empty"),
        ({"type": "burst", "images": good["images"], "gt": str(tmp_path),
          "detections": good["detections"]}, "all_classes.json not found"),
    ]  # fmt: skip
    for spec, message in cases:
        with pytest.raises((ValueError, FileNotFoundError)) as info:
            validation_tasks({"bad": spec})
        text = str(info.value)
        assert message in text, text
        assert "\n" not in text


def test_detections_for_frames_that_do_not_exist(tmp_path: Path, vipseg_set, burst_set) -> None:
    # generic layout: one more detection file than there are frames
    root = tmp_path / "copy"
    shutil.copytree(vipseg_set["gt"].parent, root)
    det = root / "detections"
    shutil.rmtree(det)
    for name in ("video_000", "video_001"):
        for t in range(9):  # the videos have 8 frames
            write_frame_segmentation(det / name, f"{t:05d}", empty_segmentation(64, 96))
    spec = {"type": "vipseg", "images": str(root / "images"), "detections": str(det),
            "gt": str(root / "panoptic_gt_VIPSeg_val.json")}  # fmt: skip
    with pytest.raises(
        ValueError,
        match=r"video 'video_000' holds detections for 1 frame\(s\) the video does not have, "
        r"e.g. '00008'$",
    ):
        validation_tasks({"v": spec})
    # BURST json naming a frame the folder lacks
    data = json.loads(burst_set["detections"].read_text())
    data["sequences"][0]["annotated_image_paths"][-1] = "00099.jpg"
    bad = tmp_path / "dets.json"
    bad.write_text(json.dumps(data))
    spec = {"type": "burst", "images": str(burst_set["images"]), "gt": str(burst_set["gt"]),
            "detections": str(bad)}  # fmt: skip
    with pytest.raises(ValueError, match="'00099'"):
        validation_tasks({"b": spec})


def test_missing_frame_of_the_ground_truth(tmp_path: Path, vipseg_set) -> None:
    root = tmp_path / "copy"
    shutil.copytree(vipseg_set["gt"].parent, root)
    (root / "images" / "video_001" / "00004.jpg").unlink()
    spec = {"type": "vipseg", "images": str(root / "images"),
            "detections": str(root / "detections"),
            "gt": str(root / "panoptic_gt_VIPSeg_val.json")}  # fmt: skip
    with pytest.raises(FileNotFoundError, match="video 'video_001' has no frame '00004'"):
        validation_tasks({"v": spec})


def test_make_synthetic_writes_benchmark_layouts_that_validate(tmp_path: Path, capsys) -> None:
    tool = load_tool("make_synthetic")
    common = ["num_videos=1", "num_frames=4", "height=48", "width=64"]
    assert tool.main([f"output={tmp_path / 'v'}", "format=vipseg", *common]) == 0
    assert tool.main([f"output={tmp_path / 'b'}", "format=burst", *common]) == 0
    assert tool.main([f"output={tmp_path / 'x'}", "format=coco", *common]) == 2
    capsys.readouterr()
    vip = {"type": "vipseg", "images": str(tmp_path / "v" / "images"),
           "gt": str(tmp_path / "v" / "panoptic_gt_VIPSeg_val.json"),
           "detections": str(tmp_path / "v" / "detections")}  # fmt: skip
    ow = {"type": "burst", "images": str(tmp_path / "b" / "frames" / "val"),
          "gt": str(tmp_path / "b" / "gt" / "val"),
          "detections": str(tmp_path / "b" / "detections.json")}  # fmt: skip
    tasks = validation_tasks({"vip": vip, "ow": ow})
    assert [len(t) for t in tasks] == [1, 1] and tasks[0].num_frames(0) == 4
