"""Inference memory and the streaming propagator."""

from __future__ import annotations

import pytest
import torch

from deva.data.synthetic import SyntheticVideoConfig, generate_video
from deva.inference.memory import InferenceMemory, MemoryConfig
from deva.inference.options import InferenceOptions
from deva.inference.preprocess import image_to_tensor, normalize_image
from deva.inference.propagator import Propagator
from deva.modeling.propagation import PropagationModel


def _first_mask(h: int = 40, w: int = 56) -> torch.Tensor:
    mask = torch.zeros(h, w, dtype=torch.long)
    mask[4:16, 4:20] = 3
    mask[22:36, 30:50] = 7
    return mask


def _frames(n: int, h: int = 40, w: int = 56, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, h, w, generator=g) for _ in range(n)]


def test_first_frame_masks_come_back_with_their_ids(model: PropagationModel) -> None:
    prop = Propagator(model)
    mask = _first_mask()
    result = prop.step(_frames(1)[0], mask)
    assert result.object_ids == [3, 7]
    assert result.prob.shape == (3, 40, 56)
    assert torch.equal(result.index_mask(), mask)
    torch.testing.assert_close(result.prob.sum(0), torch.ones(40, 56))


def test_object_added_mid_video_keeps_its_id(model: PropagationModel) -> None:
    prop = Propagator(model, mem_every=2)
    frames = _frames(8)
    new = torch.zeros(40, 56, dtype=torch.long)
    new[20:30, 2:12] = 12
    for t, frame in enumerate(frames):
        if t == 0:
            result = prop.step(frame, _first_mask())
        elif t == 4:
            result = prop.step(frame, new, objects=[12])
            assert result.object_ids == [3, 7, 12]
            # the given mask wins where it is foreground
            assert (result.index_mask()[20:30, 2:12] == 12).all()
        else:
            result = prop.step(frame)
    assert prop.object_ids == [3, 7, 12]
    assert prop.memory.stats().buckets == 2
    assert result.prob.shape[0] == 4


def test_probability_masks_and_input_errors(model: PropagationModel) -> None:
    prop = Propagator(model)
    frame = _frames(1)[0]
    with pytest.raises(ValueError, match="mask size"):
        prop.step(frame, torch.zeros(10, 10, dtype=torch.long) + 1)
    with pytest.raises(ValueError, match="probability masks"):
        prop.step(frame, torch.rand(2, 40, 56))
    with pytest.raises(ValueError, match="without a mask"):
        prop.step(frame, None, objects=[1])
    with pytest.raises(ValueError, match="image"):
        prop.step(torch.zeros(40, 56))
    prop.reset()
    prob = torch.zeros(2, 40, 56)
    prob[0, :10] = 1
    prob[1, 20:] = 1
    result = prop.step(frame, prob, objects=[5, 9])
    assert result.object_ids == [5, 9]
    assert (result.index_mask()[:10] == 5).all() and (result.index_mask()[20:] == 9).all()


def test_no_objects_gives_background(model: PropagationModel) -> None:
    prop = Propagator(model)
    result = prop.step(_frames(1)[0])
    assert result.object_ids == [] and result.prob.shape == (1, 40, 56)
    assert (result.index_mask() == 0).all()
    # an empty mask for a new object is ignored
    result = prop.step(_frames(1)[0], torch.zeros(40, 56, dtype=torch.long), objects=[4])
    assert result.object_ids == []


def _run(prop: Propagator, frames: list[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for t, frame in enumerate(frames):
        out.append(prop.step(frame, _first_mask() if t == 0 else None).prob)
    return out


def test_chunked_equals_unchunked(model: PropagationModel) -> None:
    frames = _frames(7)
    full = _run(Propagator(model, mem_every=2), frames)
    chunked = _run(Propagator(model, mem_every=2, options=InferenceOptions(chunk_size=1)), frames)
    for a, b in zip(full, chunked, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_precomputed_features_give_the_same_result(model: PropagationModel) -> None:
    frames = _frames(4)
    a, b = Propagator(model), Propagator(model)
    for t, frame in enumerate(frames):
        mask = _first_mask() if t == 0 else None
        ra = a.step(frame, mask)
        rb = b.step(mask=mask, features=b.encode(frame))
        assert torch.equal(ra.prob, rb.prob)


def test_memory_frames_every_n_and_end_writes_nothing(model: PropagationModel) -> None:
    prop = Propagator(model, MemoryConfig(long_term=False), mem_every=3)
    per_frame = 3 * 4  # 48×64 padded → 3×4 at stride 16
    frames = _frames(8)
    for t, frame in enumerate(frames):
        prop.step(frame, _first_mask() if t == 0 else None, end=t == 7)
    # memory frames at t = 0, 3, 6; the last frame (end) adds nothing
    assert prop.memory.stats().working_elements == 3 * per_frame


def test_delete_objects_and_reset(model: PropagationModel) -> None:
    prop = Propagator(model, mem_every=1)
    frames = _frames(5)
    prop.step(frames[0], _first_mask())
    extra = torch.zeros(40, 56, dtype=torch.long)
    extra[30:38, 0:8] = 11
    prop.step(frames[1], extra, objects=[11])
    assert prop.memory.stats().buckets == 2
    prop.delete_objects([11])
    assert prop.object_ids == [3, 7] and prop.memory.stats().buckets == 1
    result = prop.step(frames[2])
    assert result.object_ids == [3, 7] and result.prob.shape[0] == 3
    prop.delete_objects([3, 7])
    assert prop.object_ids == [] and prop.memory.is_empty
    prop.reset()
    assert prop.memory.stats().total == 0


def test_memory_is_bounded_on_a_long_video(model: PropagationModel) -> None:
    video = generate_video(SyntheticVideoConfig(num_frames=60, height=40, width=56), seed=5)
    cfg = MemoryConfig(
        max_working_frames=4, min_working_frames=2, num_prototypes=6, max_long_term_elements=30
    )
    prop = Propagator(model, cfg, mem_every=1)
    totals = []
    for t, frame in enumerate(video.frames):
        image = normalize_image(image_to_tensor(frame))
        prop.step(image, torch.from_numpy(video.masks[0]).long() if t == 0 else None)
        totals.append(prop.memory.stats().total)
    per_frame = 12  # 48×64 padded → 3×4 elements per memory frame
    assert max(totals) <= cfg.max_working_frames * per_frame + cfg.max_long_term_elements
    assert max(totals[30:]) == max(totals[10:30])  # stopped growing
    assert prop.memory.stats().long_term_elements == cfg.max_long_term_elements


def test_consolidation_keeps_first_frame_and_newest_frames() -> None:
    torch.manual_seed(0)
    cfg = MemoryConfig(max_working_frames=5, min_working_frames=3, num_prototypes=4)
    memory = InferenceMemory(cfg)
    frames = []
    for _ in range(5):
        key = torch.randn(1, 8, 2, 3)
        frames.append(key)
        memory.add_frame(
            key, torch.ones(1, 1, 2, 3), torch.rand(1, 8, 2, 3), torch.randn(1, 2, 4, 2, 3), [1, 2]
        )
        memory.read(torch.randn(1, 8, 2, 3), torch.rand(1, 8, 2, 3), [1, 2])
    bucket = memory._buckets[0]
    # 5 frames reached: frames 1..2 consolidated, frame 0 and the newest 2 kept
    kept = torch.cat([f[0].flatten(1) for f in (frames[0], frames[3], frames[4])], dim=1)
    assert torch.equal(bucket.working.key, kept)
    assert bucket.long_term.size == 4
    # prototypes are candidate keys with the highest usage
    candidates = torch.cat([f[0].flatten(1) for f in frames[1:3]], dim=1)
    for column in bucket.long_term.key.T:
        assert any(torch.equal(column, c) for c in candidates.T)
    with pytest.raises(KeyError, match="no memory"):
        memory.read(torch.randn(1, 8, 2, 3), torch.rand(1, 8, 2, 3), [5])


def test_bf16_autocast_runs_and_agrees(model: PropagationModel) -> None:
    frames = _frames(4)
    full = _run(Propagator(model), frames)
    mixed = _run(Propagator(model, options=InferenceOptions(autocast=torch.bfloat16)), frames)
    for a, b in zip(full, mixed, strict=True):
        assert b.dtype == torch.float32 and torch.isfinite(b).all()
        # a random model's probabilities are near-uniform, so compare values, not arg-max
        assert (a - b).abs().max() < 0.02


def test_predict_then_commit_equals_step_and_survives_deletion(model: PropagationModel) -> None:
    frames = _frames(5)
    a, b = Propagator(model, mem_every=2), Propagator(model, mem_every=2)
    for t, frame in enumerate(frames):
        mask = _first_mask() if t == 0 else None
        expected = a.step(frame, mask)
        b.predict(frame)
        got = b.commit(mask)
        assert torch.equal(expected.prob, got.prob) and expected.object_ids == got.object_ids
    with pytest.raises(RuntimeError, match="without a pending"):
        b.commit()
    peek = b.predict(frames[0])
    assert peek.object_ids == [3, 7]
    with pytest.raises(RuntimeError, match="twice"):
        b.predict(frames[0])
    b.delete_objects([3])  # between predict and commit: object 3's probability -> background
    result = b.commit()
    assert result.object_ids == [7]
    torch.testing.assert_close(result.prob[0], peek.prob[0] + peek.prob[1])
    torch.testing.assert_close(result.prob[1], peek.prob[2])


def test_amp_option_on_the_cpu(model: PropagationModel) -> None:
    from deva.config import ConfigError
    from deva.config.builder import autocast_dtype
    from deva.modeling.inference_model import cpu_supports_bf16

    cpu = torch.device("cpu")
    assert autocast_dtype("none", cpu) is None
    with pytest.raises(ConfigError, match="fp16"):
        autocast_dtype("fp16", cpu)
    with pytest.raises(ValueError, match="fp16"):
        Propagator(model, options=InferenceOptions(autocast=torch.float16))
    if cpu_supports_bf16():
        assert autocast_dtype("bf16", cpu) is torch.bfloat16
        prop = Propagator(model, options=InferenceOptions(autocast=torch.bfloat16))
        assert prop.network.options.channels_last
        assert next(prop.network.module.parameters()).dtype == torch.bfloat16  # cast once
        assert next(model.parameters()).dtype == torch.float32  # the model is untouched


def test_compiled_network_agrees_and_follows_new_objects(model: PropagationModel) -> None:
    """``compile=True`` runs the sub-networks through ``torch.compile`` (recompiling when an
    object is added) and gives the eager probabilities; the model itself stays eager."""
    frames = _frames(5)
    new = torch.zeros(40, 56, dtype=torch.long)
    new[20:30, 2:12] = 12
    eager = Propagator(model, mem_every=2, options=InferenceOptions(winograd=False))
    compiled = Propagator(model, mem_every=2, options=InferenceOptions(compile=True))
    assert not compiled.network.options.winograd  # the default gives way to compile
    for t, frame in enumerate(frames):
        mask, objects = (_first_mask(), None) if t == 0 else (new, [12]) if t == 3 else (None, None)
        want = eager.step(frame, mask, objects)
        got = compiled.step(frame, mask, objects)
        assert got.object_ids == want.object_ids
        torch.testing.assert_close(got.prob, want.prob, atol=1e-5, rtol=0)
    assert compiled.object_ids == [3, 7, 12]
    network = compiled.network.module
    assert network is not model and network is not eager.network.module
    assert network.mask_decoder._compiled_call_impl is not None
    assert model.mask_decoder._compiled_call_impl is None
    with pytest.raises(ValueError, match="exclude each other"):
        Propagator(model, options=InferenceOptions(winograd=True, compile=True))
