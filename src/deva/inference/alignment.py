"""Spatial alignment of a clip frame's segmentation to the key frame (paper eq. 1).

In-clip consensus needs the segmentations of frames t+1 .. t+n-1 expressed on frame t.
The propagation model does this with a *temporary* memory holding only the source frame:

    Seg^_{t+i} = Prop({I_{t+i}, Seg_{t+i}}, I_t)

The temporary memory lives in local variables of :func:`align_segmentations` and is dropped
on return; it never touches a propagator's memory, sensory state or frame counter (the
:meth:`Propagator.align <deva.inference.propagator.Propagator.align>` method calls this with
its network). Image features are taken from the frames' cached
:class:`~deva.inference.network.FrameFeatures`, so no image is encoded twice.

The computation equals a fresh, throw-away propagator run on the two frames (the source masks
as given masks: memory frame, zero sensory memory, deep update; the target read with top-k and
no update; arg-max of the probabilities; :func:`deva.inference.propagator.reference_alignment`
does exactly that) without building one: the one-frame memory is read directly with the
memory read every other part uses (:func:`~deva.modeling.memory_ops.read_memory`), and all of
a clip's frames are aligned to the key frame with a single decoder pass over all their
segments.
"""

from __future__ import annotations

import dataclasses

import torch

from deva.inference.network import FrameFeatures, InferenceNetwork
from deva.inference.preprocess import pad_to_multiple, probabilities_to_ids, unpad
from deva.modeling import memory_ops
from deva.modeling.propagation import aggregate_probabilities
from deva.types import Segmentation

DEFAULT_TOP_K = 30


def one_hot_segments(
    segmentation: Segmentation, size: tuple[int, int]
) -> tuple[list[int], torch.Tensor]:
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
def align_segmentations(
    network: InferenceNetwork,
    sources: list[tuple[FrameFeatures, Segmentation]],
    target: FrameFeatures,
    *,
    top_k: int | None = DEFAULT_TOP_K,
) -> list[Segmentation]:
    """Propagate each (frame, segmentation) pair's segmentation onto the target frame.

    Each source gets its own one-frame memory (mask encoding, read); the decoder runs once
    over the segments of all sources (it treats every object independently), then each
    source's probabilities are soft-aggregated and arg-maxed on their own.

    Args:
        network: the network that computed the features (same precision and layout).
        sources: cached features of each source frame and its id mask at ``source.size``.
        target: cached features of the frame to align to (same size as the sources).
        top_k: memory elements kept per query pixel (30 in the paper; None: full softmax).

    Returns:
        One CPU ``Segmentation`` per source at ``target.size`` with the same segment ids and
        metadata; segments that receive no pixel are dropped.
    """
    for source, _ in sources:
        if source.size != target.size or source.image.shape != target.image.shape:
            raise ValueError(f"source frame is {source.size} but the target frame is {target.size}")
    encoded = [one_hot_segments(seg, source.size) for source, seg in sources]
    results: list[Segmentation] = [
        Segmentation(mask=torch.zeros(target.size, dtype=torch.long), segments=[]) for _ in sources
    ]
    active = [i for i, (ids, _) in enumerate(encoded) if ids]
    if not active:
        return results
    with network.autocast():
        probs = _propagate_one_frame(
            network,
            [(sources[i][0], *encoded[i]) for i in active],
            target,
            top_k=top_k,
        )
    for i, prob in zip(active, probs, strict=True):
        out = probabilities_to_ids(unpad(prob, target.padding).float(), encoded[i][0]).cpu()
        present = set(torch.unique(out).tolist())
        segments = [dataclasses.replace(s) for s in sources[i][1].segments if s.id in present]
        results[i] = Segmentation(mask=out, segments=segments)
    return results


def _propagate_one_frame(
    network: InferenceNetwork,
    sources: list[tuple[FrameFeatures, list[int], torch.Tensor]],
    target: FrameFeatures,
    *,
    top_k: int | None,
) -> list[torch.Tensor]:
    """Padded (N_s + 1, H', W') target probabilities for each (features, ids, masks) source:
    the same operations, in the same precision, as a fresh :class:`Propagator` stepping over
    the source (given masks) and then the target (``end=True``)."""
    module, chunk_size = network.module, network.chunk_size
    q_key = target.key.key.flatten(2)
    q_sel = target.key.selection.flatten(2)
    h, w = target.key.key.shape[-2:]
    readouts, sensories, lasts, counts = [], [], [], []
    for features, ids, masks in sources:
        device = features.image.device
        given = pad_to_multiple(masks.to(device), 16)[0]
        prob = torch.softmax(aggregate_probabilities(given, dim=0), dim=0)  # as committed
        key = features.key
        sensory = key.key.new_zeros(1, len(ids), module.config.sensory_dim, h, w)
        value, sensory = module.encode_mask(
            features.image,
            features.pixel,
            sensory,
            prob[1:].unsqueeze(0).to(features.image.dtype),
            deep_update=True,
            chunk_size=chunk_size,
        )
        readout = memory_ops.read_memory(
            key.key[0].flatten(1).unsqueeze(0),
            key.shrinkage[0].flatten(1).unsqueeze(0),
            q_key,
            q_sel,
            value.flatten(3),
            top_k,
            query_chunk=network.options.query_chunk,
        )[0].view(len(ids), -1, h, w)
        readouts.append(readout)
        sensories.append(sensory[0])
        lasts.append(prob[1:].float())
        counts.append(len(ids))
    readout = torch.cat(readouts).unsqueeze(0)
    sensory = torch.cat(sensories).unsqueeze(0)
    last = torch.cat(lasts).unsqueeze(0).to(readout.dtype)
    _, logits = module.segment(
        target.pixel, readout, sensory, last, update_sensory=False, chunk_size=chunk_size
    )
    return [module.aggregate(part)[1][0] for part in logits.split(counts, dim=1)]
