r"""Pack a training dataset into webdataset tar shards (raw, un-augmented).

    deva-make-shards dataset=static|davis|ytvos|ovis|synthetic root=DIR output=DIR \
        [samples_per_shard=N] [prefix=NAME] [split=train] [num_videos=N] [seed=S]

- ``static``: ``root`` is an image-pair folder (FSS-1000 or flat DUTS / ECSSD / HRSOD / BIG);
  one sample per image pair.
- ``davis``: DAVIS-2017 root, videos of ``split`` (default ``train``).
- ``ytvos`` / ``ovis``: the training folder holding ``JPEGImages/`` and ``Annotations/``.
- ``synthetic``: no ``root``; ``num_videos`` generated videos (``seed``, and optionally
  ``frames`` / ``height`` / ``width``).

Shards are written as ``<output>/<prefix>-000000.tar``, ...; see ``deva.data.shards``.
``python tools/make_shards.py`` takes the same arguments.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from omegaconf import OmegaConf
from tqdm import tqdm

from deva.data import shards, static, video
from deva.data.sample import VideoRecord
from deva.data.shards import write_shards
from deva.data.synthetic import SyntheticVideoConfig

DATASETS = ("static", "davis", "ytvos", "ovis", "synthetic")
DEFAULT_SAMPLES_PER_SHARD = {"static": 1000, "synthetic": 50}


def _records(args: dict[str, Any]) -> tuple[list[VideoRecord] | Iterable[VideoRecord], int]:
    """The records to pack and how many there are."""

    dataset = args["dataset"]
    if dataset == "synthetic":
        count = int(args.get("num_videos", 100))
        config = None
        size_keys = {"frames": "num_frames", "height": "height", "width": "width"}
        overrides = {size_keys[k]: int(v) for k, v in args.items() if k in size_keys}
        if overrides:
            config = SyntheticVideoConfig(**overrides)
        return shards.synthetic_records(count, seed=int(args.get("seed", 0)), config=config), count
    root = args.get("root")
    if not root:
        raise ValueError(f"dataset={dataset} needs root=DIR")
    if dataset == "static":
        records = static.scan_image_pairs(root)
    elif dataset == "davis":
        split = args.get("split", "train")
        records = video.davis_records(root, split=None if split in (None, "all") else str(split))
    else:
        records = video.youtube_records(root, dataset=dataset)
    return records, len(records)


def _progress(records: Iterable[VideoRecord], total: int) -> Iterator[VideoRecord]:

    yield from tqdm(records, total=total, unit="sample", desc="packing")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``key=value`` arguments, pack the shards, return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = OmegaConf.to_container(OmegaConf.from_dotlist(argv)) or {}
        assert isinstance(args, dict)
        dataset = args.get("dataset")
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
        output = args.get("output")
        if not output:
            raise ValueError("missing output=DIR")
        per_shard = int(args.get("samples_per_shard", DEFAULT_SAMPLES_PER_SHARD.get(dataset, 20)))
        prefix = str(args.get("prefix", dataset))
        records, total = _records(args)
        print(
            f"packing {total} {dataset} samples from {args.get('root', '(generated)')} into "
            f"{output}/{prefix}-*.tar, {per_shard} per shard"
        )

        paths = write_shards(
            _progress(records, total), output, prefix=prefix, samples_per_shard=per_shard
        )
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as error:
        print(f"make_shards: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} shards: {paths[0]} … {paths[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
