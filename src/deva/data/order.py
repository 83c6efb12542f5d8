"""A training stream that is a pure function of the step, so a resumed run sees the same data.

The stream of one process is a sequence of micro-batches ("positions"). Position ``q`` on
rank ``r`` of ``world`` holds ``batch`` samples; sample ``p`` of it has the global number
``g = (q · world + r) · batch + p``. Everything about that sample follows from ``(seed, g)``:

- which dataset item it is: item ``g mod N`` of a permutation of the ``N`` items drawn for
  pass ``g div N`` (map-style data, :class:`StepSampler`);
- its random generator (clip choice, augmentation, objects): seeded by ``(seed, g)``;
- the curriculum's maximum frame gap: that of optimizer step ``q div accumulate``.

:class:`Draw` carries these to the dataset, which is why DataLoader workers need no random
state of their own. :class:`ResumableLoader` is a ``DataLoader`` with Lightning's
``state_dict`` / ``load_state_dict`` interface: the state is the position training reached,
and the loader's next iteration starts there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

log = logging.getLogger(__name__)

#: Step → maximum frame gap (the curriculum); ``None`` keeps the datasets' own value.
GapSchedule = Callable[[int], int]


@dataclass(frozen=True)
class Draw:
    """One sample of the training stream: dataset item ``index``, global sample ``number``.

    ``max_skip`` is the curriculum's gap for the step the sample belongs to (``None``: the
    dataset's current value). Datasets accept a ``Draw`` wherever they accept an index.
    """

    index: int
    number: int
    seed: int
    max_skip: int | None = None

    def rng(self) -> np.random.Generator:
        """The sample's generator: a function of ``(seed, number)`` only."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.number]))


def split_index(index: int | Draw) -> tuple[int, np.random.Generator | None, int | None]:
    """``(item index, generator or None, max_skip or None)`` of a plain index or a draw."""
    if isinstance(index, Draw):
        return index.index, index.rng(), index.max_skip
    return int(index), None, None


def sample_number(position: int, rank: int, world: int, batch: int, slot: int) -> int:
    """The global number of sample ``slot`` of micro-batch ``position`` on ``rank``."""
    return (position * world + rank) * batch + slot


def item_of(number: int, size: int, seed: int) -> int:
    """Dataset item of global sample ``number``: a fresh permutation of ``size`` per pass."""
    order = np.random.default_rng(np.random.SeedSequence([seed, number // size, 0x5EED]))
    return int(order.permutation(size)[number % size])


class StepSampler(Sampler[Draw]):
    """Yields the :class:`Draw` of every sample of this rank, epoch by epoch, from a start
    position (micro-batch). Length: one epoch = ``batches_per_epoch`` micro-batches, about one
    pass over the items, rounded up to whole optimizer steps (``accumulate``).

    Each ``iter()`` yields the rest of the epoch that contains :attr:`start`, then moves
    :attr:`start` to the next epoch; :meth:`begin_at` (the loader, on resume) moves it.
    """

    def __init__(
        self,
        size: int,
        *,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        accumulate: int = 1,
        gap_schedule: GapSchedule | None = None,
    ) -> None:
        if size < 1 or batch_size < 1:
            raise ValueError(f"need items and a batch size, got {size} items, batch {batch_size}")
        self.size = int(size)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = max(1, int(world_size))
        self.accumulate = max(1, int(accumulate))
        self.gap_schedule = gap_schedule
        per_epoch = max(1, self.size // (self.world_size * self.batch_size))
        # whole optimizer steps per epoch: Lightning steps at an epoch's end even when the
        # accumulation is incomplete, which would break "position = step × accumulate"
        self.batches_per_epoch = -(-per_epoch // self.accumulate) * self.accumulate
        self.start = 0

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size

    def begin_at(self, position: int) -> None:
        """Let the next ``iter()`` start at micro-batch ``position``."""
        self.start = int(position)

    def draws(self, position: int) -> list[Draw]:
        """The draws of micro-batch ``position`` (of this rank), in batch order."""
        step = position // self.accumulate
        gap = self.gap_schedule(step) if self.gap_schedule is not None else None
        numbers = [
            sample_number(position, self.rank, self.world_size, self.batch_size, slot)
            for slot in range(self.batch_size)
        ]
        return [Draw(item_of(n, self.size, self.seed), n, self.seed, gap) for n in numbers]

    def __iter__(self) -> Iterator[Draw]:
        start = self.start
        end = (start // self.batches_per_epoch + 1) * self.batches_per_epoch
        self.start = end
        return (draw for position in range(start, end) for draw in self.draws(position))


class ResumableLoader(DataLoader):
    """A ``DataLoader`` whose ``state_dict`` is the training position (Lightning saves it in
    the checkpoint) and whose next iteration starts where that state says.

    ``position`` tells the current position (the data module: optimizer steps × gradient
    accumulation). The data source is a :class:`StepSampler` over a map-style dataset, or an
    iterable dataset with ``begin_at(position)`` and ``batches_per_epoch`` (the shards).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        position: Callable[[], int],
        sampler: StepSampler | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        generator = torch.Generator().manual_seed(int(seed))  # keeps torch's global RNG untouched
        super().__init__(dataset, sampler=sampler, generator=generator, **kwargs)
        self._position = position
        self._source: Any = sampler if sampler is not None else dataset
        if not hasattr(self._source, "begin_at"):
            raise TypeError(f"{type(dataset).__name__} cannot start at a position (no begin_at)")
        self._next = 0  # iterable data: where the next iteration (epoch) begins

    def __iter__(self) -> Any:
        if isinstance(self.dataset, IterableDataset):
            # workers copy the dataset at each iteration: tell it first where to begin
            per_epoch = max(1, int(self._source.batches_per_epoch))
            self._source.begin_at(self._next)
            self._next = (self._next // per_epoch + 1) * per_epoch
        return super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        """Where training is (micro-batches of this rank) and what the order depends on."""
        source = self._source
        return {
            "position": int(self._position()),
            "batch_size": int(self.batch_size or 0),
            "world_size": int(getattr(source, "world_size", None) or 1),
            "seed": int(getattr(source, "seed", None) or 0),
            "num_workers": int(self.num_workers),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Start the next iteration at the saved position (warns when the order differs)."""
        current = self.state_dict()
        keys: tuple[str, ...] = ("batch_size", "world_size", "seed")
        if isinstance(self.dataset, IterableDataset):
            keys += ("num_workers",)  # shards are split over workers
        changed = [f"{k} {state.get(k)} → {current[k]}" for k in keys if state.get(k) != current[k]]
        if changed:
            log.warning(
                "resuming with a different data order (%s): not an exact continuation",
                ", ".join(changed),
            )
        self.begin_at(int(state.get("position", 0)))

    def begin_at(self, position: int) -> None:
        """Let the next iteration start at micro-batch ``position``."""
        if isinstance(self.dataset, IterableDataset):
            self._next = int(position)
        else:
            self._source.begin_at(position)
