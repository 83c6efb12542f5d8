"""Semi-supervised VOS over benchmark folders: DAVIS, YouTube-VOS and generic layouts.

Each benchmark is reduced to a list of :class:`VOSVideo` (frames folder, annotations folder,
which annotations to use, which frames to output); :func:`segment_video` runs a
:class:`~deva.inference.propagator.Propagator` over one of them and yields per-frame id maps
at the original resolution. Given masks are brought to the processing size with pixel-centre
nearest sampling (``nearest-exact``, as PIL's NEAREST in the published evaluation); outputs
are bilinearly resized probabilities, arg-maxed.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from deva.inference.backend import PropagationBackend
from deva.inference.preprocess import (
    preprocess_frame,
    preprocess_mask,
    probabilities_to_ids,
)
from deva.io.frames import list_frame_files, read_frame
from deva.io.masks import read_mask_png

T = TypeVar("T")


class MaskUse(enum.Enum):
    """Which ground-truth annotations of a video are given to the propagator."""

    FIRST = "first"  # only the first frame's (DAVIS)
    NEW_OBJECTS = "new"  # every annotation, for objects not yet tracked (YouTube-VOS)
    ALL = "all"  # every annotation, all of its objects (re)initialised


@dataclass(frozen=True)
class VOSVideo:
    name: str
    frames_dir: Path
    annotations_dir: Path
    mask_use: MaskUse = MaskUse.FIRST
    output_frames: frozenset[str] | None = None  # frame names to write; None = all


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def davis_videos(root: str | Path, split: str = "val", resolution: str = "480p") -> list[VOSVideo]:
    """DAVIS-2017 layout: ``ImageSets/2017/<split>.txt``, ``JPEGImages/<res>/<seq>/``,
    ``Annotations/<res>/<seq>/``. Without the split file every sequence folder is used."""
    root = Path(root)
    images = _require_dir(root / "JPEGImages" / resolution, "DAVIS frames folder")
    annotations = _require_dir(root / "Annotations" / resolution, "DAVIS annotations folder")
    split_file = root / "ImageSets" / "2017" / f"{split}.txt"
    if split_file.is_file():
        names = [n.strip() for n in split_file.read_text().splitlines() if n.strip()]
    else:
        names = sorted(p.name for p in images.iterdir() if p.is_dir())
    return [VOSVideo(n, images / n, annotations / n, MaskUse.FIRST) for n in names]


def youtube_vos_videos(root: str | Path, meta: str | Path | None = None) -> list[VOSVideo]:
    """YouTube-VOS layout: ``JPEGImages/<vid>/``, ``Annotations/<vid>/`` and ``meta.json``
    listing, per object, the frames to segment. Objects enter at their first mask; outputs
    are written only for the frames ``meta.json`` lists."""
    root = Path(root)
    images = _require_dir(root / "JPEGImages", "YouTube-VOS frames folder")
    annotations = _require_dir(root / "Annotations", "YouTube-VOS annotations folder")
    meta_path = Path(meta) if meta else root / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"YouTube-VOS meta.json not found: {meta_path}")
    try:
        videos = json.loads(meta_path.read_text())["videos"]
    except (json.JSONDecodeError, KeyError) as error:
        raise ValueError(f"{meta_path}: not a YouTube-VOS meta.json ({error})") from None
    out = []
    for name in sorted(videos):
        frames = {f for obj in videos[name]["objects"].values() for f in obj["frames"]}
        out.append(
            VOSVideo(
                name, images / name, annotations / name, MaskUse.NEW_OBJECTS, frozenset(frames)
            )
        )
    return out


def generic_videos(root: str | Path, *, use_all_masks: bool = False) -> list[VOSVideo]:
    """Any folder with ``JPEGImages/<video>/`` and ``Annotations/<video>/``."""
    root = Path(root)
    images = _require_dir(root / "JPEGImages", "frames folder")
    annotations = _require_dir(root / "Annotations", "annotations folder")
    use = MaskUse.ALL if use_all_masks else MaskUse.FIRST
    names = sorted(p.name for p in images.iterdir() if p.is_dir())
    if not names:
        raise FileNotFoundError(f"no video folders in {images}")
    return [VOSVideo(n, images / n, annotations / n, use) for n in names]


def _with_last(items: Iterable[T]) -> Iterator[tuple[T, bool]]:
    """Yield ``(item, is_last)`` with one item of look-ahead."""
    iterator = iter(items)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for following in iterator:
        yield current, False
        current = following
    yield current, True


def _load_mask(source: np.ndarray | Path) -> np.ndarray:
    if isinstance(source, np.ndarray):
        return source.astype(np.int64, copy=False)
    return read_mask_png(source).astype(np.int64)


def segment_frames(
    propagator: PropagationBackend,
    frames: Iterable[tuple[str, np.ndarray]],
    given: Mapping[str, np.ndarray | Path],
    *,
    mask_use: MaskUse = MaskUse.FIRST,
    output_frames: frozenset[str] | None = None,
    shorter_side: int = 480,
) -> Iterator[tuple[str, np.ndarray]]:
    """Propagate given id masks through ``(name, RGB frame)`` pairs.

    ``given`` maps frame names to (H, W) id masks or PNG paths at the frames' resolution.
    Yields ``(name, (H, W) int64 id map)`` at the original resolution for every output frame.
    """
    propagator.reset()
    size: tuple[int, ...] | None = None
    for index, ((name, frame), last) in enumerate(_with_last(frames)):
        size = size or frame.shape[:2]
        if frame.shape[:2] != size:
            raise ValueError(f"frame {name} is {frame.shape[:2]}, earlier frames were {size}")
        image, geometry = preprocess_frame(frame, shorter_side, device=propagator.device)
        mask, objects = None, None
        source = given.get(name)
        if source is not None and (mask_use is not MaskUse.FIRST or index == 0):
            ids = _load_mask(source)
            if ids.shape != frame.shape[:2]:
                where = f"{source}: " if isinstance(source, Path) else f"frame {name}: "
                raise ValueError(f"{where}mask size {ids.shape} != frame size {frame.shape[:2]}")
            labels = [int(v) for v in np.unique(ids) if v != 0]
            if mask_use is MaskUse.NEW_OBJECTS:
                labels = [v for v in labels if v not in propagator.object_ids]
            if labels:
                mask = preprocess_mask(torch.from_numpy(ids), geometry).to(propagator.device)
                objects = labels
        result = propagator.step(image, mask, objects, end=last)
        if output_frames is None or name in output_frames:
            yield name, probabilities_to_ids(result.prob, result.object_ids, geometry).cpu().numpy()


def segment_video(
    propagator: PropagationBackend, video: VOSVideo, *, shorter_side: int = 480
) -> Iterator[tuple[str, np.ndarray]]:
    """Propagate a benchmark video's given masks; see :func:`segment_frames`."""
    files = list_frame_files(_require_dir(video.frames_dir, "frames folder"))
    folder = _require_dir(video.annotations_dir, "annotations folder")
    annotations = {p.stem: p for p in folder.glob("*.png")}
    if video.mask_use is MaskUse.FIRST and files[0].stem not in annotations:
        raise FileNotFoundError(f"missing first-frame mask {folder / (files[0].stem + '.png')}")
    if not annotations:
        raise FileNotFoundError(f"no annotation PNGs in {folder}")
    frames = ((path.stem, read_frame(path)) for path in files)
    yield from segment_frames(
        propagator,
        frames,
        annotations,
        mask_use=video.mask_use,
        output_frames=video.output_frames,
        shorter_side=shorter_side,
    )
