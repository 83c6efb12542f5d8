"""Web demo (Gradio): upload a video, track anything in it, download the masks.

    deva-app [demo=tiny] [model.weights=FILE] [segmenter=sam|grounded_sam|...]
        [segmenter.model=HUB_ID_OR_DIR] [port=7860] [host=127.0.0.1] [share=false]

Open the printed URL. ``segmenter=NAME`` is the one selected when the page opens and
``segmenter.KEY=VALUE`` sets its options (``deva/configs/segmenter/<name>.yaml``, as in
``deva-track``); the other offered segmenters (``segmenters=[...]``) use their config
files. ``demo=tiny`` needs no download: the embedded propagation checkpoint
(``checkpoints/deva-small-synthetic.pth``) and tiny RANDOM image models, so the masks are
random shapes (the page says so); that checkpoint lives in the repository, so run from it
(or a source checkout) or give ``model.weights=FILE``. Needs ``pip install 'deva[app]'``
(Gradio); see ``deva.app``. ``python tools/app.py`` takes the same arguments.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from deva.app import AppSettings, TrackingApp, build_demo, launch_demo, prepare_tiny_segmenters
from deva.config import ConfigError, compose, config_dir, repository_path
from deva.config.options import inference_options, tracker_config
from deva.inference.options import pick_device
from deva.segmenters import check_segmenter_name

log = logging.getLogger("app")
EMBEDDED = repository_path("checkpoints/deva-small-synthetic.pth")
DEMOS = ("tiny",)


def _requested_segmenter(argv: list[str]) -> None:
    """A one-line error for an unknown ``segmenter=NAME`` before Hydra sees it."""
    for item in argv:
        key, _, value = item.partition("=")
        if key.lstrip("+~") == "segmenter":
            check_segmenter_name(value.strip())


def _weights(path: str | None) -> str | None:
    """``model.weights`` as given, or relative to the repository (the embedded checkpoint)."""
    if not path or Path(path).is_file() or "://" in str(path):
        return path
    if repository_path(path).is_file():
        return str(repository_path(path))
    return path  # build_model resolves published names or says what is missing


def settings_from_config(cfg, workdir: Path) -> AppSettings:
    """``app.yaml`` (composed) → :class:`AppSettings`; tiny models go in ``workdir``."""
    if cfg.demo is not None and cfg.demo not in DEMOS:
        raise ConfigError(f"demo must be one of {list(DEMOS)} or null, got {cfg.demo!r}")
    names = [check_segmenter_name(str(n)) for n in cfg.segmenters]
    default = cfg.segmenter.name
    if default not in names:
        names.insert(0, default)
    notes: list[str] = []
    if cfg.demo == "tiny":
        preset, weights = cfg.model.preset, _weights(cfg.model.weights)
        if not weights:
            if not EMBEDDED.is_file():
                raise FileNotFoundError(
                    f"embedded checkpoint not found: {EMBEDDED} (run from the repository or "
                    "give model.weights=FILE)"
                )
            preset, weights = "small", str(EMBEDDED)
            notes.append(
                "Propagation: the embedded small checkpoint `deva-small-synthetic.pth`, "
                "trained on synthetic videos only."
            )
        tiny = prepare_tiny_segmenters(workdir / "tiny_models")
        segmenters = {n: tiny[n] for n in names if n in tiny}
    else:
        segmenters = {}
        for name in names:
            if name == default:
                options = OmegaConf.to_container(cfg.segmenter, resolve=True)
            else:
                options = OmegaConf.to_container(
                    OmegaConf.load(config_dir() / "segmenter" / f"{name}.yaml"), resolve=True
                )
            segmenters[name] = dict(options)
        preset, weights = cfg.model.preset, _weights(cfg.model.weights)
    offline = cfg.offline_models
    if offline is None and os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        offline = True
    device = pick_device(cfg.device)
    return AppSettings(
        segmenters=segmenters,
        default_segmenter=default,
        model_preset=preset,
        model_weights=weights,
        tracker=tracker_config(cfg),
        inference=inference_options(cfg),
        workdir=workdir,
        device=device,
        segmenter_dtype=None if cfg.amp == "none" else cfg.amp,
        local_files_only=offline,
        random_segmenters=cfg.demo == "tiny",
        default_prompt=cfg.prompt or "",
        keep_runs=int(cfg.keep_runs),
        notes=notes,
    )


def build(argv: list[str], workdir: Path | None = None) -> tuple[TrackingApp, object]:
    """Compose the config and build the back end (used by :func:`main` and the tests)."""
    _requested_segmenter(argv)
    cfg = compose("app", argv)
    folder = Path(workdir or cfg.workdir or tempfile.mkdtemp(prefix="deva-app-"))
    folder.mkdir(parents=True, exist_ok=True)
    return TrackingApp(settings_from_config(cfg, folder.resolve())), cfg


def main(argv: list[str] | None = None) -> int:
    """Build the back end and serve the page until stopped; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # clean up on `kill` too
    temporary = None
    try:
        app, cfg = build(argv)
        if cfg.workdir is None:
            temporary = app.settings.workdir
        demo = build_demo(app)
        print(f"web demo: models\n{app.describe()}\noutputs in {app.settings.workdir}")
        for note in app.notices():
            print(f"note: {note}")
        print("starting the web demo (Ctrl+C stops it)")
        launch_demo(
            demo,
            host=cfg.host,
            port=int(cfg.port),
            share=bool(cfg.share),
            block=True,
            allowed_paths=[app.settings.workdir],
        )
    except KeyboardInterrupt:
        print("stopped")
    except (ConfigError, FileNotFoundError, ValueError, KeyError, ImportError, OSError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        print(f"error: {message}", file=sys.stderr)
        return 2
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
