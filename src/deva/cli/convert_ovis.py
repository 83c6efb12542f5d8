r"""Convert OVIS's instance annotations into the VOS training layout (``data.roots.ovis``).

    deva-convert-ovis annotations=annotations_train.json images=OVIS/train \
        output=OVIS-VOS-train [link=hard|symlink|copy] [overwrite=true]

Frames are hard-linked (copied across file systems) into ``<output>/JPEGImages/<video>/``;
each frame gets a palette PNG in ``<output>/Annotations/<video>/`` with instance k of the
video as index k (rules in :mod:`deva.data.ovis`). The output folder is owned like every
tool's (``manifest.txt``, ``run.json``): files that are not the tool's are never touched.
``python tools/convert_ovis.py`` takes the same arguments.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

from tqdm import tqdm

from deva.cli.common import run_tool
from deva.config import compose, quote_paths
from deva.config.schema import ConvertOvisConfig, parse
from deva.data.ovis import LINK_METHODS, convert_ovis
from deva.errors import one_line
from deva.io.outputs import OutputFolder, check_folder

PATHS = ("annotations", "images", "output")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``key=value`` arguments, convert, return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_tool("convert_ovis: error:", lambda: _run(argv))


def _run(argv: list[str]) -> None:
    args = parse(ConvertOvisConfig, compose("convert_ovis", quote_paths(argv, PATHS)))
    for key in PATHS:
        if not getattr(args, key):
            raise ValueError(f"missing {key}=PATH")
    if args.link not in LINK_METHODS:
        raise ValueError(f"link must be one of {', '.join(LINK_METHODS)}, got {args.link!r}")
    inputs = [args.annotations, args.images]
    check_folder(args.output, overwrite=args.overwrite, inputs=inputs)
    out = OutputFolder(args.output, tool="convert_ovis", overwrite=args.overwrite, inputs=inputs)
    record = {"settings": dataclasses.asdict(args), "state": "running"}
    out.write_run(record)
    try:
        summary = convert_ovis(
            args.annotations,
            args.images,
            out,
            link=args.link,
            wrap=lambda videos: tqdm(videos, unit="video", desc="converting"),
        )
    except BaseException as error:
        out.write_run({**record, "state": f"failed: {one_line(error)}"}, final=True)
        raise
    out.write_run({**record, "state": "done", "summary": dataclasses.asdict(summary)}, final=True)
    print(
        f"wrote {summary.videos} videos, {summary.frames} frames, {summary.instances} instances "
        f"to {out.root} ({summary.overlap_pixels} contested pixels given to the smaller mask)"
    )
    if summary.skipped_videos:
        print(
            f"skipped {len(summary.skipped_videos)} videos without instances "
            f"(e.g. {summary.skipped_videos[0]})"
        )
    if summary.copied_instead_of_linked:
        print(f"{summary.copied_instead_of_linked} frames copied: hard links need one file system")


if __name__ == "__main__":
    sys.exit(main())
