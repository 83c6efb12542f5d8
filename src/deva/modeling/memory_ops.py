"""Memory reading: anisotropic L2 affinity, (top-k) softmax and readout.

Shapes: B batch, C_k key channels, C_v value channels, N objects, M memory elements,
Q query pixels.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch


def similarity(
    memory_key: torch.Tensor,
    memory_shrinkage: torch.Tensor | None,
    query_key: torch.Tensor,
    query_selection: torch.Tensor | None,
) -> torch.Tensor:
    """Negative anisotropic squared L2 distance, scaled by shrinkage and 1/√C_k.

    sim(i, j) = −Σ_c e[c, j] · (k_m[c, i] − k_q[c, j])² · s[i] / √C_k

    Args:
        memory_key: (B, C_k, M)
        memory_shrinkage: (B, 1, M) or None (= 1)
        query_key: (B, C_k, Q)
        query_selection: (B, C_k, Q) or None (= 1)

    Returns:
        (B, M, Q) similarity logits: :func:`query_similarity`, memory-major.
    """
    return query_similarity(memory_key, memory_shrinkage, query_key, query_selection).transpose(
        1, 2
    )


def softmax_affinity(sim: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
    """Softmax over the memory axis (dim 1) of (B, M, Q) logits.

    With ``top_k``, only the k largest logits per query are kept; the rest get zero weight.
    ``top_k >= M`` is the same as the full softmax.
    """
    if top_k is None or top_k >= sim.shape[1]:
        return torch.softmax(sim, dim=1)
    values, indices = sim.topk(top_k, dim=1)
    weights = torch.softmax(values, dim=1)
    return torch.zeros_like(sim).scatter_(1, indices, weights)


def readout(affinity: torch.Tensor, memory_value: torch.Tensor) -> torch.Tensor:
    """Weighted sum of memory values: (B, N, C_v, M) × (B, M, Q) → (B, N, C_v, Q)."""
    b, n, c, m = memory_value.shape
    out = memory_value.reshape(b, n * c, m) @ affinity.to(memory_value.dtype)
    return out.view(b, n, c, -1)


def query_similarity(
    memory_key: torch.Tensor,
    memory_shrinkage: torch.Tensor | None,
    query_key: torch.Tensor,
    query_selection: torch.Tensor | None,
) -> torch.Tensor:
    """:func:`similarity` laid out query-major, (B, Q, M): the top-k then runs along the
    contiguous memory axis (several times faster than along dim 1 of (B, M, Q))."""
    terms = _QueryTerms.of(memory_key, memory_shrinkage, query_key, query_selection)
    return terms.logits(0, query_key.shape[2])


@dataclass(frozen=True)
class _QueryTerms:
    """What the query-major logits of any block of query pixels are computed from, as one
    matrix product: ``[2·k_q·e, −e, −Σ e·k_q²]ᵀ · [k_m, k_m², 1] · s / √C_k``, the expanded
    squared distance with the shrinkage and the scale folded into the memory side (one
    product of depth 2·C_k + 1 instead of two products and five passes over the logits)."""

    query: torch.Tensor  # (B, Q, 2C + 1)
    memory: torch.Tensor  # (B, 2C + 1, M)

    @staticmethod
    def of(
        memory_key: torch.Tensor,
        memory_shrinkage: torch.Tensor | None,
        query_key: torch.Tensor,
        query_selection: torch.Tensor | None,
    ) -> _QueryTerms:
        if query_selection is None:
            query_selection = torch.ones_like(query_key)
        scale = memory_key.new_full((1, 1, 1), 1 / math.sqrt(memory_key.shape[1]))
        if memory_shrinkage is not None:
            scale = memory_shrinkage * scale
        ones = torch.ones_like(memory_key[:, :1])
        memory = torch.cat([memory_key, memory_key.pow(2), ones], dim=1).mul_(scale)
        query = torch.cat(
            [
                2 * query_key * query_selection,
                -query_selection,
                -(query_selection * query_key.pow(2)).sum(dim=1, keepdim=True),
            ],
            dim=1,
        )
        return _QueryTerms(query.transpose(1, 2).contiguous(), memory)

    def logits(self, start: int, stop: int, buffer: torch.Tensor | None = None) -> torch.Tensor:
        """(B, stop − start, M) logits of query pixels ``start:stop``, written into the flat
        ``buffer`` when given (at least B·(stop − start)·M elements)."""
        shape = (self.memory.shape[0], stop - start, self.memory.shape[2])
        out = None if buffer is None else buffer[: math.prod(shape)].view(shape)
        return torch.bmm(self.query[:, start:stop], self.memory, out=out)


@dataclass(frozen=True)
class TopKAffinity:
    """A top-k softmax affinity kept sparse: per query pixel, the k memory elements it reads
    and their softmax weights. Reading memory with it costs O(k) per query and value channel
    instead of O(M) for the dense (B, M, Q) matrix that is almost all zeros."""

    weights: torch.Tensor  # (B, Q, k) float32, each row sums to 1
    indices: torch.Tensor  # (B, Q, k) int64 memory element indices
    memory_size: int

    def usage(self) -> torch.Tensor:
        """(B, M) affinity each memory element received, summed over the query pixels."""
        b = self.weights.shape[0]
        out = self.weights.new_zeros(b, self.memory_size)
        return out.scatter_add_(1, self.indices.flatten(1), self.weights.flatten(1))

    def dense(self) -> torch.Tensor:
        """The (B, M, Q) matrix :func:`softmax_affinity` would give."""
        b, q, _ = self.weights.shape
        out = self.weights.new_zeros(b, q, self.memory_size)
        return out.scatter_(2, self.indices, self.weights).transpose(1, 2)

    def readout(self, values_t: torch.Tensor) -> torch.Tensor:
        """Weighted sums of memory values given element-major, (B, M, D) → (B, D, Q).

        Computed in float32 (CPU sparse products have no bfloat16 kernel), returned in the
        values' dtype.
        """
        b, q, k = self.weights.shape
        if values_t.shape[:2] != (b, self.memory_size):
            raise ValueError(
                f"values must be (B={b}, M={self.memory_size}, D), got {tuple(values_t.shape)}"
            )
        rows = torch.arange(0, q * k + 1, k, device=self.indices.device)
        compute = torch.float64 if values_t.dtype == torch.float64 else torch.float32
        outs = []
        with (
            warnings.catch_warnings(),
            torch.autocast(values_t.device.type, enabled=False),  # would cast to bf16
        ):
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            # Some torch versions warn even with check_invariants=False given explicitly.
            warnings.filterwarnings("ignore", message="Sparse invariant checks")
            for i in range(b):
                matrix = torch.sparse_csr_tensor(
                    rows,
                    self.indices[i].reshape(-1),
                    self.weights[i].reshape(-1).to(compute),
                    size=(q, self.memory_size),
                    check_invariants=False,
                )
                outs.append((matrix @ values_t[i].to(compute)).T)
        return torch.stack(outs).to(values_t.dtype)


def top_k_affinity(sim: torch.Tensor, top_k: int) -> TopKAffinity:
    """Softmax over the ``top_k`` largest of each query's (B, Q, M) logits (query-major, as
    :func:`query_similarity` gives); equal to :func:`softmax_affinity` on the transpose."""
    k = min(top_k, sim.shape[2])
    values, indices = sim.topk(k, dim=2)
    return TopKAffinity(torch.softmax(values, dim=2), indices, sim.shape[2])


QUERY_CHUNK = 64


def top_k_query_affinity(
    memory_key: torch.Tensor,
    memory_shrinkage: torch.Tensor | None,
    query_key: torch.Tensor,
    query_selection: torch.Tensor | None,
    top_k: int,
    *,
    query_chunk: int | None = None,
) -> TopKAffinity:
    """:func:`top_k_affinity` of :func:`query_similarity`, ``query_chunk`` query pixels at a
    time, with the same arithmetic (equal to float rounding: BLAS may sum in another order
    for other row counts). ``None``: :data:`QUERY_CHUNK` on the CPU,
    all at once elsewhere (a GPU's caching allocator has no page faults to avoid, and every
    chunk costs kernel launches, which bound the GPU path).

    The whole (B, Q, M) logits would be 50–100+ MB at 480p once the memory holds a few frames,
    a fresh, page-faulted block per read (large blocks are mapped anew) that leaves the cache
    between steps. Per chunk they are computed into one buffer that every chunk reuses,
    reduced to the top k at once, and never held whole.
    """
    b, _, q = query_key.shape
    if query_chunk is None:
        query_chunk = QUERY_CHUNK if memory_key.device.type == "cpu" else q
    if query_chunk < 1:
        raise ValueError(f"query_chunk must be >= 1, got {query_chunk}")
    m = memory_key.shape[2]
    k = min(top_k, m)
    terms = _QueryTerms.of(memory_key, memory_shrinkage, query_key, query_selection)
    rows = min(query_chunk, q)
    buffer = memory_key.new_empty(b * rows * m)
    weights = memory_key.new_empty(b, q, k)
    indices = torch.empty(b, q, k, dtype=torch.long, device=memory_key.device)
    for start in range(0, q, rows):
        stop = min(q, start + rows)
        sim = terms.logits(start, stop, buffer)
        values, chosen = sim.topk(k, dim=2)
        weights[:, start:stop] = torch.softmax(values, dim=2)
        indices[:, start:stop] = chosen
    return TopKAffinity(weights, indices, m)


def read_values(affinity: torch.Tensor | TopKAffinity, memory_value: torch.Tensor) -> torch.Tensor:
    """:func:`readout` for a dense (B, M, Q) or a sparse top-k affinity: (B, N, C_v, Q)."""
    if not isinstance(affinity, TopKAffinity):
        return readout(affinity, memory_value)
    b, n, c, m = memory_value.shape
    out = affinity.readout(memory_value.reshape(b, n * c, m).transpose(1, 2))
    return out.reshape(b, n, c, -1)


def memory_affinity(
    memory_key: torch.Tensor,
    memory_shrinkage: torch.Tensor | None,
    query_key: torch.Tensor,
    query_selection: torch.Tensor | None,
    top_k: int | None,
    *,
    query_chunk: int | None = None,
) -> torch.Tensor | TopKAffinity:
    """The affinity every memory read uses (training, inference, alignment, consolidation).

    Computed in float32 with autocast off: squared distances overflow fp16 and lose too much
    precision in bf16. With ``top_k`` smaller than the memory, a sparse :class:`TopKAffinity`
    (:func:`top_k_query_affinity`); otherwise the dense (B, M, Q) full softmax. Shapes as in
    :func:`similarity`.
    """
    args = (
        memory_key.float(),
        None if memory_shrinkage is None else memory_shrinkage.float(),
        query_key.float(),
        None if query_selection is None else query_selection.float(),
    )
    with torch.autocast(memory_key.device.type, enabled=False):
        if top_k is not None and top_k < memory_key.shape[-1]:
            return top_k_query_affinity(*args, top_k, query_chunk=query_chunk)
        return softmax_affinity(similarity(*args), None)


def read_memory(
    memory_key: torch.Tensor,
    memory_shrinkage: torch.Tensor | None,
    query_key: torch.Tensor,
    query_selection: torch.Tensor | None,
    memory_value: torch.Tensor,
    top_k: int | None,
    *,
    query_chunk: int | None = None,
) -> torch.Tensor:
    """One memory read: :func:`memory_affinity` then :func:`read_values`, (B, N, C_v, Q)."""
    affinity = memory_affinity(
        memory_key, memory_shrinkage, query_key, query_selection, top_k, query_chunk=query_chunk
    )
    return read_values(affinity, memory_value)
