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

import logging
import sys
import time
from dataclasses import asdict, fields

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from deva.data.synthetic import (
    SyntheticVideoConfig,
    generate_video,
    prepare_output_dir,
    video_name,
    video_seed,
    write_synthetic_dataset,
)
from deva.data.synthetic_benchmarks import write_burst_layout, write_vipseg_layout

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
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        options, config = parse_args(argv)
    except (ValueError, TypeError, OmegaConfBaseException) as error:
        reason = str(error).splitlines()[0]
        print(f"error: {reason}", file=sys.stderr)
        return 2
    if options["format"] not in FORMATS:
        print(f"error: format must be one of {FORMATS}, got {options['format']!r}", file=sys.stderr)
        return 2
    print(
        f"writing {options['num_videos']} synthetic video(s) of {config.num_frames} frames "
        f"({config.height}x{config.width}, {config.num_objects} objects, seed {options['seed']}) "
        f"to {options['output']}"
    )
    start = time.perf_counter()
    if options["format"] != "davis":
        return _write_benchmark(options, config, start)
    try:
        names = write_synthetic_dataset(
            options["output"],
            config,
            num_videos=int(options["num_videos"]),
            seed=int(options["seed"]),
            overwrite=bool(options["overwrite"]),
            jpeg_quality=int(options["jpeg_quality"]),
            progress=True,
        )
    except (FileExistsError, NotADirectoryError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    print(
        f"done: {len(names)} video(s) in {elapsed:.1f}s -> {options['output']} "
        "(JPEGImages/, Annotations/, Detections/, Meta/, dataset.json)"
    )
    return 0


def _write_benchmark(options: dict, config: SyntheticVideoConfig, start: float) -> int:
    """The VIPSeg / BURST layouts (see the module docstring)."""

    try:
        root = prepare_output_dir(options["output"], overwrite=bool(options["overwrite"]))
        videos = [
            (video_name(i), generate_video(config, video_seed(int(options["seed"]), i)))
            for i in range(int(options["num_videos"]))
        ]
        writer = write_vipseg_layout if options["format"] == "vipseg" else write_burst_layout
        paths = writer(root, videos, config)
    except (FileExistsError, NotADirectoryError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    listed = ", ".join(f"{key}: {path}" for key, path in paths.items())
    print(f"done: {len(videos)} video(s) in {elapsed:.1f}s as {options['format']} -> {listed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
