"""DAVIS 2016 / 2017 folder layout: sequence lists, annotations, predictions.

Layout: ``<root>/ImageSets/<year>/<split>.txt`` (one sequence name per line),
``<root>/Annotations/<resolution>/<seq>/00000.png`` (index PNGs, 0 = background, k = object k,
255 = void); predictions ``<pred>/<seq>/00000.png`` with the same file names. The DAVIS 2016
release lists ``/JPEGImages/480p/<seq>/00000.jpg /Annotations/...`` pairs in
``ImageSets/480p/<split>.txt`` and marks the single object with 255; ``binary=True`` (used
for year 2016) reads every non-zero label, 255 included, as object 1.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from deva.io.masks import read_index_png, write_mask_png

log = logging.getLogger(__name__)


def read_sequence_list(root: str | Path, split: str = "val", year: int = 2017) -> list[str]:
    """Sequence names of a DAVIS split, from ``ImageSets/<year>/<split>.txt``.

    For year 2016 the original release's ``ImageSets/480p/<split>.txt`` (image / annotation
    path pairs) is accepted as well.
    """
    root = Path(root)
    listing = root / "ImageSets" / str(year) / f"{split}.txt"
    if listing.is_file():
        return [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    legacy = root / "ImageSets" / "480p" / f"{split}.txt"
    if int(year) == 2016 and legacy.is_file():
        names: list[str] = []
        for line in legacy.read_text().splitlines():
            if not line.strip():
                continue
            name = Path(line.split()[0]).parent.name
            if name not in names:
                names.append(name)
        return names
    raise FileNotFoundError(f"DAVIS sequence list not found: {listing}")


def annotation_frames(root: str | Path, sequence: str, resolution: str = "480p") -> list[str]:
    """Sorted frame names (file stems) of a sequence's ground-truth annotations."""
    folder = Path(root) / "Annotations" / resolution / sequence
    names = sorted(p.stem for p in folder.glob("*.png"))
    if not names:
        raise FileNotFoundError(f"no annotation PNGs for sequence {sequence!r} in {folder}")
    return names


def _binarize(mask: np.ndarray) -> np.ndarray:
    return (mask != 0).astype(np.uint8)


def read_annotations(
    root: str | Path,
    sequence: str,
    *,
    resolution: str = "480p",
    binary: bool = False,
) -> tuple[list[str], np.ndarray]:
    """Frame names and (T, H, W) ground-truth index masks of one sequence."""
    names = annotation_frames(root, sequence, resolution)
    folder = Path(root) / "Annotations" / resolution / sequence
    masks = [read_index_png(folder / f"{name}.png") for name in names]
    shapes = {m.shape for m in masks}
    if len(shapes) != 1:
        raise ValueError(f"sequence {sequence!r}: annotation sizes differ: {sorted(shapes)}")
    stack = np.stack(masks)
    return names, _binarize(stack) if binary else stack


def read_predictions(
    pred_root: str | Path,
    sequence: str,
    names: list[str],
    *,
    shape: tuple[int, int] | None = None,
    binary: bool = False,
) -> np.ndarray:
    """(T, H, W) predicted index masks ``<pred_root>/<sequence>/<name>.png`` for ``names``.

    Raises FileNotFoundError for a missing frame and ValueError when a frame's size differs
    from ``shape`` (H, W).
    """
    folder = Path(pred_root) / sequence
    masks = []
    for name in names:
        path = folder / f"{name}.png"
        if not path.is_file():
            raise FileNotFoundError(f"missing prediction frame {path}")
        mask = read_index_png(path)
        if shape is not None and mask.shape != tuple(shape):
            raise ValueError(
                f"{path}: prediction is {mask.shape[1]}x{mask.shape[0]} but the ground truth "
                f"is {shape[1]}x{shape[0]} (W x H)"
            )
        masks.append(mask)
    if not masks:
        return np.zeros((0, *(shape or (0, 0))), dtype=np.uint8)
    stack = np.stack(masks)
    return _binarize(stack) if binary else stack


def write_prediction(out_root: str | Path, sequence: str, name: str, mask: np.ndarray) -> Path:
    """Write one predicted frame as ``<out_root>/<sequence>/<name>.png``: the DAVIS palette
    (RGB-encoded ids beyond 255, see :func:`deva.io.masks.write_mask_png`)."""
    path = Path(out_root) / sequence / f"{name}.png"
    write_mask_png(path, np.asarray(mask))
    return path
