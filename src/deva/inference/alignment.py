"""Spatial alignment of a clip frame's segmentation to the key frame (paper eq. 1).

In-clip consensus needs the segmentations of frames t+1 .. t+n-1 expressed on frame t.
The propagation model does this with a *temporary* memory holding only the source frame:

    Seg^_{t+i} = Prop({I_{t+i}, Seg_{t+i}}, I_t)

The temporary memory lives in local variables of :func:`align_segmentation` and is dropped on
return; it never touches a :class:`~deva.inference.propagator.Propagator`'s memory, sensory
state or frame counter. Image features are taken from the frames' cached
:class:`~deva.inference.propagator.FrameFeatures`, so no image is encoded twice.

The computation is a fresh, throw-away :class:`Propagator` run on the two frames: the source
masks are given masks (memory frame, zero sensory memory, deep update), the target is read
with top-k without any update, and the probabilities are turned back into ids by arg-max.
"""

from __future__ import annotations

import dataclasses

import torch

from deva.inference.memory import MemoryConfig
from deva.inference.propagator import FrameFeatures, Propagator
from deva.inference.segmentation import Segmentation
from deva.modeling.propagation import PropagationModel

DEFAULT_TOP_K = 30


def _one_hot(segmentation: Segmentation, size: tuple[int, int]) -> tuple[list[int], torch.Tensor]:
    """Segment ids (list order) and their (N, H, W) float masks; absent segments dropped."""
    mask = torch.as_tensor(segmentation.mask)
    if tuple(mask.shape) != size:
        raise ValueError(f"segmentation is {tuple(mask.shape)}, its frame is {size}")
    ids = [int(s.id) for s in segmentation.segments]
    if not ids:
        return [], mask.new_zeros((0, *size), dtype=torch.float32)
    masks = torch.stack([mask == i for i in ids]).float()
    keep = masks.flatten(1).any(dim=1)
    ids = [i for i, k in zip(ids, keep.tolist()) if k]
    return ids, masks[keep]


@torch.inference_mode()
def align_segmentation(
    model: PropagationModel,
    source: FrameFeatures,
    segmentation: Segmentation,
    target: FrameFeatures,
    *,
    top_k: int | None = DEFAULT_TOP_K,
    chunk_size: int = -1,
    autocast_dtype: torch.dtype | None = None,
) -> Segmentation:
    """Propagate ``segmentation`` of the source frame onto the target frame (eq. 1).

    Args:
        model: the propagation network.
        source: cached features of the frame ``segmentation`` belongs to.
        segmentation: id mask at ``source.size`` (H, W) plus its segments.
        target: cached features of the frame to align to (same size as the source).
        top_k: memory elements kept per query pixel (30 in the paper; None: full softmax).
        chunk_size: objects per network pass (-1: all at once).
        autocast_dtype: mixed precision dtype (e.g. ``torch.bfloat16``) or None.

    Returns:
        A CPU ``Segmentation`` at ``target.size`` with the same segment ids and metadata;
        segments that receive no pixel are dropped.
    """
    if source.size != target.size or source.image.shape != target.image.shape:
        raise ValueError(f"source frame is {source.size} but the target frame is {target.size}")
    ids, masks = _one_hot(segmentation, source.size)
    if not ids:
        return Segmentation(mask=torch.zeros(target.size, dtype=torch.long), segments=[])
    # A throw-away propagator is the temporary one-frame memory: the source frame with its
    # masks as given masks, then a read-only (end) step at the target.
    temporary = Propagator(
        model,
        MemoryConfig(top_k=top_k, long_term=False),
        chunk_size=chunk_size,
        autocast_dtype=autocast_dtype,
    )
    temporary.step(features=source, mask=masks.to(source.image.device), objects=ids)
    out = temporary.step(features=target, end=True).index_mask().cpu()
    present = set(torch.unique(out).tolist())
    segments = [dataclasses.replace(s) for s in segmentation.segments if s.id in present]
    return Segmentation(mask=out, segments=segments)
