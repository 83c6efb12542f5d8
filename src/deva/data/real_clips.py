"""Real video clips with object masks from Debian packages, for measuring generalisation.

:func:`build_real_clips` reads annotated real footage that ships in a package and writes it in
the DAVIS layout that ``validation.sets.<name>={type: generic, root: ...}`` and
``tools/evaluate.py benchmark=generic`` read::

    <clips>/JPEGImages/<clip>/<frame>.jpg      the frames as shipped (bytes unchanged)
    <clips>/Annotations/<clip>/<frame>.png     index masks (DAVIS palette), one per frame
    <clips>/licences/<package>.copyright       each package's copyright file
    <clips>/clips.json                         clip -> package, version, member folder,
                                               object id -> label, held-out flag

Each :class:`ClipSource` names a folder of frames and `labelme`_ polygon files inside a
package. Objects are the labels of the clip (all polygons of one label form one object),
numbered 1, 2, … in order of first appearance. Clips marked ``held_out`` measure
generalisation only: never train, tune or pick checkpoints on them.

.. _labelme: https://github.com/wkentaro/labelme
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import cv2
import numpy as np
from PIL import Image

from deva.data.debian import DebPackage, package_files
from deva.data.real_imagery import copyright_path
from deva.io import atomic
from deva.io.masks import write_index_png
from deva.io.outputs import OutputFolder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipSource:
    """One annotated clip inside a Debian package: frames (``.jpg``) and labelme polygon
    files (``.json``, same stem) in ``folder``."""

    name: str
    package: str
    folder: str
    held_out: bool
    description: str


CLIP_SOURCES: dict[str, ClipSource] = {
    source.name: source
    for source in (
        ClipSource(
            name="labelme-street",
            package="labelme-examples",
            folder="usr/share/doc/labelme-examples/examples/video_annotation/data_annotated",
            held_out=True,
            description="5 frames (1000x563) of a street, a lorry and a car driving past",
        ),
    )
}


def labelme_mask(
    shapes: Sequence[dict], height: int, width: int, label_ids: dict[str, int]
) -> np.ndarray:
    """(H, W) uint8 index mask of labelme ``shapes`` (polygons and rectangles), later shapes
    drawn over earlier ones; new labels are added to ``label_ids`` (1, 2, …)."""
    mask = np.zeros((height, width), np.uint8)
    for shape in shapes:
        kind = shape.get("shape_type") or "polygon"
        points = np.asarray(shape["points"], np.float64)
        if kind == "rectangle" and len(points) == 2:
            (x0, y0), (x1, y1) = points
            points = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        elif kind != "polygon":
            raise ValueError(f"labelme shape type {kind!r} is not a region (polygon/rectangle)")
        if len(points) < 3:
            continue
        label = str(shape["label"])
        if label not in label_ids:
            label_ids[label] = len(label_ids) + 1
        if label_ids[label] > 255:
            raise ValueError("more than 255 labels in one clip")
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], int(label_ids[label]))
    return mask


def _clip_files(
    package: DebPackage, folder: str, licences: dict[str, str]
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Frames and labelme files of ``folder`` by stem, in one pass over the package (its
    copyright text goes into ``licences``)."""
    frames: dict[str, bytes] = {}
    labels: dict[str, bytes] = {}
    for member, data in package_files(package):
        if member == copyright_path(package.name):
            licences[package.name] = data.decode("utf-8", "replace")
        path = PurePosixPath(member)
        if str(path.parent) != folder:
            continue
        if path.suffix.lower() in (".jpg", ".jpeg"):
            frames[path.stem] = data
        elif path.suffix.lower() == ".json":
            labels[path.stem] = data
    return frames, labels


def build_real_clips(
    packages: Sequence[DebPackage], out: OutputFolder, sources: Sequence[ClipSource]
) -> dict[str, int]:
    """Write ``sources`` (their packages among ``packages``) into ``out``, in the layout of
    the module docstring. Returns frames written per clip; a clip without frames, or whose
    first frame has no annotation, is an error."""
    by_name = {p.name: p for p in packages}
    record: dict[str, dict] = {}
    written: dict[str, int] = {}
    licences: dict[str, str] = {}
    for source in sources:
        if source.package not in by_name:
            raise ValueError(f"clip {source.name} needs package {source.package}")
        package = by_name[source.package]
        frames, labels = _clip_files(package, source.folder, licences)
        if not frames:
            raise ValueError(f"no frames in {package.path}:{source.folder}")
        stems = sorted(frames)
        if stems[0] not in labels:
            raise ValueError(f"clip {source.name}: its first frame {stems[0]} has no annotation")
        label_ids: dict[str, int] = {}
        for stem in stems:
            atomic.write_bytes(out.path(f"JPEGImages/{source.name}/{stem}.jpg"), frames[stem])
            if stem not in labels:
                continue
            height, width = Image.open(io.BytesIO(frames[stem])).size[::-1]
            shapes = json.loads(labels[stem]).get("shapes", [])
            mask = labelme_mask(shapes, height, width, label_ids)
            write_index_png(out.path(f"Annotations/{source.name}/{stem}.png"), mask)
        if not label_ids:
            raise ValueError(f"clip {source.name}: no regions in its annotations")
        written[source.name] = len(stems)
        record[source.name] = {
            "package": package.name,
            "version": package.version,
            "folder": source.folder,
            "frames": len(stems),
            "annotated": sum(stem in labels for stem in stems),
            "objects": {str(i): label for label, i in label_ids.items()},
            "held_out": source.held_out,
            "description": source.description,
        }
        logger.info("%s: %d frames, %d objects", source.name, len(stems), len(label_ids))
    for name in sorted({s.package for s in sources}):
        if name not in licences:
            raise ValueError(f"no copyright file in {name}: its licence is unknown")
        atomic.write_text(out.path(f"licences/{name}.copyright"), licences[name])
    out.write_json("clips.json", record)
    return written
