"""Track every object of your own video with an image segmenter + the propagation model.

    deva-track input=VIDEO_OR_FRAME_DIR output=DIR \
        segmenter=sam|grounded_sam|mask2former|oneformer|precomputed [prompt="a. b."] \
        [mode=online|semionline|offline] [size=480] [model.weights=FILE] \
        [segmenter.model=HUB_ID_OR_DIR] [amp=bf16] [resume=true] [overwrite=true]

Writes ``DIR/masks/<frame>.png`` (palette ids, RGB-encoded beyond 255) + ``<frame>.json``
(``[{id, label, category_id, score, isthing, area, box}]``), ``DIR/coco_rle.json`` (whole
video, per object label, score and per-frame COCO RLE), ``DIR/overlay.mp4`` (input frame
rate) and ``DIR/summary.json``; see ``deva.pipelines.video_tracking``. Segmenter options are
``segmenter.KEY=VALUE`` (``deva/configs/segmenter/<name>.yaml``). Precomputed detections use the
generic per-frame format (``deva.io.detections``), named like the frames (video files:
``00000``, ``00001``, ...). ``python tools/track.py`` takes the same arguments.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from deva.config import ConfigError, compose
from deva.config.options import inference_options, output_folder, tracker_config
from deva.inference.options import pick_device
from deva.modeling.weights import build_model
from deva.pipelines.video_tracking import clear_outputs, track_video
from deva.segmenters import SEGMENTERS, build_segmenter, check_segmenter_name
from deva.segmenters.registry import PROMPTED

log = logging.getLogger("track")


def _requested_segmenter(argv: list[str]) -> str | None:
    """The ``segmenter=NAME`` override, checked before Hydra sees it (one-line error)."""
    for item in argv:
        key, _, value = item.partition("=")
        if key.lstrip("+~") == "segmenter":
            return check_segmenter_name(value.strip())
    return None


def _settings(cfg) -> dict:
    """The resolved config as plain data (stored in run.json and summary.json)."""
    return OmegaConf.to_container(cfg, resolve=True)


def _segmenter(cfg, device, dtype_name: str):
    options = OmegaConf.to_container(cfg.segmenter, resolve=True)
    name = options.pop("name")
    if name not in PROMPTED and cfg.prompt:
        log.warning("prompt=%r is ignored by segmenter=%s", cfg.prompt, name)
    offline = cfg.offline_models
    if offline is None and os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        offline = True
    return build_segmenter(
        name,
        options,
        prompt=cfg.prompt,
        detections=cfg.detections,
        device=device,
        dtype=dtype_name if device.type != "cpu" else None,
        local_files_only=offline,
    )


def run(cfg) -> int:
    """Track ``cfg.input``; returns the number of frames in the output."""
    if cfg.input is None:
        raise ConfigError("input=VIDEO_OR_FRAME_DIR is required")
    if not Path(cfg.input).exists():
        raise FileNotFoundError(f"input not found: {cfg.input}")
    if cfg.resume and cfg.overwrite:
        raise ConfigError("resume=true and overwrite=true contradict each other; pick one")
    name = cfg.segmenter.name
    if name == "precomputed" and cfg.detections is None:
        raise ConfigError("detections=DIR is required with segmenter=precomputed")
    if name in PROMPTED and not cfg.prompt:
        raise ConfigError(f'segmenter={name} needs a text prompt, e.g. prompt="person. dog."')
    if cfg.output is None:
        raise ConfigError("output=DIR is required")
    out = Path(cfg.output) if cfg.resume else output_folder(cfg.output, cfg.overwrite)
    if cfg.overwrite and not cfg.resume and out.is_dir():
        removed = clear_outputs(out)
        if removed:
            log.info(
                "overwrite=true: removed %d files of the previous run in %s", len(removed), out
            )
    device = pick_device(cfg.device)
    config = tracker_config(cfg)
    what = f"{name} prompt {cfg.prompt!r}" if cfg.prompt and name in PROMPTED else name
    model_id = cfg.detections if name == "precomputed" else cfg.segmenter.get("model")
    print(
        f"tracking {cfg.input} with {what} ({model_id}) ({config.mode.value}, detect every "
        f"{config.detect_every}, clip {config.clip_length}) on {device} -> {out} "
        f"(weights {cfg.model.weights or 'RANDOM'}){' [resume]' if cfg.resume else ''}"
    )
    segmenter = _segmenter(cfg, device, cfg.amp)
    model = build_model(cfg.model.preset, cfg.model.weights).to(device)
    start = time.perf_counter()
    report = track_video(
        model,
        segmenter,
        config,
        options=inference_options(cfg),
        source=cfg.input,
        output=out,
        overlay=cfg.overlay,
        fps=cfg.fps,
        progress=cfg.progress,
        resume=cfg.resume,
        settings=_settings(cfg),
    )
    elapsed = time.perf_counter() - start
    resumed = f" ({report.resumed_frames} kept from the interrupted run)" if cfg.resume else ""
    print(
        f"done: {report.frames} frames{resumed}, {report.objects} objects in {elapsed:.1f} s "
        f"-> {out}"
    )
    return report.frames


def main(argv: list[str] | None = None) -> int:
    """Compose ``track.yaml`` with ``argv`` and track; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        _requested_segmenter(argv)
        run(compose("track", argv))
    except (
        ConfigError,
        FileNotFoundError,
        ValueError,
        KeyError,
        ImportError,
    ) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["SEGMENTERS", "main", "run"]
