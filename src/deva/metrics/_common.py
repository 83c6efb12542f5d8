"""Helpers shared by the metric classes: array conversion and row-table states."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def to_numpy(value: Any, *, dtype: Any = None) -> np.ndarray:
    """Return ``value`` (tensor, array or nested list) as a NumPy array on the CPU."""
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    return array.astype(dtype, copy=False) if dtype is not None else array


def rows_to_state(rows: np.ndarray) -> Tensor:
    """Flatten a 2-D table of numbers into a 1-D float64 tensor for a ``"cat"`` state.

    Row tables are flattened so that ranks without data (which torchmetrics pads with an empty
    1-D tensor of the metric dtype) concatenate cleanly; float64 holds integers up to 2**53
    exactly, far beyond any pixel count.
    """
    return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float64).reshape(-1))


class Float64States:
    """Mixin for metrics whose ``"cat"`` states are float64 row tables.

    torchmetrics resets a metric's dtype to float32 whenever it is moved (``.to(device)``),
    and a rank that saw no data then contributes a float32 placeholder to the all-gather of
    float64 tables: gloo aborts on the size mismatch. Moving keeps float64 here.
    """

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        out = super()._apply(fn, *args, **kwargs)  # type: ignore[misc]
        out._dtype = torch.float64
        return out


def state_to_rows(state: Tensor | list[Tensor], width: int) -> np.ndarray:
    """Undo :func:`rows_to_state` after (possibly distributed) concatenation."""
    if isinstance(state, list):
        parts = [t.reshape(-1) for t in state if t.numel()]
        flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
    else:
        flat = state.reshape(-1)
    array = flat.detach().cpu().to(torch.float64).numpy()
    if array.size % width:
        raise RuntimeError(
            f"corrupt metric state: {array.size} values is not a multiple of {width}"
        )
    return array.reshape(-1, width)


def group_sum(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``values`` over identical rows of ``keys`` (N, K); returns (unique rows, sums).

    Unique rows come out in lexicographic order.
    """
    if keys.shape[0] == 0:
        return keys.reshape(0, keys.shape[1] if keys.ndim == 2 else 1), values[:0]
    keys = keys.reshape(keys.shape[0], -1)
    order = np.lexsort(keys.T[::-1])
    keys, values = keys[order], values[order]
    starts = np.concatenate([[True], np.any(keys[1:] != keys[:-1], axis=1)])
    first = np.flatnonzero(starts)
    return keys[first], np.add.reduceat(values, first)


def nan_to_none(value: Any) -> Any:
    """Replace NaN / inf floats by ``None`` recursively so the result is strict JSON."""
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [nan_to_none(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Tensor) and value.numel() == 1:
        return nan_to_none(value.item())
    return value
