"""Sizes of the propagation network: the published configuration and smaller variants."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from deva.modeling import mobilenet
from deva.modeling.resnet import stage_dims


@dataclass(frozen=True)
class PropagationConfig:
    """Architecture hyper-parameters. The defaults are the published DEVA network."""

    pixel_trunk: str = "resnet50"
    pixel_trunk_width: int = 64
    mask_trunk: str = "resnet18"
    mask_trunk_width: int = 64
    pixel_dim: int = 512
    key_dim: int = 64
    value_dim: int = 512
    sensory_dim: int = 512
    decoder_dim: int = 256

    @property
    def pixel_stage_dims(self) -> tuple[int, int, int]:
        """Channels of the pixel trunk's f4, f8, f16."""
        if self.pixel_trunk == "mobilenetv2":
            return mobilenet.STAGE_DIMS  # width 1.0, as the ImageNet weights
        return stage_dims(self.pixel_trunk, self.pixel_trunk_width)

    @property
    def mask_stage_dims(self) -> tuple[int, int, int]:
        """Channels of the mask trunk's stride-4, -8, -16 features."""
        return stage_dims(self.mask_trunk, self.mask_trunk_width)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PropagationConfig:
        """Build from a mapping; unknown keys are an error (they usually mean a typo)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown propagation config keys {unknown}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def preset(cls, name: str) -> PropagationConfig:
        """A named size: ``published`` (ResNet-50, 69 M parameters), ``small`` (half-width
        ResNet-18 trunks, 128-wide features, 3.2 M parameters: trains on a CPU and fits in the
        repository), ``mobile`` (an ImageNet MobileNetV2 pixel trunk to stride 16, a
        quarter-width ResNet-18 mask trunk, half of small's value and decoder widths, 1.2 M
        parameters) or ``tiny`` (tests)."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; expected one of {sorted(PRESETS)}")
        return PRESETS[name]


_SMALL = PropagationConfig(
    pixel_trunk="resnet18",
    pixel_trunk_width=32,
    mask_trunk="resnet18",
    mask_trunk_width=16,
    pixel_dim=128,
    key_dim=32,
    value_dim=128,
    sensory_dim=64,
    decoder_dim=64,
)

PRESETS: dict[str, PropagationConfig] = {
    "published": PropagationConfig(),
    "small": _SMALL,
    # an ImageNet MobileNetV2 pixel trunk and half of small's widths after it: the decoder
    # at strides 16 -> 4 took over half of small's frame (docs/benchmarks.md)
    "mobile": replace(
        _SMALL,
        pixel_trunk="mobilenetv2",
        mask_trunk_width=8,
        pixel_dim=64,
        value_dim=64,
        sensory_dim=32,
        decoder_dim=32,
    ),
    "tiny": PropagationConfig(
        pixel_trunk="resnet18",
        pixel_trunk_width=8,
        mask_trunk="resnet18",
        mask_trunk_width=8,
        pixel_dim=32,
        key_dim=16,
        value_dim=32,
        sensory_dim=16,
        decoder_dim=16,
    ),
}
