"""Weights in and out of a model: exporting, ImageNet
initialisation of the trunks (torchvision-format ResNet state dicts).

Reading checkpoint files is :mod:`deva.modeling.checkpoint`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from deva.modeling.checkpoint import WeightsMismatchError, resolve_path
from deva.modeling.propagation import PropagationModel

log = logging.getLogger(__name__)


def save_weights(model: PropagationModel, path: str | Path, *, half: bool = False) -> Path:
    """Export weights with their config, so :meth:`PropagationModel.from_pretrained` rebuilds
    the model from the file alone. ``half`` stores floating tensors as fp16."""
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
        for k, v in model.state_dict().items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_config": model.config.to_dict(), "state_dict": state}, path)
    return path


def _as_state(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(source, Mapping):
        return dict(source)
    return dict(torch.load(resolve_path(source), map_location="cpu", weights_only=True))


def init_from_imagenet(
    model: PropagationModel,
    pixel_trunk: str | Path | Mapping[str, torch.Tensor] | None = None,
    mask_trunk: str | Path | Mapping[str, torch.Tensor] | None = None,
    *,
    generator: torch.Generator | None = None,
) -> None:
    """Copy torchvision-format ImageNet ResNet weights into the two trunks.

    The pixel encoder's first stage is called ``res2`` (torchvision: ``layer1``). The mask
    encoder's stem takes 4 channels: the RGB filters are copied and the extra mask channel is
    initialised orthogonally. ``layer4`` and ``fc`` of the source are ignored.
    """
    if pixel_trunk is not None:
        mapped = {}
        for k, v in _as_state(pixel_trunk).items():
            if k.startswith(("layer4.", "fc.")):
                continue
            mapped["res2." + k[len("layer1.") :] if k.startswith("layer1.") else k] = v
        _copy_trunk(model.pixel_encoder, mapped, "pixel encoder")
    if mask_trunk is not None:
        source = {
            k: v for k, v in _as_state(mask_trunk).items() if not k.startswith(("layer4.", "fc."))
        }
        stem = source.get("conv1.weight")
        if stem is not None and stem.shape[1] == 3:
            extra = torch.empty(stem.shape[0], 1, *stem.shape[2:])
            nn.init.orthogonal_(extra, generator=generator)
            source["conv1.weight"] = torch.cat([stem, extra.to(stem.dtype)], dim=1)
        _copy_trunk(model.mask_encoder, source, "mask encoder")


def _copy_trunk(module: nn.Module, source: Mapping[str, torch.Tensor], what: str) -> None:
    own = module.state_dict()
    trunk_keys = [
        k for k in own if k.split(".")[0] in ("conv1", "bn1", "res2", "layer1", "layer2", "layer3")
    ]
    missing = [k for k in trunk_keys if k not in source]
    shapes = [
        f"{k}: {tuple(source[k].shape)} vs {tuple(own[k].shape)}"
        for k in trunk_keys
        if k in source and source[k].shape != own[k].shape
    ]
    if missing or shapes:
        raise WeightsMismatchError(
            f"ImageNet weights do not fit the {what}: missing {missing[:3]}, shapes {shapes[:3]}"
        )
    module.load_state_dict({k: source[k] for k in trunk_keys}, strict=False)
