"""Score predictions in a benchmark's official format; prints one JSON object to stdout.

Usage::

    deva-score metric=jf|vpq|stq|owta gt=PATH pred=PATH [split=val] [out=scores.json]

- ``jf``: ``gt`` = DAVIS root (``ImageSets/<year>/<split>.txt``, ``Annotations/480p``),
  ``pred`` = folder of ``<seq>/<frame>.png``. Options: ``year=2017|2016``,
  ``resolution=480p``, ``task=semi-supervised|unsupervised`` (unsupervised: all frames, void
  excluded, up to 20 proposals matched to objects).
- ``vpq`` / ``stq``: ``gt`` = VIPSeg root (``panoptic_gt_VIPSeg_<split>.json`` +
  ``panomasksRGB/``) or the json itself, ``pred`` = folder with ``pred.json`` + ``pan_pred/``.
  Option for vpq: ``windows=[1,2,4,6,8,10,inf]``; for stq: ``num_classes=N`` (default: largest
  category id + 1) and ``strict=false`` to read predicted ids missing from ``segments_info`` as
  void, as the official STQ script does, instead of failing.
- ``owta``: ``gt`` = folder holding ``all_classes.json``, ``common_classes.json`` and
  ``uncommon_classes.json``; ``pred`` = the prediction json (or a folder with exactly one).
  Options: ``splits=[all,common,uncommon]``, ``similarity=box|mask``, ``max_detections=300``.

Other options: ``verbose=true`` logs progress details to stderr. Bad input (missing frames,
unknown labels, mismatched sizes) exits with status 2 and a one-line reason on stderr.
``python tools/score.py`` takes the same arguments.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from deva.cli.common import console_logging
from deva.config import ConfigError, compose, quote_paths
from deva.config.schema import ScoreConfig, parse
from deva.io import burst, davis, vipseg
from deva.io.outputs import RUN_FILE
from deva.metrics import scoring
from deva.metrics._common import nan_to_none
from deva.metrics.jf import JAndF
from deva.metrics.owta import OpenWorldTrackingAccuracy, owta_summary
from deva.metrics.vpq import VideoPanopticQuality, vpq_summary

log = logging.getLogger("score")
METRICS = ("jf", "vpq", "stq", "owta")


class UsageError(ValueError):
    """Bad command-line arguments."""


def _progress(items: Sequence[Any], desc: str) -> Any:
    return tqdm(items, desc=desc, file=sys.stderr, disable=None, leave=False)


def _required(cfg: ScoreConfig, key: str) -> str:
    value = getattr(cfg, key)
    if value in (None, ""):
        raise UsageError(f"missing {key}=PATH")
    return str(value)


def score_jf(cfg: ScoreConfig) -> dict[str, Any]:
    """DAVIS J&F (semi-supervised protocol) of a prediction folder."""
    root, pred = Path(_required(cfg, "gt")), Path(_required(cfg, "pred"))
    split, year, resolution, task = cfg.split, cfg.year, cfg.resolution, cfg.task
    binary = year == 2016 if cfg.binary is None else cfg.binary
    if task not in ("semi-supervised", "unsupervised"):
        raise UsageError(f"task must be semi-supervised or unsupervised, got {task!r}")
    if not pred.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {pred}")
    sequences = davis.read_sequence_list(root, split, year)
    log.info("J&F on %d sequences of DAVIS %d %s", len(sequences), year, split)
    metric = JAndF(mode=task)
    names: dict[int, str] = {}
    for index, seq in enumerate(_progress(sequences, "J&F")):
        frames, gt = davis.read_annotations(root, seq, resolution=resolution, binary=binary)
        preds = np.zeros_like(gt)
        if task == "unsupervised":
            preds = davis.read_predictions(pred, seq, frames, shape=gt.shape[1:], binary=binary)
        elif len(frames) > 2:
            preds[1:-1] = davis.read_predictions(
                pred, seq, frames[1:-1], shape=gt.shape[1:], binary=binary
            )
        try:
            metric.update(preds, gt, sequence_id=index)
        except ValueError as error:
            raise ValueError(f"sequence {seq!r}: {error}") from error
        names[index] = seq
    result: dict[str, Any] = {k: float(v) for k, v in metric.compute().items()}
    per_object = metric.per_object(names)
    result["per_object"] = {
        name: {"J-Mean": row["J-Mean"], "F-Mean": row["F-Mean"]} for name, row in per_object.items()
    }
    per_sequence: dict[str, dict[str, float]] = {}
    for seq in sequences:
        rows = [r for n, r in per_object.items() if n.rsplit("_", 1)[0] == seq]
        j = float(np.mean([r["J-Mean"] for r in rows])) if rows else float("nan")
        f = float(np.mean([r["F-Mean"] for r in rows])) if rows else float("nan")
        per_sequence[seq] = {
            "J&F-Mean": (j + f) / 2,
            "J-Mean": j,
            "F-Mean": f,
            "objects": len(rows),
        }
    result["per_sequence"] = per_sequence
    return result


def _windows(cfg: ScoreConfig) -> tuple[int | None, ...]:
    raw = cfg.windows
    if isinstance(raw, str | int):
        raw = [raw]
    out: list[int | None] = []
    for k in raw:
        if str(k).lower() in ("inf", "none", "all"):
            out.append(None)
        else:
            try:
                out.append(int(k))
            except ValueError as error:
                raise UsageError(f"window sizes must be integers or inf, got {k!r}") from error
    return tuple(out)


def _vipseg_videos(cfg: ScoreConfig) -> tuple[vipseg.VipsegGroundTruth, Path, dict]:
    gt = vipseg.load_ground_truth(_required(cfg, "gt"), cfg.split)
    pred_dir = Path(_required(cfg, "pred"))
    preds = vipseg.load_predictions(pred_dir)
    for video in gt.videos:
        if video.video_id not in preds:
            raise ValueError(f"pred.json has no annotations for video {video.video_id!r}")
    return gt, pred_dir, preds


def score_vpq(cfg: ScoreConfig) -> dict[str, Any]:
    """VPQ^k (all / things / stuff) and VPQ_bar of VIPSeg-format predictions."""
    gt, pred_dir, preds = _vipseg_videos(cfg)
    windows = _windows(cfg)
    metric = VideoPanopticQuality(gt.isthing, window_sizes=windows)
    per_video: dict[str, Any] = {}
    for video in _progress(gt.videos, "VPQ"):
        gt_ids, pred_ids, gt_segs, pred_segs = vipseg.read_video(
            gt, video, pred_dir, preds[video.video_id]
        )
        try:
            stats = scoring.vpq_stats(metric, gt_ids, pred_ids, gt_segs, pred_segs)
        except ValueError as error:
            raise ValueError(f"video {video.video_id!r}: {error}") from error
        metric.update_stats(stats)
        per_video[video.video_id] = {"VPQ": vpq_summary(stats, gt.isthing)["VPQ"]}
    result = metric.summary()
    result["per_video"] = per_video
    return result


def score_stq(cfg: ScoreConfig) -> dict[str, Any]:
    """STQ / AQ / SQ of VIPSeg-format predictions (deeplab2 definition)."""
    gt, pred_dir, preds = _vipseg_videos(cfg)
    metric = scoring.stq_metric(gt.isthing, cfg.num_classes)
    ids: dict[int, str] = {}
    for index, video in enumerate(_progress(gt.videos, "STQ")):
        gt_ids, pred_ids, gt_segs, pred_segs = vipseg.read_video(
            gt, video, pred_dir, preds[video.video_id], strict=cfg.strict
        )
        try:
            scoring.update_stq(metric, gt_ids, pred_ids, gt_segs, pred_segs, index)
        except ValueError as error:
            raise ValueError(f"video {video.video_id!r}, {error}") from error
        ids[index] = video.video_id
    result: dict[str, Any] = {k: float(v) for k, v in metric.compute().items()}
    result["per_sequence"] = {ids[s]: v for s, v in metric.per_sequence().items()}
    return result


def _pred_json(path: Path) -> Path:
    if path.is_dir():
        files = sorted(f for f in path.glob("*.json") if f.name != RUN_FILE)
        if len(files) != 1:
            raise FileNotFoundError(
                f"{path} must contain exactly one prediction json, found {len(files)}"
            )
        return files[0]
    return path


def score_owta(cfg: ScoreConfig) -> dict[str, Any]:
    """OWTA / DetRe / AssA of a BURST prediction json for all / common / uncommon classes."""
    gt_dir = Path(_required(cfg, "gt"))
    pred = burst.load_burst(_pred_json(Path(_required(cfg, "pred"))))
    splits = cfg.splits
    splits = [splits] if isinstance(splits, str) else [str(s) for s in splits]
    unknown = [s for s in splits if s not in burst.SPLIT_FILES]
    if unknown:
        raise UsageError(f"unknown BURST class split(s) {unknown}; use {list(burst.SPLIT_FILES)}")
    similarity = cfg.similarity
    max_dets = cfg.max_detections
    metric = OpenWorldTrackingAccuracy(splits=splits)
    per_sequence: dict[str, dict[str, Any]] = {}
    for split in splits:
        gt = burst.load_burst(gt_dir / burst.SPLIT_FILES[split])
        rows: dict[str, Any] = {}
        for gt_seq, pred_seq in _progress(burst.match_predictions(gt, pred), f"OWTA {split}"):
            stats = scoring.owta_stats(
                gt_seq, pred_seq, max_detections=max_dets, similarity=similarity
            )
            metric.update_stats(stats, split=split)
            rows[f"{gt_seq.dataset}/{gt_seq.seq_name}"] = owta_summary(stats)
        per_sequence[split] = rows
    result: dict[str, Any] = {"OWTA": {}, "DetRe": {}, "AssA": {}}
    for split in splits:
        for key, value in owta_summary(metric.split_stats(split)).items():
            result[key][split] = value
    result["per_sequence"] = per_sequence
    return result


SCORERS = {"jf": score_jf, "vpq": score_vpq, "stq": score_stq, "owta": score_owta}


def run(argv: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` arguments and return the JSON-ready result."""
    cfg = parse(ScoreConfig, compose("score", quote_paths(list(argv), ("gt", "pred", "out"))))
    metric = cfg.metric or ""
    if metric not in SCORERS:
        raise UsageError(f"metric must be one of {'|'.join(METRICS)}, got {metric or 'nothing'!r}")
    result = {"metric": metric, **SCORERS[metric](cfg)}
    return nan_to_none(result)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: prints the JSON result, or a one-line reason and exits with status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a.strip().lower() in ("verbose=true", "verbose=1") for a in argv)
    level = logging.INFO if verbose else logging.WARNING
    try:
        with console_logging(level, info_to_stderr=True):  # stdout is the JSON result
            result = run(argv)
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        if isinstance(error, KeyError):
            message = f"missing key {message}"
        print(f"score.py: error: {message}", file=sys.stderr)
        return 2
    text = json.dumps(result, allow_nan=False)
    print(text)
    out = next((a.partition("=")[2] for a in argv if a.startswith("out=")), None)
    if out:
        Path(str(out)).parent.mkdir(parents=True, exist_ok=True)
        Path(str(out)).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
