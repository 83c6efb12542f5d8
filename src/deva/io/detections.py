"""Precomputed per-frame detections in the generic format.

Per frame ``<name>``: ``<name>.png`` holds the segment ids (palette PNG when all ids are
<= 255, otherwise an RGB-encoded id PNG) and ``<name>.json`` holds a list of
``{"id", "category_id", "score", "isthing"}`` objects, one per non-zero id in the PNG, plus
``"label"`` (a name) when a segment has one. With ``details=True`` every entry also has
``"label"``, ``"area"`` (pixels) and ``"box"`` (``[x0, y0, x1, y1]``, inclusive pixel
coordinates; null for an empty segment).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from deva.io import atomic
from deva.io.masks import read_mask_png, write_mask_png
from deva.types import Segment, Segmentation


def segment_boxes(mask: np.ndarray) -> dict[int, tuple[list[int], int]]:
    """Per non-zero id of an (H, W) id map: its box ``[x0, y0, x1, y1]`` (inclusive) and area."""
    mask = np.asarray(mask)
    out: dict[int, tuple[list[int], int]] = {}
    ids, inverse, counts = np.unique(mask.ravel(), return_inverse=True, return_counts=True)
    rows = np.repeat(np.arange(mask.shape[0]), mask.shape[1])
    cols = np.tile(np.arange(mask.shape[1]), mask.shape[0])
    for k, segment_id in enumerate(ids.tolist()):
        if segment_id == 0:
            continue
        where = inverse == k
        r, c = rows[where], cols[where]
        box = [int(c.min()), int(r.min()), int(c.max()), int(r.max())]
        out[int(segment_id)] = (box, int(counts[k]))
    return out


def segment_infos(seg: Segmentation, *, details: bool = False) -> list[dict]:
    """The JSON entries of a segmentation's segments (see the module docstring)."""
    mask = seg.mask.cpu().numpy() if isinstance(seg.mask, torch.Tensor) else np.asarray(seg.mask)
    geometry = segment_boxes(mask) if details else {}
    infos = []
    for s in seg.segments:
        info = {
            "id": int(s.id),
            "category_id": None if s.category_id is None else int(s.category_id),
            "score": None if s.score is None else float(s.score),
            "isthing": None if s.isthing is None else bool(s.isthing),
        }
        if details or s.label is not None:
            info["label"] = s.label
        if details:
            box, area = geometry.get(int(s.id), (None, 0))
            info["area"] = area
            info["box"] = box
        infos.append(info)
    return infos


def write_frame_segmentation(
    directory: str | Path, name: str, seg: Segmentation, *, details: bool = False
) -> None:
    """Write one frame's segmentation as ``<name>.png`` + ``<name>.json`` in ``directory``.

    ``details=True`` adds ``label``, ``area`` and ``box`` to every JSON entry.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    mask = seg.mask.cpu().numpy() if isinstance(seg.mask, torch.Tensor) else np.asarray(seg.mask)
    write_mask_png(directory / f"{name}.png", mask)
    infos = segment_infos(seg, details=details)
    atomic.write_text(directory / f"{name}.json", json.dumps(infos))


def read_frame_segmentation(directory: str | Path, name: str) -> Segmentation:
    """Read ``<name>.png`` + ``<name>.json``; ids in the PNG missing from the JSON are an error."""
    directory = Path(directory)
    png, meta = directory / f"{name}.png", directory / f"{name}.json"
    for path in (png, meta):
        if not path.is_file():
            raise FileNotFoundError(f"detection file not found: {path}")
    ids = read_mask_png(png).astype(np.int64)
    try:
        infos = json.loads(meta.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{meta}: invalid JSON ({error})") from error
    if not isinstance(infos, list):
        raise ValueError(f"{meta}: expected a list of segments, got {type(infos).__name__}")
    segments = []
    for info in infos:
        if "id" not in info:
            raise ValueError(f"{meta}: segment without an 'id': {info}")
        segments.append(
            Segment(
                id=int(info["id"]),
                category_id=info.get("category_id"),
                score=info.get("score"),
                isthing=info.get("isthing"),
                label=info.get("label"),
            )
        )
    listed = {s.id for s in segments}
    present = set(np.unique(ids).tolist()) - {0}
    if present - listed:
        missing = sorted(present - listed)[:5]
        raise ValueError(f"{png}: ids {missing} are in the mask but not listed in {meta.name}")
    # Listed segments absent from the mask (fully occluded) are dropped: they carry no pixels.
    segments = [s for s in segments if s.id in present]
    return Segmentation(mask=torch.from_numpy(ids.astype(np.int64)), segments=segments)
