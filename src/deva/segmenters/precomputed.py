"""Segmenters that read precomputed per-frame detections instead of running a model.

Three layouts are understood, all looked up by frame name (``"00005"``, ``"00005.jpg"``, or a
relative path; the extension is optional):

- ``PrecomputedSegmenter``: the generic format of ``deva.io.detections`` — per frame an id PNG
  plus a JSON list of ``{id, category_id, score, isthing}``.
- ``VipsegSegmenter``: VIPSeg-style panoptic predictions — RGB panoptic PNGs (id = R + 256·G +
  256²·B) under ``<png_root>/<video_id>/`` plus a JSON with per-frame ``segments_info``.
- ``BurstSegmenter``: BURST-style JSON with per-frame COCO RLE masks per track.

A frame without detections raises ``FileNotFoundError`` by default; with ``missing="empty"``
it yields an empty segmentation instead. Results are resized (nearest neighbour) to the frame
given to the call unless ``resize=False``, in which case a size mismatch is an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from deva.inference.preprocess import resize_segmentation
from deva.io.detections import read_frame_segmentation
from deva.io.masks import decode_rgb_ids
from deva.types import Segment, Segmentation, check_image, empty_segmentation

logger = logging.getLogger(__name__)

MissingPolicy = Literal["error", "empty"]


def _name_keys(frame_name: str) -> list[str]:
    """Candidate lookup keys for a frame name: as given, then without its extension."""
    path = PurePosixPath(str(frame_name).replace("\\", "/"))
    keys = [str(path), str(path.with_suffix("")) if path.suffix else str(path)]
    return list(dict.fromkeys(keys))


class _PrecomputedBase:
    """Shared call logic: validate the frame, look the frame up, apply the missing policy."""

    def __init__(self, *, missing: MissingPolicy = "error", resize: bool = True) -> None:
        if missing not in ("error", "empty"):
            raise ValueError(f"missing must be 'error' or 'empty', got {missing!r}")
        self.missing = missing
        self.resize = resize

    def _load(self, frame_name: str) -> Segmentation | None:
        raise NotImplementedError

    def _source(self) -> str:
        raise NotImplementedError

    def __call__(self, image: np.ndarray, *, frame_name: str | None = None) -> Segmentation:
        """The detections of frame ``frame_name`` at the size of ``image`` (H, W, 3 uint8)."""
        height, width = check_image(image)
        if frame_name is None:
            raise ValueError(f"{type(self).__name__} needs frame_name= to find the detections")
        seg = self._load(str(frame_name))
        if seg is None:
            if self.missing == "empty":
                logger.debug("no detections for frame %r in %s", frame_name, self._source())
                return empty_segmentation(height, width)
            raise FileNotFoundError(f"no detections for frame {frame_name!r} in {self._source()}")
        if tuple(seg.mask.shape) != (height, width):
            if not self.resize:
                raise ValueError(
                    f"detections of frame {frame_name!r} are {tuple(seg.mask.shape)}, "
                    f"the frame is {(height, width)}"
                )
            seg = resize_segmentation(seg, height, width)
        return seg


class PrecomputedSegmenter(_PrecomputedBase):
    """Detections in the generic format: ``<directory>/<name>.png`` + ``<name>.json``."""

    def __init__(
        self,
        directory: str | Path,
        *,
        missing: MissingPolicy = "error",
        resize: bool = True,
    ) -> None:
        super().__init__(missing=missing, resize=resize)
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"detection directory not found: {self.directory}")

    def _source(self) -> str:
        return str(self.directory)

    def frame_names(self) -> list[str]:
        """Names of the frames that have detections here: a ``.json`` with its ``.png`` (so a
        tool's own records next to them, such as ``run.json``, are not frames)."""
        return sorted(
            p.stem for p in self.directory.glob("*.json") if p.with_suffix(".png").is_file()
        )

    def _load(self, frame_name: str) -> Segmentation | None:
        for key in _name_keys(frame_name):
            if (self.directory / f"{key}.png").is_file():
                return read_frame_segmentation(self.directory, key)
        return None


def _read_id_png(path: Path) -> np.ndarray:
    """An (H, W) int64 id map from an RGB-encoded panoptic PNG (or a grey / palette one)."""
    if not path.is_file():
        raise FileNotFoundError(f"panoptic PNG listed in the JSON is missing: {path}")
    try:
        with Image.open(path) as image:
            if image.mode in ("RGB", "RGBA"):
                return decode_rgb_ids(np.asarray(image.convert("RGB")))
            return np.asarray(image).astype(np.int64)
    except OSError as error:
        raise ValueError(f"cannot read panoptic PNG {path}: {error}") from error


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"detection JSON not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON ({error})") from error


def _checked_segmentation(ids: np.ndarray, segments: list[Segment], source: str) -> Segmentation:
    """Pair an id map with its segment list: unlisted ids are an error, absent ones dropped."""
    listed = {s.id for s in segments}
    if len(listed) != len(segments):
        raise ValueError(f"{source}: duplicate segment ids in {sorted(s.id for s in segments)}")
    present = set(np.unique(ids).tolist()) - {0}
    if present - listed:
        raise ValueError(f"{source}: ids {sorted(present - listed)[:5]} are not listed")
    return Segmentation(
        mask=torch.from_numpy(ids.astype(np.int64)),
        segments=[s for s in segments if s.id in present],
    )


class VipsegSegmenter(_PrecomputedBase):
    """VIPSeg-style panoptic detections: RGB panoptic PNGs plus per-frame ``segments_info``.

    The JSON is either VIPSeg's video layout, ``{"annotations": [{"video_id", "annotations":
    [{"file_name", "segments_info": [...]}]}], "categories": [...]}`` with PNGs at
    ``<png_root>/<video_id>/<file_name>``, or a flat COCO-panoptic list of frames
    ``{"annotations": [{"file_name", "segments_info"}]}`` with PNGs at
    ``<png_root>/<file_name>``. Each segment info has ``id`` and ``category_id`` and optionally
    ``isthing`` and ``score``; a missing ``isthing`` comes from ``categories`` when listed.
    Category 0 is a real class.

    Args:
        json_path: the JSON file.
        png_root: folder of the panoptic PNGs.
        video_id: which video to serve; may be left out when the JSON holds one video, or
            when frame names are given as ``"<video_id>/<frame>"``.
    """

    def __init__(
        self,
        json_path: str | Path,
        png_root: str | Path,
        *,
        video_id: str | None = None,
        missing: MissingPolicy = "error",
        resize: bool = True,
    ) -> None:
        super().__init__(missing=missing, resize=resize)
        self.json_path = Path(json_path)
        self.png_root = Path(png_root)
        data = _load_json(self.json_path)
        entries = data.get("annotations") if isinstance(data, Mapping) else data
        if not isinstance(entries, list):
            raise ValueError(f"{self.json_path}: expected an 'annotations' list")
        categories = data.get("categories", []) if isinstance(data, Mapping) else []
        self._thing_of = {
            int(c["id"]): bool(c["isthing"]) for c in categories if "isthing" in c and "id" in c
        }
        # video id (None for the flat layout) -> frame key -> frame entry
        self._frames: dict[str | None, dict[str, Mapping[str, Any]]] = {}
        for entry in entries:
            if "annotations" in entry:
                video = str(entry.get("video_id"))
                frames = entry["annotations"]
            else:
                video, frames = None, [entry]
            table = self._frames.setdefault(video, {})
            for frame in frames:
                if "file_name" not in frame:
                    raise ValueError(f"{self.json_path}: frame entry without 'file_name'")
                stem = str(PurePosixPath(frame["file_name"]).with_suffix(""))
                table[stem] = frame
                if "image_id" in frame:
                    table.setdefault(str(frame["image_id"]), frame)
        if video_id is not None and str(video_id) not in self._frames:
            raise KeyError(f"{self.json_path}: video {video_id!r} not found")
        self.video_id = None if video_id is None else str(video_id)

    def _source(self) -> str:
        video = f" (video {self.video_id})" if self.video_id is not None else ""
        return f"{self.json_path}{video}"

    def _find(self, frame_name: str) -> tuple[str | None, Mapping[str, Any]] | None:
        if self.video_id is not None:
            videos = [self.video_id]
        elif len(self._frames) == 1:
            videos = list(self._frames)
        else:
            videos = []
        for video in videos:
            for key in _name_keys(frame_name):
                for candidate in (key, PurePosixPath(key).name):
                    if candidate in self._frames[video]:
                        return video, self._frames[video][candidate]
        # "<video_id>/<frame>" names select the video themselves.
        path = PurePosixPath(frame_name)
        if len(path.parts) >= 2 and path.parts[0] in self._frames:
            video = path.parts[0]
            for key in _name_keys(str(PurePosixPath(*path.parts[1:]))):
                if key in self._frames[video]:
                    return video, self._frames[video][key]
        return None

    def _load(self, frame_name: str) -> Segmentation | None:
        found = self._find(frame_name)
        if found is None:
            return None
        video, frame = found
        file_name = PurePosixPath(frame["file_name"]).with_suffix(".png")
        png = self.png_root / file_name if video is None else self.png_root / video / file_name
        segments = []
        for info in frame.get("segments_info", []):
            category = info.get("category_id")
            isthing = info.get("isthing")
            if isthing is None and category is not None:
                isthing = self._thing_of.get(int(category))
            segments.append(
                Segment(
                    id=int(info["id"]),
                    category_id=None if category is None else int(category),
                    score=None if info.get("score") is None else float(info["score"]),
                    isthing=None if isthing is None else bool(isthing),
                )
            )
        return _checked_segmentation(_read_id_png(png), segments, str(png))


class BurstSegmenter(_PrecomputedBase):
    """BURST-style detections: ``{"sequences": [...]}`` with per-frame RLE masks per track.

    A sequence has ``seq_name`` (and usually ``dataset``, ``id``), ``height``, ``width``,
    ``annotated_image_paths`` and ``segmentations`` aligned with them: per frame a dict
    track id → ``{"rle", "score"?, "category_id"?}`` (COCO RLE, compressed string or counts
    list). A track's category falls back to ``track_category_ids``. Overlapping masks are made
    disjoint the paper's way: painted in descending area, smaller on top. Segment ids are the
    track ids when all are positive integers, else 1..K in the order listed.

    Args:
        json_path: the JSON file.
        sequence: ``seq_name``, ``"<dataset>/<seq_name>"`` or the sequence ``id``; may be left
            out when the JSON holds one sequence.
        isthing: ``isthing`` given to every segment (open-world objects are things).
    """

    def __init__(
        self,
        json_path: str | Path,
        *,
        sequence: str | None = None,
        isthing: bool | None = True,
        missing: MissingPolicy = "error",
        resize: bool = True,
    ) -> None:
        super().__init__(missing=missing, resize=resize)
        self.json_path = Path(json_path)
        self.isthing = isthing
        data = _load_json(self.json_path)
        sequences = data.get("sequences") if isinstance(data, Mapping) else None
        if sequences is None and isinstance(data, Mapping) and "segmentations" in data:
            sequences = [data]
        if not isinstance(sequences, list) or not sequences:
            raise ValueError(f"{self.json_path}: expected a non-empty 'sequences' list")
        self.sequence = self._select(sequences, sequence)
        for key in ("height", "width", "annotated_image_paths", "segmentations"):
            if key not in self.sequence:
                raise ValueError(f"{self.json_path}: sequence without {key!r}")
        paths = self.sequence["annotated_image_paths"]
        if len(paths) != len(self.sequence["segmentations"]):
            raise ValueError(
                f"{self.json_path}: {len(paths)} annotated_image_paths but "
                f"{len(self.sequence['segmentations'])} segmentations"
            )
        self._index: dict[str, int] = {}
        for k, image_path in enumerate(paths):
            path = PurePosixPath(image_path)
            for key in (str(path), str(path.with_suffix("")), path.name, path.stem):
                self._index.setdefault(key, k)

    def _select(self, sequences: list[Mapping[str, Any]], name: str | None) -> Mapping[str, Any]:
        if name is None:
            if len(sequences) != 1:
                raise ValueError(
                    f"{self.json_path}: holds {len(sequences)} sequences; pass sequence="
                )
            return sequences[0]
        for seq in sequences:
            names = {str(seq.get("seq_name")), f"{seq.get('dataset')}/{seq.get('seq_name')}"}
            if "id" in seq:
                names.add(str(seq["id"]))
            if str(name) in names:
                return seq
        raise KeyError(f"{self.json_path}: sequence {name!r} not found")

    def _source(self) -> str:
        return f"{self.json_path} (sequence {self.sequence.get('seq_name')})"

    def _load(self, frame_name: str) -> Segmentation | None:
        index = next((self._index[k] for k in _name_keys(frame_name) if k in self._index), None)
        if index is None:
            return None
        height, width = int(self.sequence["height"]), int(self.sequence["width"])
        tracks = self.sequence["segmentations"][index] or {}
        categories = self.sequence.get("track_category_ids", {}) or {}
        keys = list(tracks)
        numeric = all(str(k).isdigit() and int(k) > 0 for k in keys)
        masks, segments = [], []
        for n, key in enumerate(keys):
            entry = tracks[key]
            rle = entry["rle"] if isinstance(entry, Mapping) and "rle" in entry else entry
            if isinstance(rle, Mapping):
                rle = dict(rle)
                counts = rle.get("counts")
                size = rle.get("size", [height, width])
            else:
                counts, size = rle, [height, width]
            if isinstance(counts, list):
                encoded = mask_utils.frPyObjects({"counts": counts, "size": list(size)}, *size)
            else:
                encoded = {"counts": counts, "size": list(size)}
            masks.append(mask_utils.decode(encoded).astype(bool))
            category = entry.get("category_id") if isinstance(entry, Mapping) else None
            if category is None:
                category = categories.get(str(key))
            score = entry.get("score") if isinstance(entry, Mapping) else None
            segments.append(
                Segment(
                    id=int(key) if numeric else n + 1,
                    category_id=None if category is None else int(category),
                    score=None if score is None else float(score),
                    isthing=self.isthing,
                )
            )
        ids = np.zeros((height, width), dtype=np.int64)
        areas = [int(m.sum()) for m in masks]
        for k in sorted(range(len(masks)), key=lambda k: -areas[k]):
            ids[masks[k]] = segments[k].id
        return _checked_segmentation(ids, segments, self._source())
