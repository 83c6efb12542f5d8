"""Track every object of your own video with an image segmenter + the propagation model.

    python tools/track.py input=VIDEO_OR_FRAME_DIR output=DIR segmenter=precomputed \
        detections=DIR mode=online|semionline|offline [model.weights=FILE] [size=480]

Writes ``DIR/masks/<frame>.png`` (palette ids, RGB-encoded beyond 255) + ``<frame>.json``
(``[{id, category_id, score, isthing}]``), ``DIR/overlay.mp4`` and ``DIR/summary.json``.
Precomputed detections use the generic per-frame format (``deva.io.detections``), named like
the frames (video files: ``00000``, ``00001``, ...).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


from deva.config import ConfigError, compose
from deva.config.options import output_folder, tracker_config
from deva.inference.detection_eval import track_video
from deva.modeling.weights import build_model, pick_device
from deva.segmenters import PrecomputedSegmenter

log = logging.getLogger("track")
SEGMENTERS = ("precomputed",)


def _segmenter(cfg):
    if cfg.segmenter not in SEGMENTERS:
        raise ConfigError(f"segmenter {cfg.segmenter!r} is not available; expected {SEGMENTERS}")
    if cfg.detections is None:
        raise ConfigError("detections=DIR is required with segmenter=precomputed")
    return PrecomputedSegmenter(cfg.detections, missing="empty")


def run(cfg) -> int:
    """Track ``cfg.input``; returns the number of frames written."""
    if cfg.input is None:
        raise ConfigError("input=VIDEO_OR_FRAME_DIR is required")
    if not Path(cfg.input).exists():
        raise FileNotFoundError(f"input not found: {cfg.input}")
    segmenter = _segmenter(cfg)
    out = output_folder(cfg.output, cfg.overwrite)
    device = pick_device(cfg.device)
    config = tracker_config(cfg, device)
    print(
        f"tracking {cfg.input} with {cfg.segmenter} detections {cfg.detections} "
        f"({config.mode.value}, detect every {config.detect_every}, clip {config.clip_length}) "
        f"on {device} -> {out} (weights {cfg.model.weights or 'RANDOM'})"
    )
    model = build_model(cfg.model.preset, cfg.model.weights).to(device)
    start = time.perf_counter()
    frames = track_video(
        model,
        segmenter,
        config,
        source=cfg.input,
        output=out,
        overlay=cfg.overlay,
        fps=cfg.fps,
    )
    elapsed = time.perf_counter() - start
    print(f"done: {frames} frames in {elapsed:.1f} s -> {out}")
    return frames


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(compose("track", argv))
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
