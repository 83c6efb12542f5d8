"""Whole datasets over many processes: which process tracks which video, and the per-video
records that let a restart skip the videos already finished.

- :func:`assign` gives every video to exactly one of ``world`` processes, longest videos
  first to the least-loaded process, so the split is deterministic and balanced by frames;
- :class:`VideoParts` keeps one small JSON record per finished video in the output folder
  (``.parts/<video>.json``: its frame count and its share of a merged prediction file such
  as VIPSeg's ``pred.json`` or a BURST json), written atomically after the video's last frame,
  so a record means "done" and the merge reads every video's share from one place; once the
  whole output is written the records are deleted;
- :func:`launch` starts the processes: one (this one) for ``devices × num_nodes = 1``, else
  Lightning Fabric's DDP launcher (``accelerator=cpu`` uses gloo), on this node or on a
  cluster Fabric recognises (SLURM, torchrun).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import torch

from deva.errors import one_line
from deva.io.outputs import OutputFolder

log = logging.getLogger(__name__)

PARTS_DIR = ".parts"


class ProcessFailed(ValueError):
    """Another process of the run failed (one line: which, and its error)."""


def assign(lengths: list[int], world: int) -> list[int]:
    """The process (rank) of each video: longest first to the least-loaded rank (ties: the
    earlier video, the lower rank)."""
    if world < 1:
        raise ValueError(f"world size must be >= 1, got {world}")
    load = [0] * world
    ranks = [0] * len(lengths)
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        rank = min(range(world), key=lambda r: (load[r], r))
        ranks[index] = rank
        load[rank] += max(int(lengths[index]), 1)
    return ranks


class VideoParts:
    """Records of finished videos in ``<output>/.parts/`` (see the module docstring)."""

    def __init__(self, out: OutputFolder) -> None:
        self.out = out

    def _relative(self, video: str) -> str:
        return f"{PARTS_DIR}/{quote(video, safe='')}.json"

    def done(self, video: str) -> bool:
        """Whether ``video`` was finished by this run or an earlier one it resumes."""
        return (
            self.out.owns(self._relative(video))
            and (self.out.root / self._relative(video)).is_file()
        )

    def write(self, video: str, record: dict[str, Any]) -> None:
        """Mark ``video`` finished with its ``record`` (plain JSON data)."""
        self.out.write_json(self._relative(video), record, indent=None)

    def read(self, video: str) -> dict[str, Any]:
        """The record of a finished video."""
        return json.loads((self.out.root / self._relative(video)).read_text())

    def pending(self, videos: list[str], lengths: list[int], processes: Processes) -> list[int]:
        """The indices of this process's share of ``videos`` not finished yet (the first
        process logs how many an earlier run finished)."""
        finished = sum(self.done(v) for v in videos)
        if finished and processes.main:
            log.info("skipping %d video(s) finished by the earlier run", finished)
        return [i for i in processes.mine(lengths) if not self.done(videos[i])]

    def collect(self, videos: list[str], processes: Processes) -> list[dict[str, Any]]:
        """Every video's record, read by every process once all have done their share; after
        it the first process may :meth:`clear` them."""
        records = [self.read(v) for v in videos]
        processes.barrier()  # every process has read the records before the first deletes them
        return records

    def clear(self, videos: list[str]) -> None:
        """Delete the records once the dataset's output is complete (the first process, after
        every process is done): the output folder then holds the benchmark's layout only."""
        self.out.discard([self._relative(v) for v in videos])


@dataclass
class Processes:
    """This process's place among the processes a dataset is split over."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None  # None: as configured (one process)
    fabric: Any = None

    @property
    def label(self) -> str:
        """`` (process k of N)`` when there are several processes, else empty."""
        return f" (process {self.rank + 1} of {self.world})" if self.world > 1 else ""

    @property
    def main(self) -> bool:
        """Whether this is the process that prints, merges and records the run."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.fabric is not None:
            self.fabric.barrier()

    @contextlib.contextmanager
    def share(self) -> Iterator[None]:
        """This process's share of the work. At its end every process waits for the others,
        and when one failed all stop: its own error propagates, the others raise
        :class:`ProcessFailed` with its one-line message (rather than wait for it forever)."""
        try:
            yield
        except BaseException as error:
            self._agree(f"{type(error).__name__}: {one_line(error)}")
            raise
        failures = self._agree(None)
        if failures:
            rank, message = failures[0]
            raise ProcessFailed(f"process {rank + 1} of {self.world} failed: {message}")

    def _agree(self, failure: str | None) -> list[tuple[int, str]]:
        """Every process's failure (rank, message), gathered on all."""
        if self.fabric is None:
            return [] if failure is None else [(0, failure)]
        gathered: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(gathered, failure)
        return [(rank, m) for rank, m in enumerate(gathered) if m is not None]

    def mine(self, lengths: list[int]) -> list[int]:
        """The indices of the videos this process tracks (see :func:`assign`)."""
        return [i for i, rank in enumerate(assign(lengths, self.world)) if rank == self.rank]


def launch(devices: int, num_nodes: int = 1, accelerator: str = "auto") -> Processes:
    """This process's :class:`Processes`, starting the others when there are several."""
    if devices < 1 or num_nodes < 1:
        raise ValueError(
            f"trainer.devices and trainer.num_nodes must be >= 1, got {devices}, {num_nodes}"
        )
    if devices * num_nodes == 1:
        return Processes()
    from lightning.fabric import Fabric

    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy="ddp")
    fabric.launch()
    log.info("process %d of %d on %s", fabric.global_rank, fabric.world_size, fabric.device)
    return Processes(fabric.global_rank, fabric.world_size, fabric.device, fabric)


def open_output(
    root: str | Path,
    tool: str,
    processes: Processes,
    *,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Iterable[str | Path | None] = (),
) -> OutputFolder:
    """The output folder every process writes into: the first prepares it (``overwrite``
    clears the previous run's files), then the others open it as it is."""
    out = None
    if processes.main:
        out = OutputFolder(root, tool=tool, overwrite=overwrite, resume=resume, inputs=inputs)
    processes.barrier()
    if out is None:
        out = OutputFolder(root, tool=tool, resume=True, inputs=inputs)
    return out


def recorded_run(
    out: OutputFolder,
    settings: dict[str, Any],
    processes: Processes,
    work: Callable[[], int],
    *,
    resume: bool = False,
) -> int:
    """``work()`` with its state recorded in ``run.json`` by the first process (running,
    done, failed, interrupted; at the end the files every process recorded). Resuming a run
    that is done does nothing and returns its frame count."""
    previous = out.previous or {}
    if resume and previous.get("state") == "done":
        frames = int(previous.get("frames", 0))
        if processes.main:
            log.info("the run in %s is complete (%d frames): nothing to resume", out.root, frames)
        return frames
    record = {"settings": settings, "state": "running"}
    if processes.main:
        out.write_run(record)

    def final(state: dict[str, Any]) -> None:
        if processes.main:
            out.refresh()
            out.write_run({**record, **state}, final=True)

    try:
        result = work()
    except KeyboardInterrupt:
        final({"state": "interrupted"})
        raise
    except BaseException as error:
        final({"state": f"failed: {one_line(error)}"})
        raise
    final({"state": "done", "frames": result})
    return result
