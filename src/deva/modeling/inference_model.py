"""Inference-time copies of the propagation network: batch norm folded, weights cast once.

Inference never updates batch-norm statistics, so each ``conv → BN`` pair of the ResNet trunks
is one convolution with a bias. :func:`build_inference_model` returns a copy of a
:class:`~deva.modeling.propagation.PropagationModel` with those pairs folded, optionally with
its weights stored in bfloat16 (so autocast does not re-cast every weight on every call) and in
channels-last layout. The copy shares no mutable state with the original; it reflects the
weights at the time it was built (:class:`deva.inference.network.InferenceNetwork` owns one).

Also here: which reduced precisions a device supports (:func:`check_autocast`).
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from deva.modeling.propagation import PropagationModel
from deva.modeling.resnet import BasicBlock, Bottleneck
from deva.modeling.winograd import use_winograd

log = logging.getLogger(__name__)


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (oneDNN with AVX-512-BF16/AMX)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # older builds without the query
        return False


def check_autocast(dtype: torch.dtype | None, device: torch.device | str) -> None:
    """Raise ``ValueError`` (one line) when ``dtype`` is not usable for inference on ``device``.

    CPU: bfloat16 needs native support (:func:`cpu_supports_bf16`); float16 is refused
    (CPU fp16 convolutions are slow emulations and lose precision). CUDA: both are allowed.
    """
    device = torch.device(device)
    if dtype is None or device.type != "cpu":
        return
    if dtype == torch.float16:
        raise ValueError("amp=fp16 is not supported on the CPU; use amp=bf16 or amp=none")
    if dtype == torch.bfloat16 and not cpu_supports_bf16():
        raise ValueError(
            "amp=bf16 needs a CPU with native bfloat16 (AVX-512-BF16 or AMX); this one has "
            "none: use amp=none"
        )
    if dtype not in (torch.bfloat16, torch.float32):
        raise ValueError(f"unsupported autocast dtype {dtype} on the CPU")


def fold_batch_norm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode (computed in float64)."""
    folded = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=True,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        weight = conv.weight.double() * scale[:, None, None, None]
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        folded.weight.copy_(weight)
        folded.bias.copy_(bn.bias.double() + (bias - bn.running_mean.double()) * scale)
    return folded


def _fold_trunk(module: nn.Module) -> None:
    """Fold every conv → BN pair of a trunk: a ResNet's stem, blocks and down-sampling
    branches, or the conv → BN steps of MobileNetV2's ``features`` sequences."""
    for sequence in module.modules():
        if isinstance(sequence, nn.Sequential):
            for i in range(len(sequence) - 1):
                conv, bn = sequence[i], sequence[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    sequence[i] = fold_batch_norm(conv, bn)
                    sequence[i + 1] = nn.Identity()
    for block in module.modules():
        if isinstance(block, (BasicBlock, Bottleneck)):
            for i in (1, 2, 3):
                conv, bn = getattr(block, f"conv{i}", None), getattr(block, f"bn{i}", None)
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    setattr(block, f"conv{i}", fold_batch_norm(conv, bn))
                    setattr(block, f"bn{i}", nn.Identity())
    if isinstance(getattr(module, "bn1", None), nn.BatchNorm2d):
        module.conv1 = fold_batch_norm(module.conv1, module.bn1)  # type: ignore[assignment]
        module.bn1 = nn.Identity()  # type: ignore[assignment]


def _trunk_modules(model: PropagationModel) -> list[nn.Module]:
    """The modules whose convolutions :func:`_fold_trunk` folds batch norms into."""
    modules: list[nn.Module] = []
    for encoder in (model.pixel_encoder, model.mask_encoder):
        if isinstance(getattr(encoder, "features", None), nn.Sequential):  # MobileNetV2
            modules.append(encoder.features)
            continue
        modules += [encoder.conv1, encoder.bn1]  # type: ignore[list-item]
        modules += [m for m in encoder.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    return modules


def build_inference_model(
    model: PropagationModel,
    *,
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
    winograd: bool = False,
    compile: bool = False,
) -> PropagationModel:
    """A frozen copy of ``model`` for inference (see the module docstring).

    ``compile`` wraps the copy's four sub-networks (pixel encoder, key projection, mask
    encoder, decoder) in ``torch.compile``; each compiles on its first call and again when
    its input shapes change (e.g. the number of objects). The memory read stays eager.

    ``winograd`` replaces the wide 3×3 convolutions by
    :class:`~deva.modeling.winograd.WinogradConv2d` (float32 on the CPU). The two trunks (the
    modules with batch norm) are always copied. In float32, every other parameter is shared
    with ``model`` (read-only use) unless ``channels_last`` without ``winograd`` asks for
    channels-last copies of all weights; with ``winograd``, channels-last applies to the
    trunks only (the remaining convolutions are Winograd, 1×1 or tiny, and Winograd ones
    read the shared weights), which keeps the copy small.
    """
    if winograd and (dtype is not None or model.device.type != "cpu" or compile):
        raise ValueError("winograd=True is for float32 inference on the CPU, without compile")
    share = dtype is None and (winograd or not channels_last)
    shared: dict[int, object] = {}
    if share:
        folded = {id(t) for m in _trunk_modules(model) for t in [*m.parameters(), *m.buffers()]}
        for t in [*model.parameters(), *model.buffers()]:
            if id(t) not in folded:
                shared[id(t)] = t
    fast = copy.deepcopy(model, memo=shared)
    fast.eval()
    for p in fast.parameters():
        if id(p) not in shared:  # shared parameters belong to ``model``: leave them alone
            p.requires_grad_(False)
    _fold_trunk(fast.pixel_encoder)
    _fold_trunk(fast.mask_encoder)
    if dtype is not None:
        fast.to(dtype)
    if channels_last and share:
        for module in _trunk_modules(fast):
            module.to(memory_format=torch.channels_last)
    elif channels_last:
        fast.to(memory_format=torch.channels_last)
    if winograd:
        # Filters made per call from the shared weights: stored, they would take 4× the
        # weights (~0.9 GB at the published size) for a few percent of speed.
        replaced = use_winograd(fast, max_stored=0)
        log.debug("%d convolutions use Winograd F(4x4, 3x3)", replaced)
    if compile:
        for module in (fast.pixel_encoder, fast.key_proj, fast.mask_encoder, fast.mask_decoder):
            module.compile()
    return fast
