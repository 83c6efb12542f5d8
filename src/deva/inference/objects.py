"""Object registry: identity and metadata of the tracked objects, apart from tensor layout.

Object ids are what users see and what masks carry; they are handed out once and never reused,
even after the object is deleted. Memory tensors hold one channel per live object in the
registry's order, so the registry also maps ids to channel indices and tells the caller which
indices disappear when objects are removed (the remaining indices are compacted). One registry
is shared by a propagator, its memory (which asks it for the channel order) and the tracker
that drives them (which keeps each object's votes and miss counter in it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from deva.types import Detection, Segment


@dataclass
class TrackedObject:
    """One live object: its id, ``isthing`` status, detection votes and miss counter.

    ``category_id`` is the most frequent category over *all* detections merged into the object
    (a consensus segment brings its selected proposal and every supporter), ties going to the
    smallest category id, and ``score`` is the mean score over the same detections; both are
    None when no merged detection carried one (None values do not vote). This is how the
    published implementation keeps metadata. ``missed`` counts consecutive merges without
    association (§3.2.2).
    """

    id: int
    isthing: bool | None = None
    category_votes: Counter[int] = field(default_factory=Counter)
    score_sum: float = 0.0
    score_count: int = 0
    missed: int = 0

    def add_detection(self, category_id: int | None, score: float | None) -> None:
        """Record one merged detection's category vote and score (None values are skipped)."""
        if category_id is not None:
            self.category_votes[int(category_id)] += 1
        if score is not None:
            self.score_sum += float(score)
            self.score_count += 1

    def add_detections(self, detections: Iterable[Detection]) -> None:
        """Record several merged detections' (category, score) pairs."""
        for category_id, score in detections:
            self.add_detection(category_id, score)

    @property
    def category_id(self) -> int | None:
        """The most frequent category (ties: the smallest id), or None without votes."""
        if not self.category_votes:
            return None
        top = max(self.category_votes.values())
        return min(c for c, n in self.category_votes.items() if n == top)

    @property
    def score(self) -> float | None:
        """Mean score of the merged detections, or None without scores."""
        return self.score_sum / self.score_count if self.score_count else None

    def to_segment(self) -> Segment:
        """This object's metadata as a ``Segment`` (id = object id)."""
        return Segment(
            id=self.id, category_id=self.category_id, score=self.score, isthing=self.isthing
        )


class ObjectRegistry:
    """Live objects in channel order, with fresh ids that are never reused.

    Example:
        >>> registry = ObjectRegistry()
        >>> a, b, c = (registry.create().id for _ in range(3))
        >>> registry.remove([b])
        [1]
        >>> registry.ids, registry.index_of(c), registry.create().id
        ([1, 3], 1, 4)
    """

    def __init__(self, *, first_id: int = 1) -> None:
        if first_id < 1:
            raise ValueError(f"object ids start at 1 or more (0 = background), got {first_id}")
        self._next_id = first_id
        self._objects: dict[int, TrackedObject] = {}
        self._index: dict[int, int] = {}

    def create(
        self,
        *,
        category_id: int | None = None,
        score: float | None = None,
        isthing: bool | None = None,
        detections: Iterable[Detection] | None = None,
    ) -> TrackedObject:
        """Register a new object with a fresh id at the last channel index.

        ``detections`` (category, score) pairs are its first merged detections; without them
        the given category and score count as its first detection.
        """
        obj = TrackedObject(id=self._next_id, isthing=None if isthing is None else bool(isthing))
        if detections is None:
            obj.add_detection(category_id, score)
        else:
            obj.add_detections(detections)
        self._next_id += 1
        self._index[obj.id] = len(self._objects)
        self._objects[obj.id] = obj
        return obj

    def add(self, object_id: int, *, isthing: bool | None = None) -> TrackedObject:
        """Register an object under an id the caller chose (e.g. a ground-truth label) at the
        last channel index; later :meth:`create` calls hand out larger ids."""
        object_id = int(object_id)
        if object_id < 1:
            raise ValueError(f"object ids are >= 1 (0 = background), got {object_id}")
        if object_id in self._objects:
            raise ValueError(f"object id {object_id} is already live")
        obj = TrackedObject(id=object_id, isthing=None if isthing is None else bool(isthing))
        self._next_id = max(self._next_id, object_id + 1)
        self._index[obj.id] = len(self._objects)
        self._objects[obj.id] = obj
        return obj

    def state_dict(self) -> dict[str, Any]:
        """Everything the registry holds, as plain data (for exact resume)."""
        return {
            "next_id": self._next_id,
            "objects": [
                {
                    "id": o.id,
                    "isthing": o.isthing,
                    "votes": [[c, n] for c, n in o.category_votes.items()],
                    "score_sum": o.score_sum,
                    "score_count": o.score_count,
                    "missed": o.missed,
                }
                for o in self._objects.values()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Become the registry :meth:`state_dict` described (in place: sharers see it)."""
        self._objects = {}
        for o in state["objects"]:
            votes = Counter({int(c): int(n) for c, n in o["votes"]})
            self._objects[int(o["id"])] = TrackedObject(
                id=int(o["id"]),
                isthing=o["isthing"],
                category_votes=votes,
                score_sum=float(o["score_sum"]),
                score_count=int(o["score_count"]),
                missed=int(o["missed"]),
            )
        self._index = {object_id: n for n, object_id in enumerate(self._objects)}
        self._next_id = int(state["next_id"])

    def reserve(self, next_id: int) -> None:
        """Hand out ids from ``next_id`` on at the earliest (ids used elsewhere stay unused)."""
        self._next_id = max(self._next_id, int(next_id))

    def remove(self, ids: Iterable[int]) -> list[int]:
        """Delete objects; returns their former channel indices, ascending.

        The remaining objects keep their relative order and their indices are compacted, so a
        caller drops exactly the returned channels from its tensors. Unknown ids raise KeyError.
        """
        ids = list(dict.fromkeys(int(i) for i in ids))
        unknown = [i for i in ids if i not in self._objects]
        if unknown:
            raise KeyError(f"cannot remove unknown object ids {unknown}; live ids: {self.ids}")
        removed = sorted(self._index[i] for i in ids)
        for i in ids:
            del self._objects[i]
        self._index = {object_id: n for n, object_id in enumerate(self._objects)}
        return removed

    @property
    def ids(self) -> list[int]:
        """Live object ids in channel order."""
        return list(self._objects)

    @property
    def next_id(self) -> int:
        """The id the next created object will get."""
        return self._next_id

    def index_of(self, object_id: int) -> int:
        """Channel index of a live object; KeyError if it is not live."""
        try:
            return self._index[int(object_id)]
        except KeyError:
            raise KeyError(f"object id {object_id} is not live; live ids: {self.ids}") from None

    def indices_of(self, ids: Iterable[int]) -> list[int]:
        """Channel indices of several live objects, in the given order."""
        return [self.index_of(i) for i in ids]

    def id_at(self, index: int) -> int:
        """Object id at a channel index."""
        ids = self.ids
        if not 0 <= index < len(ids):
            raise IndexError(f"channel index {index} out of range for {len(ids)} objects")
        return ids[index]

    def __getitem__(self, object_id: int) -> TrackedObject:
        try:
            return self._objects[int(object_id)]
        except KeyError:
            raise KeyError(f"object id {object_id} is not live; live ids: {self.ids}") from None

    def __contains__(self, object_id: object) -> bool:
        return object_id in self._objects

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[TrackedObject]:
        return iter(list(self._objects.values()))

    def mark_associated(
        self,
        object_id: int,
        category_id: int | None = None,
        score: float | None = None,
        *,
        detections: Iterable[Detection] | None = None,
    ) -> None:
        """An object matched a consensus segment: add its detections (``detections``, else the
        one given by ``category_id`` / ``score``) and reset the miss counter."""
        obj = self[object_id]
        if detections is None:
            obj.add_detection(category_id, score)
        else:
            obj.add_detections(detections)
        obj.missed = 0

    def reset_missed(self, object_id: int) -> None:
        """Reset an object's miss counter without adding a detection (incremental mode)."""
        self[object_id].missed = 0

    def mark_missed(self, object_id: int) -> int:
        """An object matched nothing in a merge: increment and return its miss counter."""
        obj = self[object_id]
        obj.missed += 1
        return obj.missed
