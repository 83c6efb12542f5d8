"""Webdataset tar shards of raw training videos, and a DDP-safe streaming reader.

**Shard format.** One webdataset sample = one video (or one image pair, a one-frame video),
un-augmented, with key ``<8-digit index>``:

- ``<key>.json``: ``{"name", "dataset", "frames": [frame names], "binary_masks": bool}`` and,
  for the generic source, ``"positions"`` (each frame's place among the folder's frames);
- ``<key>.<i:05d>.jpg`` / ``<key>.<i:05d>.png``: frame i and its mask, the original file bytes
  (arrays are encoded as JPEG quality 95 / palette PNG).

**Reading.** :class:`ShardClipDataset` streams shards and feeds each video to the same
sampler the folder datasets use (:class:`deva.data.video.ClipSampler` or
:class:`deva.data.static.PseudoVideoSampler`), so sampling and augmentation exist once.
Work is split over ranks × DataLoader workers ("consumers"): by shard when there are at
least as many shards as consumers, otherwise by sample (each consumer reads every shard and
keeps every n-th video). With ``samples_per_epoch`` every rank yields exactly that many
samples per epoch — consumers cycle over their part as often as needed — so uneven shards
never leave one DDP rank waiting for the others.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from braceexpand import braceexpand
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import tarfile_samples

from deva.data import synthetic
from deva.data.order import Draw, GapSchedule, sample_number
from deva.data.sample import (
    MediaRef,
    RecordSampler,
    Sample,
    VideoRecord,
    read_bytes,
    sample_rng,
    sample_with,
)
from deva.io import atomic
from deva.io.masks import davis_palette
from deva.io.outputs import OutputFolder

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Writing


def _encode_image(ref: MediaRef) -> tuple[bytes, str]:
    if isinstance(ref, np.ndarray):
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(ref, dtype=np.uint8)).save(buffer, format="JPEG", quality=95)
        return buffer.getvalue(), "jpg"
    data = read_bytes(ref)
    return data, "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpg"


def _encode_mask(ref: MediaRef) -> bytes:
    if isinstance(ref, np.ndarray):
        array = np.asarray(ref)
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                f"mask labels must lie in [0, 255], got [{array.min()}, {array.max()}]"
            )
        image = Image.fromarray(array.astype(np.uint8), mode="P")
        image.putpalette(davis_palette().reshape(-1).tolist())
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    return read_bytes(ref)


def record_to_shard_sample(record: VideoRecord, key: str) -> dict[str, Any]:
    """The webdataset sample (field → bytes) that stores ``record`` under ``key``."""
    if "." in key:
        raise ValueError(f"webdataset keys cannot contain dots, got {key!r}")
    sample: dict[str, Any] = {"__key__": key}
    for i, (image, mask) in enumerate(zip(record.images, record.masks)):
        data, ext = _encode_image(image)
        sample[f"{i:05d}.{ext}"] = data
        sample[f"{i:05d}.png" if ext == "jpg" else f"{i:05d}.mask.png"] = _encode_mask(mask)
    meta = {
        "name": record.name,
        "dataset": str(record.meta.get("dataset", "")),
        "frames": list(record.frame_names),
        "binary_masks": bool(record.binary_masks),
    }
    if record.meta.get("positions") is not None:  # generic source: gaps in folder frames
        meta["positions"] = [int(p) for p in record.meta["positions"]]
    sample["json"] = json.dumps(meta).encode("utf-8")
    return sample


def shard_sample_to_record(sample: dict[str, Any]) -> VideoRecord:
    """Rebuild the :class:`VideoRecord` (with encoded bytes) from a webdataset sample."""
    if "json" not in sample:
        raise ValueError(f"shard sample {sample.get('__key__')!r} has no json metadata")
    meta = json.loads(sample["json"])
    frames = list(meta["frames"])
    images, masks = [], []
    for i in range(len(frames)):
        if f"{i:05d}.jpg" in sample:
            images.append(sample[f"{i:05d}.jpg"])
            masks.append(sample[f"{i:05d}.png"])
        elif f"{i:05d}.mask.png" in sample:
            images.append(sample[f"{i:05d}.png"])
            masks.append(sample[f"{i:05d}.mask.png"])
        else:
            raise ValueError(
                f"shard sample {sample.get('__key__')!r} ({meta['name']}) misses frame {i}"
            )
    record_meta: dict[str, Any] = {"dataset": meta.get("dataset", "")}
    if meta.get("positions") is not None:
        if len(meta["positions"]) != len(frames):
            raise ValueError(
                f"shard sample {sample.get('__key__')!r} ({meta['name']}): "
                f"{len(meta['positions'])} frame positions for {len(frames)} frames"
            )
        record_meta["positions"] = tuple(int(p) for p in meta["positions"])
    return VideoRecord(
        name=str(meta["name"]),
        frame_names=tuple(frames),
        images=tuple(images),
        masks=tuple(masks),
        binary_masks=bool(meta.get("binary_masks", False)),
        meta=record_meta,
    )


def write_shards(
    records: Iterable[VideoRecord],
    output: str | Path | OutputFolder,
    *,
    prefix: str = "shard",
    samples_per_shard: int = 100,
    max_shard_bytes: float = 1e9,
) -> list[Path]:
    """Pack records into ``<output>/<prefix>-000000.tar``, ... and return the shard paths.

    A shard closes after ``samples_per_shard`` samples or ``max_shard_bytes`` bytes. Each
    shard is recorded in the output folder (:class:`~deva.io.outputs.OutputFolder`; a plain
    path becomes one: a non-empty folder is refused) before it is written, and written under
    a temporary name until it is complete.
    """
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be ≥ 1, got {samples_per_shard}")
    out = OutputFolder.of(output, tool="make_shards")
    pattern = str(out.root / f"{prefix}-%06d.tar")
    written: list[Path] = []
    handles: dict[str, Any] = {}

    def opener(name: str) -> Any:
        handles[name] = open(atomic.temporary_name(out.path(Path(name).name)), "wb")
        return handles[name]

    def post(name: str) -> None:
        handles.pop(name).close()  # the tar writer does not close a stream it was given
        os.replace(atomic.temporary_name(Path(name)), name)
        written.append(Path(name))

    with wds.ShardWriter(
        pattern,
        maxcount=samples_per_shard,
        maxsize=max_shard_bytes,
        verbose=0,
        post=post,
        opener=opener,
    ) as writer:
        for index, record in enumerate(records):
            writer.write(record_to_shard_sample(record, f"{index:08d}"))
        total = writer.total
    if total == 0:
        for path in written:
            path.unlink(missing_ok=True)
        raise ValueError(f"no records to write into {out.root}")
    logger.info("wrote %d samples into %d shards under %s", total, len(written), out.root)
    return written


def records_from_arrays(
    videos: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    prefix: str = "video",
    dataset: str = "arrays",
) -> Iterator[VideoRecord]:
    """Records of in-memory videos: ``(frames (T, H, W, 3) uint8, masks (T, H, W) labels)``.

    The hook for generated data: the records feed :func:`write_shards` directly, or the
    folder-free :class:`deva.data.video.VOSVideoDataset`.
    """
    for index, (frames, masks) in enumerate(videos):
        frames = np.asarray(frames)
        masks = np.asarray(masks)
        if frames.ndim != 4 or masks.shape != frames.shape[:3]:
            raise ValueError(
                f"video {index}: expected frames (T, H, W, 3) and masks (T, H, W), got "
                f"{frames.shape} and {masks.shape}"
            )
        count = frames.shape[0]
        yield VideoRecord(
            name=f"{prefix}_{index:05d}",
            frame_names=tuple(f"{t:05d}" for t in range(count)),
            images=tuple(frames[t] for t in range(count)),
            masks=tuple(masks[t].astype(np.uint8) for t in range(count)),
            meta={"dataset": dataset},
        )


def synthetic_records(
    num_videos: int, *, seed: int = 0, config: Any | None = None
) -> Iterator[VideoRecord]:
    """Records of ``num_videos`` generated videos (:mod:`deva.data.synthetic`), in memory.

    Video ``i`` uses the generator's seed for index ``i``, so the set matches the synthetic
    folder dataset written with the same seed.
    """

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(num_videos):
            video = synthetic.generate_video(config, synthetic.video_seed(seed, i))
            yield video.frames, video.masks

    for i, record in enumerate(records_from_arrays(generate(), dataset="synthetic")):
        yield VideoRecord(
            name=synthetic.video_name(i),
            frame_names=record.frame_names,
            images=record.images,
            masks=record.masks,
            meta=record.meta,
        )


# --------------------------------------------------------------------------------------------
# Reading


def expand_urls(urls: str | Path | Sequence[str | Path]) -> list[str]:
    """Shard list from a brace pattern (``data-{000000..000099}.tar``), a folder (all its
    ``*.tar``), or a list of either."""
    items = [urls] if isinstance(urls, str | Path) else list(urls)
    result: list[str] = []
    for item in items:
        text = str(item)
        if Path(text).is_dir():
            found = sorted(str(p) for p in Path(text).glob("*.tar"))
            if not found:
                raise FileNotFoundError(f"no .tar shards in folder {text}")
            result += found
        else:
            result += list(braceexpand(text))
    if not result:
        raise ValueError(f"no shards in {urls!r}")
    return result


def read_records(
    urls: str | Path | Sequence[str | Path], *, stride: int = 1, offset: int = 0
) -> Iterator[VideoRecord]:
    """The records stored in shards (a folder, a brace pattern or a list), in order; every
    ``stride``-th from ``offset``."""
    position = 0
    for sample in tarfile_samples([{"url": url} for url in expand_urls(urls)]):
        if position % stride == offset:
            yield shard_sample_to_record(sample)
        position += 1


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _shuffled(items: Iterable[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Approximate shuffle through a buffer of ``size`` items (pass-through when < 2)."""
    if size < 2:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            yield buffer.pop(int(rng.integers(len(buffer))))
    while buffer:
        yield buffer.pop(int(rng.integers(len(buffer))))


class ShardClipDataset(IterableDataset):
    """Streams clip samples from webdataset shards, split over ranks and DataLoader workers.

    Args:
        urls: shard pattern / folder / list (see :func:`expand_urls`); any URL webdataset
            opens (local path, ``pipe:...``, ``http(s)://``) works.
        sampler: turns a raw record into a sample (the folder datasets' sampler).
        samples_per_epoch: samples per epoch **per rank**, split over workers; ``None``
            reads each consumer's part once (exact coverage, for packing checks; not
            DDP-safe with uneven shards).
        rank, world_size: this process's place; default from ``torch.distributed``.
        shuffle: shuffle the shard order per pass (by-shard split only).
        shuffle_buffer: videos kept in memory for an approximate sample shuffle.
        fixed_seed: every video always yields the same sample (tests); ``None`` to train.
        seed, batch_size, accumulate, gap_schedule: the training stream
            (:mod:`deva.data.order`): the video order of epoch ``e`` follows ``(seed, e,
            consumer)``, sample ``p`` of micro-batch ``q`` gets the generator of its global
            number and the curriculum gap of step ``q // accumulate``.

    Resuming (:meth:`begin_at`): each worker replays its part of the epoch up to the
    position without decoding images or sampling clips (it skips as many videos as it had
    produced samples), so the continuation is exact unless a skipped video gave no usable
    clip; each such video shifts the rest of that epoch's stream by one video. The next
    epochs are exact again. The workers and batch size must be those of the first run.
    """

    def __init__(
        self,
        urls: str | Path | Sequence[str | Path],
        sampler: RecordSampler,
        *,
        samples_per_epoch: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle: bool = True,
        shuffle_buffer: int = 8,
        fixed_seed: int | None = None,
        seed: int = 0,
        batch_size: int = 1,
        accumulate: int = 1,
        gap_schedule: GapSchedule | None = None,
    ) -> None:
        super().__init__()
        self.urls = expand_urls(urls)
        self.sampler = sampler
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be ≥ 1, got {samples_per_epoch}")
        self.samples_per_epoch = samples_per_epoch
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.fixed_seed = fixed_seed
        self.seed = int(seed)
        self.batch_size = max(1, int(batch_size))
        self.accumulate = max(1, int(accumulate))
        self.gap_schedule = gap_schedule
        self.start = 0
        self._epoch = 0

    @property
    def batches_per_epoch(self) -> int:
        """Micro-batches of this rank per epoch (1 without ``samples_per_epoch``)."""
        if self.samples_per_epoch is None:
            return 1
        return max(1, self.samples_per_epoch // self.batch_size)

    def begin_at(self, position: int) -> None:
        """Let the next iteration start at micro-batch ``position`` of this rank."""
        self.start = int(position)

    def __len__(self) -> int:
        if self.samples_per_epoch is None:
            raise TypeError("ShardClipDataset without samples_per_epoch has no length")
        return self.samples_per_epoch

    def set_max_skip(self, max_skip: int) -> None:
        """Forward the curriculum's maximum frame gap to the sampler (video stage)."""
        setter = getattr(self.sampler, "set_max_skip", None)
        if setter is None:
            raise TypeError(f"{type(self.sampler).__name__} has no maximum frame gap to set")
        setter(max_skip)

    def set_epoch(self, epoch: int) -> None:
        """Vary the shard order with the epoch when ``fixed_seed`` is set."""
        self._epoch = int(epoch)

    def consumer(self) -> tuple[int, int, int]:
        """``(consumer index, number of consumers, number of workers)`` of this iterator."""
        rank, world = _rank_and_world(self.rank, self.world_size)
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        return rank * workers + worker, world * workers, workers

    def assignment(self) -> tuple[list[str], int, int]:
        """This consumer's shards, and the (stride, offset) of the videos it keeps in them."""
        index, count, _ = self.consumer()
        if len(self.urls) >= count:
            return self.urls[index::count], 1, 0
        return list(self.urls), count, index

    def _quota(self) -> int | None:
        if self.samples_per_epoch is None:
            return None
        _, _, workers = self.consumer()
        worker = 0 if get_worker_info() is None else get_worker_info().id
        base, extra = divmod(self.samples_per_epoch, workers)
        return base + (1 if worker < extra else 0)

    def _stream_rng(self, epoch: int) -> np.random.Generator:
        index, _, _ = self.consumer()
        if self.fixed_seed is None:
            return np.random.default_rng(np.random.SeedSequence([self.seed, epoch, index]))
        return np.random.default_rng([int(self.fixed_seed), self._epoch, index])

    def _draw(self, epoch: int, produced: int) -> tuple[np.random.Generator | None, int | None]:
        """Generator and gap of this worker's ``produced``-th sample of ``epoch``."""
        rank, world = _rank_and_world(self.rank, self.world_size)
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        local_batch, slot = divmod(produced, self.batch_size)
        position = epoch * self.batches_per_epoch + worker + workers * local_batch
        gap = self.gap_schedule(position // self.accumulate) if self.gap_schedule else None
        if self.fixed_seed is not None:
            return None, gap
        number = sample_number(position, rank, world, self.batch_size, slot)
        return Draw(0, number, self.seed).rng(), gap

    def _skipped(self) -> tuple[int, int]:
        """``(epoch, samples of this worker already consumed in it)`` at :attr:`start`."""
        epoch, within = divmod(self.start, self.batches_per_epoch)
        if self.samples_per_epoch is None:
            return self.start, 0
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        batches = max(0, (within - worker + workers - 1) // workers)
        return epoch, batches * self.batch_size

    def records(
        self, shards: Sequence[str], stride: int = 1, offset: int = 0
    ) -> Iterator[VideoRecord]:
        """Decode the records of ``shards`` in order; keep every ``stride``-th from ``offset``."""
        return read_records(shards, stride=stride, offset=offset)

    def __iter__(self) -> Iterator[Sample]:
        shards, stride, offset = self.assignment()
        quota = self._quota()
        if quota == 0:
            return
        epoch, skip = self._skipped()
        rng = self._stream_rng(epoch)
        produced = 0
        while True:
            order = list(shards)
            if self.shuffle and stride == 1:
                order = [order[i] for i in rng.permutation(len(order))]
            produced_this_pass = 0
            for record in _shuffled(self.records(order, stride, offset), self.shuffle_buffer, rng):
                if skip > 0:  # resuming: these were consumed before the restart
                    skip -= 1
                    produced += 1
                    produced_this_pass += 1
                    if quota is not None and produced >= quota:
                        return
                    continue
                drawn, gap = self._draw(epoch, produced)
                if drawn is None:
                    drawn = sample_rng(self.fixed_seed, record.name)
                sample = sample_with(self.sampler, record, drawn, gap)
                if sample is None:
                    logger.debug("no usable clip in %s; skipped", record.name)
                    continue
                yield sample
                produced += 1
                produced_this_pass += 1
                if quota is not None and produced >= quota:
                    return
            if quota is None:
                return
            if produced_this_pass == 0:
                raise RuntimeError(
                    f"shards {order[:2]}… gave no usable sample in a whole pass; check the "
                    "shards and min_object_pixels"
                )
