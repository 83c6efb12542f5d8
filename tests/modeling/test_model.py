"""The propagation network: shapes, aggregation, memory reading, chunking, gradients."""

from __future__ import annotations

import pytest
import torch

from deva.inference.preprocess import pad_to_multiple, unpad
from deva.modeling import memory_ops
from deva.modeling.config import PropagationConfig
from deva.modeling.propagation import PropagationModel, aggregate_probabilities


@pytest.fixture(scope="module")
def tiny() -> PropagationModel:
    torch.manual_seed(0)
    return PropagationModel(PropagationConfig.preset("tiny")).eval()


def _frame(h: int, w: int) -> torch.Tensor:
    return torch.randn(1, 3, h, w)


@pytest.mark.parametrize("num_objects", [1, 3])
@pytest.mark.parametrize("size", [(64, 96), (50, 77)])
def test_shapes_through_every_method(tiny: PropagationModel, num_objects: int, size) -> None:
    cfg = tiny.config
    h, w = size
    image, pad = pad_to_multiple(_frame(h, w), 16)
    H, W = image.shape[-2:]
    assert H % 16 == 0 and W % 16 == 0
    masks, _ = pad_to_multiple(torch.rand(1, num_objects, h, w), 16)

    with torch.no_grad():
        feats = tiny.encode_image(image)
        assert feats.f16.shape == (1, cfg.pixel_dim, H // 16, W // 16)
        assert feats.f8.shape[-2:] == (H // 8, W // 8)
        assert feats.f4.shape[-2:] == (H // 4, W // 4)
        key = tiny.project_key(feats)
        assert key.key.shape == (1, cfg.key_dim, H // 16, W // 16)
        assert key.shrinkage.shape == (1, 1, H // 16, W // 16)
        assert (key.shrinkage >= 1).all()
        assert ((key.selection > 0) & (key.selection < 1)).all()

        sensory = tiny.init_sensory(1, num_objects, (H // 16, W // 16))
        value, sensory = tiny.encode_mask(image, feats, sensory, masks)
        assert value.shape == (1, num_objects, cfg.value_dim, H // 16, W // 16)
        assert sensory.shape == (1, num_objects, cfg.sensory_dim, H // 16, W // 16)

        readout = tiny.read_memory(
            key, key.key.flatten(2), key.shrinkage.flatten(2), value.flatten(3), top_k=30
        )
        assert readout.shape == value.shape
        sensory2, logits = tiny.segment(feats, readout, sensory, masks)
        assert logits.shape == (1, num_objects, H // 4, W // 4)
        assert sensory2.shape == sensory.shape
        aux = tiny.aux_logits(feats, sensory2)
        assert aux.shape == (1, num_objects, H // 16, W // 16)

        _, prob = tiny.aggregate(logits)
        assert prob.shape == (1, num_objects + 1, H, W)
        back = unpad(prob, pad)
        assert back.shape == (1, num_objects + 1, h, w)


def test_unpadded_size_is_rejected(tiny: PropagationModel) -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny.encode_image(_frame(50, 64))


def test_forward_refuses() -> None:
    with pytest.raises(RuntimeError, match="no forward"):
        PropagationModel(PropagationConfig.preset("tiny"))(torch.zeros(1))


def test_soft_aggregation_sums_to_one_and_background_is_product() -> None:
    prob = torch.rand(2, 4, 8, 8) * 0.98 + 0.01
    logits = aggregate_probabilities(prob)
    assert logits.shape == (2, 5, 8, 8)
    # sigmoid of the aggregated logits gives back the (clamped) stacked probabilities
    recovered = torch.sigmoid(logits)
    torch.testing.assert_close(recovered[:, 0], torch.prod(1 - prob, dim=1), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(recovered[:, 1:], prob, atol=1e-6, rtol=1e-4)
    _, soft = PropagationModel.aggregate(torch.logit(prob), upsample=4)
    assert soft.shape == (2, 5, 32, 32)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(2, 32, 32))
    assert (soft >= 0).all()


def test_aggregation_clamps_extremes() -> None:
    prob = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    logits = aggregate_probabilities(prob)
    assert torch.isfinite(logits).all()


def test_topk_equals_full_softmax_when_k_covers_memory() -> None:
    mk, ms = torch.randn(2, 8, 20), torch.rand(2, 1, 20) + 1
    qk, qe = torch.randn(2, 8, 15), torch.rand(2, 8, 15)
    sim = memory_ops.similarity(mk, ms, qk, qe)
    full = memory_ops.softmax_affinity(sim, None)
    torch.testing.assert_close(memory_ops.softmax_affinity(sim, 20), full)
    torch.testing.assert_close(memory_ops.softmax_affinity(sim, 50), full)
    k5 = memory_ops.softmax_affinity(sim, 5)
    assert ((k5 > 0).sum(dim=1) == 5).all()
    torch.testing.assert_close(k5.sum(dim=1), torch.ones(2, 15))


def test_similarity_matches_direct_definition() -> None:
    mk, ms = torch.randn(1, 4, 6), torch.rand(1, 1, 6) + 1
    qk, qe = torch.randn(1, 4, 5), torch.rand(1, 4, 5)
    sim = memory_ops.similarity(mk, ms, qk, qe)
    diff = mk[0][:, :, None] - qk[0][:, None, :]  # (C, M, Q)
    direct = -(qe[0][:, None, :] * diff.pow(2)).sum(0) * ms[0, 0][:, None] / 2.0
    torch.testing.assert_close(sim[0], direct, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize("weighted", [True, False])
def test_query_chunked_top_k_equals_the_whole_read(chunk: int, weighted: bool) -> None:
    """The chunked read gives the two-step (whole logits) affinity: the same indices and the
    same weights to float rounding, for partial last chunks, batches, no selection /
    shrinkage and k > M. (Not bitwise everywhere: MKL picks other kernels, with another
    summation order, for other row counts and thread splits, e.g. on AMD EPYC.)"""
    g = torch.Generator().manual_seed(chunk)
    mk, ms = torch.randn(2, 16, 300, generator=g), torch.rand(2, 1, 300, generator=g) + 1
    qk, qe = torch.randn(2, 16, 150, generator=g), torch.rand(2, 16, 150, generator=g)
    if not weighted:
        ms = qe = None
    for k in (30, 400):
        want = memory_ops.top_k_affinity(memory_ops.query_similarity(mk, ms, qk, qe), k)
        got = memory_ops.top_k_query_affinity(mk, ms, qk, qe, k, query_chunk=chunk)
        torch.testing.assert_close(got.weights, want.weights, rtol=1e-5, atol=1e-7)
        assert torch.equal(got.indices, want.indices)
        assert got.memory_size == 300 and got.weights.shape == (2, 150, min(k, 300))
    default = memory_ops.top_k_query_affinity(mk, ms, qk, qe, 30)  # CPU: QUERY_CHUNK rows
    assert torch.equal(
        default.indices,
        memory_ops.top_k_affinity(memory_ops.query_similarity(mk, ms, qk, qe), 30).indices,
    )
    with pytest.raises(ValueError, match="query_chunk"):
        memory_ops.top_k_query_affinity(mk, ms, qk, qe, 30, query_chunk=0)


def test_chunked_objects_equal_all_together(tiny: PropagationModel) -> None:
    image = _frame(48, 64)
    masks = torch.rand(1, 5, 48, 64)
    with torch.no_grad():
        feats = tiny.encode_image(image)
        key = tiny.project_key(feats)
        sensory = torch.randn(1, 5, tiny.config.sensory_dim, 3, 4)
        v_all, s_all = tiny.encode_mask(image, feats, sensory, masks)
        v_chk, s_chk = tiny.encode_mask(image, feats, sensory, masks, chunk_size=2)
        torch.testing.assert_close(v_all, v_chk)
        torch.testing.assert_close(s_all, s_chk)
        readout = tiny.read_memory(
            key, key.key.flatten(2), key.shrinkage.flatten(2), v_all.flatten(3)
        )
        out_all = tiny.segment(feats, readout, s_all, masks)
        out_chk = tiny.segment(feats, readout, s_all, masks, chunk_size=2)
        for a, b in zip(out_all, out_chk, strict=True):
            torch.testing.assert_close(a, b)


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = PropagationModel(PropagationConfig.preset("tiny")).train()
    frames = torch.randn(2, 3, 3, 48, 48)
    masks = (torch.rand(2, 2, 48, 48) > 0.5).float()
    feats0 = model.encode_image(frames[:, 0])
    key0 = model.project_key(feats0)
    sensory = model.init_sensory(2, 2, (3, 3))
    value, sensory = model.encode_mask(frames[:, 0], feats0, sensory, masks, deep_update=True)
    feats1 = model.encode_image(frames[:, 1])
    key1 = model.project_key(feats1)
    readout = model.read_memory(
        key1, key0.key.flatten(2), key0.shrinkage.flatten(2), value.flatten(3)
    )
    sensory, logits = model.segment(feats1, readout, sensory, masks)
    aux = model.aux_logits(feats1, sensory)
    agg, _ = model.aggregate(logits)
    target = torch.randint(0, 3, (2, 48, 48))
    loss = torch.nn.functional.cross_entropy(agg, target) + aux.pow(2).mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad
    # sensory update in the mask encoder (deep update) must be reachable too
    assert model.mask_encoder.sensory_update.transform.weight.grad.abs().sum() > 0


def test_published_config_parameter_count(published_shapes) -> None:
    model = PropagationModel(PropagationConfig.preset("published"))
    params = sum(p.numel() for p in model.parameters())
    assert params == 69_155_657
    assert [k for k, _, _ in published_shapes] == list(model.state_dict())


def test_small_preset_is_small() -> None:
    small = PropagationModel(PropagationConfig.preset("small"))
    assert sum(p.numel() for p in small.parameters()) < 4_000_000
    with pytest.raises(ValueError, match="unknown model preset"):
        PropagationConfig.preset("huge")


def _randomise_batch_norm(model: PropagationModel, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_copy_folds_batch_norm_and_matches(channels_last: bool) -> None:
    from deva.inference.network import InferenceNetwork
    from deva.inference.options import InferenceOptions

    torch.manual_seed(1)
    model = PropagationModel(PropagationConfig.preset("tiny")).eval()
    _randomise_batch_norm(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    network = InferenceNetwork(model, InferenceOptions(channels_last=channels_last))
    fast = network.module
    assert fast is not model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert network.module is fast  # built once, owned by the network
    assert InferenceNetwork(model, InferenceOptions(plain=True)).module is model
    image, masks = _frame(48, 64), torch.rand(1, 2, 48, 64)
    with torch.no_grad():
        outputs = []
        for net in (model, fast):
            feats = net.encode_image(image)
            sensory = torch.zeros(1, 2, net.config.sensory_dim, 3, 4)
            value, sensory = net.encode_mask(image, feats, sensory, masks)
            outputs += [feats.f4, feats.f16, value, sensory]
        half = len(outputs) // 2
        for a, b in zip(outputs[:half], outputs[half:], strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    for k, v in model.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k])
    with torch.no_grad():
        model.pixel_encoder.conv1.weight.mul_(2)
    # a network built after the weights changed reflects them
    rebuilt = InferenceNetwork(model, InferenceOptions(channels_last=channels_last)).module
    with torch.no_grad():
        assert not torch.allclose(
            rebuilt.encode_image(image).f4, fast.encode_image(image).f4, atol=1e-4
        )


def test_reduced_precision_availability() -> None:
    from deva.modeling.inference_model import check_autocast, cpu_supports_bf16

    check_autocast(None, "cpu")
    check_autocast(torch.float16, "cuda")  # allowed on GPUs
    with pytest.raises(ValueError, match="fp16 is not supported on the CPU"):
        check_autocast(torch.float16, "cpu")
    if cpu_supports_bf16():
        check_autocast(torch.bfloat16, "cpu")
    else:
        with pytest.raises(ValueError, match="bfloat16"):
            check_autocast(torch.bfloat16, "cpu")


def test_inference_copy_leaves_a_training_model_trainable() -> None:
    from deva.modeling.inference_model import build_inference_model

    model = PropagationModel(PropagationConfig.preset("tiny")).train()
    build_inference_model(model)
    assert all(p.requires_grad for p in model.parameters())
