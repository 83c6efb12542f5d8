"""Alignment of a clip frame's segmentation to the key frame with a temporary memory (eq. 1)."""

from __future__ import annotations

import pytest
import torch

from deva.inference.memory import MemoryConfig
from deva.inference.options import InferenceOptions
from deva.inference.propagator import Propagator, reference_alignment
from deva.modeling.propagation import PropagationModel
from deva.types import Segment, Segmentation

H, W = 40, 56


def _frames(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, H, W, generator=g) for _ in range(n)]


def _segmentation() -> Segmentation:
    mask = torch.zeros(H, W, dtype=torch.long)
    mask[4:18, 4:22] = 300
    mask[20:36, 28:52] = 7
    mask[0:6, 40:56] = 12
    segments = [
        Segment(id=300, category_id=4, score=0.9, isthing=True),
        Segment(id=7, category_id=0, score=0.5, isthing=False),
        Segment(id=12, category_id=None, score=None, isthing=None),
    ]
    return Segmentation(mask=mask, segments=segments)


def test_equals_a_fresh_propagator_on_the_two_frames(model: PropagationModel) -> None:
    source, target = _frames(2)
    seg = _segmentation()
    prop = Propagator(model, MemoryConfig(top_k=30))
    aligned = prop.align([(prop.encode(source), seg)], prop.encode(target))[0]
    reference = Propagator(model, MemoryConfig(top_k=30))
    reference.step(source, seg.mask, objects=[300, 7, 12])
    expected = reference.step(target).index_mask()
    assert torch.equal(aligned.mask, expected)


def test_keeps_ids_and_metadata(model: PropagationModel) -> None:
    source, target = _frames(2, seed=1)
    prop = Propagator(model)
    seg = _segmentation()
    aligned = prop.align([(prop.encode(source), seg)], prop.encode(target))[0]
    assert aligned.mask.shape == (H, W)
    assert aligned.mask.dtype == torch.long
    present = set(torch.unique(aligned.mask).tolist()) - {0}
    assert present <= {300, 7, 12}
    assert {s.id for s in aligned.segments} == present
    original = {s.id: s for s in seg.segments}
    for s in aligned.segments:
        assert s == original[s.id]
        assert s is not original[s.id]  # copies: the caller's records stay untouched


def test_never_touches_the_trackers_memory(model: PropagationModel) -> None:
    frames = _frames(6, seed=2)
    seg = _segmentation()
    tracked = Propagator(model, mem_every=1)
    twin = Propagator(model, mem_every=1)
    for p in (tracked, twin):
        p.step(frames[0], seg.mask)
        p.step(frames[1])
    before = tracked.memory.stats()
    ids_before = tracked.object_ids
    features = [tracked.encode(f) for f in frames[2:5]]
    tracked.align([(features[1], seg)], features[0])
    tracked.align([(features[2], seg)], features[0])
    assert tracked.memory.stats() == before
    assert tracked.object_ids == ids_before
    # the next propagation step is bit-identical to a propagator that never aligned anything
    out = tracked.step(features=features[0])
    ref = twin.step(frames[2])
    assert torch.equal(out.prob, ref.prob)


def test_empty_segmentation_gives_empty_result(model: PropagationModel) -> None:
    source, target = _frames(2)
    prop = Propagator(model)
    empty = Segmentation(mask=torch.zeros(H, W, dtype=torch.long))
    aligned = prop.align([(prop.encode(source), empty)], prop.encode(target))[0]
    assert aligned.segments == []
    assert not aligned.mask.any()


def test_size_mismatch_is_an_error(model: PropagationModel) -> None:
    prop = Propagator(model)
    small = prop.encode(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="source frame"):
        prop.align([(small, _segmentation())], prop.encode(_frames(1)[0]))
    with pytest.raises(ValueError, match="segmentation is"):
        prop.align([(small, _segmentation())], small)


def _shifted(seg: Segmentation, dy: int, dx: int) -> Segmentation:
    return Segmentation(mask=torch.roll(seg.mask, (dy, dx), dims=(0, 1)), segments=seg.segments)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_batched_clip_alignment_equals_one_propagator_per_frame(
    model: PropagationModel, dtype: torch.dtype | None
) -> None:
    frames = _frames(4, seed=3)
    prop = Propagator(model, options=InferenceOptions(autocast=dtype))
    features = [prop.encode(f) for f in frames]
    segs = [_segmentation(), _shifted(_segmentation(), 3, -2), Segmentation(torch.zeros(H, W))]
    segs.append(_shifted(_segmentation(), -4, 5))
    sources = list(zip([*features[1:], features[1]], segs, strict=True))
    batched = prop.align(sources, features[0])
    for (source, seg), got in zip(sources, batched, strict=True):
        single = prop.align([(source, seg)], features[0])[0]
        assert torch.equal(got.mask, single.mask)
        assert got.segments == single.segments
        if seg.segments:
            reference = reference_alignment(prop.network, source, seg, features[0])
            assert torch.equal(got.mask, reference)
    assert batched[2].segments == [] and not batched[2].mask.any()
