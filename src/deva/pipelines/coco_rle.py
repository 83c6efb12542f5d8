"""``coco_rle.json`` of a tracked video, written without holding the video's masks in RAM.

The layout is YouTube-VIS's: ``videos``, ``categories`` and ``annotations``, one per object
with ``label``, ``score``, ``first_frame`` / ``last_frame`` and, per frame of the video, a COCO
RLE (``{"size", "counts"}``, decode with ``pycocotools.mask.decode``) or null, an area and a
box. That is object-major while tracking produces frames one after another, so each frame's
RLEs are appended to a parts file as they come (one JSON line per object and frame) and only
their byte offsets are kept per object; the final file is then streamed object by object.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from pycocotools import mask as mask_utils

from deva.io import atomic


@dataclass
class _Track:
    """One object: its latest metadata and where its frames' lines are in the parts file."""

    id: int
    label: str | None = None
    category_id: int | None = None
    score: float | None = None
    isthing: bool | None = None
    frames: array = field(default_factory=lambda: array("q"))  # frame indices
    offsets: array = field(default_factory=lambda: array("q"))  # byte offsets of their lines


class CocoRleWriter:
    """Collects the RLEs of a video frame by frame into ``parts`` and writes the final file.

    Args:
        parts: the parts file (created, or continued from :meth:`restore`).
    """

    def __init__(self, parts: Path) -> None:
        self.parts = parts
        self.tracks: dict[int, _Track] = {}
        self._file: IO[bytes] = open(parts, "wb")

    def add(self, index: int, mask: np.ndarray, segments: list[Any], infos: list[dict]) -> None:
        """Frame ``index``: (H, W) ids, its segments and their infos (area, box)."""
        for s, info in zip(segments, infos, strict=True):
            if not info["area"]:
                continue
            track = self.tracks.setdefault(s.id, _Track(s.id))
            track.label, track.category_id = s.label, s.category_id
            track.score, track.isthing = s.score, s.isthing
            rle = mask_utils.encode(np.asfortranarray((mask == s.id).astype(np.uint8)))
            x0, y0, x1, y1 = info["box"]
            line = {
                "size": [int(v) for v in rle["size"]],
                "counts": rle["counts"].decode("ascii"),
                "area": int(info["area"]),
                "box": [x0, y0, x1 - x0 + 1, y1 - y0 + 1],
            }
            track.frames.append(index)
            track.offsets.append(self._file.tell())
            self._file.write(json.dumps(line).encode() + b"\n")

    def state(self) -> dict[str, Any]:
        """What :meth:`restore` needs to continue from here (the parts file is flushed)."""
        self._file.flush()
        return {
            "size": self._file.tell(),
            "tracks": [
                {
                    "id": t.id,
                    "label": t.label,
                    "category_id": t.category_id,
                    "score": t.score,
                    "isthing": t.isthing,
                    "frames": list(t.frames),
                    "offsets": list(t.offsets),
                }
                for t in self.tracks.values()
            ],
        }

    @classmethod
    def restore(cls, parts: Path, state: Mapping[str, Any]) -> CocoRleWriter:
        """Continue a writer from its :meth:`state`: the parts file is cut back to it."""
        with open(parts, "r+b") as handle:
            handle.truncate(int(state["size"]))
        writer = cls.__new__(cls)
        writer.parts = parts
        writer.tracks = {}
        for t in state["tracks"]:
            track = _Track(int(t["id"]), t["label"], t["category_id"], t["score"], t["isthing"])
            track.frames.extend(int(v) for v in t["frames"])
            track.offsets.extend(int(v) for v in t["offsets"])
            writer.tracks[track.id] = track
        writer._file = open(parts, "ab")
        return writer

    def close(self) -> None:
        self._file.close()

    def write(
        self,
        path: Path,
        *,
        source: str,
        frame_names: list[str],
        size: tuple[int, int] | None,
        names: Mapping[int, str],
    ) -> Path:
        """The final ``coco_rle.json`` (atomically), object by object from the parts file."""
        self._file.flush()
        count = len(frame_names)
        height, width = size or (0, 0)
        categories = {int(k): v for k, v in names.items()}
        for t in self.tracks.values():
            if t.category_id is not None and t.category_id not in categories:
                categories[int(t.category_id)] = t.label or str(t.category_id)
        head = {
            "info": {"description": "deva tracking output", "source": source},
            "videos": [
                {
                    "id": 1,
                    "name": Path(source).stem,
                    "width": width,
                    "height": height,
                    "length": count,
                    "file_names": list(frame_names),
                }
            ],
            "categories": [{"id": k, "name": v} for k, v in sorted(categories.items())],
        }
        with atomic.atomic_path(path) as temporary, open(temporary, "w") as out:
            out.write(json.dumps(head)[:-1] + ', "annotations": [')
            with open(self.parts, "rb") as parts:
                for n, track in enumerate(sorted(self.tracks.values(), key=lambda t: t.id)):
                    out.write((", " if n else "") + self._annotation(track, parts, frame_names))
            out.write("]}")
        return path

    @staticmethod
    def _annotation(track: _Track, parts: IO[bytes], frame_names: list[str]) -> str:
        """One object's annotation as JSON text, its per-frame entries read from ``parts``."""
        count = len(frame_names)
        segmentations: list[Any] = [None] * count
        areas: list[Any] = [None] * count
        boxes: list[Any] = [None] * count
        for index, offset in zip(track.frames, track.offsets, strict=True):
            parts.seek(offset)
            line = json.loads(parts.readline())
            segmentations[index] = {"size": line["size"], "counts": line["counts"]}
            areas[index], boxes[index] = line["area"], line["box"]
        return json.dumps(
            {
                "id": track.id,
                "video_id": 1,
                "category_id": track.category_id,
                "label": track.label,
                "score": track.score,
                "isthing": track.isthing,
                "iscrowd": 0,
                "first_frame": frame_names[min(track.frames)],
                "last_frame": frame_names[max(track.frames)],
                "segmentations": segmentations,
                "areas": areas,
                "bboxes": boxes,
            }
        )
