r"""Generate a synthetic DAVIS-style dataset with simulated image-model detections.

Usage (OmegaConf dotlist overrides, all optional):

    deva-make-synthetic output=outputs/synthetic num_videos=3 num_frames=40 \
        height=240 width=320 seed=0 [overwrite=true] [jpeg_quality=95] [<any config field>=...]

Every field of ``deva.data.synthetic.SyntheticVideoConfig`` can be overridden by name
(e.g. ``num_objects=6 det_miss_rate=0.2``).

``format=vipseg`` or ``format=burst`` writes the videos as a video-panoptic (VIPSeg) or
open-world (BURST) benchmark folder instead, with the simulated detections in that
benchmark's prediction layout (``deva.data.synthetic_benchmarks``), ready for
``deva-evaluate`` / ``deva-score`` or a ``validation.sets`` entry of training.
``python tools/make_synthetic.py`` takes the same arguments.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, fields

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from deva.cli.common import run_tool
from deva.data.synthetic import (
    SyntheticVideoConfig,
    generate_video,
    video_name,
    video_seed,
    write_synthetic_dataset,
)
from deva.data.synthetic_benchmarks import write_burst_layout, write_vipseg_layout
from deva.errors import one_line
from deva.io.outputs import OutputFolder

DEFAULTS = {
    "output": "outputs/synthetic",
    "num_videos": 3,
    "seed": 0,
    "overwrite": False,
    "jpeg_quality": 95,
    "format": "davis",
}
FORMATS = ("davis", "vipseg", "burst")


def _check_type(key: str, value: object, default: object) -> None:
    """Reject an override whose type does not match the default's (ints pass for floats)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, (tuple, list)):
        ok = isinstance(value, (tuple, list))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        expected = "list" if isinstance(default, (tuple, list)) else type(default).__name__
        raise ValueError(f"{key} must be of type {expected}, got {value!r}")


def parse_args(argv: list[str]) -> tuple[dict, SyntheticVideoConfig]:
    """Merge ``key=value`` overrides into the defaults; unknown keys are an error."""
    bad = [a for a in argv if "=" not in a]
    if bad:
        raise ValueError(f"arguments must be key=value, got {bad[0]!r}")
    base = OmegaConf.create({**DEFAULTS, **asdict(SyntheticVideoConfig())})
    OmegaConf.set_struct(base, True)
    merged = OmegaConf.to_container(OmegaConf.merge(base, OmegaConf.from_dotlist(argv)))
    for key, default in {**DEFAULTS, **asdict(SyntheticVideoConfig())}.items():
        _check_type(key, merged[key], default)
    video_keys = {f.name for f in fields(SyntheticVideoConfig)}
    video_args = {
        k: tuple(v) if isinstance(v, list) else v for k, v in merged.items() if k in video_keys
    }
    options = {k: v for k, v in merged.items() if k not in video_keys}
    return options, SyntheticVideoConfig(**video_args)


def main(argv: list[str] | None = None) -> int:
    """Parse ``key=value`` arguments, write the dataset, return the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_tool("error:", lambda: _run(argv))


def _run(argv: list[str]) -> None:
    try:
        options, config = parse_args(argv)
    except OmegaConfBaseException as error:
        raise ValueError(str(error)) from None
    if options["format"] not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {options['format']!r}")
    overwrite = bool(options["overwrite"])
    out = OutputFolder(options["output"], tool="make_synthetic", overwrite=overwrite)
    print(
        f"writing {options['num_videos']} synthetic video(s) of {config.num_frames} frames "
        f"({config.height}x{config.width}, {config.num_objects} objects, seed {options['seed']}) "
        f"to {out.root}"
    )
    record = {"settings": {**options, "video": asdict(config)}, "state": "running"}
    out.write_run(record)
    start = time.perf_counter()
    try:
        listed = _write(out, options, config)
    except BaseException as error:
        out.write_run({**record, "state": f"failed: {one_line(error)}"}, final=True)
        raise
    out.write_run({**record, "state": "done"}, final=True)
    print(f"done in {time.perf_counter() - start:.1f}s: {listed}")


def _write(out: OutputFolder, options: dict, config: SyntheticVideoConfig) -> str:
    """The dataset in the requested layout; what was written, for the last line."""
    count, seed = int(options["num_videos"]), int(options["seed"])
    if options["format"] == "davis":
        names = write_synthetic_dataset(
            out,
            config,
            num_videos=count,
            seed=seed,
            jpeg_quality=int(options["jpeg_quality"]),
            progress=True,
        )
        layout = "JPEGImages/, Annotations/, Detections/, Meta/, dataset.json"
        return f"{len(names)} video(s) -> {out.root} ({layout})"
    videos = [(video_name(i), generate_video(config, video_seed(seed, i))) for i in range(count)]
    writer = write_vipseg_layout if options["format"] == "vipseg" else write_burst_layout
    paths = writer(out, videos, config)
    listed = ", ".join(f"{key}: {path}" for key, path in paths.items())
    return f"{len(videos)} video(s) as {options['format']} -> {listed}"


if __name__ == "__main__":
    sys.exit(main())
