"""Winograd F(4×4, 3×3) convolutions of the fp32 CPU inference copy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deva.data.synthetic import SyntheticVideoConfig, generate_video
from deva.inference.options import InferenceOptions
from deva.inference.preprocess import preprocess_frame, preprocess_mask
from deva.inference.propagator import Propagator
from deva.modeling import winograd
from deva.modeling.config import PropagationConfig
from deva.modeling.inference_model import build_inference_model
from deva.modeling.modules import GroupedConv2d, conv_input_slice, relu_conv
from deva.modeling.propagation import PropagationModel
from deva.modeling.winograd import (
    WinogradConv2d,
    filter_transform,
    use_winograd,
    winograd_conv3x3,
    worth_winograd,
)
from tests.helpers import EMBEDDED


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).abs().max() / ref.double().abs().max())


@pytest.mark.parametrize("size", [(8, 8), (9, 13), (30, 55), (4, 5), (1, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_equals_direct_convolution(size: tuple[int, int], channels_last: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 3, padding=1)
    x = torch.randn(2, 16, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    # band_tiles=1: one tile row per band, so multi-band bookkeeping is exercised too.
    fast = WinogradConv2d(conv, band_tiles=1)
    with torch.no_grad():
        out = fast(x)
        ref = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    assert out.shape == ref.shape
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert _relative_error(out, ref) < 5e-5


def test_fused_relu_equals_relu_then_convolution() -> None:
    torch.manual_seed(3)
    conv = GroupedConv2d(8, 6, 3, padding=1)
    fast = WinogradConv2d(conv)
    x = torch.randn(1, 2, 8, 10, 9)
    with torch.no_grad():
        assert _relative_error(fast.forward_relu(x), conv(F.relu(x))) < 5e-5
        # The helper the residual blocks use picks the fused path when there is one.
        assert _relative_error(relu_conv(fast, x), relu_conv(conv, x)) < 5e-5
    assert x.min() < 0  # the input itself is left alone


@pytest.mark.parametrize("store_filters", [True, False])
@pytest.mark.parametrize("band_tiles", [1, 3, 1000])
def test_overwriting_the_input_equals_a_fresh_output(
    store_filters: bool, band_tiles: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The result written into the input's own memory (one band behind) is the convolution
    of the untouched input, over one band, several, and with blocks of per-call filters."""
    monkeypatch.setattr(winograd, "FILTER_BLOCK", 48)  # three blocks of output channels
    torch.manual_seed(4)
    conv = GroupedConv2d(130, 130, 3, padding=1)
    fast = WinogradConv2d(conv, band_tiles=band_tiles, store_filters=store_filters)
    x = torch.randn(1, 2, 130, 12, 16).flatten(0, 1).contiguous(memory_format=torch.channels_last)
    x = x.view(1, 2, 130, 12, 16)
    with torch.no_grad():
        want = conv(F.relu(x.clone()))
        fresh = fast.forward_relu(x)
        storage = x.untyped_storage().data_ptr()
        got = fast.forward_relu(x, overwrite=True)
    assert got.untyped_storage().data_ptr() == storage  # no new output tensor
    assert torch.equal(got, fresh)  # bit-identical to writing a fresh tensor
    assert _relative_error(got, want) < 5e-5
    # Where the layout does not allow it, a fresh tensor is returned and the input kept.
    odd = torch.randn(1, 2, 130, 10, 9)
    with torch.no_grad():
        kept = odd.clone()
        assert _relative_error(fast.forward_relu(odd, overwrite=True), conv(F.relu(odd))) < 5e-5
    assert torch.equal(odd, kept)


def test_output_buffer_is_checked() -> None:
    conv = nn.Conv2d(8, 8, 3, padding=1)
    fast = WinogradConv2d(conv)
    x = torch.randn(1, 8, 8, 8).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="channels-last"):
        fast.conv_slice(x, out=torch.empty(1, 8, 8, 8))
    with pytest.raises(ValueError, match="out must be"):
        fast.conv_slice(
            x, out=torch.empty(1, 8, 4, 8).contiguous(memory_format=torch.channels_last)
        )


def test_without_bias_and_channel_slices() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(12, 8, 3, padding=1)
    fast = WinogradConv2d(conv)
    x = torch.randn(1, 12, 11, 10)
    with torch.no_grad():
        for channels in (slice(0, 5), slice(5, None)):
            part = x[:, channels]
            got = fast.conv_slice(part, channels, bias=False)
            want = F.conv2d(part, conv.weight[:, channels], None, padding=1)
            assert _relative_error(got, want) < 5e-5
            # The helper the fusion blocks call dispatches to either implementation.
            plain = conv_input_slice(conv, part, channels, bias=True)
            assert _relative_error(conv_input_slice(fast, part, channels, bias=True), plain) < 5e-5


def test_grouped_convolution_keeps_object_axis() -> None:
    torch.manual_seed(2)
    conv = GroupedConv2d(8, 8, 3, padding=1)
    x = torch.randn(1, 3, 8, 9, 7)
    with torch.no_grad():
        assert _relative_error(WinogradConv2d(conv)(x), conv(x)) < 5e-5


def test_filter_transform_shape_and_exactness() -> None:
    """A filter that is a single centre tap is the identity convolution."""
    w = torch.zeros(4, 4, 3, 3)
    w[range(4), range(4), 1, 1] = 1.0
    u = filter_transform(w)
    assert u.shape == (36, 4, 4)
    x = torch.randn(1, 4, 12, 12)
    bt = WinogradConv2d(nn.Conv2d(4, 4, 3, padding=1, bias=False))
    out = winograd_conv3x3(x, u, None, bt.kb, bt.ka)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)


def test_rejects_other_convolutions_and_wrong_channels() -> None:
    for conv in (
        nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.Conv2d(4, 4, 1),
        nn.Conv2d(4, 4, 3, padding=1, groups=2),
        nn.Conv2d(4, 4, 5, padding=2),
    ):
        with pytest.raises(ValueError, match="3×3 stride-1 padding-1"):
            WinogradConv2d(conv)
    fast = WinogradConv2d(nn.Conv2d(4, 4, 3, padding=1))
    with pytest.raises(ValueError, match="expected 4 input channels, got 3"):
        fast(torch.randn(1, 3, 8, 8))


def test_only_wide_convolutions_are_replaced() -> None:
    assert worth_winograd(nn.Conv2d(128, 64, 3, padding=1))
    assert not worth_winograd(nn.Conv2d(64, 64, 3, padding=1))  # narrow: direct is faster
    assert not worth_winograd(nn.Conv2d(256, 1, 3, padding=1))
    model = PropagationModel(PropagationConfig.preset("published")).eval()
    fast = build_inference_model(model, winograd=True)
    replaced = [n for n, m in fast.named_modules() if isinstance(m, WinogradConv2d)]
    assert "mask_decoder.up_8_4.out_conv.conv1" in replaced
    assert "mask_decoder.sensory_update.transform" in replaced
    assert "pixel_encoder.layer3.1.conv2" in replaced
    assert "pixel_encoder.res2.0.conv2" not in replaced  # 64 channels
    assert "pixel_encoder.layer2.0.conv2" not in replaced  # stride 2
    assert "mask_decoder.pred" not in replaced  # one output channel
    assert not any(isinstance(m, WinogradConv2d) for m in model.modules())  # original intact
    # Every filter is made per call: nothing 4× the weights is kept, and outside the two
    # trunks (copied, batch norm folded) the weights are the user's model's own.
    for name, module in fast.named_modules():
        if isinstance(module, WinogradConv2d):
            assert module.u is None
            if not name.startswith(("pixel_encoder", "mask_encoder.layer")):
                assert module.weight.data_ptr() == model.get_submodule(name).weight.data_ptr()
    assert use_winograd(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1))) == 0


def inference_options(
    device: str, dtype: torch.dtype | None, **options: bool | None
) -> tuple[bool | None, bool | None]:
    """(channels_last, winograd) as resolved for ``device``."""
    resolved = InferenceOptions(autocast=dtype, **options).resolved(device)
    return resolved.channels_last, resolved.winograd


def test_options_and_refusals() -> None:
    assert inference_options("cpu", None) == (True, True)
    assert inference_options("cpu", None, channels_last=False, winograd=False) == (False, False)
    assert inference_options("cpu", torch.bfloat16) == (True, False)
    assert inference_options("cuda", None) == (False, False)
    assert inference_options("cpu", None, compile=True) == (True, False)
    with pytest.raises(ValueError, match="float32 inference on the CPU only"):
        inference_options("cpu", torch.bfloat16, winograd=True)
    with pytest.raises(ValueError, match="float32 inference on the CPU only"):
        Propagator(
            PropagationModel(PropagationConfig.preset("tiny")),
            options=InferenceOptions(winograd=True, autocast=torch.bfloat16),
        )


def test_trained_model_masks_match_direct_convolutions() -> None:
    """Propagated masks with and without Winograd on the embedded checkpoint: at most
    0.01 % of the pixels may differ (float summation order)."""
    embedded_model = PropagationModel.from_pretrained(EMBEDDED).eval()
    video = generate_video(
        SyntheticVideoConfig(num_frames=6, height=96, width=160, num_objects=2), seed=3
    )
    props = [
        Propagator(embedded_model, options=InferenceOptions(winograd=w)) for w in (False, True)
    ]
    first = torch.from_numpy(video.masks[0].astype(np.int64))
    differ = total = 0
    with torch.inference_mode():
        for t, frame in enumerate(video.frames):
            image, geometry = preprocess_frame(frame, -1)
            mask = preprocess_mask(first, geometry) if t == 0 else None
            plain, fast = (p.step(image, mask) for p in props)
            torch.testing.assert_close(fast.prob, plain.prob, atol=1e-3, rtol=0)
            differ += int((fast.index_mask() != plain.index_mask()).sum())
            total += plain.index_mask().numel()
    assert props[1].network.options.winograd and not props[0].network.options.winograd
    assert differ <= 1e-4 * total


def test_per_call_filters_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without stored filters, each call transforms the shared (not copied) weights per block
    of output channels, a partial last block included."""
    monkeypatch.setattr(winograd, "FILTER_BLOCK", 4)
    torch.manual_seed(4)
    conv = nn.Conv2d(6, 10, 3, padding=1)
    fast = WinogradConv2d(conv, store_filters=False)
    assert fast.u is None and fast.weight.data_ptr() == conv.weight.data_ptr()
    x = torch.randn(2, 6, 9, 11)
    with torch.no_grad():
        assert _relative_error(fast(x), conv(x)) < 5e-5
        assert _relative_error(fast.forward_relu(x), conv(F.relu(x))) < 5e-5
        channels = slice(2, 6)
        got = fast.conv_slice(x[:, channels], channels, bias=False)
        want = F.conv2d(x[:, channels], conv.weight[:, channels], None, padding=1)
        assert _relative_error(got, want) < 5e-5
    stored = WinogradConv2d(conv)
    assert stored.weight is None and stored.u is not None and stored.u.shape == (36, 6, 10)


def test_tracker_and_tools_can_turn_winograd_off() -> None:
    from deva.config import builder, compose
    from deva.config.schema import EvaluateConfig, parse
    from deva.inference.tracker import DecoupledTracker

    model = PropagationModel(PropagationConfig.preset("tiny"))

    def tracker(*overrides: str) -> DecoupledTracker:
        config = parse(EvaluateConfig, compose("evaluate", ["model.preset=tiny", *overrides]))
        options = builder.inference_options(config)
        segment = builder.tracker_config(config)
        return DecoupledTracker(model, lambda image, **_: None, segment, options=options)

    def network_options(t: DecoupledTracker):
        return t.propagator.network.options

    assert compose("evaluate", []).winograd is None
    on = tracker()
    off = tracker("winograd=false")
    assert network_options(off).winograd is False
    assert network_options(on).winograd and not network_options(off).winograd
    assert compose("evaluate", []).compile is False and not network_options(on).compile
    compiled = tracker("compile=true")
    assert network_options(compiled).compile and not network_options(compiled).winograd
