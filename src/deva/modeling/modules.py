"""Building blocks of the propagation network.

"Grouped" layers take per-object tensors of shape (B, N, C, H, W) and apply an ordinary 2-D
layer to the B·N images by folding the object axis into the batch axis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GroupedConv2d(nn.Conv2d):
    """A Conv2d over (B, N, C, H, W) tensors, shared across the N objects."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, n = x.shape[:2]
        out = super().forward(x.flatten(0, 1))
        return out.view(b, n, *out.shape[1:])


def resize_grouped(x: torch.Tensor, scale: float, mode: str) -> torch.Tensor:
    """Resize a (B, N, C, H, W) tensor spatially by ``scale`` with ``F.interpolate``."""
    b, n = x.shape[:2]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    out = F.interpolate(x.flatten(0, 1), scale_factor=scale, mode=mode, **kwargs)
    return out.view(b, n, *out.shape[1:])


class GroupedResBlock(nn.Module):
    """out = conv(ReLU(conv(ReLU(x)))) + skip(x); skip is a 1×1 conv when widths differ."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        # Registration order follows the published checkpoint (shortcut first).
        self.downsample = None if in_dim == out_dim else GroupedConv2d(in_dim, out_dim, 1)
        self.conv1 = GroupedConv2d(in_dim, out_dim, 3, padding=1)
        self.conv2 = GroupedConv2d(out_dim, out_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = relu_conv(self.conv2, relu_conv(self.conv1, x), inplace=True)
        return _add_into(out, x if self.downsample is None else self.downsample(x))


def relu_conv(conv: nn.Module, x: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """``conv(relu(x))``; an inference replacement with ``forward_relu`` (such as
    :class:`~deva.modeling.winograd.WinogradConv2d`) applies the ReLU while reading ``x``.
    ``inplace``: ``x`` is a temporary that may be overwritten (by the ReLU on the plain path,
    by the result on the fused one)."""
    fused = getattr(conv, "forward_relu", None)
    if fused is not None:
        return fused(x, overwrite=inplace)
    return conv(F.relu(x, inplace=inplace))


def conv_input_slice(
    conv: nn.Module, x: torch.Tensor, channels: slice, *, bias: bool, relu: bool = False
) -> torch.Tensor:
    """``conv`` applied to ``x`` (to ``relu(x)`` with ``relu``), which holds only the input
    channels ``channels`` of it.

    For a plain convolution this slices the weight; an inference replacement (such as
    :class:`~deva.modeling.winograd.WinogradConv2d`) provides ``conv_slice`` itself.
    """
    if not isinstance(conv, nn.Conv2d):
        return conv.conv_slice(x, channels, bias=bias, relu=relu)  # type: ignore[operator]
    return F.conv2d(
        F.relu(x) if relu else x,
        conv.weight[:, channels],
        conv.bias if bias else None,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
    )


def _add_into(out: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``out + other``, written into ``out`` (a fresh activation) when that gives the same
    result (same dtype and shape), saving an allocation per residual connection."""
    if out.dtype == other.dtype and out.shape == other.shape:
        return out.add_(other)
    return out + other


class ChannelGate(nn.Module):
    """CBAM channel attention: a shared MLP on average- and max-pooled features."""

    def __init__(self, dim: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(dim // reduction, 1)
        # Index layout (Flatten, Linear, ReLU, Linear) matches the published parameter names.
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3)))
        peak = self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(avg + peak)[:, :, None, None]


class _SpatialConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SpatialGate(nn.Module):
    """CBAM spatial attention: 7×7 conv on the per-pixel channel max and mean."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = _SpatialConv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Channel gate followed by spatial gate, on (B, C, H, W) tensors."""

    def __init__(self, dim: int, reduction: int = 16) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(dim, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusion(nn.Module):
    """Fuse a shared image feature (B, C_x, H, W) into per-object features (B, N, C_g, H, W).

    [image, object] → grouped residual block → + CBAM(·) → grouped residual block.
    """

    def __init__(self, image_dim: int, object_dim: int, mid_dim: int, out_dim: int) -> None:
        super().__init__()
        self.block1 = GroupedResBlock(image_dim + object_dim, mid_dim)
        self.attention = CBAM(mid_dim)
        self.block2 = GroupedResBlock(mid_dim, out_dim)

    def forward(self, image_feature: torch.Tensor, object_feature: torch.Tensor) -> torch.Tensor:
        g = self._first_block(image_feature, object_feature)
        attended = self.attention(g.flatten(0, 1)).view(g.shape)
        return self.block2(g + attended)

    def _first_block(self, image: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
        """``block1(cat([image broadcast to every object, objects], dim=2))`` without the
        concatenation: a convolution of a channel concatenation is the sum of convolutions
        of its parts, and the image part is the same for every object, so it is computed once
        per image instead of once per object (equal up to float summation order)."""
        block, c_x = self.block1, image.shape[1]
        b, n = objects.shape[:2]

        def split(conv: nn.Module, x: torch.Tensor, g: torch.Tensor, relu: bool) -> torch.Tensor:
            shared = conv_input_slice(conv, x, slice(0, c_x), bias=True, relu=relu)
            own = conv_input_slice(conv, g.flatten(0, 1), slice(c_x, None), bias=False, relu=relu)
            return own.view(b, n, *own.shape[1:]) + shared.unsqueeze(1)

        out = relu_conv(block.conv2, split(block.conv1, image, objects, True), inplace=True)
        if block.downsample is None:
            skip = torch.cat([image.unsqueeze(1).expand(-1, n, -1, -1, -1), objects], dim=2)
        else:
            skip = split(block.downsample, image, objects, False)
        return _add_into(out, skip)


def gated_update(gates: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Apply forget / update / candidate gates (B, N, 3C, H, W) to the hidden state (B, N, C, H, W).

    new h = f · h · (1 − u) + u · c, with f, u sigmoid and c tanh. This deliberately differs
    from a textbook GRU (the forget gate scales the kept state), as in the published model.
    """
    dim = hidden.shape[2]
    forget = torch.sigmoid(gates[:, :, :dim])
    update = torch.sigmoid(gates[:, :, dim : 2 * dim])
    candidate = torch.tanh(gates[:, :, 2 * dim :])
    return forget * hidden * (1 - update) + update * candidate


class SensoryDeepUpdate(nn.Module):
    """Refresh the sensory memory from a memory value (the mask encoder's "deep update")."""

    def __init__(self, input_dim: int, sensory_dim: int) -> None:
        super().__init__()
        self.transform = GroupedConv2d(input_dim + sensory_dim, sensory_dim * 3, 3, padding=1)

    def forward(self, g: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return gated_update(self.transform(torch.cat([g, hidden], dim=2)), hidden)


class SensoryUpdater(nn.Module):
    """Update the sensory memory from the decoder's stride-16, -8 and -4 features."""

    def __init__(self, dims: tuple[int, int, int], sensory_dim: int) -> None:
        super().__init__()
        self.g16_conv = GroupedConv2d(dims[0], sensory_dim, 1)
        self.g8_conv = GroupedConv2d(dims[1], sensory_dim, 1)
        self.g4_conv = GroupedConv2d(dims[2], sensory_dim, 1)
        self.transform = GroupedConv2d(sensory_dim * 2, sensory_dim * 3, 3, padding=1)

    def forward(
        self,
        g16: torch.Tensor,
        g8: torch.Tensor,
        g4_pooled: torch.Tensor,
        logits: torch.Tensor,
        hidden: torch.Tensor,
    ) -> torch.Tensor:
        """g16 / g8: (B, N, C, ·) decoder features at strides 16 and 8; ``g4_pooled``: the
        stride-4 features already area-pooled to stride 16 (so the caller may overwrite
        them); logits (B, N, H/4, W/4)."""
        # The stride-4 input is [g4, logits] pooled ×¼; pooling each part and concatenating
        # at stride 16 gives the same numbers without a full-resolution concatenation.
        pooled4 = torch.cat([g4_pooled, resize_grouped(logits.unsqueeze(2), 0.25, "area")], dim=2)
        g = (
            self.g16_conv(g16)
            + self.g8_conv(resize_grouped(g8, 0.5, "area"))
            + self.g4_conv(pooled4)
        )
        return gated_update(self.transform(torch.cat([g, hidden], dim=2)), hidden)


class UpsampleBlock(nn.Module):
    """×2 bilinear upsampling of object features, plus a shared skip feature, then a res block."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.out_conv = GroupedResBlock(in_dim, out_dim)

    def forward(self, skip: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        # Added into the fresh upsampled tensor: one full-resolution allocation fewer.
        g = resize_grouped(g, 2.0, "bilinear")
        skip = skip.unsqueeze(1)
        return self.out_conv(g.add_(skip) if g.dtype == skip.dtype else g + skip)


class SkipProcessor(nn.Module):
    """1×1 convs applied to the stride-8 and stride-4 image features before the decoder."""

    def __init__(self, in_dims: tuple[int, int], out_dims: tuple[int, int]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(
            nn.Conv2d(i, o, 1) for i, o in zip(in_dims, out_dims, strict=True)
        )

    def forward(self, f8: torch.Tensor, f4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transforms[0](f8), self.transforms[1](f4)


class SensoryLinearPredictor(nn.Module):
    """Auxiliary head: per pixel, the sensory state gives the weights and bias of a linear
    classifier applied to the image feature, producing stride-16 logits per object."""

    def __init__(self, image_dim: int, sensory_dim: int) -> None:
        super().__init__()
        self.projection = GroupedConv2d(sensory_dim, image_dim + 1, 1)

    def forward(self, image_feature: torch.Tensor, sensory: torch.Tensor) -> torch.Tensor:
        params = self.projection(sensory)
        weights, bias = params[:, :, :-1], params[:, :, -1]
        return (weights * image_feature.unsqueeze(1)).sum(dim=2) + bias
