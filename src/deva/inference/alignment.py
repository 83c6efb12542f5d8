"""Spatial alignment of a clip frame's segmentation to the key frame (paper eq. 1).

In-clip consensus needs the segmentations of frames t+1 .. t+n-1 expressed on frame t.
The propagation model does this with a *temporary* memory holding only the source frame:

    Seg^_{t+i} = Prop({I_{t+i}, Seg_{t+i}}, I_t)

The temporary memory lives in local variables of :func:`align_segmentation` and is dropped on
return; it never touches a :class:`~deva.inference.propagator.Propagator`'s memory, sensory
state or frame counter. Image features are taken from the frames' cached
:class:`~deva.inference.propagator.FrameFeatures`, so no image is encoded twice.

The computation equals a fresh, throw-away :class:`Propagator` run on the two frames (the
source masks as given masks: memory frame, zero sensory memory, deep update; the target read
with top-k and no update; arg-max of the probabilities), without building one: the one-frame
memory is read directly, and :func:`align_segmentations` aligns all of a clip's frames to the
key frame with a single decoder pass over all their segments.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch

from deva.inference.memory import MemoryConfig, _affinity
from deva.inference.preprocess import argmax_channels, pad_to_multiple, unpad
from deva.inference.propagator import FrameFeatures, Propagator
from deva.modeling import memory_ops
from deva.modeling.inference_model import check_autocast, inference_model, inference_options
from deva.modeling.propagation import PropagationModel, aggregate_probabilities
from deva.types import Segmentation

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
    channels_last: bool | None = None,
    winograd: bool | None = None,
    compile: bool = False,
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
        channels_last, winograd, compile: as for :class:`Propagator` (None: its default);
            the same as the propagator that computed the features.

    Returns:
        A CPU ``Segmentation`` at ``target.size`` with the same segment ids and metadata;
        segments that receive no pixel are dropped.
    """
    return align_segmentations(
        model,
        [(source, segmentation)],
        target,
        top_k=top_k,
        chunk_size=chunk_size,
        autocast_dtype=autocast_dtype,
        channels_last=channels_last,
        winograd=winograd,
        compile=compile,
    )[0]


@torch.inference_mode()
def align_segmentations(
    model: PropagationModel,
    sources: list[tuple[FrameFeatures, Segmentation]],
    target: FrameFeatures,
    *,
    top_k: int | None = DEFAULT_TOP_K,
    chunk_size: int = -1,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool | None = None,
    winograd: bool | None = None,
    compile: bool = False,
) -> list[Segmentation]:
    """:func:`align_segmentation` of several (frame, segmentation) pairs onto one target.

    Each source gets its own one-frame memory (mask encoding, read); the decoder runs once
    over the segments of all sources (it treats every object independently), then each
    source's probabilities are soft-aggregated and arg-maxed on their own.
    """
    for source, _ in sources:
        if source.size != target.size or source.image.shape != target.image.shape:
            raise ValueError(f"source frame is {source.size} but the target frame is {target.size}")
    encoded = [_one_hot(seg, source.size) for source, seg in sources]
    results: list[Segmentation | None] = [None] * len(sources)
    active = [i for i, (ids, _) in enumerate(encoded) if ids]
    for i, (ids, _) in enumerate(encoded):
        if not ids:
            results[i] = Segmentation(mask=torch.zeros(target.size, dtype=torch.long), segments=[])
    if active:
        check_autocast(autocast_dtype, model.device)
        channels_last, winograd = inference_options(
            model.device,
            autocast_dtype,
            channels_last=channels_last,
            winograd=winograd,
            compile=compile,
        )
        network = inference_model(
            model,
            dtype=autocast_dtype,
            channels_last=channels_last,
            winograd=winograd,
            compile=compile,
        )
        autocast = (
            torch.autocast(model.device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            probs = _propagate_one_frame(
                network,
                [(sources[i][0], *encoded[i]) for i in active],
                target,
                top_k=top_k,
                chunk_size=chunk_size,
            )
        for i, prob in zip(active, probs, strict=True):
            ids = encoded[i][0]
            lut = torch.tensor([0, *ids], dtype=torch.int64, device=prob.device)
            out = lut[argmax_channels(unpad(prob, target.padding).float())].cpu()
            present = set(torch.unique(out).tolist())
            segments = [dataclasses.replace(s) for s in sources[i][1].segments if s.id in present]
            results[i] = Segmentation(mask=out, segments=segments)
    return results  # type: ignore[return-value]


def _propagate_one_frame(
    network: PropagationModel,
    sources: list[tuple[FrameFeatures, list[int], torch.Tensor]],
    target: FrameFeatures,
    *,
    top_k: int | None,
    chunk_size: int,
) -> list[torch.Tensor]:
    """Padded (N_s + 1, H', W') target probabilities for each (features, ids, masks) source:
    the same operations, in the same precision, as a fresh :class:`Propagator` stepping over
    the source (given masks) and then the target (``end=True``)."""
    q_key = target.key.key.flatten(2)
    q_sel = target.key.selection.flatten(2)
    h, w = target.key.key.shape[-2:]
    readouts, sensories, lasts, counts = [], [], [], []
    for features, ids, masks in sources:
        device = features.image.device
        given = pad_to_multiple(masks.to(device), 16)[0]
        prob = torch.softmax(aggregate_probabilities(given, dim=0), dim=0)  # as committed
        key = features.key
        sensory = key.key.new_zeros(1, len(ids), network.config.sensory_dim, h, w)
        value, sensory = network.encode_mask(
            features.image,
            features.pixel,
            sensory,
            prob[1:].unsqueeze(0).to(features.image.dtype),
            deep_update=True,
            chunk_size=chunk_size,
        )
        affinity = _affinity(
            key.key[0].flatten(1).unsqueeze(0),
            key.shrinkage[0].flatten(1).unsqueeze(0),
            q_key,
            q_sel,
            top_k,
        )
        readout = memory_ops.read_values(affinity, value.flatten(3))[0].view(len(ids), -1, h, w)
        readouts.append(readout)
        sensories.append(sensory[0])
        lasts.append(prob[1:].float())
        counts.append(len(ids))
    readout = torch.cat(readouts).unsqueeze(0)
    sensory = torch.cat(sensories).unsqueeze(0)
    last = torch.cat(lasts).unsqueeze(0).to(readout.dtype)
    _, logits = network.segment(
        target.pixel, readout, sensory, last, update_sensory=False, chunk_size=chunk_size
    )
    return [network.aggregate(part)[1][0] for part in logits.split(counts, dim=1)]


def _align_with_propagator(
    model: PropagationModel,
    source: FrameFeatures,
    segmentation: Segmentation,
    target: FrameFeatures,
    *,
    top_k: int | None = DEFAULT_TOP_K,
    chunk_size: int = -1,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool | None = None,
    winograd: bool | None = None,
    compile: bool = False,
) -> torch.Tensor:
    """Reference: the (H, W) id map a throw-away :class:`Propagator` gives (for tests)."""

    ids, masks = _one_hot(segmentation, source.size)
    temporary = Propagator(
        model,
        MemoryConfig(top_k=top_k, long_term=False),
        chunk_size=chunk_size,
        autocast_dtype=autocast_dtype,
        channels_last=channels_last,
        winograd=winograd,
        compile=compile,
    )
    temporary.step(features=source, mask=masks.to(source.image.device), objects=ids)
    return temporary.step(features=target, end=True).index_mask().cpu()
