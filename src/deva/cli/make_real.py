r"""Build real training imagery from Debian packages: cut-outs, backgrounds, pseudo-videos.

    deva-make-real output=datasets/real [cutouts=[PKG,...]] [backgrounds=[PKG,...]] \
        [debs.PKG=FILE.deb] [val_fraction=0.2] [seed=0] [overwrite=true]

Packages are fetched with ``apt-get download`` (or read from ``debs.<name>=``), read in
Python, and written as described in :mod:`deva.data.real_imagery`; the output folder is
owned like every tool's (``manifest.txt``, ``run.json``). Train the static stage on
``<output>/static/train`` and video clips with ``data.real_root=<output>``;
``python tools/make_real.py`` takes the same arguments.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from collections.abc import Sequence

from tqdm import tqdm

from deva.cli.common import run_tool
from deva.config import compose, quote_paths
from deva.config.schema import MakeRealConfig, parse
from deva.data.debian import fetch_packages
from deva.data.real_imagery import SPLITS, build_real_imagery
from deva.data.synthetic import SyntheticVideoConfig
from deva.errors import one_line
from deva.io.outputs import OutputFolder, check_folder

PATHS = ("output",)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``key=value`` arguments, build the folder, return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_tool("make_real: error:", lambda: _run(argv))


def _run(argv: list[str]) -> None:
    args = parse(MakeRealConfig, compose("make_real", quote_paths(argv, PATHS)))
    if not args.output:
        raise ValueError("missing output=PATH")
    if not args.cutouts or not args.backgrounds:
        raise ValueError("cutouts=[...] and backgrounds=[...] each need at least one package")
    unknown = sorted(set(args.debs) - set(args.cutouts) - set(args.backgrounds))
    if unknown:
        raise ValueError(f"debs names packages that are not used: {', '.join(unknown)}")
    bad = sorted(set(args.videos) - set(SPLITS))
    if bad:
        raise ValueError(f"videos: splits are {'/'.join(SPLITS)}, got {', '.join(bad)}")
    if args.static_per_cutout < 1:
        raise ValueError(f"static_per_cutout must be >= 1, got {args.static_per_cutout}")
    video = SyntheticVideoConfig(**args.video)
    inputs = list(args.debs.values())
    check_folder(args.output, overwrite=args.overwrite, inputs=inputs)
    with tempfile.TemporaryDirectory(prefix="deva-debs-") as folder:
        cutouts = fetch_packages(args.cutouts, args.debs, folder, print)
        backgrounds = fetch_packages(args.backgrounds, args.debs, folder, print)
        out = OutputFolder(args.output, tool="make_real", overwrite=args.overwrite, inputs=inputs)
        record = {
            "settings": dataclasses.asdict(args),
            "packages": {p.name: p.version for p in (*cutouts, *backgrounds)},
            "state": "running",
        }
        out.write_run(record)
        try:
            summary = build_real_imagery(
                cutouts,
                backgrounds,
                out,
                val_fraction=args.val_fraction,
                seed=args.seed,
                static_per_cutout=args.static_per_cutout,
                min_pixels=args.min_cutout_pixels,
                min_background_side=args.min_background_side,
                videos=args.videos,
                video=video,
                progress=lambda items: tqdm(items, unit="cut-out", desc="static pairs"),
            )
        except BaseException as error:
            out.write_run({**record, "state": f"failed: {one_line(error)}"}, final=True)
            raise
    out.write_run({**record, "state": "done", "summary": dataclasses.asdict(summary)}, final=True)
    for split in SPLITS:
        print(
            f"{split}: {summary.cutouts.get(split, 0)} cut-outs, "
            f"{summary.backgrounds.get(split, 0)} backgrounds, "
            f"{summary.static_pairs.get(split, 0)} static pairs, "
            f"{summary.videos.get(split, 0)} pseudo-videos"
        )
    print(f"left out {summary.rejected_cutouts} drawings; wrote {out.root} (licences/ inside)")
    print(
        f"train with: stage=static data.roots=[{out.root}/static/train] or "
        f"data.real_root={out.root}"
    )


if __name__ == "__main__":
    sys.exit(main())
