"""The class-agnostic temporal propagation network (XMem-style, as published with DEVA).

The network is a set of explicit primitives — encode an image, project its key, encode
masks into memory values, read memory, segment, aggregate — used identically by the
training unroll and by the inference propagator. ``forward`` is deliberately not defined.

Shape legend: B batch, N objects, C channels, H×W image size, h×w = H/16×W/16.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from deva.modeling import memory_ops
from deva.modeling.checkpoint import (
    WeightsMismatchError,
    check_state_dict,
    infer_config,
    read_checkpoint,
)
from deva.modeling.config import PropagationConfig
from deva.modeling.mobilenet import MobileNetV2Trunk, stride_features
from deva.modeling.modules import (
    FeatureFusion,
    GroupedConv2d,
    SensoryDeepUpdate,
    SensoryLinearPredictor,
    SensoryUpdater,
    SkipProcessor,
    UpsampleBlock,
    resize_grouped,
)
from deva.modeling.resnet import ResNetTrunk

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class PixelFeatures:
    """Image features of one frame (computed once, reused by every consumer).

    f16: (B, C_pix, h, w) skip feature proj1(f16); f8: (B, C8, 2h, 2w); f4: (B, C4, 4h, 4w);
    key_source: (B, C_pix, h, w) proj2(f16), the key projection's input.
    """

    f16: torch.Tensor
    f8: torch.Tensor
    f4: torch.Tensor
    key_source: torch.Tensor


@dataclass
class KeyProjection:
    """key (B, C_k, h, w); shrinkage (B, 1, h, w) ≥ 1; selection (B, C_k, h, w) in (0, 1)."""

    key: torch.Tensor
    shrinkage: torch.Tensor
    selection: torch.Tensor


class PixelEncoder(nn.Module):
    """The pixel trunk to stride 16 (ResNet, or MobileNetV2 for the ``mobile`` preset) plus
    the two 1×1 projections of f16."""

    def __init__(self, config: PropagationConfig) -> None:
        super().__init__()
        if config.pixel_trunk == "mobilenetv2":
            # named as the ImageNet weights: pixel_encoder.features.<i>
            self.features = MobileNetV2Trunk().features
        else:
            trunk = ResNetTrunk(
                config.pixel_trunk, base_width=config.pixel_trunk_width, first_stage_name="res2"
            )
            # The published checkpoint names the trunk's layers directly under pixel_encoder.
            self.conv1, self.bn1, self.maxpool = trunk.conv1, trunk.bn1, trunk.maxpool
            self.res2, self.layer2, self.layer3 = trunk.res2, trunk.layer2, trunk.layer3
        self.mobilenet = config.pixel_trunk == "mobilenetv2"
        f16_dim = config.pixel_stage_dims[2]
        self.proj1 = nn.Conv2d(f16_dim, config.pixel_dim, 1)
        self.proj2 = nn.Conv2d(f16_dim, config.pixel_dim, 1)

    def _resnet_features(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(image))))
        f4 = self.res2(x)
        f8 = self.layer2(f4)
        return f4, f8, self.layer3(f8)

    def _mobilenet_features(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(stride_features(self.features, image))

    def forward(self, image: torch.Tensor) -> PixelFeatures:
        trunk = self._mobilenet_features if self.mobilenet else self._resnet_features
        f4, f8, f16 = trunk(image)
        return PixelFeatures(self.proj1(f16), f8, f4, self.proj2(f16))


class KeyProjector(nn.Module):
    """3×3 convs giving the key, the shrinkage (d² + 1) and the selection (sigmoid)."""

    def __init__(self, in_dim: int, key_dim: int) -> None:
        super().__init__()
        self.key_proj = nn.Conv2d(in_dim, key_dim, 3, padding=1)
        self.d_proj = nn.Conv2d(in_dim, 1, 3, padding=1)
        self.e_proj = nn.Conv2d(in_dim, key_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> KeyProjection:
        return KeyProjection(
            key=self.key_proj(x),
            shrinkage=self.d_proj(x).pow(2) + 1,
            selection=torch.sigmoid(self.e_proj(x)),
        )


class MaskEncoder(nn.Module):
    """Per object: [image, mask] → ResNet-18-style trunk (4-channel stem) → fusion with the
    image feature → memory value; optionally refreshes the sensory memory (deep update)."""

    def __init__(self, config: PropagationConfig) -> None:
        super().__init__()
        trunk = ResNetTrunk(
            config.mask_trunk,
            in_channels=4,
            base_width=config.mask_trunk_width,
            relu_after_pool=True,
        )
        self.conv1, self.bn1, self.maxpool = trunk.conv1, trunk.bn1, trunk.maxpool
        self.layer1, self.layer2, self.layer3 = trunk.layer1, trunk.layer2, trunk.layer3
        mask_f16 = config.mask_stage_dims[2]
        self.fuser = FeatureFusion(config.pixel_dim, mask_f16, config.value_dim, config.value_dim)
        self.sensory_update = SensoryDeepUpdate(config.value_dim, config.sensory_dim)

    def forward(
        self,
        image: torch.Tensor,
        f16: torch.Tensor,
        sensory: torch.Tensor,
        masks: torch.Tensor,
        *,
        deep_update: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, n = masks.shape[:2]
        x = self.relu_pool(self.bn1(self._stem(image, masks)))
        x = self.layer3(self.layer2(self.layer1(x)))
        value = self.fuser(f16, x.view(b, n, *x.shape[1:]))
        if deep_update:
            sensory = self.sensory_update(value, sensory)
        return value, sensory

    def _stem(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``conv1(cat([image, mask]))`` for every object, (B·N, C, H/2, W/2): the image's
        three input channels are convolved once per image, each mask's channel per object
        (a convolution of a channel concatenation is the sum over its parts)."""
        b, n = masks.shape[:2]
        conv, c = self.conv1, image.shape[1]
        w = conv.weight
        shared = F.conv2d(image, w[:, :c], conv.bias, stride=conv.stride, padding=conv.padding)
        own = F.conv2d(
            masks.flatten(0, 1).unsqueeze(1).to(image.dtype),
            w[:, c:],
            None,
            stride=conv.stride,
            padding=conv.padding,
        )
        out = own.view(b, n, *own.shape[1:]) + shared.unsqueeze(1)
        return out.flatten(0, 1)

    def relu_pool(self, x: torch.Tensor) -> torch.Tensor:
        # Published stem order: max-pool before ReLU.
        return F.relu(self.maxpool(x))


class MaskDecoder(nn.Module):
    """Memory readout + sensory + previous mask → per-object logits at stride 4."""

    def __init__(self, config: PropagationConfig) -> None:
        super().__init__()
        _, f8_dim, _ = config.pixel_stage_dims
        f4_dim = config.pixel_stage_dims[0]
        v, d = config.value_dim, config.decoder_dim
        self.fuser = FeatureFusion(config.pixel_dim, v, v, v)
        self.sensory_compress = GroupedConv2d(config.sensory_dim + 1, v, 1)
        self.sensory_update = SensoryUpdater((v, d, d + 1), config.sensory_dim)
        self.decoder_feat_proc = SkipProcessor((f8_dim, f4_dim), (v, d))
        self.up_16_8 = UpsampleBlock(v, d)
        self.up_8_4 = UpsampleBlock(d, d)
        self.pred = nn.Conv2d(d, 1, 3, padding=1)
        self.sensory_linear_pred = SensoryLinearPredictor(config.pixel_dim, config.sensory_dim)

    def forward(
        self,
        features: PixelFeatures,
        memory_readout: torch.Tensor,
        sensory: torch.Tensor,
        last_mask: torch.Tensor,
        *,
        update_sensory: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, n = memory_readout.shape[:2]
        last_mask16 = F.interpolate(last_mask, size=memory_readout.shape[-2:], mode="area")
        g16 = memory_readout + self.sensory_compress(
            torch.cat([sensory, last_mask16.unsqueeze(2)], dim=2)
        )
        g16 = self.fuser(features.f16, g16)
        f8, f4 = self.decoder_feat_proc(features.f8, features.f4)
        # Each full-resolution temporary is dropped as soon as it is used (peak memory).
        g8 = self.up_16_8(f8, g16)
        del f8
        g4 = self.up_8_4(f4, g8)
        del f4
        g4_pooled = resize_grouped(g4, 0.25, "area") if update_sensory else None
        # Without autograd g4 is not needed after this: ReLU in place (no fresh stride-4 copy).
        relu_g4 = F.relu(g4.flatten(0, 1), inplace=not torch.is_grad_enabled())
        logits = self.pred(relu_g4).view(b, n, *g4.shape[-2:])
        del g4, relu_g4
        if g4_pooled is not None:
            sensory = self.sensory_update(g16, g8, g4_pooled, logits, sensory)
        return sensory, logits


class PropagationModel(nn.Module):
    """The temporal propagation network. Call its named methods; ``forward`` refuses to run.

    Inputs are ImageNet-normalised RGB images whose sides are multiples of 16
    (see :func:`deva.inference.preprocess.pad_to_multiple`).
    """

    def __init__(self, config: PropagationConfig | None = None) -> None:
        super().__init__()
        self.config = config or PropagationConfig()
        self.pixel_encoder = PixelEncoder(self.config)
        self.mask_encoder = MaskEncoder(self.config)
        self.key_proj = KeyProjector(self.config.pixel_dim, self.config.key_dim)
        self.mask_decoder = MaskDecoder(self.config)

    def forward(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError(
            "PropagationModel has no forward(); call encode_image / project_key / encode_mask / "
            "read_memory / segment, or use deva.inference (Propagator) or the training module"
        )

    @classmethod
    def from_pretrained(
        cls,
        path_or_url: str | Path,
        config: PropagationConfig | None = None,
        *,
        map_location: str | torch.device = "cpu",
    ) -> PropagationModel:
        """Build a model and load weights strictly: the published DEVA checkpoint, our
        Lightning checkpoints or a plain state dict (local path or URL). The architecture is
        taken from ``config``, else from the checkpoint, else inferred from tensor shapes."""
        state, stored = read_checkpoint(path_or_url, map_location=map_location)
        model = cls(config or stored or infer_config(state))
        return model._load_from(state, path_or_url)

    def load_weights(
        self, path_or_url: str | Path, *, map_location: str | torch.device = "cpu"
    ) -> PropagationModel:
        """Load weights of any supported format into this model, strictly; returns it."""
        state, _ = read_checkpoint(path_or_url, map_location=map_location)
        return self._load_from(state, path_or_url)

    def _load_from(self, state: dict[str, torch.Tensor], source: str | Path) -> PropagationModel:
        """:meth:`load_state`, its mismatch error naming the file the weights came from."""
        try:
            return self.load_state(state)
        except WeightsMismatchError as error:
            raise WeightsMismatchError(f"{source}: {error}") from None

    def load_state(self, state: dict[str, torch.Tensor]) -> PropagationModel:
        """Load a network state dict strictly, with one error naming what does not match."""
        check_state_dict(self, state)
        self.load_state_dict(state, strict=True)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def init_sensory(
        self,
        batch: int,
        num_objects: int,
        feature_size: tuple[int, int],
        *,
        like: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A zero sensory memory (B, N, C_s, h, w)."""
        h, w = feature_size
        kwargs = (
            {"device": self.device}
            if like is None
            else {"device": like.device, "dtype": like.dtype}
        )
        return torch.zeros(batch, num_objects, self.config.sensory_dim, h, w, **kwargs)

    def encode_image(self, image: torch.Tensor) -> PixelFeatures:
        """Multi-scale features of normalised images (B, 3, H, W), H and W multiples of 16."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(image.shape)}")
        if image.shape[-2] % 16 or image.shape[-1] % 16:
            raise ValueError(
                f"image size {tuple(image.shape[-2:])} is not a multiple of 16; "
                "pad it with deva.inference.preprocess.pad_to_multiple"
            )
        return self.pixel_encoder(image)

    def project_key(self, features: PixelFeatures) -> KeyProjection:
        """Key, shrinkage and selection of a frame from its pixel features."""
        return self.key_proj(features.key_source)

    def encode_mask(
        self,
        image: torch.Tensor,
        features: PixelFeatures,
        sensory: torch.Tensor,
        masks: torch.Tensor,
        *,
        deep_update: bool = True,
        chunk_size: int = -1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory values of each object's mask, and the (deep-updated) sensory memory.

        Args:
            image: (B, 3, H, W) the normalised frame.
            features: that frame's :class:`PixelFeatures`.
            sensory: (B, N, C_s, h, w).
            masks: (B, N, H, W) per-object probabilities in [0, 1].
            chunk_size: process at most this many objects at a time (-1: all).

        Returns:
            value (B, N, C_v, h, w), sensory (B, N, C_s, h, w).
        """
        self._check_objects(masks, sensory)
        values, sensories = [], []
        for sl in _chunks(masks.shape[1], chunk_size):
            v, s = self.mask_encoder(
                image, features.f16, sensory[:, sl], masks[:, sl], deep_update=deep_update
            )
            values.append(v)
            sensories.append(s)
        return torch.cat(values, dim=1), torch.cat(sensories, dim=1)

    def read_memory(
        self,
        query: KeyProjection,
        memory_key: torch.Tensor,
        memory_shrinkage: torch.Tensor,
        memory_value: torch.Tensor,
        *,
        top_k: int | None = None,
    ) -> torch.Tensor:
        """Read per-object memory values for a query frame (:func:`memory_ops.read_memory`,
        the read inference and alignment use too; the affinity is computed in float32).

        Args:
            query: the query frame's key projection (key and selection are used).
            memory_key: (B, C_k, M) flattened memory keys.
            memory_shrinkage: (B, 1, M).
            memory_value: (B, N, C_v, M).
            top_k: keep the k strongest memory elements per query pixel (None: full softmax).

        Returns:
            (B, N, C_v, h, w) readout.
        """
        h, w = query.key.shape[-2:]
        out = memory_ops.read_memory(
            memory_key,
            memory_shrinkage,
            query.key.flatten(2),
            query.selection.flatten(2),
            memory_value,
            top_k,
        )
        return out.view(*memory_value.shape[:3], h, w)

    def segment(
        self,
        features: PixelFeatures,
        memory_readout: torch.Tensor,
        sensory: torch.Tensor,
        last_mask: torch.Tensor,
        *,
        update_sensory: bool = True,
        chunk_size: int = -1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode per-object logits at stride 4 and update the sensory memory.

        Args:
            memory_readout: (B, N, C_v, h, w); sensory: (B, N, C_s, h, w);
            last_mask: (B, N, H, W) the previous frame's object probabilities.

        Returns:
            sensory (B, N, C_s, h, w), logits (B, N, H/4, W/4).
        """
        self._check_objects(last_mask, sensory)
        sensories, logits = [], []
        for sl in _chunks(memory_readout.shape[1], chunk_size):
            s, lg = self.mask_decoder(
                features,
                memory_readout[:, sl],
                sensory[:, sl],
                last_mask[:, sl],
                update_sensory=update_sensory,
            )
            sensories.append(s)
            logits.append(lg)
        return torch.cat(sensories, dim=1), torch.cat(logits, dim=1)

    def aux_logits(self, features: PixelFeatures, sensory: torch.Tensor) -> torch.Tensor:
        """Auxiliary stride-16 logits (B, N, h, w) predicted from the sensory memory alone."""
        return self.mask_decoder.sensory_linear_pred(features.f16, sensory)

    @staticmethod
    def aggregate(logits: torch.Tensor, *, upsample: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft aggregation of per-object logits (B, N, h', w') into a background + N softmax.

        Returns logits and probabilities (B, N + 1, h'·upsample, w'·upsample); channel 0 is
        the background with probability ∝ Π(1 − p_i).
        """
        agg = aggregate_probabilities(torch.sigmoid(logits))
        if upsample != 1:
            agg = F.interpolate(agg, scale_factor=upsample, mode="bilinear", align_corners=False)
        return agg, torch.softmax(agg, dim=1)

    @staticmethod
    def _check_objects(masks: torch.Tensor, sensory: torch.Tensor) -> None:
        if masks.shape[:2] != sensory.shape[:2]:
            raise ValueError(
                f"masks are (B, N) = {tuple(masks.shape[:2])} but sensory memory is "
                f"{tuple(sensory.shape[:2])}"
            )


def aggregate_probabilities(prob: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Logits of {background, objects} from independent object probabilities along ``dim``.

    background = Π(1 − p_i); all clamped to [1e-7, 1 − 1e-7]; logit = log(p / (1 − p)).
    """
    background = torch.prod(1 - prob, dim=dim, keepdim=True)
    stacked = torch.cat([background, prob], dim=dim).clamp(1e-7, 1 - 1e-7)
    return torch.log(stacked / (1 - stacked))


def _chunks(total: int, chunk_size: int) -> list[slice]:
    if chunk_size is None or chunk_size <= 0 or chunk_size >= total:
        return [slice(0, total)]
    return [slice(i, min(i + chunk_size, total)) for i in range(0, total, chunk_size)]
