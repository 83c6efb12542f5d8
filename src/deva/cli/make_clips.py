r"""Write real annotated video clips from Debian packages in the DAVIS layout.

    deva-make-clips output=datasets/clips [clips=[NAME,...]] [+debs.PKG=FILE.deb] [overwrite=true]

Packages are fetched with ``apt-get download`` (or read from ``+debs.<name>=``) and read in
Python; the layout and the clips are described in :mod:`deva.data.real_clips`. The output
folder is owned like every tool's (``manifest.txt``, ``run.json``);
``python tools/make_clips.py`` takes the same arguments.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from collections.abc import Sequence

from deva.cli.common import run_tool
from deva.config import compose, quote_paths
from deva.config.schema import MakeClipsConfig, parse
from deva.data.debian import fetch_packages
from deva.data.real_clips import CLIP_SOURCES, build_real_clips
from deva.errors import one_line
from deva.io.outputs import OutputFolder, check_folder

PATHS = ("output",)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``key=value`` arguments, write the clips, return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_tool("make_clips: error:", lambda: _run(argv))


def _run(argv: list[str]) -> None:
    args = parse(MakeClipsConfig, compose("make_clips", quote_paths(argv, PATHS)))
    if not args.output:
        raise ValueError("missing output=PATH")
    if not args.clips:
        raise ValueError(f"clips=[...] is empty; known clips: {', '.join(sorted(CLIP_SOURCES))}")
    unknown = sorted(set(args.clips) - set(CLIP_SOURCES))
    if unknown:
        raise ValueError(
            f"unknown clips {', '.join(unknown)}; known: {', '.join(sorted(CLIP_SOURCES))}"
        )
    sources = [CLIP_SOURCES[name] for name in args.clips]
    names = sorted({s.package for s in sources})
    unused = sorted(set(args.debs) - set(names))
    if unused:
        raise ValueError(f"debs names packages that are not used: {', '.join(unused)}")
    inputs = list(args.debs.values())
    check_folder(args.output, overwrite=args.overwrite, inputs=inputs)
    with tempfile.TemporaryDirectory(prefix="deva-debs-") as folder:
        packages = fetch_packages(names, args.debs, folder, print)
        out = OutputFolder(args.output, tool="make_clips", overwrite=args.overwrite, inputs=inputs)
        record = {
            "settings": dataclasses.asdict(args),
            "packages": {p.name: p.version for p in packages},
            "state": "running",
        }
        out.write_run(record)
        try:
            written = build_real_clips(packages, out, sources)
        except BaseException as error:
            out.write_run({**record, "state": f"failed: {one_line(error)}"}, final=True)
            raise
    out.write_run({**record, "state": "done", "frames": written}, final=True)
    for name, frames in written.items():
        flag = " (held out: measure only)" if CLIP_SOURCES[name].held_out else ""
        print(f"{name}: {frames} frames{flag}")
    print(
        f'wrote {out.root}; score with +validation.sets.clips="{{type: generic, root: {out.root}}}"'
    )


if __name__ == "__main__":
    sys.exit(main())
