"""The web demo's Gradio page: :func:`build_demo` lays it out, :func:`launch_demo` serves it.

Gradio is imported only inside these functions (``pip install 'deva[app]'``), never by
``import deva`` or ``import deva.app``. It is configured to stay offline: no analytics or
version check, no server-side rendering (Node), no MCP server (its fonts are served
locally); a public ``share`` link is the only thing that needs the internet.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deva.app.runs import TrackingApp
from deva.app.settings import SEGMENTER_LABELS, AppSettings, DemoInputError
from deva.inference.tracker_config import TrackingMode
from deva.segmenters.registry import PROMPTED

logger = logging.getLogger(__name__)

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


def _track_handler(gr: Any, app: TrackingApp) -> Callable[..., tuple[str | None, str, str]]:
    """The ``/track`` endpoint: runs one request; a bad request becomes a ``gr.Error``."""

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

    return track


def _header(gr: Any, app: TrackingApp) -> None:
    """Title, what the page does, the warnings about random models and the models in use."""
    gr.Markdown(
        f"# {app.settings.title}\n"
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


def _request_inputs(gr: Any, s: AppSettings) -> tuple[list[Any], Any]:
    """The request's input components (in endpoint order) and the Track button."""
    choices = [(SEGMENTER_LABELS.get(n, n), n) for n in s.segmenters]
    modes = [(MODE_LABELS[m.value], m.value) for m in TrackingMode]
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
    return [video, segmenter, prompt, mode, detect_every, size], run


def _result_outputs(gr: Any) -> list[Any]:
    """The endpoint's output components: overlay video, zip, Markdown report."""
    overlay = gr.Video(label="Overlay", interactive=False, elem_id="deva-overlay")
    archive = gr.File(label="Masks + JSON (zip)", elem_id="deva-zip")
    report = gr.Markdown(elem_id="deva-report")
    return [overlay, archive, report]


def build_demo(app: TrackingApp) -> Any:
    """The Gradio page (``gr.Blocks``) over ``app``; its API endpoint is ``/track``.

    Endpoint inputs: video file, segmenter name, prompt, mode, detect every, size; outputs:
    overlay video, zip of masks + JSON, Markdown report.
    """
    gr = _gradio()
    track = _track_handler(gr, app)

    def prompt_visibility(segmenter: str) -> Any:
        return gr.update(visible=segmenter in PROMPTED)

    cache = (app.settings.cache_seconds, app.settings.cache_seconds)
    with gr.Blocks(title=app.settings.title, analytics_enabled=False, delete_cache=cache) as demo:
        _header(gr, app)
        with gr.Row():
            with gr.Column():
                inputs, run = _request_inputs(gr, app.settings)
            with gr.Column():
                outputs = _result_outputs(gr)
        segmenter, prompt = inputs[1], inputs[2]
        segmenter.change(prompt_visibility, segmenter, prompt, api_name=False)
        run.click(track, inputs, outputs, api_name=API_NAME, concurrency_limit=1)
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
    max_file_mb: int | None = None,
) -> str:
    """Serve ``demo`` (offline settings); returns the local URL.

    ``port=None`` or 0 picks a free port (:func:`free_port`); ``block=False`` returns at
    once (close the server with ``demo.close()``); ``max_file_mb`` caps an upload's size.
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
        max_file_size=f"{max_file_mb}mb" if max_file_mb else None,
        footer_links=[],
    )
    logger.info("web demo running on %s", local_url)
    if block:
        try:
            demo.block_thread()
        finally:
            demo.close()
    return str(local_url)
