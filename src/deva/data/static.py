"""Static-stage training data: pseudo-videos made from image segmentation datasets.

Two folder layouts are read (masks are 0/255 and binarised at 128 into one object):

- FSS-1000: ``<root>/<class>/<n>.jpg`` with ``<root>/<class>/<n>.png``;
- DUTS / ECSSD / HRSOD / BIG (flattened): ``<root>/<name>.jpg`` with ``<root>/<name>.png``.

Each image pair becomes a clip of ``num_frames`` (3) differently warped copies, see
:class:`deva.data.augment.StaticAugment`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from deva.data.augment import ResizeCrop, StaticAugment
from deva.data.order import Draw
from deva.data.sample import (
    Sample,
    VideoRecord,
    draw_sample,
    load_image,
    load_mask,
    make_sample,
    select_objects,
)

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg")


def _pairs_in(folder: Path, prefix: str) -> tuple[list[VideoRecord], int]:
    images = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {p.stem: p for p in folder.iterdir() if p.suffix.lower() == ".png"}
    stems = sorted(images.keys() & masks.keys())
    records = [
        VideoRecord(
            name=f"{prefix}{stem}",
            frame_names=(stem,),
            images=(images[stem],),
            masks=(masks[stem],),
            binary_masks=True,
            meta={"dataset": "static"},
        )
        for stem in stems
    ]
    return records, len(images.keys() ^ masks.keys())


def scan_image_pairs(root: str | Path) -> list[VideoRecord]:
    """One-frame records of every jpg/png pair under ``root`` (flat or FSS-1000 layout).

    The layout is detected: jpg files directly in ``root`` mean the flat layout, otherwise
    each sub-folder is a class folder. Record names are ``<root name>/[<class>/]<stem>``.
    Unpaired files are counted and reported in one warning.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image dataset folder not found: {root}")
    flat = any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir())
    folders = [root] if flat else sorted(p for p in root.iterdir() if p.is_dir())
    records: list[VideoRecord] = []
    unpaired = 0
    for folder in folders:
        prefix = f"{root.name}/" if flat else f"{root.name}/{folder.name}/"
        found, missing = _pairs_in(folder, prefix)
        records += found
        unpaired += missing
    if unpaired:
        logger.warning("%s: %d images or masks without a partner were ignored", root, unpaired)
    if not records:
        raise FileNotFoundError(f"no jpg/png image pairs found under {root}")
    return records


class PseudoVideoSampler:
    """Turns a one-frame record (image + binary mask) into a pseudo-video clip sample.

    With ``augment=False`` the frames are the resized, centre-cropped image repeated
    ``num_frames`` times (deterministic, for tests and debugging).
    """

    def __init__(
        self,
        *,
        num_frames: int = 3,
        crop_size: int = 384,
        augment: bool | StaticAugment = True,
        min_object_pixels: int = 100,
        clip_tries: int = 5,
    ) -> None:
        self.num_frames = num_frames
        self.min_object_pixels = min_object_pixels
        self.clip_tries = clip_tries
        self.max_objects = 1
        if augment is True:
            self._augment: StaticAugment | None = StaticAugment(crop_size, num_frames=num_frames)
        elif augment is False:
            self._augment = None
        else:
            if augment.num_frames != num_frames:
                raise ValueError(
                    f"augment makes {augment.num_frames} frames but num_frames={num_frames}"
                )
            self._augment = augment
        self._plain = ResizeCrop(crop_size)

    def sample(
        self, record: VideoRecord, rng: np.random.Generator, *, max_skip: int | None = None
    ) -> Sample | None:
        """A pseudo-video from the record's first frame, or ``None`` if the object is lost
        (``max_skip`` is ignored: a pseudo-video has no frame gaps)."""
        if len(record) == 0:
            return None
        image = load_image(record.images[0])
        mask = load_mask(record.masks[0], binary=record.binary_masks)
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"{record.name}: mask size {mask.shape} differs from image size {image.shape[:2]}"
            )
        mask = (mask > 0).astype(np.uint8)
        for _ in range(self.clip_tries):
            if self._augment is None:
                frames, masks = self._plain(
                    [image] * self.num_frames, [mask] * self.num_frames, rng
                )
            else:
                frames, masks = self._augment(image, mask, rng)
            labels, count = select_objects(
                masks, rng, max_objects=1, min_pixels=self.min_object_pixels
            )
            if count > 0:
                return make_sample(frames, labels, count, record.name, [0] * self.num_frames)
        return None


class StaticPseudoVideoDataset(Dataset):
    """Map-style dataset of pseudo-videos from one or more image segmentation folders.

    Item ``i`` comes from image pair ``i``; when its object is lost by the augmentation
    (``clip_tries`` times), random other pairs are tried. ``repeats`` gives each root's
    copies in the mix (the published stage 0 takes BIG and HRSOD ×5, the others ×1).
    ``fixed_seed`` makes every pair always yield the same sample (tests, debugging); leave it
    ``None`` to train. One object per pseudo-video: the image's foreground, as published.
    """

    def __init__(
        self,
        roots: Sequence[str | Path] | None = None,
        *,
        repeats: Sequence[int] | None = None,
        records: Sequence[VideoRecord] | None = None,
        num_frames: int = 3,
        crop_size: int = 384,
        augment: bool | StaticAugment = True,
        min_object_pixels: int = 100,
        fixed_seed: int | None = None,
        max_tries: int = 50,
    ) -> None:
        if (roots is None) == (records is None):
            raise ValueError("give exactly one of roots (folders) or records")
        if records is None:
            roots = list(roots or ())
            copies = list(repeats) if repeats is not None else [1] * len(roots)
            if len(copies) != len(roots) or any(n < 0 for n in copies):
                raise ValueError(f"static: need one repeat count ≥ 0 per root, got {copies}")
            records = []
            for root, count in zip(roots, copies):
                found = scan_image_pairs(root)
                records += found * count
                logger.info("static: %d image pairs from %s, ×%d", len(found), root, count)
        if not records:
            raise ValueError("static: no image pairs to sample from")
        self.records = list(records)
        self.sampler = PseudoVideoSampler(
            num_frames=num_frames,
            crop_size=crop_size,
            augment=augment,
            min_object_pixels=min_object_pixels,
        )
        self.fixed_seed = fixed_seed
        self.max_tries = max_tries

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int | Draw) -> Sample:
        return draw_sample(
            self.records,
            self.sampler,
            index,
            fixed_seed=self.fixed_seed,
            max_tries=self.max_tries,
            what="static",
        )
