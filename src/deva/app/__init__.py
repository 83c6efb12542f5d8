"""deva.app: the web demo. Upload a video, pick a segmenter and a mode, get overlay and masks.

- :mod:`deva.app.settings`: :class:`AppSettings` (what is served), :class:`DemoResult`,
  :class:`DemoInputError` and the request checks.
- :mod:`deva.app.runs`: :class:`TrackingApp` holds the models (loaded on first use, then
  kept) and runs one request with :meth:`TrackingApp.run_tracking`, which calls
  :func:`deva.pipelines.video_tracking.track_video` (the code behind ``tools/track.py``) and
  packs ``masks/``, ``coco_rle.json`` and ``summary.json`` into a zip.
- :mod:`deva.app.page`: :func:`build_demo` wraps it in a Gradio page and :func:`launch_demo`
  serves that page, offline; Gradio is imported only by these two functions
  (``pip install 'deva[app]'``), never by ``import deva`` or ``import deva.app``.
- :mod:`deva.app.tiny_models`: :func:`prepare_tiny_segmenters` writes tiny randomly
  initialised image models so that the demo runs without downloading anything.

:mod:`deva.cli.app` (``deva-app``, ``python tools/app.py``) is the command line.
"""

from deva.app.page import API_NAME, build_demo, free_port, launch_demo
from deva.app.runs import TrackingApp
from deva.app.settings import SEGMENTER_LABELS, AppSettings, DemoInputError, DemoResult
from deva.app.tiny_models import prepare_tiny_segmenters

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
