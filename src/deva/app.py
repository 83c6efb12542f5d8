"""Web demo: upload a video, pick a segmenter and a mode, get the overlay and the masks.

:class:`TrackingApp` holds the models (loaded on first use, then kept) and runs one request
with :meth:`TrackingApp.run_tracking`, which calls
:func:`deva.pipelines.video_tracking.track_video` (the code behind ``tools/track.py``) and
packs ``masks/``, ``coco_rle.json`` and ``summary.json`` into a zip. :func:`build_demo` wraps
it in a Gradio page and :func:`launch_demo` serves that page; ``tools/app.py`` is the
command line. Gradio is imported only by these two functions (``pip install 'deva[app]'``),
never by ``import deva``.

Gradio is configured to stay offline: no analytics or version check, no server-side
rendering (Node), no MCP server (its fonts are served locally); a public ``share`` link
is the only thing that needs the internet.

:func:`prepare_tiny_segmenters` writes tiny randomly initialised image models (see
:mod:`deva.segmenters.tiny`) so that the demo runs without downloading anything; the page
then says loudly that its masks are random.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from deva.inference.tracker import TrackerConfig, TrackingMode
from deva.modeling.propagation import PropagationModel
from deva.modeling.weights import build_model
from deva.pipelines.video_tracking import (
    MASKS_DIR,
    OVERLAY_FILE,
    RLE_FILE,
    SUMMARY_FILE,
    track_video,
)
from deva.segmenters.registry import PROMPTED, build_segmenter, check_segmenter_name
from deva.types import ImageSegmenter

logger = logging.getLogger(__name__)

SEGMENTER_LABELS: dict[str, str] = {
    "sam": "Automatic: SAM (segment everything)",
    "grounded_sam": "Text prompt: Grounding-DINO + SAM",
    "mask2former": "Panoptic: Mask2Former",
    "oneformer": "Panoptic: OneFormer",
}
MODE_LABELS: dict[str, str] = {
    "online": "online (causal)",
    "semionline": "semi-online (clip consensus, default)",
    "offline": "offline (key frame, forward + backward)",
}
API_NAME = "track"
# Environment that keeps Gradio (and the hub client it uses) off the network.
OFFLINE_ENV: dict[str, str] = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "GRADIO_SSR_MODE": "False",
    "GRADIO_MCP_SERVER": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "NO_PROXY": "127.0.0.1,localhost",
}
ProgressFn = Callable[[float | None, str], None]


class DemoInputError(ValueError):
    """A request the demo cannot run (no video, missing prompt, unknown segmenter, ...)."""


@dataclass
class AppSettings:
    """What the demo serves (built by ``tools/app.py`` from ``configs/app.yaml``).

    Attributes:
        segmenters: offered segmenter name → its options (``configs/segmenter/<name>.yaml``
            keys: ``model``, thresholds, ...), in display order.
        default_segmenter: the segmenter selected when the page opens.
        model_preset, model_weights: propagation model (``weights=None``: random).
        tracker: base tracker settings; mode, detection interval and size come per request.
        workdir: where each request writes its outputs (``runs/<id>``).
        device: torch device for both models; ``segmenter_dtype`` its half precision.
        local_files_only: never download image models (None: the hub's default).
        random_segmenters: the segmenters are randomly initialised (the page says so).
        default_prompt: the text prompt shown when the page opens.
        keep_runs: output folders of older requests beyond this are deleted.
        title: page title.
        notes: further Markdown notes shown at the top of the page.
    """

    segmenters: dict[str, dict[str, Any]]
    default_segmenter: str
    model_preset: str
    model_weights: str | None
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    workdir: Path = Path("outputs/app")
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    segmenter_dtype: str | None = None
    local_files_only: bool | None = None
    random_segmenters: bool = False
    default_prompt: str = "person. dog."
    keep_runs: int = 20
    title: str = "DEVA: track anything in your video"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.segmenters:
            raise DemoInputError("the demo needs at least one segmenter")
        for name in self.segmenters:
            check_segmenter_name(name)
            if name == "precomputed":
                raise DemoInputError("segmenter 'precomputed' needs detection files; not offered")
        if self.default_segmenter not in self.segmenters:
            raise DemoInputError(
                f"default segmenter {self.default_segmenter!r} is not among the offered ones: "
                f"{', '.join(self.segmenters)}"
            )
        self.workdir = Path(self.workdir)


@dataclass
class DemoResult:
    """One request's outputs: run folder, overlay video, zip, summary and a Markdown report."""

    output: Path
    overlay: Path | None
    archive: Path
    summary: dict[str, Any]
    report: str


def prepare_tiny_segmenters(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Write (or reuse) tiny RANDOM image models in ``folder``; options for every segmenter.

    Thresholds are relaxed so that the random models still output segments. Needs
    ``transformers``; takes a few seconds the first time.
    """
    from deva.segmenters import tiny

    root = Path(folder)
    makers = {
        "sam": tiny.save_tiny_sam,
        "gdino": tiny.save_tiny_grounding_dino,
        "mask2former": tiny.save_tiny_mask2former,
        "oneformer": tiny.save_tiny_oneformer,
    }
    paths: dict[str, str] = {}
    for key, make in makers.items():
        path = root / key
        if not (path / "config.json").is_file():
            make(path)
        paths[key] = str(path)
    return {
        "sam": {
            "name": "sam",
            "model": paths["sam"],
            "points_per_side": 4,
            "pred_iou_thresh": -10.0,
            "stability_thresh": 0.0,
            "min_area": 16,
        },
        "grounded_sam": {
            "name": "grounded_sam",
            "model": paths["gdino"],
            "sam_model": paths["sam"],
            "box_threshold": 0.0,
            "text_threshold": 0.0,
        },
        "mask2former": {
            "name": "mask2former",
            "model": paths["mask2former"],
            "threshold": 0.0,
            "overlap_threshold": 0.0,
        },
        "oneformer": {
            "name": "oneformer",
            "model": paths["oneformer"],
            "threshold": 0.0,
            "overlap_threshold": 0.0,
        },
    }


def _reprompted(segmenter: Any, prompt: str) -> ImageSegmenter:
    """A Grounding-DINO + SAM segmenter for another prompt sharing the loaded networks."""
    from deva.segmenters.grounded_sam import GroundedSamSegmenter

    transform = segmenter.transform
    return GroundedSamSegmenter(
        segmenter.detector,
        segmenter.tokenizer,
        segmenter.sam,
        prompt,
        box_threshold=segmenter.box_threshold,
        text_threshold=segmenter.text_threshold,
        nms_threshold=segmenter.nms_threshold,
        detector_size=(transform.shortest_edge, transform.max_edge),
        mean=transform.mean,
        std=transform.std,
        device=segmenter.device,
        dtype=segmenter.dtype,
    )


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
            self._model = build_model(self.settings.model_preset, weights).to(self.settings.device)
            self._model.eval()
        return self._model

    def segmenter(self, name: str, prompt: str | None = None) -> ImageSegmenter:
        """Segmenter ``name`` (built once; a new prompt reuses the loaded networks)."""
        options = dict(self.settings.segmenters[name])
        if name in PROMPTED:
            cached = self._segmenters.get(name)
            if cached is not None:
                return _reprompted(cached, str(prompt))
        elif name in self._segmenters:
            return self._segmenters[name]
        segmenter = build_segmenter(
            name,
            options,
            prompt=prompt,
            device=self.settings.device,
            dtype=self.settings.segmenter_dtype if self.settings.device.type != "cpu" else None,
            local_files_only=self.settings.local_files_only,
        )
        self._segmenters[name] = segmenter
        return segmenter

    # -- one request ----------------------------------------------------------------------
    def check_request(
        self, video: str | Path | None, segmenter: str, prompt: str | None, mode: str
    ) -> tuple[Path, str | None, TrackingMode]:
        """The video path, the normalised prompt and the mode, or :class:`DemoInputError`."""
        if not video:
            raise DemoInputError("upload a video first")
        path = Path(video)
        if not path.is_file():
            raise DemoInputError(f"the uploaded video is missing: {path.name}")
        if segmenter not in self.settings.segmenters:
            raise DemoInputError(
                f"segmenter {segmenter!r} is not offered here; choose one of: "
                f"{', '.join(self.settings.segmenters)}"
            )
        text = (prompt or "").strip() or None
        if segmenter in PROMPTED:
            from deva.segmenters.grounded_sam import parse_prompt

            if not text:
                raise DemoInputError(
                    'the text-prompt segmenter needs a prompt, e.g. "person. bicycle. dog."'
                )
            parse_prompt(text)  # one-line error for a prompt without phrases
        else:
            text = None
        try:
            tracking_mode = TrackingMode.parse(mode)
        except ValueError as error:
            raise DemoInputError(str(error)) from None
        return path, text, tracking_mode

    def _new_run_folder(self) -> Path:
        runs = self.settings.workdir / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        old = sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for stale in old[: max(0, len(old) - self.settings.keep_runs + 1)]:
            shutil.rmtree(stale, ignore_errors=True)
        folder = runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        return folder

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
        config = replace(self.settings.tracker, mode=tracking_mode)
        if detect_every is not None:
            if int(detect_every) < 1:
                raise DemoInputError(f"detect every must be at least 1, got {detect_every}")
            config = replace(config, detect_every=int(detect_every))
        if size is not None:
            if int(size) != -1 and int(size) < 32:
                raise DemoInputError(f"processing size must be -1 or at least 32, got {size}")
            config = replace(config, shorter_side=int(size))
        options = self.settings.segmenters[segmenter]
        report(0.0, f"loading {SEGMENTER_LABELS.get(segmenter, segmenter)}")
        image_model = self.segmenter(segmenter, text)
        report(0.0, "loading the propagation model")
        model = self.propagation_model()
        out = self._new_run_folder()
        settings = {
            "source": path.name,
            "segmenter": dict(options),
            "prompt": text,
            "mode": tracking_mode.value,
            "detect_every": config.detect_every,
            "clip_size": config.clip_size,
            "size": config.shorter_side,
            "model": {"preset": self.settings.model_preset, "weights": self.settings.model_weights},
            "random_segmenters": self.settings.random_segmenters,
            "device": str(self.settings.device),
        }
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
            source=path,
            output=out,
            overlay=True,
            progress=True,
            settings=settings,
        )
        report(1.0, "packing the masks")
        archive = self.pack(out, f"deva_{path.stem}")
        overlay = out / OVERLAY_FILE
        summary = result.summary
        return DemoResult(
            output=out,
            overlay=overlay if overlay.is_file() else None,
            archive=archive,
            summary=summary,
            report=self.report(summary, segmenter, text),
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


# -- Gradio -------------------------------------------------------------------------------
def _gradio() -> Any:
    """Import Gradio with analytics and other network calls turned off."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import gradio
    except ImportError as error:
        raise ImportError(
            "the web demo needs Gradio: pip install 'deva[app]' (or pip install gradio)"
        ) from error
    return gradio


def build_demo(app: TrackingApp) -> Any:
    """The Gradio page (``gr.Blocks``) over ``app``; its API endpoint is ``/track``.

    Endpoint inputs: video file, segmenter name, prompt, mode, detect every, size; outputs:
    overlay video, zip of masks + JSON, Markdown report.
    """
    gr = _gradio()
    s = app.settings
    choices = [(SEGMENTER_LABELS.get(n, n), n) for n in s.segmenters]
    modes = [(MODE_LABELS[m.value], m.value) for m in TrackingMode]

    def track(
        video: str | None,
        segmenter: str,
        prompt: str,
        mode: str,
        detect_every: float,
        size: float,
        progress: Any = gr.Progress(track_tqdm=True),  # noqa: B008 (Gradio's idiom)
    ) -> tuple[str | None, str, str]:
        def stage(fraction: float | None, message: str) -> None:
            progress(fraction, desc=message)

        try:
            result = app.run_tracking(
                video,
                segmenter,
                prompt,
                mode,
                detect_every=int(detect_every),
                size=int(size),
                progress=stage,
            )
        except (DemoInputError, ValueError, FileNotFoundError, ImportError) as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            logger.warning("request failed: %s", message)
            raise gr.Error(message) from error
        overlay = str(result.overlay) if result.overlay else None
        return overlay, str(result.archive), result.report

    def prompt_visibility(segmenter: str) -> Any:
        return gr.update(visible=segmenter in PROMPTED)

    with gr.Blocks(title=s.title, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {s.title}\n"
            "Upload a video, choose how objects are found in its frames and how the image "
            "segmentations are combined over time; the propagation model tracks them through "
            "the video. Results: an overlay video and a zip with per-frame id masks (PNG + "
            "JSON), `coco_rle.json` and `summary.json`."
        )
        notes = app.notices()
        if notes:
            gr.Markdown("\n\n".join(f"⚠️ {n}" for n in notes), elem_id="deva-notices")
        with gr.Accordion("Models", open=False):
            gr.Markdown(app.describe())
        with gr.Row():
            with gr.Column():
                video = gr.Video(
                    label="Input video",
                    sources=["upload"],
                    include_audio=True,
                    elem_id="deva-input",
                )
                segmenter = gr.Dropdown(
                    choices=choices,
                    value=s.default_segmenter,
                    label="Segmenter",
                    elem_id="deva-segmenter",
                )
                prompt = gr.Textbox(
                    value=s.default_prompt,
                    label="Text prompt (phrases separated by dots)",
                    placeholder="person. bicycle. dog.",
                    visible=s.default_segmenter in PROMPTED,
                    elem_id="deva-prompt",
                )
                mode = gr.Radio(
                    choices=modes,
                    value=s.tracker.mode.value,
                    label="Mode",
                    elem_id="deva-mode",
                )
                with gr.Accordion("Advanced", open=False):
                    detect_every = gr.Slider(
                        1, 30, value=s.tracker.detect_every, step=1, label="Detect every N frames"
                    )
                    size = gr.Number(
                        value=s.tracker.shorter_side,
                        precision=0,
                        label="Processing size (shorter side, -1 = original)",
                    )
                run = gr.Button("Track", variant="primary", elem_id="deva-run")
            with gr.Column():
                overlay = gr.Video(label="Overlay", interactive=False, elem_id="deva-overlay")
                archive = gr.File(label="Masks + JSON (zip)", elem_id="deva-zip")
                report = gr.Markdown(elem_id="deva-report")
        segmenter.change(prompt_visibility, segmenter, prompt, api_name=False)
        run.click(
            track,
            [video, segmenter, prompt, mode, detect_every, size],
            [overlay, archive, report],
            api_name=API_NAME,
            concurrency_limit=1,
        )
    return demo


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def launch_demo(
    demo: Any,
    *,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    share: bool = False,
    block: bool = True,
    allowed_paths: Sequence[str | Path] = (),
) -> str:
    """Serve ``demo`` (offline settings); returns the local URL.

    ``port=None`` or 0 picks a free port (:func:`free_port`); ``block=False`` returns at
    once (close the server with ``demo.close()``).
    """
    _gradio()  # offline environment before Gradio starts
    if not port:
        port = free_port(host)
    if share:
        logger.warning("share=true: creating a public gradio.live link needs the internet")
    demo.queue(default_concurrency_limit=1)
    _, local_url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=True,
        quiet=True,
        show_error=True,
        ssr_mode=False,
        mcp_server=False,
        enable_monitoring=False,
        allowed_paths=[str(p) for p in allowed_paths],
        footer_links=[],
    )
    logger.info("web demo running on %s", local_url)
    if block:
        try:
            demo.block_thread()
        finally:
            demo.close()
    return str(local_url)


__all__ = [
    "API_NAME",
    "SEGMENTER_LABELS",
    "AppSettings",
    "DemoInputError",
    "DemoResult",
    "TrackingApp",
    "build_demo",
    "free_port",
    "launch_demo",
    "prepare_tiny_segmenters",
]
