"""SAM 2, SAM 3's tracker and EdgeTAM as propagation backends (``propagator=sam2|sam3|edgetam``).

:class:`SamVideoBackend` drives a ``transformers`` promptable video model
(``Sam2VideoModel``, ``Sam3TrackerVideoModel``, ``EdgeTamVideoModel``) through the tracker's
protocol (:class:`~deva.inference.backend.PropagationBackend`), one frame at a time, so the
decoupled tracker's consensus, merging and deletion run unchanged on top of it:

- ``encode`` runs the image encoder once per frame (resized to the model's square input and
  normalised the way the model was trained); ``predict`` conditions every live object on its
  own memory and decodes it (SAM's memory attention + mask decoder), and the objects' mask
  probabilities are soft-aggregated into one segmentation, as with our network;
- ``commit`` turns given masks (new objects, or objects the tracker re-initialises with
  merged detections) into *conditioning* frames (SAM's "mask as output": the mask itself is
  the prediction, its memory and object pointer are encoded from it); every other object
  writes its own prediction to memory, cut where a given mask is foreground. SAM models write
  memory on every frame (``mem_every`` does not apply);
- memory is bounded: each object keeps its first conditioning frame plus the most recent
  ``max_conditioning - 1``, and the non-conditioning frames that memory attention and the
  object pointers can still reach (``num_maskmem`` and ``max_object_pointers_in_encoder``
  frames back);
- ``align`` (in-clip consensus) conditions a throw-away memory on the source frame's masks
  and predicts the target frame from it.

The frame-level calls are the models' own single-frame inference and memory encoder
(``_run_single_frame_inference``, ``_encode_new_memory``: private ``transformers`` methods,
checked when the backend is built), with per-object state kept here, so objects can be
added and deleted at any frame and the state saved and resumed.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from deva.inference.alignment import one_hot_segments
from deva.inference.backend import PropagationResult, committed_masks, merge_given
from deva.inference.objects import ObjectRegistry
from deva.inference.preprocess import IMAGENET_MEAN, IMAGENET_STD, probabilities_to_ids
from deva.modeling.propagation import aggregate_probabilities
from deva.types import Segmentation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamFamily:
    """A ``transformers`` promptable video model class, its default hub id and its input
    normalisation (when the model folder's ``preprocessor_config.json`` names none)."""

    model_class: str
    default_source: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


FAMILIES: dict[str, SamFamily] = {
    "sam2": SamFamily("Sam2VideoModel", "facebook/sam2.1-hiera-tiny", IMAGENET_MEAN, IMAGENET_STD),
    "sam3": SamFamily("Sam3TrackerVideoModel", "facebook/sam3", (0.5,) * 3, (0.5,) * 3),
    "edgetam": SamFamily("EdgeTamVideoModel", "yonigozlan/EdgeTAM-hf", IMAGENET_MEAN, IMAGENET_STD),
}

#: logits SAM gives pixels of a mask used as output: background -10, foreground +10
_MASK_LOGIT = 10.0
#: the per-object output entries memory attention and object pointers read
_MEMORY_KEYS = ("maskmem_features", "maskmem_pos_enc", "object_pointer", "object_score_logits")
_REQUIRED = ("_run_single_frame_inference", "_encode_new_memory", "get_image_features")


@dataclass
class SamFrame:
    """A frame encoded by :meth:`SamVideoBackend.encode`: the image encoder's multi-scale
    features and position encodings (flattened to (HW, 1, C)) and the frame size (H, W)."""

    vision_feats: list[torch.Tensor]
    vision_pos: list[torch.Tensor]
    size: tuple[int, int]


class _Session:
    """What the models' single-frame inference reads of a ``transformers`` inference session:
    the frame features by frame index, one object's outputs (``output_dict_per_obj[0]``), the
    state dtype and the frame count (None: streaming)."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.num_frames = None
        self.output_dict_per_obj: dict[int, dict[str, dict[int, dict[str, Any]]]] = {}
        self.cache = self
        self._frames: dict[int, dict[str, list[torch.Tensor]]] = {}

    def put(self, frame_idx: int, frame: SamFrame) -> None:
        self._frames[frame_idx] = {
            "vision_feats": frame.vision_feats,
            "vision_pos_embeds": frame.vision_pos,
        }

    def get_vision_features(self, frame_idx: int) -> dict[str, list[torch.Tensor]] | None:
        return self._frames.get(frame_idx)


def _empty_memory() -> dict[str, dict[int, dict[str, Any]]]:
    return {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}


class SamVideoBackend:
    """A SAM-family video model as a propagation backend (see the module docstring).

    Args:
        model: a ``transformers`` ``Sam2VideoModel`` / ``Sam3TrackerVideoModel`` /
            ``EdgeTamVideoModel`` (in eval mode, on its device and dtype).
        name: the backend's name (``sam2``, ``sam3``, ``edgetam``), written to summaries.
        mean, std: the model's input normalisation (frames arrive ImageNet-normalised).
        max_conditioning: conditioning (given-mask) frames kept per object: the first and the
            most recent ones.
    """

    def __init__(
        self,
        model: Any,
        *,
        name: str = "sam2",
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        max_conditioning: int = 4,
    ) -> None:
        missing = [m for m in _REQUIRED if not callable(getattr(model, m, None))]
        if missing:
            raise ValueError(
                f"{type(model).__name__} lacks {', '.join(missing)}: propagator={name} needs a "
                "transformers SAM 2 / SAM 3 tracker / EdgeTAM video model (transformers 5.x)"
            )
        if max_conditioning < 1:
            raise ValueError(f"max_conditioning must be >= 1, got {max_conditioning}")
        self.model = model.eval()
        self.name = name
        self.max_conditioning = max_conditioning
        param = next(model.parameters())
        self._device, self._dtype = param.device, param.dtype
        self._size = int(model.config.image_size)
        self._input_mean = torch.tensor(IMAGENET_MEAN, device=self._device).view(3, 1, 1)
        self._input_std = torch.tensor(IMAGENET_STD, device=self._device).view(3, 1, 1)
        self._mean = torch.tensor(mean, device=self._device, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(std, device=self._device, dtype=torch.float32).view(3, 1, 1)
        signature = inspect.signature(model._run_single_frame_inference).parameters
        self._pass_mem_flag = "run_mem_encoder" in signature
        # EdgeTAM's memory encoder adds its occlusion embedding for one object at a time
        self._batched_memory = hasattr(model, "_batch_encode_memories")
        config = model.config
        self._window = max(int(model.num_maskmem), int(config.max_object_pointers_in_encoder))
        self.reset()

    # ---- protocol ----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def object_ids(self) -> list[int]:
        """Objects with memory, in the registry's order."""
        return [o for o in self.objects.ids if o in self._memory]

    def reset(self) -> None:
        """Forget objects, memory and the frame counter."""
        self.objects = ObjectRegistry()
        self._memory: dict[int, dict[str, dict[int, dict[str, Any]]]] = {}
        self._frame = -1
        self._session = _Session(self._dtype)
        self._pending: _Pending | None = None

    def fork(self) -> SamVideoBackend:
        """A new, empty backend sharing the model and settings."""
        twin = SamVideoBackend.__new__(SamVideoBackend)
        twin.__dict__.update(self.__dict__)
        twin.reset()
        return twin

    def pixels(self, image: torch.Tensor) -> torch.Tensor:
        """The model input (1, 3, S, S) of an ImageNet-normalised frame (3, H, W): resized to
        the model's square input and normalised the way the model was trained."""
        if image.ndim == 4:
            image = image[0]
        rgb = image.to(self._device).float() * self._input_std + self._input_mean
        pixels = F.interpolate(
            ((rgb - self._mean) / self._std)[None],
            size=(self._size, self._size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        return pixels.to(self._dtype)

    @torch.inference_mode()
    def encode(self, image: torch.Tensor) -> SamFrame:
        """Image-encoder features of a normalised frame (3, H, W)."""
        size = (int(image.shape[-2]), int(image.shape[-1]))
        out = self.model.get_image_features(self.pixels(image), return_dict=True)
        return SamFrame(list(out.fpn_hidden_states), list(out.fpn_position_encoding), size)

    @torch.inference_mode()
    def predict(
        self, image: torch.Tensor | None = None, *, features: Any = None, end: bool = False
    ) -> PropagationResult:
        """Every live object decoded from its memory on the next frame; nothing is stored
        until :meth:`commit`."""
        if features is None:
            if image is None:
                raise ValueError("predict() needs an image or its precomputed features")
            features = self.encode(image)
        if self._pending is not None:
            raise RuntimeError("predict() called twice without commit()")
        self._frame += 1
        self._session.put(self._frame, features)
        ids = self.object_ids
        outputs = {o: self._infer(self._session, self._memory[o], self._frame) for o in ids}
        prob = self._probabilities([outputs[o]["pred_masks"] for o in ids], features.size)
        self._pending = _Pending(features, outputs, prob, ids, end)
        return PropagationResult(prob, ids)

    @torch.inference_mode()
    def commit(
        self,
        mask: torch.Tensor | np.ndarray | None = None,
        objects: list[int] | None = None,
        *,
        keep_empty: bool = False,
    ) -> PropagationResult:
        """Merge given masks into the pending prediction (they win where foreground) and
        write the frame to memory: given objects as conditioning frames, the others from their
        own predictions. A *new* object with an empty mask is ignored unless ``keep_empty``."""
        pending, self._pending = self._pending, None
        if pending is None:
            raise RuntimeError("commit() without a pending predict()")
        size = pending.features.size
        given_ids, given = committed_masks(
            mask, objects, self._device, size, self._memory, keep_empty=keep_empty
        )
        for obj in given_ids:
            if obj not in self.objects:
                self.objects.add(obj)
        existing = self.object_ids  # objects deleted since predict() are gone
        predicted = None
        if existing == pending.object_ids:
            predicted = pending.prob
        elif existing:  # the probability of deleted objects goes to the background
            predicted = pending.prob[[0, *[pending.object_ids.index(o) + 1 for o in existing]]]
            predicted[0] = (1 - predicted[1:].sum(dim=0)).clamp(min=0)
        wanted = set(existing) | set(given_ids)
        ids = [o for o in self.objects.ids if o in wanted]
        like = predicted if predicted is not None else torch.zeros(1, device=self._device)
        prob = merge_given(predicted, given, given_ids, ids, size, like=like)
        if not pending.end and ids:
            self._write_memory(
                pending, given, given_ids, [o for o in existing if o not in given_ids]
            )
        return PropagationResult(prob, ids)

    def step(
        self,
        image: torch.Tensor | None = None,
        mask: torch.Tensor | np.ndarray | None = None,
        objects: list[int] | None = None,
        *,
        end: bool = False,
        features: Any = None,
        keep_empty: bool = False,
    ) -> PropagationResult:
        """:meth:`predict` then :meth:`commit`."""
        self.predict(image, features=features, end=end)
        return self.commit(mask, objects, keep_empty=keep_empty)

    def delete_objects(self, object_ids: list[int]) -> None:
        """Stop tracking objects: out of the registry, their memory dropped."""
        for obj in object_ids:
            self._memory.pop(obj, None)
        self.objects.remove([o for o in object_ids if o in self.objects])

    @torch.inference_mode()
    def align(self, sources: list[tuple[Any, Segmentation]], target: Any) -> list[Segmentation]:
        """Each source segmentation propagated onto the target frame (paper eq. 1) through a
        throw-away memory holding only the source frame; this backend's state is untouched."""
        results = []
        for frame, segmentation in sources:
            if frame.size != target.size:
                raise ValueError(f"source frame is {frame.size} but the target is {target.size}")
            ids, masks = one_hot_segments(segmentation, frame.size)
            if not ids:
                results.append(Segmentation(torch.zeros(target.size, dtype=torch.long), []))
                continue
            session = _Session(self._dtype)
            session.put(0, frame)
            session.put(1, target)
            memory = {o: _empty_memory() for o in ids}
            self._condition(session, memory, 0, ids, masks.to(self._device))
            logits = [self._infer(session, memory[o], 1)["pred_masks"] for o in ids]
            prob = self._probabilities(logits, target.size)
            out = probabilities_to_ids(prob, ids).cpu()
            present = set(torch.unique(out).tolist())
            kept = [dataclasses.replace(s) for s in segmentation.segments if s.id in present]
            results.append(Segmentation(mask=out, segments=kept))
        return results

    def state_dict(self) -> dict[str, Any]:
        """Objects, per-object memory and the frame counter, to resume exactly."""
        if self._pending is not None:
            raise RuntimeError("state_dict() between predict() and commit()")
        return {
            "backend": self.name,
            "objects": self.objects.state_dict(),
            "frame": self._frame,
            "memory": {
                int(o): {
                    kind: {
                        int(t): {k: v.cpu() for k, v in out.items()} for t, out in frames.items()
                    }
                    for kind, frames in memory.items()
                }
                for o, memory in self._memory.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of the same backend, keeping the registry."""
        if state.get("backend") != self.name:
            raise ValueError(f"state of propagator {state.get('backend')!r}, not {self.name!r}")
        self.objects.load_state_dict(state["objects"])
        self._frame = int(state["frame"])
        self._memory = {
            int(o): {
                kind: {
                    int(t): {k: v.to(self._device) for k, v in out.items()}
                    for t, out in frames.items()
                }
                for kind, frames in memory.items()
            }
            for o, memory in state["memory"].items()
        }
        self._session = _Session(self._dtype)
        self._pending = None

    # ---- model calls -------------------------------------------------------------------
    def _infer(
        self,
        session: _Session,
        memory: dict[str, dict[int, dict[str, Any]]],
        frame_idx: int,
        mask_inputs: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """One object on one frame: decoded from its memory, or ``mask_inputs`` used as the
        output. Returns low-resolution logits (``pred_masks``), the object pointer and score."""
        session.output_dict_per_obj = {0: memory}
        options = {"run_mem_encoder": False} if self._pass_mem_flag else {}
        return self.model._run_single_frame_inference(
            inference_session=session,
            frame_idx=frame_idx,
            obj_idx=0,
            batch_size=1,
            is_init_cond_frame=mask_inputs is not None,
            point_inputs=None,
            mask_inputs=mask_inputs,
            reverse=False,
            streaming=True,
            **options,
        )

    def _probabilities(self, logits: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """(N + 1, H, W) soft-aggregated probabilities from per-object (1, 1, h, w) logits."""
        if not logits:
            return torch.ones(1, *size, device=self._device)
        stacked = torch.cat(logits, dim=0).float()
        up = F.interpolate(stacked, size=size, mode="bilinear", align_corners=False)[:, 0]
        return torch.softmax(aggregate_probabilities(torch.sigmoid(up), dim=0), dim=0)

    def _square(self, masks: torch.Tensor) -> torch.Tensor:
        """(N, H, W) masks resized to the model input, (N, 1, S, S)."""
        return F.interpolate(
            masks[:, None].float(),
            size=(self._size, self._size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )

    def _condition(
        self,
        session: _Session,
        memory: dict[int, dict[str, dict[int, dict[str, Any]]]],
        frame_idx: int,
        ids: list[int],
        masks: torch.Tensor,
    ) -> None:
        """Given (N, H, W) masks of ``ids`` become conditioning frames at ``frame_idx``."""
        binary = (self._square(masks) > 0.5).to(self._dtype)
        outputs = [
            self._infer(session, memory[o], frame_idx, binary[i : i + 1]) for i, o in enumerate(ids)
        ]
        high_res = binary * (2 * _MASK_LOGIT) - _MASK_LOGIT
        self._encode(session, frame_idx, outputs, high_res, from_prompt=True)
        for obj, out in zip(ids, outputs, strict=True):
            memory[obj]["non_cond_frame_outputs"].pop(frame_idx, None)
            memory[obj]["cond_frame_outputs"][frame_idx] = out

    def _encode(
        self,
        session: _Session,
        frame_idx: int,
        outputs: list[dict[str, Any]],
        high_res: torch.Tensor,
        *,
        from_prompt: bool,
    ) -> None:
        """Memory features of every output (in place) from (N, 1, S, S) mask logits; the
        outputs keep only what memory reads."""
        if not outputs:
            return
        feats = session.get_vision_features(frame_idx)["vision_feats"][-1]
        scores = torch.cat([out["object_score_logits"] for out in outputs], dim=0)

        def encode(rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
            return self.model._encode_new_memory(
                current_vision_feats=feats.expand(-1, rows.stop - rows.start, -1),
                pred_masks_high_res=high_res[rows].to(self._dtype),
                object_score_logits=scores[rows],
                is_mask_from_pts=from_prompt,
            )

        n = len(outputs)
        if self._batched_memory:  # SAM 2 layout: (HW, objects, C)
            features, positions = encode(slice(0, n))
            encoded = [(features[:, i : i + 1], positions[:, i : i + 1]) for i in range(n)]
        else:  # EdgeTAM: (1, latents, C), one object per call
            encoded = [encode(slice(i, i + 1)) for i in range(n)]
        for out, (features, positions) in zip(outputs, encoded, strict=True):
            out["maskmem_features"], out["maskmem_pos_enc"] = features, positions
            for key in [k for k in out if k not in _MEMORY_KEYS]:
                del out[key]

    def _write_memory(
        self,
        pending: _Pending,
        given: torch.Tensor | None,
        given_ids: list[int],
        predicted_ids: list[int],
    ) -> None:
        """The committed frame into memory: given objects as conditioning frames, the others
        from their own logits, cut (to SAM's background logit) where given masks are
        foreground. Then old frames out of reach are dropped."""
        t = self._frame
        for obj in given_ids:
            self._memory.setdefault(obj, _empty_memory())
        if given_ids:
            self._condition(self._session, self._memory, t, given_ids, given)
        if predicted_ids:
            outputs = [pending.outputs[o] for o in predicted_ids]
            logits = torch.cat([out["pred_masks"] for out in outputs], dim=0).float()
            high_res = F.interpolate(
                logits, size=(self._size, self._size), mode="bilinear", align_corners=False
            )
            if given is not None:
                taken = self._square(given).amax(dim=0, keepdim=True) > 0.5
                high_res = high_res.masked_fill(taken, -_MASK_LOGIT)
            self._encode(self._session, t, outputs, high_res, from_prompt=False)
            for obj, out in zip(predicted_ids, outputs, strict=True):
                self._memory[obj]["non_cond_frame_outputs"][t] = out
        for memory in self._memory.values():
            self._prune(memory, t)

    def _prune(self, memory: dict[str, dict[int, dict[str, Any]]], t: int) -> None:
        """Bound one object's memory (see the module docstring)."""
        cond = memory["cond_frame_outputs"]
        if len(cond) > self.max_conditioning:
            frames = sorted(cond)
            keep = {frames[0], *frames[len(frames) - self.max_conditioning + 1 :]}
            for frame in frames:
                if frame not in keep:
                    del cond[frame]
        non_cond = memory["non_cond_frame_outputs"]
        for frame in [f for f in non_cond if f <= t - self._window]:
            del non_cond[frame]


@dataclass
class _Pending:
    """A prediction waiting for :meth:`SamVideoBackend.commit`."""

    features: SamFrame
    outputs: dict[int, dict[str, Any]]
    prob: torch.Tensor  # (N + 1, H, W) for object_ids
    object_ids: list[int]
    end: bool


def load_sam_video(
    name: str,
    source: str | Path | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    local_files_only: bool | None = None,
    max_conditioning: int = 4,
) -> SamVideoBackend:
    """Backend ``name`` (:data:`FAMILIES`) with its model from ``source`` (a hub id or a
    ``save_pretrained`` folder; None: the family's default hub id)."""
    from deva.segmenters.hf import (
        load_pretrained,
        normalisation,
        preprocessor_config,
        require_transformers,
    )

    if name not in FAMILIES:
        raise ValueError(
            f"unknown SAM video backend {name!r}; expected one of {', '.join(FAMILIES)}"
        )
    family = FAMILIES[name]
    transformers = require_transformers()
    source = str(source or family.default_source)
    try:
        model = load_pretrained(
            getattr(transformers, family.model_class).from_pretrained,
            source,
            what=f"propagator={name} model",
            local_files_only=local_files_only,
        )
    except ImportError as error:  # the published EdgeTAM's trunk is a timm model
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "import failed"
        raise ImportError(
            f"propagator={name} model {source!r} needs a missing package: {reason}"
        ) from None
    model = model.to(device=device, dtype=dtype).eval()
    config = preprocessor_config(source)
    norm = (
        normalisation(config)
        if "image_mean" in config
        else {"mean": family.mean, "std": family.std}
    )
    log.info(
        "propagator=%s: %s (%s, %d px input)",
        name,
        source,
        family.model_class,
        model.config.image_size,
    )
    return SamVideoBackend(model, name=name, max_conditioning=max_conditioning, **norm)
