"""Memory reading: anisotropic L2 affinity, (top-k) softmax and readout.

Shapes: B batch, C_k key channels, C_v value channels, N objects, M memory elements,
Q query pixels.
"""

from __future__ import annotations

import math

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
        (B, M, Q) similarity logits.
    """
    dim = memory_key.shape[1]
    mk_t = memory_key.transpose(1, 2)
    if query_selection is None:
        a_sq = mk_t.pow(2).sum(dim=2, keepdim=True)
        two_ab = 2 * (mk_t @ query_key)
        b_sq = query_key.pow(2).sum(dim=1, keepdim=True)
    else:
        a_sq = mk_t.pow(2) @ query_selection
        two_ab = 2 * (mk_t @ (query_key * query_selection))
        b_sq = (query_selection * query_key.pow(2)).sum(dim=1, keepdim=True)
    sim = two_ab - a_sq - b_sq
    if memory_shrinkage is not None:
        sim = sim * memory_shrinkage.transpose(1, 2)
    return sim / math.sqrt(dim)


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


def top_k_affinity_with_usage(
    sim: torch.Tensor, top_k: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`softmax_affinity`, also returning each memory element's usage (B, M):
    the affinity it received summed over the query pixels."""
    affinity = softmax_affinity(sim, top_k)
    return affinity, affinity.sum(dim=2)


def readout(affinity: torch.Tensor, memory_value: torch.Tensor) -> torch.Tensor:
    """Weighted sum of memory values: (B, N, C_v, M) × (B, M, Q) → (B, N, C_v, Q)."""
    b, n, c, m = memory_value.shape
    out = memory_value.reshape(b, n * c, m) @ affinity.to(memory_value.dtype)
    return out.view(b, n, c, -1)
