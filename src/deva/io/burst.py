"""BURST json (ground truth and predictions) with COCO RLE masks.

A file is ``{split, categories, sequences[]}``; a sequence has ``id``, ``dataset``, ``seq_name``,
``width``, ``height``, ``annotated_image_paths``, ``track_category_ids`` (track id string →
category id), ``neg_category_ids``, ``not_exhaustive_category_ids`` and ``segmentations``
aligned with ``annotated_image_paths``: per frame a dict track-id string → ``{rle, score, …}``
(COCO compressed RLE counts of an H×W mask, column-major). Predictions use the same layout.

Scoring a sequence with OWTA is :func:`deva.metrics.scoring.owta_inputs`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from deva.io import atomic

log = logging.getLogger(__name__)

#: TAO-OW distractor category ids ("Opening up Open-World Tracking"), removed from the GT.
DISTRACTOR_CATEGORY_IDS = frozenset(
    {
        20,
        63,
        108,
        180,
        188,
        204,
        212,
        247,
        303,
        403,
        407,
        415,
        490,
        504,
        507,
        513,
        529,
        567,
        569,
        588,
        672,
        691,
        702,
        708,
        711,
        720,
        736,
        737,
        798,
        813,
        815,
        827,
        831,
        851,
        877,
        883,
        912,
        971,
        976,
        1130,
        1133,
        1134,
        1169,
        1184,
        1220,
    }
)
#: The class id the class-agnostic evaluation looks up in ``not_exhaustive_category_ids``.
AGNOSTIC_CLASS_ID = 1
MAX_DETECTIONS = 300
SPLIT_FILES = {
    "all": "all_classes.json",
    "common": "common_classes.json",
    "uncommon": "uncommon_classes.json",
}


@dataclass
class BurstSequence:
    """One sequence of a BURST file (fields as in the json)."""

    id: Any
    dataset: str
    seq_name: str
    width: int | None
    height: int | None
    annotated_image_paths: list[str]
    segmentations: list[dict[str, dict[str, Any]]]
    track_category_ids: dict[str, int] = field(default_factory=dict)
    neg_category_ids: list[int] = field(default_factory=list)
    not_exhaustive_category_ids: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        """(dataset, seq_name): how predictions are matched to ground truth."""
        return (self.dataset, self.seq_name)

    def to_json(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update(
            id=self.id,
            dataset=self.dataset,
            seq_name=self.seq_name,
            width=self.width,
            height=self.height,
            annotated_image_paths=self.annotated_image_paths,
            segmentations=self.segmentations,
            track_category_ids=self.track_category_ids,
            neg_category_ids=self.neg_category_ids,
            not_exhaustive_category_ids=self.not_exhaustive_category_ids,
        )
        return out


@dataclass
class BurstFile:
    """A parsed BURST json."""

    split: str | None
    sequences: list[BurstSequence]
    categories: Any = None


def parse_burst(data: Mapping[str, Any], *, source: str = "<json>") -> BurstFile:
    """Parse a loaded BURST json dict, validating the fields the evaluation needs."""
    try:
        sequences = []
        for seq in data["sequences"]:
            paths = list(seq["annotated_image_paths"])
            segs = list(seq["segmentations"])
            if len(paths) != len(segs):
                raise ValueError(
                    f"{source}: sequence {seq.get('seq_name')!r} has {len(paths)} annotated "
                    f"images but {len(segs)} segmentation frames"
                )
            known = {
                "id",
                "dataset",
                "seq_name",
                "width",
                "height",
                "annotated_image_paths",
                "segmentations",
                "track_category_ids",
                "neg_category_ids",
                "not_exhaustive_category_ids",
            }
            sequences.append(
                BurstSequence(
                    id=seq.get("id"),
                    dataset=str(seq["dataset"]),
                    seq_name=str(seq["seq_name"]),
                    width=seq.get("width"),
                    height=seq.get("height"),
                    annotated_image_paths=paths,
                    segmentations=[dict(s) for s in segs],
                    track_category_ids={
                        str(k): int(v) for k, v in (seq.get("track_category_ids") or {}).items()
                    },
                    neg_category_ids=list(seq.get("neg_category_ids") or []),
                    not_exhaustive_category_ids=list(seq.get("not_exhaustive_category_ids") or []),
                    extra={k: v for k, v in seq.items() if k not in known},
                )
            )
        return BurstFile(data.get("split"), sequences, data.get("categories"))
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"{source}: malformed BURST json (missing or bad field {error})"
        ) from error


def load_burst(path: str | Path) -> BurstFile:
    """Read and parse a BURST json file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BURST json not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON ({error})") from error
    return parse_burst(data, source=str(path))


def encode_rle(mask: np.ndarray) -> str:
    """COCO compressed RLE counts (str) of an H×W binary mask."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    counts = rle["counts"]
    return counts.decode("ascii") if isinstance(counts, bytes) else counts


def decode_rle(counts: str | bytes, height: int, width: int) -> np.ndarray:
    """H×W uint8 mask from COCO compressed RLE counts."""
    return mask_utils.decode({"counts": counts, "size": [int(height), int(width)]})


def rle_box(counts: str | bytes, height: int, width: int) -> list[int]:
    """Integer (x, y, w, h) bounding box of an RLE mask ([0, 0, 0, 0] when empty)."""
    box = mask_utils.toBbox({"counts": counts, "size": [int(height), int(width)]})
    return [int(v) for v in box]


def match_predictions(
    gt: BurstFile, pred: BurstFile
) -> list[tuple[BurstSequence, BurstSequence | None]]:
    """Pair every ground-truth sequence with its prediction by (dataset, seq_name)."""
    if gt.split is not None and pred.split is not None and gt.split != pred.split:
        raise ValueError(f"prediction split {pred.split!r} differs from ground truth {gt.split!r}")
    by_key: dict[tuple[str, str], BurstSequence] = {}
    for seq in pred.sequences:
        if seq.key in by_key:
            raise ValueError(f"prediction lists sequence {seq.dataset}/{seq.seq_name} twice")
        by_key[seq.key] = seq
    missing = [s.key for s in gt.sequences if s.key not in by_key]
    if missing:
        log.warning(
            "%d ground-truth sequence(s) have no prediction (all their objects are "
            "missed), e.g. %s/%s",
            len(missing),
            *missing[0],
        )
    return [(s, by_key.get(s.key)) for s in gt.sequences]


def prediction_sequence(
    gt: BurstSequence,
    frames: Sequence[Mapping[int, Mapping[str, Any]]],
    *,
    image_paths: Sequence[str] | None = None,
) -> BurstSequence:
    """Build a predicted sequence in BURST layout.

    ``frames`` holds, per image path, ``track id → {"mask": H×W array | "rle": counts,
    "score": float, "category_id": int}``; image paths default to the ground truth's
    ``annotated_image_paths``.
    """
    paths = list(image_paths if image_paths is not None else gt.annotated_image_paths)
    if len(paths) != len(frames):
        raise ValueError(f"{len(paths)} image paths but {len(frames)} predicted frames")
    segmentations: list[dict[str, dict[str, Any]]] = []
    categories: dict[str, int] = {}
    for objects in frames:
        frame: dict[str, dict[str, Any]] = {}
        for track, det in objects.items():
            rle = det["rle"] if "rle" in det else encode_rle(det["mask"])
            entry: dict[str, Any] = {"rle": rle, "score": float(det.get("score", 1.0))}
            frame[str(int(track))] = entry
            if det.get("category_id") is not None:
                categories.setdefault(str(int(track)), int(det["category_id"]))
        segmentations.append(frame)
    return BurstSequence(
        id=gt.id,
        dataset=gt.dataset,
        seq_name=gt.seq_name,
        width=gt.width,
        height=gt.height,
        annotated_image_paths=paths,
        segmentations=segmentations,
        track_category_ids=categories,
    )


def write_burst(
    path: str | Path,
    sequences: Sequence[BurstSequence | Mapping[str, Any]],
    *,
    split: str | None,
    categories: Any = None,
) -> Path:
    """Write sequences (parsed, or already in their json form) as a BURST json file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [s.to_json() if isinstance(s, BurstSequence) else dict(s) for s in sequences]
    data: dict[str, Any] = {"split": split, "sequences": entries}
    if categories is not None:
        data["categories"] = categories
    atomic.write_text(path, json.dumps(data))
    return path
