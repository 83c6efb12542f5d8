r"""Track every object of your own video with an image segmenter + the propagation model.

    deva-track input=VIDEO_OR_FRAME_DIR output=DIR \
        segmenter=sam|grounded_sam|owlv2_sam|sam3|mask2former|oneformer|precomputed \
        [prompt="a. b."] [mode=online|semionline|offline] [size=480] [model.weights=FILE] \
        [segmenter.model=HUB_ID_OR_DIR] [propagator=deva|hold] [amp=bf16] [resume=true] \
        [overwrite=true]

``propagator=hold`` (each object keeps its last merged mask, no propagation network) is the
baseline to compare a propagation model with; ``summary.json`` names the backend.

Writes ``DIR/masks/<frame>.png`` (palette ids, RGB-encoded beyond 255) + ``<frame>.json``
(``[{id, label, category_id, score, isthing, area, box}]``), ``DIR/coco_rle.json`` (whole
video, per object label, score and per-frame COCO RLE), ``DIR/overlay.mp4`` (input frame
rate) and ``DIR/summary.json``; see ``deva.pipelines.video_tracking``. Segmenter options are
``segmenter.KEY=VALUE`` (``deva/configs/segmenter/<name>.yaml``). Precomputed detections use the
generic per-frame format (``deva.io.detections``), named like the frames (video files:
``00000``, ``00001``, ...). ``python tools/track.py`` takes the same arguments.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from deva.cli.common import run_tool
from deva.config import ConfigError, builder, compose
from deva.config.schema import TrackConfig, parse
from deva.io.outputs import check_folder
from deva.io.video import VideoFrames
from deva.pipelines.inputs import check_detections
from deva.pipelines.video_tracking import track_video
from deva.segmenters.precomputed import PrecomputedSegmenter
from deva.segmenters.registry import PROMPTED, check_segmenter_name

log = logging.getLogger("track")


def _requested_segmenter(argv: list[str]) -> str | None:
    """The ``segmenter=NAME`` override, checked before Hydra sees it (one-line error)."""
    for item in argv:
        key, _, value = item.partition("=")
        if key.lstrip("+~") == "segmenter":
            return check_segmenter_name(value.strip())
    return None


def _check(config: TrackConfig) -> None:
    """The tool's own rules on top of the schema's types; the output before slow work."""
    if config.input is None:
        raise ConfigError("input=VIDEO_OR_FRAME_DIR is required")
    if not Path(config.input).exists():
        raise FileNotFoundError(f"input not found: {config.input}")
    if config.output is None:
        raise ConfigError("output=DIR is required")
    check_folder(
        config.output,
        overwrite=config.overwrite,
        resume=config.resume,
        inputs=[config.input, config.detections],
    )


def run(cfg: DictConfig | TrackConfig) -> int:
    """Track ``cfg.input``; returns the number of frames in the output."""
    config = parse(TrackConfig, cfg)
    _check(config)
    name = config.segmenter["name"]
    if name not in PROMPTED and config.prompt:
        log.warning("prompt=%r is ignored by segmenter=%s", config.prompt, name)
    tracker = builder.tracker_config(config)
    options = builder.inference_options(config)
    device = options.torch_device()
    segmenter = builder.segmenter(
        config.segmenter,
        prompt=config.prompt,
        detections=config.detections,
        device=device,
        amp=config.amp,
        local_files_only=builder.offline_models(config.offline_models),
    )
    if isinstance(segmenter, PrecomputedSegmenter):
        frames = VideoFrames(config.input).names()
        where = str(segmenter.directory)
        check_detections(
            segmenter.frame_names(),
            frames,
            where,
            extra=config.extra_detections,
            hint="extra_detections=warn to go on",
        )
    what = f"{name} prompt {config.prompt!r}" if config.prompt and name in PROMPTED else name
    model_id = config.detections if name == "precomputed" else config.segmenter.get("model")
    print(
        f"tracking {config.input} with {what} ({model_id}) ({tracker.mode.value}, detect every "
        f"{tracker.detect_every}, clip {tracker.clip_length}) on {device} -> {config.output} "
        f"({builder.propagation_summary(config.model, tracker)})"
        f"{' [resume]' if config.resume else ''}"
    )
    model, model_options = builder.propagation(
        config.model,
        tracker,
        options,
        local_files_only=builder.offline_models(config.offline_models),
    )
    start = time.perf_counter()
    report = track_video(
        model,
        segmenter,
        tracker,
        options=model_options,
        source=config.input,
        output=config.output,
        overlay=config.overlay,
        fps=config.fps,
        progress=config.progress,
        resume=config.resume,
        overwrite=config.overwrite,
        state_every=config.state_every,
        inputs=[config.detections],
        settings=dataclasses.asdict(config),
    )
    elapsed = time.perf_counter() - start
    resumed = f" ({report.resumed_frames} kept from the interrupted run)" if config.resume else ""
    print(
        f"done: {report.frames} frames{resumed}, {report.objects} objects in {elapsed:.1f} s "
        f"-> {config.output}"
    )
    return report.frames


def main(argv: list[str] | None = None) -> int:
    """Compose ``track.yaml`` with ``argv`` and track; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)

    def body() -> None:
        _requested_segmenter(argv)
        run(compose("track", argv))

    return run_tool("error:", body)


if __name__ == "__main__":
    sys.exit(main())
