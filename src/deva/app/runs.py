"""The web demo's back end: :class:`TrackingApp` runs one request at a time.

It keeps the models (loaded on first use), calls
:func:`deva.pipelines.video_tracking.track_video` (the code behind ``tools/track.py``) in a
new run folder under ``<workdir>/runs`` (deleting the oldest beyond ``keep_runs``), packs
``masks/``, ``coco_rle.json`` and ``summary.json`` into a zip and writes a Markdown report.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from deva.app.settings import (
    SEGMENTER_LABELS,
    AppSettings,
    DemoResult,
    check_request,
    request_tracker_config,
)
from deva.config import builder
from deva.config.schema import ModelSection
from deva.inference.tracker_config import TrackerConfig, TrackingMode
from deva.io.outputs import read_run
from deva.modeling.propagation import PropagationModel
from deva.pipelines.video_tracking import (
    MASKS_DIR,
    OVERLAY_FILE,
    RLE_FILE,
    SUMMARY_FILE,
    track_video,
)
from deva.segmenters.registry import PROMPTED, build_segmenter
from deva.types import ImageSegmenter

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float | None, str], None]


def _model_name(options: Mapping[str, Any]) -> str:
    model = options.get("model") or "default"
    sam = options.get("sam_model")
    return f"{model} + {sam}" if sam else str(model)


class TrackingApp:
    """The demo's back end: models (loaded on first use and kept) and one request at a time."""

    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings
        self._model: PropagationModel | None = None
        self._segmenters: dict[str, ImageSegmenter] = {}

    # -- what is served -------------------------------------------------------------------
    def notices(self) -> list[str]:
        """Warnings about random models, shown at the top of the page and in each report."""
        notes = []
        if self.settings.random_segmenters:
            notes.append(
                "**Tiny RANDOM image segmenters** (demo mode): their masks are arbitrary "
                "shapes, not objects. Start the app with real weights for real results, "
                "e.g. `python tools/app.py model.weights=DEVA-propagation.pth`."
            )
        if not self.settings.model_weights:
            notes.append(
                "**RANDOM propagation model** (no `model.weights`): tracked masks are meaningless."
            )
        return notes + list(self.settings.notes)

    def describe(self) -> str:
        """One Markdown line per model in use."""
        s = self.settings
        weights = s.model_weights or "RANDOM"
        lines = [f"- propagation: `{s.model_preset}` preset, weights `{weights}`, on `{s.device}`"]
        for name, options in s.segmenters.items():
            lines.append(f"- {SEGMENTER_LABELS.get(name, name)}: `{_model_name(options)}`")
        return "\n".join(lines)

    # -- models ---------------------------------------------------------------------------
    def propagation_model(self) -> PropagationModel:
        """The propagation network (built once)."""
        if self._model is None:
            weights = self.settings.model_weights
            section = ModelSection(preset=self.settings.model_preset, weights=weights)
            self._model = builder.model(section).to(self.settings.device)
            self._model.eval()
        return self._model

    def segmenter(self, name: str, prompt: str | None = None) -> ImageSegmenter:
        """Segmenter ``name`` (built once; a new prompt reuses the loaded networks)."""
        options = dict(self.settings.segmenters[name])
        if name in PROMPTED:
            cached = self._segmenters.get(name)
            if cached is not None:
                return cached.with_prompt(str(prompt))
        elif name in self._segmenters:
            return self._segmenters[name]
        segmenter = build_segmenter(
            name,
            options,
            prompt=prompt,
            device=self.settings.device,
            amp=self.settings.segmenter_dtype,
            local_files_only=self.settings.local_files_only,
        )
        self._segmenters[name] = segmenter
        return segmenter

    # -- one request ----------------------------------------------------------------------
    def check_request(
        self, video: str | Path | None, segmenter: str, prompt: str | None, mode: str
    ) -> tuple[Path, str | None, TrackingMode]:
        """The video path, normalised prompt and mode, or DemoInputError (:func:`check_request`)."""
        return check_request(self.settings, video, segmenter, prompt, mode)

    def _new_run_folder(self) -> Path:
        """A fresh ``runs/<time>-<id>`` folder, after deleting the oldest beyond ``keep_runs``."""
        runs = self.settings.workdir / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        ours = [p for p in runs.iterdir() if p.is_dir() and _is_run(p)]
        old = sorted(ours, key=lambda p: p.stat().st_mtime)
        for stale in old[: max(0, len(old) - self.settings.keep_runs + 1)]:
            shutil.rmtree(stale, ignore_errors=True)
        folder = runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        return folder

    def _run_settings(
        self, source: Path, segmenter: str, prompt: str | None, config: TrackerConfig
    ) -> dict[str, Any]:
        """The request's settings, recorded in the run's ``summary.json``."""
        return {
            "source": source.name,
            "segmenter": dict(self.settings.segmenters[segmenter]),
            "prompt": prompt,
            "mode": config.mode.value,
            "detect_every": config.detect_every,
            "clip_size": config.clip_size,
            "size": config.shorter_side,
            "model": {"preset": self.settings.model_preset, "weights": self.settings.model_weights},
            "random_segmenters": self.settings.random_segmenters,
            "device": str(self.settings.device),
        }

    def run_tracking(
        self,
        video: str | Path | None,
        segmenter: str,
        prompt: str | None = None,
        mode: str = "semionline",
        *,
        detect_every: int | None = None,
        size: int | None = None,
        progress: ProgressFn | None = None,
    ) -> DemoResult:
        """Track ``video`` with ``segmenter`` (+ ``prompt``) in ``mode``; write and zip outputs.

        ``detect_every`` / ``size`` (processing shorter side, -1 original) override the
        defaults; ``progress(fraction or None, message)`` hears about the stages (frame
        progress goes through tqdm, which the web page follows).
        """
        report = progress or (lambda fraction, message: None)
        path, text, tracking_mode = self.check_request(video, segmenter, prompt, mode)
        config = request_tracker_config(self.settings.tracker, tracking_mode, detect_every, size)
        report(0.0, f"loading {SEGMENTER_LABELS.get(segmenter, segmenter)}")
        image_model = self.segmenter(segmenter, text)
        report(0.0, "loading the propagation model")
        model = self.propagation_model()
        out = self._new_run_folder()
        settings = self._run_settings(path, segmenter, text, config)
        logger.info(
            "tracking %s with %s (%s%s) -> %s",
            path.name,
            segmenter,
            tracking_mode.value,
            f", prompt {text!r}" if text else "",
            out,
        )
        report(0.0, "tracking")
        result = track_video(
            model,
            image_model,
            config,
            options=self.settings.inference,
            source=path,
            output=out,
            overlay=True,
            progress=True,
            settings=settings,
        )
        report(1.0, "packing the masks")
        archive = self.pack(out, f"deva_{path.stem}")
        overlay = out / OVERLAY_FILE
        return DemoResult(
            output=out,
            overlay=overlay if overlay.is_file() else None,
            archive=archive,
            summary=result.summary,
            report=self.report(result.summary, segmenter, text),
        )

    @staticmethod
    def pack(out: Path, stem: str) -> Path:
        """Zip ``masks/``, ``coco_rle.json`` and ``summary.json`` of a run folder."""
        archive = out / f"{stem}.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for item in sorted((out / MASKS_DIR).iterdir()):
                zf.write(item, f"{MASKS_DIR}/{item.name}")
            for name in (RLE_FILE, SUMMARY_FILE):
                if (out / name).is_file():
                    zf.write(out / name, name)
        return archive

    def report(self, summary: Mapping[str, Any], segmenter: str, prompt: str | None) -> str:
        """Markdown summary of a finished run (objects, timings, warnings)."""
        timings = summary.get("timings", {})
        what = SEGMENTER_LABELS.get(segmenter, segmenter)
        if prompt:
            what += f" — prompt `{prompt}`"
        lines = [
            f"**Done**: {summary.get('frames', 0)} frames, "
            f"{summary.get('objects_created', 0)} objects, {timings.get('total_s', 0):.1f} s "
            f"({timings.get('frames_per_s') or 0:.2f} frames/s), mode `{summary.get('mode')}`",
            "",
            f"Segmenter: {what}",
        ]
        objects = list(summary.get("objects", []))
        if objects:
            lines.append("")
            lines.append("| id | label | frames | first | last |")
            lines.append("| --- | --- | --- | --- | --- |")
            for o in objects[:20]:
                lines.append(
                    f"| {o['id']} | {o.get('label') or '—'} | {o['num_frames']} | "
                    f"{o['first_frame']} | {o['last_frame']} |"
                )
            if len(objects) > 20:
                lines.append(f"\n… and {len(objects) - 20} more (see summary.json in the zip)")
        for note in self.notices():
            lines.append(f"\n⚠️ {note}")
        return "\n".join(lines)


def _is_run(folder: Path) -> bool:
    """A run folder of the demo: tracked by it (its ``run.json``), or left empty."""
    run = read_run(folder)
    return (run is not None and run.get("tool") == "track") or not any(folder.iterdir())
