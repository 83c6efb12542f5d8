"""Two-process gloo DDP gives the same numbers as one process, for all four metrics.

One spawn runs every metric (process start-up dominates the cost). Work is split unevenly on
purpose: STQ frames of one sequence land on different ranks, and rank 1 sees no J&F
sequence at all in the "lonely" metric.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deva.metrics import (
    JAndF,
    OpenWorldTrackingAccuracy,
    SegmentationAndTrackingQuality,
    VideoPanopticQuality,
)

CATEGORIES = {0: False, 1: True, 2: True}


def _jf_data() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(10)
    out = []
    for n_obj in (1, 2, 3, 2):
        gt = np.zeros((5, 16, 20), dtype=np.int64)
        for t in range(5):
            for k in range(1, n_obj + 1):
                y, x = rng.integers(0, 11), rng.integers(0, 15)
                gt[t, y : y + 5, x : x + 5] = k
        pred = np.where(rng.random(gt.shape) < 0.15, 0, gt)
        out.append((pred, gt))
    return out


def _vpq_data() -> list[tuple]:
    rng = np.random.default_rng(11)
    out = []
    for _ in range(4):
        gt = rng.integers(0, 4, size=(4, 5, 6))
        pred = np.where(rng.random(gt.shape) < 0.2, 0, gt + 10)
        pred[pred == 10] = 0
        cat = {1: 0, 2: 1, 3: 2}
        gt_s = [
            [
                {
                    "id": int(i),
                    "category_id": cat[int(i)],
                    "iscrowd": 0,
                    "area": int((gt[t] == i).sum()),
                }
                for i in np.unique(gt[t])
                if i
            ]
            for t in range(4)
        ]
        pred_s = [
            [{"id": int(i), "category_id": cat[int(i) - 10]} for i in np.unique(pred[t]) if i]
            for t in range(4)
        ]
        out.append((pred, gt, pred_s, gt_s))
    return out


def _stq_data() -> list[tuple[np.ndarray, np.ndarray, int]]:
    rng = np.random.default_rng(12)
    frames = []
    for t in range(6):
        sem = rng.integers(0, 3, size=(6, 7))
        gt = (sem << 16) + rng.integers(0, 3, size=sem.shape)
        pred = (np.where(rng.random(sem.shape) < 0.2, 255, sem) << 16) + rng.integers(
            1, 3, sem.shape
        )
        frames.append((pred, gt, t % 2))  # two sequences, frames interleaved
    return frames


def _owta_data() -> list[tuple]:
    rng = np.random.default_rng(13)
    out = []
    for _ in range(4):
        n_t = 5
        gt_ids = [np.array([1, 2]) for _ in range(n_t)]
        gt_boxes = [np.array([[0, 0, 10, 10], [20, 20, 8, 8]]) + t for t in range(n_t)]
        pred_ids = [
            np.array([7, 8]) if rng.random() < 0.7 else np.array([8, 7]) for _ in range(n_t)
        ]
        pred_boxes = [b + rng.integers(-3, 4, size=b.shape) for b in gt_boxes]
        out.append((gt_ids, gt_boxes, pred_ids, pred_boxes))
    return out


def _run_all(rank: int, world: int) -> dict[str, dict[str, float]]:
    # .to() as a Lightning module or the Predictor does (it used to reset float64 states)
    jf, lonely = JAndF(), JAndF().to("cpu")
    for i, (p, g) in enumerate(_jf_data()):
        if i % world == rank:
            jf.update(torch.from_numpy(p), torch.from_numpy(g), sequence_id=i)
    if rank == 0:
        p, g = _jf_data()[0]
        lonely.update(p, g, sequence_id=0)
    vpq = VideoPanopticQuality(CATEGORIES, window_sizes=(1, 2, None))
    for i, (p, g, ps, gs) in enumerate(_vpq_data()):
        if i % world == rank:
            vpq.update(p, g, ps, gs)
    stq = SegmentationAndTrackingQuality(num_classes=3, thing_ids=[1, 2])
    for i, (p, g, seq) in enumerate(_stq_data()):
        if (i // 2) % world == rank:
            stq.update(p, g, sequence_id=seq)
    # Nothing predicted and nothing of the things class anywhere: some STQ tables are empty
    # on every rank (gloo cannot gather tensors that are empty everywhere).
    blank = SegmentationAndTrackingQuality(num_classes=3, thing_ids=[1, 2]).to("cpu")
    if rank == 0:  # rank 1 sees nothing at all
        gt = np.zeros((4, 5), dtype=np.int64)
        gt[1:3, 1:4] = (1 << 16) + 1  # one thing (class 1, instance 1), never predicted
        for _ in range(3):
            blank.update(np.zeros_like(gt), gt, sequence_id=0)
    owta = OpenWorldTrackingAccuracy(splits=("all", "common"))
    for i, item in enumerate(_owta_data()):
        if i % world == rank:
            owta.update(*item, split="all" if i < 3 else "common")
    return {
        name: {k: float(v) for k, v in metric.compute().items()}
        for name, metric in (
            ("jf", jf),
            ("lonely", lonely),
            ("vpq", vpq),
            ("stq", stq),
            ("blank", blank),
            ("owta", owta),
        )
    }


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = _run_all(rank, world)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_equals_single_process(tmp_path: Path) -> None:
    single = _run_all(0, 1)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        ddp = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert ddp.keys() == single.keys()
        for name, values in single.items():
            assert ddp[name].keys() == values.keys()
            for key, value in values.items():
                assert ddp[name][key] == pytest.approx(value, rel=1e-12, nan_ok=True), (name, key)
    # The comparison is meaningful: the metrics are not trivially perfect.
    assert single["jf"]["J-Mean"] < 1.0 and single["stq"]["AQ"] < 1.0
    assert 0 < single["owta"]["OWTA/all"] < 100.0
