"""Web demo (Gradio): upload a video, track anything in it, download the masks.

    deva-app [demo=tiny] [model.weights=FILE] [segmenter=sam|grounded_sam|...]
        [segmenter.model=HUB_ID_OR_DIR] [port=7860] [host=127.0.0.1] [share=false]

Open the printed URL. ``segmenter=NAME`` is the one selected when the page opens and
``segmenter.KEY=VALUE`` sets its options (``deva/configs/segmenter/<name>.yaml``, as in
``deva-track``); the other offered segmenters (``segmenters=[...]``) use their config
files. ``demo=tiny`` needs no download: the embedded propagation checkpoint
(``checkpoints/deva-mobile-real.pth``) and tiny RANDOM image models, so the masks are
random shapes (the page says so); that checkpoint lives in the repository, so run from it
(or a source checkout) or give ``model.weights=FILE``. Needs ``pip install 'deva[app]'``
(Gradio); see ``deva.app``. ``python tools/app.py`` takes the same arguments.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from deva.app import AppSettings, TrackingApp, build_demo, launch_demo, prepare_tiny_segmenters
from deva.cli.common import console_logging, one_line
from deva.config import ConfigError, builder, compose, config_dir, repository_path
from deva.config.schema import AppConfig, parse
from deva.segmenters import check_segmenter_name

log = logging.getLogger("app")
EMBEDDED = repository_path("checkpoints/deva-mobile-real.pth")
DEMOS = ("tiny",)


def _requested_segmenter(argv: list[str]) -> None:
    """A one-line error for an unknown ``segmenter=NAME`` before Hydra sees it."""
    for item in argv:
        key, _, value = item.partition("=")
        if key.lstrip("+~") == "segmenter":
            check_segmenter_name(value.strip())


def _offered(config: AppConfig, workdir: Path) -> tuple[dict[str, dict], str, str | None, list]:
    """The offered segmenters' options, the propagation preset and weights, and notes."""
    names = [check_segmenter_name(str(n)) for n in config.segmenters]
    default = config.segmenter["name"]
    if default not in names:
        names.insert(0, default)
    preset = config.model.preset
    weights = builder.weights_path(config.model.weights) if config.model.weights else None
    if config.demo != "tiny":
        segmenters = {}
        for name in names:
            if name == default:
                segmenters[name] = dict(config.segmenter)
            else:
                stored = OmegaConf.load(config_dir() / "segmenter" / f"{name}.yaml")
                segmenters[name] = dict(OmegaConf.to_container(stored, resolve=True))
        return segmenters, preset, weights, []
    notes: list[str] = []
    if not weights:
        if not EMBEDDED.is_file():
            raise FileNotFoundError(
                f"embedded checkpoint not found: {EMBEDDED} (run from the repository or "
                "give model.weights=FILE)"
            )
        preset, weights = "mobile", str(EMBEDDED)
        notes.append(
            "Propagation: the embedded mobile checkpoint `deva-mobile-real.pth` (1.2 M "
            "parameters), trained here on real photo cut-outs and synthetic videos."
        )
    tiny = prepare_tiny_segmenters(workdir / "tiny_models")
    return {n: tiny[n] for n in names if n in tiny}, preset, weights, notes


def settings_from_config(cfg: DictConfig | AppConfig, workdir: Path) -> AppSettings:
    """``app.yaml`` (composed) → :class:`AppSettings`; tiny models go in ``workdir``."""
    config = parse(AppConfig, cfg)
    if config.demo is not None and config.demo not in DEMOS:
        raise ConfigError(f"demo must be one of {list(DEMOS)} or null, got {config.demo!r}")
    segmenters, preset, weights, notes = _offered(config, workdir)
    options = builder.inference_options(config)
    return AppSettings(
        segmenters=segmenters,
        default_segmenter=config.segmenter["name"],
        model_preset=preset,
        model_weights=weights,
        tracker=builder.tracker_config(config),
        inference=options,
        workdir=workdir,
        device=options.torch_device(),
        segmenter_dtype=None if config.amp == "none" else config.amp,
        local_files_only=builder.offline_models(config.offline_models),
        random_segmenters=config.demo == "tiny",
        default_prompt=config.prompt or "",
        keep_runs=config.keep_runs,
        max_frames=config.max_frames,
        max_seconds=config.max_seconds,
        max_file_mb=config.max_file_mb,
        cache_seconds=config.cache_seconds,
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
    with console_logging():
        return _main(argv)


def _main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
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
            max_file_mb=app.settings.max_file_mb,
        )
    except KeyboardInterrupt:
        print("stopped")
    except (ConfigError, FileNotFoundError, ValueError, KeyError, ImportError, OSError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
