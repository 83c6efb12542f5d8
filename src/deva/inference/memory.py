"""Inference memory of the propagation model (XMem-style): working, long-term and sensory.

Objects that first appear together share a key *bucket*; an object attends only to the
memory frames of its bucket, i.e. frames in which it existed. Each bucket keeps

- a working memory: every memory frame's key / shrinkage / selection and each object's
  value, plus per-element usage statistics;
- a long-term memory of prototypes: when the working memory holds ``max_working_frames``
  frames, all frames but the first and the newest ``min_working_frames - 1`` are
  consolidated into ``num_prototypes`` prototypes (highest usage), whose values and shrinkage
  are read from the candidates with a full softmax; when the long-term memory would exceed
  ``max_long_term_elements``, its least used elements are dropped first.

Usage of an element = accumulated top-k affinity / number of reads since it was added.
Shapes: C_k key channels, C_v value channels, M memory elements, h×w feature size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from deva.inference.objects import ObjectRegistry
from deva.modeling import memory_ops
from deva.modeling.memory_ops import TopKAffinity


@dataclass(frozen=True)
class MemoryConfig:
    """Sizes of the inference memory (published defaults)."""

    top_k: int | None = 30  # None: full softmax
    long_term: bool = True
    max_working_frames: int = 10
    min_working_frames: int = 5
    num_prototypes: int = 128
    max_long_term_elements: int = 10_000

    def __post_init__(self) -> None:
        if self.long_term and not 1 <= self.min_working_frames < self.max_working_frames:
            raise ValueError(
                "need 1 <= min_working_frames < max_working_frames, got "
                f"{self.min_working_frames} and {self.max_working_frames}"
            )


@dataclass
class _Store:
    """Keys, shrinkage, selection, per-object values and usage of a set of memory elements."""

    key: torch.Tensor  # (C_k, M)
    shrinkage: torch.Tensor  # (1, M)
    selection: torch.Tensor | None  # (C_k, M); None in long-term memory
    values: dict[int, torch.Tensor]  # object id -> (C_v, M)
    use_count: torch.Tensor  # (M,)
    life_count: torch.Tensor  # (M,)

    @property
    def size(self) -> int:
        return self.key.shape[-1]

    def usage(self) -> torch.Tensor:
        return self.use_count / self.life_count

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the elements at ``index`` (a bool mask or indices over M)."""
        self.key = self.key[:, index]
        self.shrinkage = self.shrinkage[:, index]
        if self.selection is not None:
            self.selection = self.selection[:, index]
        self.values = {k: v[:, index] for k, v in self.values.items()}
        self.use_count = self.use_count[index]
        self.life_count = self.life_count[index]

    def append(
        self,
        key: torch.Tensor,
        shrinkage: torch.Tensor,
        selection: torch.Tensor | None,
        values: dict[int, torch.Tensor],
    ) -> None:
        self.key = torch.cat([self.key, key], dim=-1)
        self.shrinkage = torch.cat([self.shrinkage, shrinkage], dim=-1)
        if self.selection is not None and selection is not None:
            self.selection = torch.cat([self.selection, selection], dim=-1)
        for obj, value in values.items():
            self.values[obj] = torch.cat([self.values[obj], value], dim=-1)
        new = key.shape[-1]
        stats = {"device": key.device, "dtype": torch.float32}
        self.use_count = torch.cat([self.use_count, torch.zeros(new, **stats)])
        # A tiny life count keeps usage = 0 (not NaN) before the first read.
        self.life_count = torch.cat([self.life_count, torch.full((new,), 1e-7, **stats)])

    def state_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "shrinkage": self.shrinkage,
            "selection": self.selection,
            "values": {str(k): v for k, v in self.values.items()},
            "use_count": self.use_count,
            "life_count": self.life_count,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Store:
        return cls(
            key=state["key"],
            shrinkage=state["shrinkage"],
            selection=state["selection"],
            values={int(k): v for k, v in state["values"].items()},
            use_count=state["use_count"],
            life_count=state["life_count"],
        )

    @classmethod
    def empty_like(
        cls, key: torch.Tensor, objects: list[int], value_dim: int, *, with_selection: bool
    ) -> _Store:
        c_k = key.shape[0]
        z = key.new_zeros
        return cls(
            key=z(c_k, 0),
            shrinkage=z(1, 0),
            selection=z(c_k, 0) if with_selection else None,
            values={obj: z(value_dim, 0) for obj in objects},
            use_count=torch.zeros(0, device=key.device),
            life_count=torch.zeros(0, device=key.device),
        )


@dataclass
class _Bucket:
    objects: list[int]
    working: _Store
    long_term: _Store
    frame_elements: int  # elements per memory frame (h·w)
    # Long-term + working keys and shrinkage joined for reading; built on the first read
    # after a change (a memory frame comes every few frames, reads every frame).
    _joined: tuple[torch.Tensor, torch.Tensor] | None = None
    # Per list of objects, their joined values element-major, (M, N·C_v) in float32, for the
    # sparse top-k readout; same lifetime. (The stores keep (C_v, M) per object, which
    # appending frames and consolidation need.)
    _values_t: dict[tuple[int, ...], torch.Tensor] = field(default_factory=dict)

    def changed(self) -> None:
        self._joined = None
        self._values_t.clear()

    def joined(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, C_k, M) keys and (1, 1, M) shrinkage of long-term + working memory."""
        if self._joined is None:
            lt, wm = self.long_term, self.working
            self._joined = (
                torch.cat([lt.key, wm.key], dim=-1).unsqueeze(0),
                torch.cat([lt.shrinkage, wm.shrinkage], dim=-1).unsqueeze(0),
            )
        return self._joined

    def values(self, objects: list[int]) -> torch.Tensor:
        """(1, N, C_v, M) long-term + working values of ``objects`` (not cached)."""
        lt, wm = self.long_term, self.working
        return torch.stack([torch.cat([lt.values[o], wm.values[o]], dim=-1) for o in objects])[None]

    def values_t(self, objects: list[int]) -> torch.Tensor:
        """(M, N·C_v) float32 long-term + working values of ``objects``, element-major (cached)."""
        key = tuple(objects)
        if key not in self._values_t:
            lt, wm = self.long_term, self.working
            parts = [torch.cat([lt.values[o], wm.values[o]], dim=-1).float() for o in objects]
            self._values_t[key] = torch.cat(parts).T.contiguous()
        return self._values_t[key]

    @property
    def working_frames(self) -> int:
        return self.working.size // self.frame_elements


@dataclass
class MemoryStats:
    """How many elements are stored (for monitoring and the boundedness test)."""

    working_elements: int
    long_term_elements: int
    buckets: int
    objects: int

    @property
    def total(self) -> int:
        return self.working_elements + self.long_term_elements


@dataclass
class InferenceMemory:
    """All memory of one video: buckets of key/value memory plus per-object sensory memory.

    ``objects`` is the registry of the propagator this memory belongs to: it says which
    objects exist and in which channel order; the memory holds values for those of them that
    have been written (:attr:`object_ids`). ``query_chunk``: see
    :func:`~deva.modeling.memory_ops.top_k_query_affinity`.
    """

    config: MemoryConfig = field(default_factory=MemoryConfig)
    objects: ObjectRegistry = field(default_factory=ObjectRegistry)
    query_chunk: int | None = None
    _buckets: list[_Bucket] = field(default_factory=list)
    _sensory: dict[int, torch.Tensor] = field(default_factory=dict)  # id -> (C_s, h, w)

    # ---- objects -------------------------------------------------------------------------
    @property
    def object_ids(self) -> list[int]:
        """Objects with memory, in the registry's channel order."""
        stored = {o for b in self._buckets for o in b.objects}
        return [o for o in self.objects.ids if o in stored]

    @property
    def is_empty(self) -> bool:
        return not self._buckets

    def stats(self) -> MemoryStats:
        return MemoryStats(
            working_elements=sum(b.working.size for b in self._buckets),
            long_term_elements=sum(b.long_term.size for b in self._buckets),
            buckets=len(self._buckets),
            objects=sum(len(b.objects) for b in self._buckets),
        )

    def state_dict(self) -> dict[str, Any]:
        """All stored memory (tensors and plain data; the registry is saved by its owner)."""
        return {
            "buckets": [
                {
                    "objects": list(b.objects),
                    "working": b.working.state_dict(),
                    "long_term": b.long_term.state_dict(),
                    "frame_elements": b.frame_elements,
                }
                for b in self._buckets
            ],
            "sensory": {str(k): v for k, v in self._sensory.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Hold exactly the memory :meth:`state_dict` described."""
        self._buckets = [
            _Bucket(
                objects=[int(o) for o in b["objects"]],
                working=_Store.from_state(b["working"]),
                long_term=_Store.from_state(b["long_term"]),
                frame_elements=int(b["frame_elements"]),
            )
            for b in state["buckets"]
        ]
        self._sensory = {int(k): v for k, v in state["sensory"].items()}

    def delete_objects(self, object_ids: list[int]) -> None:
        """Forget objects: their values and sensory memory; empty buckets are dropped."""
        gone = set(object_ids)
        for obj in gone:
            self._sensory.pop(obj, None)
        for bucket in self._buckets:
            bucket.objects = [o for o in bucket.objects if o not in gone]
            bucket.changed()
            for store in (bucket.working, bucket.long_term):
                store.values = {k: v for k, v in store.values.items() if k not in gone}
        self._buckets = [b for b in self._buckets if b.objects]

    # ---- sensory -------------------------------------------------------------------------
    def get_sensory(self, object_ids: list[int], template: torch.Tensor) -> torch.Tensor:
        """Sensory memory (1, N, C_s, h, w) of ``object_ids``; zeros for unknown objects.

        ``template`` is a zero tensor (C_s, h, w) giving size, device and dtype."""
        return torch.stack([self._sensory.get(o, template) for o in object_ids]).unsqueeze(0)

    def set_sensory(self, object_ids: list[int], sensory: torch.Tensor) -> None:
        """Store (1, N, C_s, h, w) sensory memory for ``object_ids``."""
        for i, obj in enumerate(object_ids):
            self._sensory[obj] = sensory[0, i]

    # ---- key / value memory --------------------------------------------------------------
    def add_frame(
        self,
        key: torch.Tensor,
        shrinkage: torch.Tensor,
        selection: torch.Tensor,
        values: torch.Tensor,
        object_ids: list[int],
    ) -> None:
        """Add a memory frame.

        Args:
            key: (1, C_k, h, w); shrinkage: (1, 1, h, w); selection: (1, C_k, h, w).
            values: (1, N, C_v, h, w) for ``object_ids`` (every object currently tracked).
        """
        if values.shape[1] != len(object_ids):
            raise ValueError(f"{values.shape[1]} values for {len(object_ids)} objects")
        key_f, shrink_f, sel_f = key[0].flatten(1), shrinkage[0].flatten(1), selection[0].flatten(1)
        value_of = {obj: values[0, i].flatten(1) for i, obj in enumerate(object_ids)}
        known = {o for b in self._buckets for o in b.objects}
        new = [o for o in object_ids if o not in known]
        if new:
            value_dim = values.shape[2]
            self._buckets.append(
                _Bucket(
                    objects=new,
                    working=_Store.empty_like(key_f, new, value_dim, with_selection=True),
                    long_term=_Store.empty_like(key_f, new, value_dim, with_selection=False),
                    frame_elements=key_f.shape[-1],
                )
            )
        for bucket in self._buckets:
            missing = [o for o in bucket.objects if o not in value_of]
            if missing:
                raise ValueError(f"memory frame lacks values for tracked objects {missing}")
            bucket.changed()
            bucket.working.append(key_f, shrink_f, sel_f, {o: value_of[o] for o in bucket.objects})
            if self.config.long_term and bucket.working_frames >= self.config.max_working_frames:
                self._consolidate(bucket)

    def read(
        self, key: torch.Tensor, selection: torch.Tensor, object_ids: list[int]
    ) -> torch.Tensor:
        """Memory readout (1, N, C_v, h, w) for ``object_ids`` at a query frame.

        Each bucket is read with its own affinity (top-k over long-term + working memory);
        usage statistics are accumulated when long-term memory is on.
        """
        h, w = key.shape[-2:]
        q_key, q_sel = key.flatten(2), selection.flatten(2)
        readouts: dict[int, torch.Tensor] = {}
        for bucket in self._buckets:
            lt, wm = bucket.long_term, bucket.working
            m_key, m_shrink = bucket.joined()
            # Affinities in float32: squared distances overflow fp16 under autocast.
            affinity = memory_ops.memory_affinity(
                m_key, m_shrink, q_key, q_sel, self.config.top_k, query_chunk=self.query_chunk
            )
            if self.config.long_term:
                usage = (
                    affinity.usage() if isinstance(affinity, TopKAffinity) else affinity.sum(2)
                )[0]
                lt.use_count += usage[: lt.size]
                lt.life_count += 1
                wm.use_count += usage[lt.size :]
                wm.life_count += 1
            objs = [o for o in bucket.objects if o in object_ids]
            if not objs:
                continue
            dtype = bucket.working.values[objs[0]].dtype
            if isinstance(affinity, TopKAffinity):  # element-major values cached per bucket
                out = affinity.readout(bucket.values_t(objs).unsqueeze(0))[0].to(dtype)
            else:
                out = memory_ops.read_values(affinity, bucket.values(objs))[0].flatten(0, 1)
            for obj, part in zip(objs, out.chunk(len(objs)), strict=True):
                readouts[obj] = part.reshape(-1, h, w)
        missing = [o for o in object_ids if o not in readouts]
        if missing:
            raise KeyError(f"objects {missing} have no memory")
        return torch.stack([readouts[o] for o in object_ids]).unsqueeze(0)

    def _consolidate(self, bucket: _Bucket) -> None:
        """Turn the middle working-memory frames into long-term prototypes."""
        cfg, wm, lt = self.config, bucket.working, bucket.long_term
        bucket.changed()
        hw = bucket.frame_elements
        start, end = hw, wm.size - (cfg.min_working_frames - 1) * hw
        if end <= start:
            return
        cand_usage = wm.usage()[start:end]
        n_proto = min(cfg.num_prototypes, end - start)
        proto_idx = start + torch.topk(cand_usage, n_proto, sorted=True).indices
        proto_key = wm.key[:, proto_idx]
        proto_sel = wm.selection[:, proto_idx]
        cand_key, cand_shrink = wm.key[:, start:end], wm.shrinkage[:, start:end]
        affinity = memory_ops.memory_affinity(
            cand_key.unsqueeze(0),
            cand_shrink.unsqueeze(0),
            proto_key.unsqueeze(0),
            proto_sel.unsqueeze(0),
            None,
        )[0]  # (candidates, prototypes)
        proto_values = {
            o: wm.values[o][:, start:end] @ affinity.to(wm.values[o].dtype) for o in bucket.objects
        }
        proto_shrink = cand_shrink @ affinity.to(cand_shrink.dtype)

        keep = torch.ones(wm.size, dtype=torch.bool, device=wm.key.device)
        keep[start:end] = False
        wm.keep(keep)

        room = cfg.max_long_term_elements - n_proto
        if lt.size > room:
            usage = lt.usage()
            lt.keep(torch.sort(torch.topk(usage, max(room, 0)).indices).values)
        lt.append(proto_key, proto_shrink, None, proto_values)
