"""ResNet trunks up to stride 16, with torchvision-compatible parameter names.

Only the parts the propagation network uses are built: the stem and the first three
stages. Block and parameter names (``conv1``, ``bn1``, ``downsample.0`` ...) follow
torchvision so ImageNet state dicts load by name.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3×3 convs with batch norm (ResNet-18/34 block)."""

    expansion = 1

    def __init__(self, in_dim: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_dim = width * self.expansion
        self.conv1 = nn.Conv2d(in_dim, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_dim, out_dim, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(_add_into(out, identity))


class Bottleneck(nn.Module):
    """1×1 → 3×3 (strided) → 1×1 bottleneck (ResNet-50 block, torchvision's v1.5)."""

    expansion = 4

    def __init__(self, in_dim: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_dim = width * self.expansion
        self.conv1 = nn.Conv2d(in_dim, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_dim, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_dim)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_dim, out_dim, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(_add_into(out, identity))


def _add_into(out: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``out + other`` written into ``out`` (a fresh activation) when dtype and shape match."""
    if out.dtype == other.dtype and out.shape == other.shape:
        return out.add_(other)
    return out + other


def _shortcut(in_dim: int, out_dim: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_dim == out_dim:
        return None
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, 1, stride=stride, bias=False), nn.BatchNorm2d(out_dim)
    )


BLOCKS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6)),
}


def make_stage(
    block: type[BasicBlock] | type[Bottleneck], in_dim: int, width: int, depth: int, stride: int
) -> nn.Sequential:
    """A ResNet stage of ``depth`` blocks; the first one carries the stride."""
    layers = [block(in_dim, width, stride)]
    layers += [block(width * block.expansion, width) for _ in range(depth - 1)]
    return nn.Sequential(*layers)


def stage_dims(arch: str, base_width: int) -> tuple[int, int, int]:
    """Output channels of the three stages (strides 4, 8, 16) of ``arch``."""
    block, _ = _lookup(arch)
    return tuple(base_width * m * block.expansion for m in (1, 2, 4))  # type: ignore[return-value]


def _lookup(arch: str) -> tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int]]:
    if arch not in BLOCKS:
        raise ValueError(f"unknown ResNet trunk {arch!r}; expected one of {sorted(BLOCKS)}")
    return BLOCKS[arch]


class ResNetTrunk(nn.Module):
    """Stem + three stages of a ResNet; returns the features at strides 4, 8 and 16.

    ``first_stage_name`` lets the published pixel encoder call its first stage ``res2``.
    ``relu_after_pool`` reproduces the published mask encoder's stem order
    (conv, BN, max-pool, ReLU); torchvision's order is conv, BN, ReLU, max-pool.
    """

    def __init__(
        self,
        arch: str,
        *,
        in_channels: int = 3,
        base_width: int = 64,
        first_stage_name: str = "layer1",
        relu_after_pool: bool = False,
    ) -> None:
        super().__init__()
        block, depths = _lookup(arch)
        self.first_stage_name = first_stage_name
        self.relu_after_pool = relu_after_pool
        self.conv1 = nn.Conv2d(in_channels, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        dims = stage_dims(arch, base_width)
        self.add_module(first_stage_name, make_stage(block, base_width, base_width, depths[0], 1))
        self.layer2 = make_stage(block, dims[0], base_width * 2, depths[1], 2)
        self.layer3 = make_stage(block, dims[1], base_width * 4, depths[2], 2)
        self.out_dims = dims

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.bn1(self.conv1(x))
        if self.relu_after_pool:
            x = self.relu(self.maxpool(x))
        else:
            x = self.maxpool(self.relu(x))
        f4 = getattr(self, self.first_stage_name)(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f4, f8, f16
