r"""Pack a training dataset into webdataset tar shards (raw, un-augmented).

    deva-make-shards dataset=static|davis|ytvos|ovis|mose|burst|generic|synthetic root=DIR \
        output=DIR [samples_per_shard=N] [prefix=NAME] [split=train] [subset=default] \
        [num_videos=N] [seed=S]

- ``static``: ``root`` is an image-pair folder (FSS-1000 or flat DUTS / ECSSD / HRSOD / BIG);
  one sample per image pair.
- ``davis``: DAVIS-2017 root, videos of ``split`` (default ``train``).
- ``ytvos`` / ``ovis`` / ``mose`` / ``burst``: the training folder holding ``JPEGImages/``
  and ``Annotations/``; ``subset``: ``default`` (the source's video list in training: the
  published YouTube-VOS subset, every video of the others), ``all``, ``published`` or a file.
- ``generic``: your videos (``JPEGImages/<video>`` + ``Annotations/<video>``, any frames
  annotated); the shards keep where each annotated frame lies in the folder.
- ``synthetic``: no ``root``; ``num_videos`` generated videos (``seed``, and optionally
  ``frames`` / ``height`` / ``width``).

Shards are written as ``<output>/<prefix>-000000.tar``, ...; see ``deva.data.shards``.
``python tools/make_shards.py`` takes the same arguments.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Iterator, Sequence

from tqdm import tqdm

from deva.cli.common import run_tool
from deva.config import compose, quote_paths
from deva.config.schema import MakeShardsConfig, parse
from deva.data import shards, static, video, video_folders
from deva.data.sample import VideoRecord
from deva.data.shards import write_shards
from deva.data.synthetic import SyntheticVideoConfig
from deva.errors import one_line
from deva.io.outputs import OutputFolder, check_folder

DATASETS = ("static", "davis", *video_folders.YOUTUBE_LAYOUT, "generic", "synthetic")
DEFAULT_SAMPLES_PER_SHARD = {"static": 1000, "synthetic": 50}
PATHS = ("root", "output")


def _records(args: MakeShardsConfig) -> tuple[list[VideoRecord] | Iterable[VideoRecord], int]:
    """The records to pack and how many there are."""
    if args.dataset == "synthetic":
        sizes = {"num_frames": args.frames, "height": args.height, "width": args.width}
        overrides = {k: v for k, v in sizes.items() if v is not None}
        config = SyntheticVideoConfig(**overrides) if overrides else None
        records = shards.synthetic_records(args.num_videos, seed=args.seed, config=config)
        return records, args.num_videos
    if not args.root:
        raise ValueError(f"dataset={args.dataset} needs root=DIR")
    if args.dataset == "static":
        found = static.scan_image_pairs(args.root)
    elif args.dataset == "davis":
        split = None if args.split in (None, "all") else args.split
        found = video_folders.davis_records(args.root, split=split)
    else:
        subset = args.subset
        if subset == "default":
            subset = video.DEFAULT_SOURCES[args.dataset].subset
        elif subset == "all":
            subset = None
        found = video_folders.records_for(args.dataset, args.root, subset=subset)
    return found, len(found)


def _progress(records: Iterable[VideoRecord], total: int) -> Iterator[VideoRecord]:

    yield from tqdm(records, total=total, unit="sample", desc="packing")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``key=value`` arguments, pack the shards, return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_tool("make_shards: error:", lambda: _run(argv))


def _run(argv: list[str]) -> None:
    args = parse(MakeShardsConfig, compose("make_shards", quote_paths(argv, PATHS)))
    dataset = args.dataset
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if not args.output:
        raise ValueError("missing output=DIR")
    per_shard = args.samples_per_shard or DEFAULT_SAMPLES_PER_SHARD.get(dataset, 20)
    prefix = args.prefix or dataset
    check_folder(args.output, overwrite=args.overwrite, inputs=[args.root])
    records, total = _records(args)
    out = OutputFolder(
        args.output, tool="make_shards", overwrite=args.overwrite, inputs=[args.root]
    )
    print(
        f"packing {total} {dataset} samples from {args.root or '(generated)'} into "
        f"{out.root}/{prefix}-*.tar, {per_shard} per shard"
    )
    record = {"settings": dataclasses.asdict(args), "state": "running"}
    out.write_run(record)
    try:
        paths = write_shards(
            _progress(records, total), out, prefix=prefix, samples_per_shard=per_shard
        )
    except BaseException as error:
        out.write_run({**record, "state": f"failed: {one_line(error)}"}, final=True)
        raise
    out.write_run({**record, "state": "done"}, final=True)
    print(f"wrote {len(paths)} shards: {paths[0]} … {paths[-1]}")


if __name__ == "__main__":
    sys.exit(main())
